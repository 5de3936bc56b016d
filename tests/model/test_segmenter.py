"""LisaSegmenter, the Python API, on the tiny reference checkpoint (and its input handling)."""

import json

import numpy as np
import pytest
from PIL import Image

from model.segmenter import InputError, LisaSegmenter, PromptTooLongError, read_image
from utils.tokenization import decode_answer

RED_CIRCLE = "Can you segment the red circle in this image?"


@pytest.fixture(scope="module")
def segmenter(load_reference_segmenter):
    return load_reference_segmenter(16, device="cpu")


@pytest.fixture(scope="module")
def plain_case(tiny_cases_dir):
    return json.loads((tiny_cases_dir / "evaluate_plain.json").read_text())


@pytest.mark.reference
def test_answer_and_masks_reproduce_the_original_chat(segmenter, tiny_cases_dir, plain_case):
    result = segmenter(tiny_cases_dir / "img1.png", RED_CIRCLE)
    expected_text = decode_answer(plain_case["generated_ids"], segmenter.tokenizer, clean=True)
    assert result.text == expected_text
    assert "[SEG]" in result.text and "</s>" not in result.text and "<im_" not in result.text
    assert len(result.masks) == 1
    mask = result.masks[0]
    assert mask.dtype == np.bool_ and mask.shape == (240, 320)
    assert int(mask.sum()) == pytest.approx(plain_case["pred_mask0_positive_pixels"], abs=2)
    assert result.history == [(RED_CIRCLE, result.text)]
    assert result.num_tokens == 16  # no EOS among the reference's 16 tokens


@pytest.mark.reference
def test_path_pil_and_array_inputs_give_the_same_answer(segmenter, tiny_cases_dir):
    path = tiny_cases_dir / "img1.png"
    from_path = segmenter(str(path), RED_CIRCLE, max_new_tokens=8)
    with Image.open(path) as image:
        from_pil = segmenter(image, RED_CIRCLE, max_new_tokens=8)
        from_array = segmenter(np.asarray(image.convert("RGB")), RED_CIRCLE, max_new_tokens=8)
    for other in (from_pil, from_array):
        assert other.text == from_path.text
        assert len(other.masks) == len(from_path.masks)
        for a, b in zip(other.masks, from_path.masks, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.reference
def test_a_list_of_pairs_runs_as_one_batch_with_the_single_answers(
    segmenter, tiny_cases_dir, monkeypatch
):
    requests = [
        (tiny_cases_dir / "img1.png", RED_CIRCLE),
        (tiny_cases_dir / "img3.png", "Where is the orange circle?"),
    ]
    calls = []
    generate = segmenter.model.generate
    monkeypatch.setattr(
        segmenter.model,
        "generate",
        lambda batch, **k: calls.append(batch.input_ids.shape) or generate(batch, **k),
    )
    batch = segmenter(requests)
    monkeypatch.undo()
    singles = [segmenter(image, prompt) for image, prompt in requests]
    assert len(calls) == 1 and calls[0][0] == 2  # both prompts in one generate() call
    for together, alone, (image, _) in zip(batch, singles, requests, strict=True):
        assert together.text == alone.text
        assert len(together.masks) == len(alone.masks)
        for a, b in zip(together.masks, alone.masks, strict=True):
            assert a.shape == b.shape == read_image(image).shape[:2]
            assert (a != b).mean() < 1e-3  # padding may move a logit near 0 across the line


@pytest.mark.reference
def test_history_is_in_the_prompt_and_only_new_masks_return(segmenter, tiny_cases_dir):
    first = segmenter(tiny_cases_dir / "img1.png", RED_CIRCLE)
    assert first.text.count("[SEG]") == 1
    follow_up = "And the blue rectangle?"
    prompt_ids = segmenter.prompt_ids(follow_up, first.history)
    assert len(prompt_ids) > len(segmenter.prompt_ids(follow_up)) + 5
    assert prompt_ids.count(segmenter.seg_token_id) == 1  # the first answer's [SEG]
    second = segmenter(tiny_cases_dir / "img1.png", follow_up, history=first.history)
    assert len(second.masks) == second.text.count("[SEG]")
    assert second.history == [*first.history, (follow_up, second.text)]


@pytest.mark.reference
def test_prompt_mistakes_are_input_errors(segmenter, tiny_cases_dir):
    image = tiny_cases_dir / "img1.png"
    for empty in ("", "   \n"):
        with pytest.raises(InputError, match="empty"):
            segmenter(image, empty)
    with pytest.raises(InputError, match="<image>"):
        segmenter(image, "Look at <image> please")
    with pytest.raises(PromptTooLongError, match="more than model_max_length = 512") as error:
        segmenter(image, "segment the red circle " * 200)
    assert error.value.num_tokens > 512


@pytest.mark.reference
def test_odd_images_run_and_degenerate_ones_are_refused(segmenter):
    one_pixel = segmenter(np.full((1, 1, 3), 128, np.uint8), RED_CIRCLE, max_new_tokens=2)
    assert all(mask.shape == (1, 1) for mask in one_pixel.masks)
    large = np.zeros((2000, 3000, 3), np.uint8)
    assert all(
        m.shape == (2000, 3000) for m in segmenter(large, RED_CIRCLE, max_new_tokens=2).masks
    )
    with pytest.raises(InputError, match="The image array is 1x3000 pixels: too narrow"):
        segmenter(np.zeros((3000, 1, 3), np.uint8), RED_CIRCLE)
    with pytest.raises(InputError, match="too narrow"):
        segmenter.read_image(np.zeros((1, 3000), np.uint8))


@pytest.mark.reference
def test_image_size_other_than_the_checkpoints_is_refused(tiny_lisa_dir):
    with pytest.raises(ValueError, match="image_size 512 does not match the 1024-pixel"):
        LisaSegmenter.from_pretrained(
            tiny_lisa_dir,
            vision_tower=str(tiny_lisa_dir / "clip"),
            precision="fp32",
            image_size=512,
        )


# --- image inputs (no model needed) -----------------------------------------------------------


def test_arrays_of_every_accepted_layout_become_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(read_image(grey), np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(read_image(grey[:, :, None]), read_image(grey))
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    assert read_image(rgba).shape == (3, 4, 3) and read_image(rgba)[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 4, 3), np.float32), "must be uint8"),
        (np.zeros((3, 4, 2), np.uint8), "must be \\[H, W\\]"),
        (np.zeros((0, 4, 3), np.uint8), "must be \\[H, W\\]"),
    ],
)
def test_unusable_arrays_are_input_errors(array, message):
    with pytest.raises(InputError, match=message):
        read_image(array)


def test_pil_images_are_turned_upright_and_to_rgb():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    image.info["exif"] = exif.tobytes()
    image._exif = exif
    assert read_image(image).shape == (40, 20, 3)
    assert read_image(Image.new("L", (5, 3), 7)).tolist() == np.full((3, 5, 3), 7).tolist()


def test_paths_that_are_not_images_name_the_file(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="missing.png' does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="notes.png"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(InputError, match="must be a path, a PIL image or a numpy array"):
        read_image(42)

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from utils.sam_input import pil_bilinear_in_torch, sam_encoder_input
from utils.transforms import (
    ClipTransform,
    SamTransform,
    load_image,
    longest_side_shape,
)


def _cv2_rgb(path) -> np.ndarray:
    """What the original code read: cv2.imread + BGR->RGB."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


# --- reference parity ----------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("name", ["img1", "img2", "img3"])
def test_preprocessing_matches_reference(name, tiny_cases_dir, tiny_lisa_dir):
    expected = np.load(tiny_cases_dir / f"preprocess_{name}.npz")
    meta = json.loads((tiny_cases_dir / "preprocess.json").read_text())[name]
    image = load_image(tiny_cases_dir / f"{name}.png")
    np.testing.assert_array_equal(image, _cv2_rgb(tiny_cases_dir / f"{name}.png"))
    assert list(image.shape[:2]) == expected["original_size"].tolist() == meta["original_size_hw"]

    sam = SamTransform(1024)
    # uint8 intermediates: exactly equal (same Pillow filters), not merely within 1 grey level.
    np.testing.assert_array_equal(sam.resize(image), expected["sam_resized_uint8"])
    pixels, resize = sam(image)
    assert list(resize) == expected["resize"].tolist() == meta["resize_hw"]
    assert pixels.shape == (3, *image.shape[:2]) and pixels.dtype == torch.uint8
    # the resize the model's device does, in tensor operations
    resized = pil_bilinear_in_torch(pixels, resize).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(resized, expected["sam_resized_uint8"])
    sam_input = sam_encoder_input(pixels[None], [image.shape[:2]], [resize], side=1024)[0]
    torch.testing.assert_close(
        sam_input, torch.from_numpy(expected["sam_input"][0]), atol=1e-5, rtol=0
    )

    clip = ClipTransform.from_pretrained(tiny_lisa_dir / "clip")
    resized = clip.resize(image)
    np.testing.assert_array_equal(resized, expected["clip_resized_uint8"])
    np.testing.assert_array_equal(clip.center_crop(resized), expected["clip_cropped_uint8"])
    images_clip = clip(image)
    assert images_clip.shape == (3, 64, 64) and images_clip.dtype == torch.float32
    torch.testing.assert_close(
        images_clip, torch.from_numpy(expected["images_clip"][0]), atol=1e-5, rtol=0
    )


@pytest.mark.reference
def test_clip_config_is_read(tiny_lisa_dir):
    clip = ClipTransform.from_pretrained(tiny_lisa_dir / "clip" / "preprocessor_config.json")
    assert clip.shortest_edge == 64 and clip.crop_size == (64, 64) and clip.resample == 3
    assert clip.image_mean == (0.48145466, 0.4578275, 0.40821073)


# --- SAM -----------------------------------------------------------------------------------------


def test_longest_side_shape():
    assert longest_side_shape(240, 320, 1024) == (768, 1024)
    assert longest_side_shape(167, 250, 1024) == (684, 1024)
    assert longest_side_shape(320, 213, 1024) == (1024, 682)
    assert longest_side_shape(1024, 1024, 1024) == (1024, 1024)


def test_sam_transform_hands_over_the_pixels_and_the_resize_size(rgb):
    sam = SamTransform(image_size=64)
    x, (h, w) = sam(rgb)
    assert (h, w) == longest_side_shape(37, 53, 64) == (45, 64)
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1))
    assert sam.resize(rgb).shape == (45, 64, 3)


def test_sam_transform_keeps_an_image_already_at_size():
    image = np.full((64, 32, 3), 7, dtype=np.uint8)
    np.testing.assert_array_equal(SamTransform(64).resize(image), image)


def test_transforms_reject_bad_input(rgb):
    with pytest.raises(ValueError, match="uint8"):
        SamTransform()(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        ClipTransform()(rgb[:, :, 0])


# --- CLIP ----------------------------------------------------------------------------------------


def test_clip_resize_shortest_edge():
    clip = ClipTransform(shortest_edge=64, crop_size=(64, 64))
    assert clip.output_hw(240, 320) == (64, 85)
    assert clip.output_hw(320, 213) == (96, 64)
    assert clip.output_hw(50, 50) == (64, 64)


def test_clip_center_crop_offsets_and_padding():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    clip = ClipTransform(crop_size=(3, 4))
    np.testing.assert_array_equal(clip.center_crop(image), image[1:4, 1:5])
    # A crop larger than the image pads zeros around it (centred, ceil on the leading side).
    padded = ClipTransform(crop_size=(8, 9)).center_crop(image)
    assert padded.shape == (8, 9, 3)
    np.testing.assert_array_equal(padded[2:7, 1:8], image)
    assert padded[:2].sum() == 0 and padded[7:].sum() == 0


def test_clip_normalisation(rgb):
    clip = ClipTransform(shortest_edge=37, crop_size=(37, 37))
    x = clip(rgb)
    crop = clip.center_crop(clip.resize(rgb)).astype(np.float64) / 255
    expected = (crop - np.array(clip.image_mean)) / np.array(clip.image_std)
    np.testing.assert_allclose(x.numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_clip_config_with_integer_sizes(tmp_path):
    config = {"size": 32, "crop_size": 30, "resample": 2, "image_mean": [0.5] * 3}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    clip = ClipTransform.from_pretrained(tmp_path)
    assert (clip.shortest_edge, clip.crop_size, clip.resample) == (32, (30, 30), 2)
    assert clip.image_mean == (0.5, 0.5, 0.5)
    assert clip(np.zeros((40, 60, 3), dtype=np.uint8)).shape == (3, 30, 30)
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        ClipTransform.from_pretrained(tmp_path / "nowhere")


def test_the_first_tower_directory_with_a_preprocessor_config_gives_the_transform(tmp_path):
    for name, side in (("first", 32), ("second", 48)):
        (tmp_path / name).mkdir()
        config = {"size": side, "crop_size": side}
        (tmp_path / name / "preprocessor_config.json").write_text(json.dumps(config))
    empty = tmp_path / "empty"
    empty.mkdir()
    found = ClipTransform.from_first_directory(None, empty, tmp_path / "second", tmp_path / "first")
    assert found is not None and found.crop_size == (48, 48)
    assert ClipTransform.from_first_directory(None, empty, tmp_path / "nowhere") is None


# --- load_image ----------------------------------------------------------------------------------


def _save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.mark.parametrize("suffix", ["png", "jpg", "bmp", "webp"])
def test_load_image_rgb_equals_cv2(tmp_path, rgb, suffix):
    path = _save(tmp_path / f"a.{suffix}", rgb)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == rgb.shape
    np.testing.assert_array_equal(image, _cv2_rgb(path))


def test_load_image_modes_equal_cv2(tmp_path, rgb):
    rng = np.random.default_rng(1)
    rgba = np.concatenate([rgb, rng.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)], 2)
    paths = [
        _save(tmp_path / "grey.png", rgb[:, :, 0]),
        _save(tmp_path / "grey.jpg", rgb[:, :, 0]),
        _save(tmp_path / "rgba.png", rgba),
    ]
    Image.fromarray(rgba).convert("LA").save(tmp_path / "la.png")
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png", transparency=3)
    Image.fromarray(rgb).convert("1").save(tmp_path / "bilevel.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    grey16 = rng.integers(0, 65536, (21, 34), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (21, 34, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)
    paths += [tmp_path / n for n in ("la.png", "palette.png", "bilevel.png", "cmyk.jpg")]
    paths += [tmp_path / "grey16.png", tmp_path / "rgb16.png"]
    for path in paths:
        image = load_image(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, path.name
        np.testing.assert_array_equal(image, _cv2_rgb(path), err_msg=path.name)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_load_image_applies_exif_orientation(tmp_path, orientation):
    image = np.zeros((16, 32, 3), dtype=np.uint8)
    image[:8, :8] = 255  # a white top-left corner shows the rotation
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, exif=exif, quality=100)
    loaded = load_image(path)
    assert loaded.shape == ((16, 32, 3) if orientation == 3 else (32, 16, 3))
    np.testing.assert_array_equal(loaded, _cv2_rgb(path))


def test_load_image_errors(tmp_path, rgb):
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png"):
        load_image(tmp_path / "text.png")
    for suffix in ("png", "jpg"):
        data = _save(tmp_path / f"full.{suffix}", rgb).read_bytes()
        (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=f"cut.{suffix}"):
            load_image(tmp_path / f"cut.{suffix}")


@pytest.mark.parametrize(
    "clip",
    [
        ClipTransform(shortest_edge=37, crop_size=(37, 37)),
        ClipTransform(shortest_edge=30, crop_size=(24, 28), do_rescale=False),
        ClipTransform(shortest_edge=30, crop_size=(30, 30), do_normalize=False),
    ],
)
def test_clip_value_table_gives_the_arithmetic_numbers(rgb, clip):
    """Per-value lookup == rescale in float64, cast, normalise in float32 on every pixel."""
    crop = clip.center_crop(clip.resize(rgb))
    x = (crop * clip.rescale_factor if clip.do_rescale else crop).astype(np.float32)
    if clip.do_normalize:
        mean = np.asarray(clip.image_mean, dtype=np.float32)
        x = (x - mean) / np.asarray(clip.image_std, dtype=np.float32)
    assert torch.equal(clip(rgb), torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))

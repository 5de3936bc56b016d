import numpy as np
import pytest
import torch

from model.segment_anything import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_sam_tiny


def test_pixel_statistics_are_constants_not_state():
    sam = build_sam_tiny(image_size=64)
    names = {name for name, _ in sam.named_buffers()} | set(sam.state_dict())
    assert not any("pixel_" in name for name in names)
    bf16 = sam.to(torch.bfloat16)  # the statistics stay float32 whatever the model's dtype
    white = bf16.preprocess(torch.full((1, 3, 64, 64), 255, dtype=torch.uint8))
    assert white.dtype == torch.float32
    expected = [(255 - m) / s for m, s in zip(SAM_PIXEL_MEAN, SAM_PIXEL_STD, strict=True)]
    assert white[0, :, 0, 0].tolist() == pytest.approx(expected)


def test_preprocess_normalises_then_zero_pads_bottom_right():
    sam = build_sam_tiny(image_size=64)
    image = torch.randint(0, 256, (1, 3, 40, 64), dtype=torch.uint8)
    x = sam.preprocess(image)
    assert x.shape == (1, 3, 64, 64)
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    torch.testing.assert_close(x[0, :, :40], (image[0].float() - mean) / std)
    assert x[..., 40:, :].abs().sum() == 0


def test_postprocess_masks_upsamples_crops_and_resizes():
    sam = build_sam_tiny(image_size=64)
    # A left/right step at the centre of the padded frame: after cropping the left half and
    # resizing to 10x20 the result is everywhere on the left side of the step.
    low_res = torch.ones(1, 1, 16, 16)
    low_res[..., 8:] = -1
    masks = sam.postprocess_masks(low_res, input_size=(64, 32), original_size=(10, 20))
    assert masks.shape == (1, 1, 10, 20)
    assert (masks[..., :15] > 0).all()
    # Unpadded, same size: upsampling to 64 and back is the identity on a constant.
    constant = sam.postprocess_masks(torch.full((2, 3, 16, 16), 0.5), (64, 64), (16, 16))
    torch.testing.assert_close(constant, torch.full((2, 3, 16, 16), 0.5))


@torch.no_grad()
def test_small_image_size_runs_end_to_end(randomize):
    sam = randomize(build_sam_tiny(image_size=256), seed=3)
    assert sam.prompt_encoder.image_embedding_size == (16, 16)
    assert sam.prompt_encoder.input_image_size == (256, 256)
    image = torch.randint(0, 256, (1, 3, 192, 256), dtype=torch.uint8)  # already resized
    embeddings = sam.image_encoder(sam.preprocess(image))
    assert embeddings.shape == (1, 256, 16, 16)
    sparse, dense = sam.prompt_encoder(text_embeds=torch.randn(3, 1, 256))
    dense_pe = sam.prompt_encoder.get_dense_pe()
    assert dense.shape == (3, 256, 16, 16) and dense_pe.shape == (1, 256, 16, 16)
    low_res, iou = sam.mask_decoder(embeddings, dense_pe, sparse, dense, multimask_output=False)
    assert low_res.shape == (3, 1, 64, 64) and iou.shape == (3, 1)
    masks = sam.postprocess_masks(low_res, input_size=(192, 256), original_size=(120, 160))
    assert masks.shape == (3, 1, 120, 160)
    assert torch.isfinite(masks).all()


@torch.no_grad()
def test_bfloat16_follows_the_fp32_result(randomize):
    sam = randomize(build_sam_tiny(image_size=128), seed=4)
    image = torch.randint(0, 256, (1, 3, 128, 96), dtype=torch.uint8)
    text = torch.randn(2, 1, 256)

    def run(model, dtype):
        embeddings = model.image_encoder(model.preprocess(image).to(dtype))
        sparse, dense = model.prompt_encoder(text_embeds=text.to(dtype))
        pe = model.prompt_encoder.get_dense_pe()
        masks, _ = model.mask_decoder(embeddings, pe, sparse, dense, multimask_output=False)
        return model.postprocess_masks(masks, (128, 96), (64, 48))

    reference = run(sam, torch.float32)
    result = run(sam.to(torch.bfloat16), torch.bfloat16)
    assert result.dtype == torch.bfloat16
    correlation = torch.corrcoef(torch.stack([reference.flatten(), result.float().flatten()]))
    assert correlation[0, 1] > 0.99


@pytest.mark.reference
def test_preprocess_matches_reference(tiny_sam, preprocess_img1):
    resized = torch.from_numpy(preprocess_img1["sam_resized_uint8"]).permute(2, 0, 1)[None]
    x = tiny_sam.preprocess(resized)
    np.testing.assert_allclose(x.numpy(), preprocess_img1["sam_input"], atol=1e-5, rtol=0)


@pytest.mark.reference
def test_postprocess_masks_matches_reference(tiny_sam, sam_parts, preprocess_img1):
    input_size = tuple(preprocess_img1["resize"].tolist())
    original_size = tuple(preprocess_img1["original_size"].tolist())
    assert (input_size, original_size) == ((768, 1024), (240, 320))
    low_res = torch.from_numpy(sam_parts["low_res_masks"])
    masks = tiny_sam.postprocess_masks(low_res, input_size, original_size)
    np.testing.assert_allclose(masks.numpy(), sam_parts["postprocess_masks"], atol=1e-4, rtol=1e-4)


@pytest.mark.reference
def test_whole_sam_path_matches_reference(tiny_sam, preprocess_img1, text_embeds, sam_parts):
    resized = torch.from_numpy(preprocess_img1["sam_resized_uint8"]).permute(2, 0, 1)[None]
    with torch.inference_mode():
        embeddings = tiny_sam.image_encoder(tiny_sam.preprocess(resized))
        sparse, dense = tiny_sam.prompt_encoder(text_embeds=text_embeds)
        low_res, _ = tiny_sam.mask_decoder(
            embeddings, tiny_sam.prompt_encoder.get_dense_pe(), sparse, dense, False
        )
        masks = tiny_sam.postprocess_masks(low_res, (768, 1024), (240, 320))
    np.testing.assert_allclose(masks.numpy(), sam_parts["postprocess_masks"], atol=1e-4, rtol=1e-4)

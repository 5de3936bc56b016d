import numpy as np
import pytest
import torch

from model.segment_anything import build_sam_tiny


@pytest.fixture
def small_sam(randomize):
    """A random tiny SAM at 128 px (8x8 embedding grid, 32x32 low-res masks)."""
    return randomize(build_sam_tiny(image_size=128), seed=5)


def decode(sam, image_embeddings, text_embeds, multimask_output=False):
    sparse, dense = sam.prompt_encoder(text_embeds=text_embeds)
    return sam.mask_decoder(
        image_embeddings=image_embeddings,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
    )


@torch.no_grad()
def test_many_prompts_in_one_call_equal_one_by_one(small_sam):
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, 256, 8, 8, generator=generator)
    text = torch.randn(5, 1, 256, generator=generator)
    masks, iou = decode(small_sam, embedding, text)
    assert masks.shape == (5, 1, 32, 32) and iou.shape == (5, 1)
    for i in range(5):
        mask_i, iou_i = decode(small_sam, embedding, text[i : i + 1])
        torch.testing.assert_close(masks[i : i + 1], mask_i, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(iou[i : i + 1], iou_i, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masks[0], masks[1])


@torch.no_grad()
def test_image_embeddings_may_come_one_per_prompt(small_sam):
    generator = torch.Generator().manual_seed(1)
    embedding = torch.randn(1, 256, 8, 8, generator=generator)
    text = torch.randn(3, 2, 256, generator=generator)
    shared = decode(small_sam, embedding, text, multimask_output=True)
    repeated = decode(small_sam, embedding.expand(3, -1, -1, -1).clone(), text, True)
    assert shared[0].shape == (3, 3, 32, 32) and shared[1].shape == (3, 3)
    torch.testing.assert_close(shared, repeated)
    with pytest.raises(ValueError, match="expected 1 or the number of prompts 3"):
        decode(small_sam, embedding.expand(2, -1, -1, -1), text)


@torch.no_grad()
def test_multimask_output_selects_tokens_one_to_three(small_sam):
    embedding = torch.randn(1, 256, 8, 8)
    text = torch.randn(2, 1, 256)
    sparse, dense = small_sam.prompt_encoder(text_embeds=text)
    pe = small_sam.prompt_encoder.get_dense_pe()
    all_masks, all_iou = small_sam.mask_decoder.predict_masks(embedding, pe, sparse, dense)
    single = decode(small_sam, embedding, text, multimask_output=False)
    multi = decode(small_sam, embedding, text, multimask_output=True)
    torch.testing.assert_close(single[0], all_masks[:, :1])
    torch.testing.assert_close(multi[1], all_iou[:, 1:])


@pytest.mark.reference
@pytest.mark.parametrize("multimask_output", [False, True])
def test_mask_decoder_matches_reference(
    tiny_sam, image_embeddings, text_embeds, sam_parts, multimask_output
):
    with torch.inference_mode():
        masks, iou = decode(tiny_sam, image_embeddings, text_embeds, multimask_output)
    tolerance = {"atol": 1e-4, "rtol": 1e-4}
    if multimask_output:
        assert masks.shape == (2, 3, 256, 256)
        np.testing.assert_allclose(iou.numpy(), sam_parts["iou_predictions_multimask"], **tolerance)
    else:
        np.testing.assert_allclose(masks.numpy(), sam_parts["low_res_masks"], **tolerance)
        np.testing.assert_allclose(iou.numpy(), sam_parts["iou_predictions"], **tolerance)

"""OFFICIAL_SAM_OPS: the official SAM's numbers (the original implementation's on the reference
tiny SAM, and the module calls LISA made before the operations existed, to the last bit), and
the dispatch of segmenter_ops."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam2Config, Sam2Model

from model.LISA import LISAForCausalLM
from model.segment_anything import build_sam_tiny
from model.segmenters import decode_per_image, segmenter_ops
from model.segmenters.sam import OFFICIAL_SAM_OPS
from model.segmenters.sam2 import SAM2_OPS
from tests.model.tiny import tiny_config
from utils.sam_input import longest_side_shape, sam_encoder_input, stack_sam_pixels

from .conftest import random_tiny_sam_state_dict

LISA_SAM_PREFIX = "model.visual_model."


@pytest.fixture(scope="module")
def sam():
    model = build_sam_tiny(image_size=64)
    model.load_state_dict(random_tiny_sam_state_dict(seed=5))
    return model


def uint8_batch(height: int, width: int, pad: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(1, 3, height + pad, width + pad, dtype=torch.uint8)
    images[0, :, :height, :width] = torch.randint(0, 256, (3, height, width), generator=generator)
    return images


@torch.no_grad()
def test_the_module_calls_lisa_made_to_the_last_bit(sam):
    height, width = 30, 45
    resize = longest_side_shape(height, width, 64)
    images = uint8_batch(height, width)
    prompts = torch.randn(3, 256)
    embedding = OFFICIAL_SAM_OPS.encode(sam, images, (height, width), resize)
    masks = OFFICIAL_SAM_OPS.decode(sam, embedding, prompts, resize, (height, width))

    expected_embedding = sam.image_encoder(
        sam_encoder_input(images, [(height, width)], [resize], sam.image_size)
    )
    sparse, dense = sam.prompt_encoder(text_embeds=prompts.unsqueeze(1))
    low_res, _ = sam.mask_decoder(
        image_embeddings=expected_embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    expected = sam.postprocess_masks(low_res, resize, (height, width))[:, 0]
    assert torch.equal(embedding, expected_embedding)
    assert masks.shape == (3, height, width)
    assert torch.equal(masks, expected)


@torch.no_grad()
def test_lisa_decodes_through_the_operations():
    torch.manual_seed(0)
    model = LISAForCausalLM(tiny_config()).eval()
    sam = model.model.visual_model
    images = stack_sam_pixels(
        [uint8_batch(40, 60, 0, seed=1)[0], uint8_batch(60, 45, 0, seed=2)[0]]
    )
    sizes = [(40, 60), (60, 45)]
    resizes = [longest_side_shape(h, w, sam.image_size) for h, w in sizes]
    prompts = [torch.randn(2, 256), torch.randn(1, 256)]
    expected = decode_per_image(sam, images, prompts, resizes, sizes)
    masks = model.decode_masks(images, prompts, resizes, sizes)
    assert [m.shape for m in masks] == [(2, 40, 60), (1, 60, 45)]
    assert all(torch.equal(a, b) for a, b in zip(masks, expected, strict=True))


def test_blank_and_sizes(sam):
    blank = OFFICIAL_SAM_OPS.blank(sam, torch.zeros(1))
    assert blank.shape == (1, 256, 4, 4) and blank.dtype == torch.float32 and not blank.any()
    assert OFFICIAL_SAM_OPS.prompt_width(sam) == 256
    assert OFFICIAL_SAM_OPS.input_size(sam) == 64
    with torch.no_grad():
        masks = OFFICIAL_SAM_OPS.decode(sam, blank, torch.zeros(0, 256), (64, 32), (20, 10))
    assert masks.shape == (0, 20, 10)


def test_segmenter_ops_dispatch(sam):
    assert segmenter_ops(sam) is OFFICIAL_SAM_OPS and OFFICIAL_SAM_OPS.kind == "sam"
    with torch.device("meta"):
        sam2 = Sam2Model(Sam2Config())
    assert segmenter_ops(sam2) is SAM2_OPS
    with pytest.raises(TypeError, match="Linear"):
        segmenter_ops(torch.nn.Linear(2, 2))


@pytest.mark.reference
@torch.no_grad()
def test_the_original_implementations_masks(tiny_lisa_dir: Path, tiny_cases_dir: Path):
    """On the reference tiny SAM and img1, from its decoded pixels: the original code's masks
    (reference README C.7) within the reference's float32 tolerance."""
    weights = torch.load(tiny_lisa_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    sam = build_sam_tiny()
    sam.load_state_dict(
        {k[len(LISA_SAM_PREFIX) :]: v for k, v in weights.items() if k.startswith(LISA_SAM_PREFIX)}
    )
    with np.load(tiny_cases_dir / "sam_parts_img1.npz") as parts:
        text_embeds = torch.from_numpy(parts["text_embeds"])  # [2, 1, 256]
        expected = parts["postprocess_masks"][:, 0]  # [2, 240, 320]
    pixels = np.array(Image.open(tiny_cases_dir / "img1.png").convert("RGB"))
    images = torch.zeros(1, 3, 256, 320, dtype=torch.uint8)  # a batch padded past the image
    images[0, :, :240] = torch.from_numpy(pixels).permute(2, 0, 1)
    embedding = OFFICIAL_SAM_OPS.encode(sam, images, (240, 320), (768, 1024))
    masks = OFFICIAL_SAM_OPS.decode(sam, embedding, text_embeds[:, 0], (768, 1024), (240, 320))
    np.testing.assert_allclose(masks.numpy(), expected, atol=1e-4, rtol=1e-4)

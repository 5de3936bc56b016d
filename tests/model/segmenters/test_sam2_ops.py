"""SAM2_OPS on the tiny SAM 2 checkpoint: Sam2ImageProcessor's preprocessing, equality with
Sam2Model's own forward, masks at the original size, gradients, bf16."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam2Model
from transformers.image_processing_backends import PilBackend

from model.segmenters import decode_per_image, segmenter_ops
from model.segmenters.load import load_segmenter
from model.segmenters.sam2 import SAM2_OPS, Sam2ImageEmbedding, sam2_pixel_values
from utils.sam_input import pil_bilinear_in_torch

PROCESSOR_SETTINGS = (
    "do_convert_rgb",
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)


@pytest.fixture(scope="module")
def sam2(tiny_sam2_dir) -> Sam2Model:
    return load_segmenter(tiny_sam2_dir)


def sam2_processor(directory, side: int | None = None) -> PilBackend:
    """Sam2ImageProcessor's PIL path: transformers' PIL backend with the settings of the
    checkpoint's preprocessor_config.json (Sam2ImageProcessor itself needs torchvision)."""
    settings = json.loads((directory / "preprocessor_config.json").read_text())
    settings = {name: settings[name] for name in PROCESSOR_SETTINGS}
    if side is not None:
        settings["size"] = {"height": side, "width": side}
    return PilBackend(**settings)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def in_corner(image: np.ndarray, pad: tuple[int, int] = (7, 3)) -> torch.Tensor:
    """LisaBatch.images of one image: [1, 3, H + pad, W + pad] uint8, the image top-left."""
    height, width = image.shape[:2]
    canvas = torch.zeros(1, 3, height + pad[0], width + pad[1], dtype=torch.uint8)
    canvas[0, :, :height, :width] = torch.from_numpy(image).permute(2, 0, 1)
    return canvas


def sam2_post_processing(pred_masks: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """Sam2ImageProcessor.post_process_masks(binarize=False) of one image's [1, n, 1, h, w]
    logits: bilinear upsampling straight to the original size -> [n, H, W]."""
    return F.interpolate(pred_masks[0], original_size, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize(
    ("side", "height", "width"),
    [(64, 100, 150), (64, 30, 50), (1024, 240, 320)],  # down, up, the full-size input
)
def test_pixel_values_are_the_processors(tiny_sam2_dir, side, height, width):
    image = random_image(height, width)
    expected = sam2_processor(tiny_sam2_dir, side)(images=[Image.fromarray(image)])
    expected = torch.from_numpy(np.stack(expected["pixel_values"]))
    ours = sam2_pixel_values(in_corner(image), (height, width), side)
    assert ours.dtype == torch.float32 and ours.shape == (1, 3, side, side)
    assert torch.equal(ours, expected)


def test_the_device_resize_is_pillows_for_a_square_target():
    """Off the CPU the resize runs in torch; the aspect ratio changes (no longest-side fit)."""
    image = random_image(45, 70, seed=2)
    pillow = np.array(Image.fromarray(image).resize((64, 64), Image.Resampling.BILINEAR))
    ours = pil_bilinear_in_torch(torch.from_numpy(image).permute(2, 0, 1), (64, 64))
    assert torch.equal(ours.permute(1, 2, 0), torch.from_numpy(pillow))


def test_pixel_values_refuse_what_is_not_one_uint8_image():
    with pytest.raises(ValueError, match="uint8"):
        sam2_pixel_values(torch.zeros(1, 3, 64, 64), (64, 64), 64)
    with pytest.raises(ValueError, match="does not fit"):
        sam2_pixel_values(torch.zeros(1, 3, 20, 20, dtype=torch.uint8), (30, 20), 64)
    with pytest.raises(ValueError, match="one RGB image"):
        sam2_pixel_values(torch.zeros(2, 3, 20, 20, dtype=torch.uint8), (20, 20), 64)


def test_widths_and_sizes_come_from_the_config(sam2):
    ops = segmenter_ops(sam2)
    assert ops is SAM2_OPS and ops.kind == "sam2"
    assert ops.prompt_width(sam2) == sam2.config.prompt_encoder_config.hidden_size == 32
    assert ops.input_size(sam2) == sam2.config.prompt_encoder_config.image_size == 64


def point_prompts(sam2: Sam2Model, points: torch.Tensor) -> torch.Tensor:
    """What Sam2's prompt encoder makes of one positive point per mask: [n, 2, C] (the point and
    the padding point it appends)."""
    labels = torch.ones(points.shape[:3], dtype=torch.int32)
    sparse, _ = sam2.prompt_encoder(
        input_points=points, input_labels=labels, input_boxes=None, input_masks=None
    )
    return sparse[0]


@pytest.mark.parametrize("mode", ["train", "eval"])
@torch.no_grad()
def test_masks_equal_sam2models_own(sam2, tiny_sam2_dir, mode):
    """Our encode + decode of the prompt encoder's point tokens give Sam2Model's forward on the
    processor's pixel values, post-processed as Sam2 does, to the last bit. Ours reads the
    single-mask output in both modes; Sam2Model does in training, and in eval when its fallback
    to the multimask outputs is off."""
    height, width = 50, 70
    image = random_image(height, width, seed=3)
    pixel_values = sam2_processor(tiny_sam2_dir)(images=[Image.fromarray(image)])
    # In the standard layout: a convolution's rounding follows the memory layout of its input.
    pixel_values = torch.from_numpy(np.stack(pixel_values["pixel_values"])).contiguous()
    points = torch.tensor([[[[10.0, 20.0]], [[40.0, 5.0]], [[63.0, 63.0]]]])  # [1, 3, 1, 2]
    sam2.train(mode == "train")
    fallback = sam2.mask_decoder.dynamic_multimask_via_stability
    try:
        sam2.mask_decoder.dynamic_multimask_via_stability = False
        theirs = sam2(pixel_values=pixel_values, input_points=points, multimask_output=False)
    finally:
        sam2.mask_decoder.dynamic_multimask_via_stability = fallback
    expected = sam2_post_processing(theirs.pred_masks, (height, width))

    embedding = SAM2_OPS.encode(sam2, in_corner(image), (height, width), (0, 0))
    masks = SAM2_OPS.decode(sam2, embedding, point_prompts(sam2, points), (0, 0), (height, width))
    sam2.eval()
    assert masks.shape == (3, height, width) and masks.dtype == torch.float32
    assert torch.equal(masks, expected)
    assert sam2.mask_decoder.dynamic_multimask_via_stability == fallback  # restored


@torch.no_grad()
def test_one_token_prompts_and_the_original_size(sam2):
    image = in_corner(random_image(37, 90, seed=4), pad=(20, 1))
    embedding = SAM2_OPS.encode(sam2, image, (37, 90), (0, 0))
    assert isinstance(embedding, Sam2ImageEmbedding)
    assert embedding.image_embedding.shape == (1, 32, 4, 4)
    assert embedding.features_s0.shape == (1, 32, 16, 16)
    assert embedding.features_s1.shape == (1, 32, 8, 8)
    prompts = torch.randn(2, 32)
    masks = SAM2_OPS.decode(sam2, embedding, prompts, (0, 0), (37, 90))
    assert masks.shape == (2, 37, 90)
    assert torch.equal(masks, SAM2_OPS.decode(sam2, embedding, prompts[:, None], (0, 0), (37, 90)))
    # Masks are those of their own prompt: one prompt alone gives its row.
    alone = SAM2_OPS.decode(sam2, embedding, prompts[1:], (0, 0), (37, 90))
    torch.testing.assert_close(alone[0], masks[1], rtol=1e-5, atol=1e-9)
    # The pixels around the image in the batch tensor are not looked at.
    other_padding = in_corner(random_image(37, 90, seed=4), pad=(0, 0))
    again = SAM2_OPS.encode(sam2, other_padding, (37, 90), (0, 0))
    assert torch.equal(again.image_embedding, embedding.image_embedding)


@torch.no_grad()
def test_the_no_memory_embedding_is_added(sam2):
    image = in_corner(random_image(40, 40, seed=5))
    with_it = SAM2_OPS.encode(sam2, image, (40, 40), (0, 0))
    saved = sam2.no_memory_embedding.clone()
    try:
        sam2.no_memory_embedding.zero_()
        without = SAM2_OPS.encode(sam2, image, (40, 40), (0, 0))
    finally:
        sam2.no_memory_embedding.copy_(saved)
    difference = with_it.image_embedding - without.image_embedding
    torch.testing.assert_close(difference, saved.view(1, -1, 1, 1).expand_as(difference))
    assert torch.equal(with_it.features_s0, without.features_s0)


@torch.no_grad()
def test_no_prompt_and_the_blank_embedding(sam2):
    blank = SAM2_OPS.blank(sam2, torch.zeros(1))
    assert blank.image_embedding.shape == (1, 32, 4, 4) and not blank.image_embedding.any()
    assert blank.features_s0.shape == (1, 32, 16, 16) and blank.features_s1.shape == (1, 32, 8, 8)
    assert SAM2_OPS.decode(sam2, blank, torch.randn(2, 32), (0, 0), (9, 11)).shape == (2, 9, 11)
    assert SAM2_OPS.decode(sam2, blank, torch.zeros(0, 32), (0, 0), (9, 11)).shape == (0, 9, 11)
    images = torch.stack([in_corner(random_image(30, 40), pad=(10, 0))[0]] * 2)
    per_image = decode_per_image(
        sam2, images, [torch.randn(3, 32), torch.zeros(0, 32)], [(0, 0)] * 2, [(30, 40), (20, 10)]
    )
    assert [m.shape for m in per_image] == [(3, 30, 40), (0, 20, 10)]


def test_gradients_reach_the_decoder_not_the_frozen_encoder(sam2):
    sam2.train()
    try:
        with torch.no_grad():
            embedding = SAM2_OPS.encode(sam2, in_corner(random_image(30, 30)), (30, 30), (0, 0))
        prompts = torch.randn(2, 32, requires_grad=True)
        masks = SAM2_OPS.decode(sam2, embedding, prompts, (0, 0), (30, 30))
        (masks.sigmoid() * torch.linspace(-1, 1, 30)).sum().backward()
        grads = {name: p.grad for name, p in sam2.named_parameters()}
        assert all(grads[name] is None for name in grads if name.startswith("vision_encoder."))
        trained = [
            "mask_decoder.conv_s0.weight",  # the high-resolution maps' projections train too
            "mask_decoder.conv_s1.weight",
            "mask_decoder.upscale_conv1.weight",
            "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
            "mask_decoder.output_hypernetworks_mlps.0.proj_out.weight",
        ]
        assert all(grads[name] is not None and grads[name].abs().sum() > 0 for name in trained)
        assert prompts.grad is not None and prompts.grad.abs().sum() > 0
        sam2.zero_grad(set_to_none=True)
        # No prompt: every weight that decodes still gets a gradient, of zeros.
        nothing = SAM2_OPS.decode(sam2, embedding, torch.zeros(0, 32), (0, 0), (30, 30))
        nothing.sum().backward()
        for name in trained:
            grad = sam2.get_parameter(name).grad
            assert grad is not None and not grad.any()
    finally:
        sam2.zero_grad(set_to_none=True)
        sam2.eval()


@torch.no_grad()
def test_bf16_follows_the_module(tiny_sam2_dir):
    model = load_segmenter(tiny_sam2_dir)
    image = in_corner(random_image(30, 40, seed=6))
    prompts = torch.randn(2, 32)
    full = SAM2_OPS.decode(
        model, SAM2_OPS.encode(model, image, (30, 40), (0, 0)), prompts, 0, (30, 40)
    )
    model.to(torch.bfloat16)
    embedding = SAM2_OPS.encode(model, image, (30, 40), (0, 0))
    assert embedding.image_embedding.dtype == torch.bfloat16
    half = SAM2_OPS.decode(model, embedding, prompts, (0, 0), (30, 40))
    assert half.dtype == torch.bfloat16 and half.shape == full.shape
    torch.testing.assert_close(half.float(), full, rtol=0.1, atol=0.05 * full.abs().max().item())


@pytest.mark.slow
def test_under_a_zero3_engine(tiny_sam2_dir):
    """Partitioned weights gathered where the decoder reads them directly (the no-memory and
    no-mask embeddings, the output tokens); the same masks; the decoder trains."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.model.segmenters.zero3_run", str(tiny_sam2_dir)],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [line.split() for line in result.stdout.splitlines() if line.startswith("masks ")]
    assert [(step[1], step[3]) for step in steps] == [("2", "True"), ("0", "True")]
    assert float(steps[0][-1]) > 0

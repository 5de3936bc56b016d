"""The model takes the uint8 pixels the data code hands over and makes SAM's input where SAM
runs: the same losses, masks and gradients as the float32 inputs the data code made before."""

import dataclasses

import numpy as np
import pytest
import torch

from model.LISA import LISAForCausalLM
from tests.utils.test_sam_input import former_sam_input
from utils.batch import LisaBatch
from utils.sam_input import stack_sam_pixels
from utils.transforms import SamTransform

from .test_lisa import make_batch
from .test_lisa_jobs import typed


@pytest.fixture(scope="module")
def model(tiny_random_lisa_dir):
    return LISAForCausalLM.from_pretrained(tiny_random_lisa_dir)


def uint8_and_float(batch: LisaBatch, side: int) -> tuple[LisaBatch, LisaBatch]:
    """The batch with random pictures of its images' sizes: as the data code makes them now
    (uint8 pixels), and as it made them before (resized, normalised, padded float32)."""
    rng = np.random.default_rng(0)
    sam = SamTransform(side)
    pictures = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in batch.original_sizes]
    prepared = [sam(picture) for picture in pictures]
    pixels = dataclasses.replace(
        batch,
        images=stack_sam_pixels([p for p, _ in prepared]),
        resize_sizes=[size for _, size in prepared],
    )
    floats = dataclasses.replace(
        pixels, images=torch.stack([former_sam_input(picture, side) for picture in pictures])
    )
    return pixels, floats


def test_training_losses_and_gradients_equal_the_float_inputs(model):
    pixels, floats = uint8_and_float(typed(make_batch((2, 1))), side=128)
    assert pixels.images.dtype == torch.uint8 and pixels.images.shape == (2, 3, 64, 70)
    results = []
    for batch in (pixels.to("cpu", torch.float32), floats.to("cpu", torch.float32)):
        model.zero_grad()
        output = model(batch)
        output.loss.backward()
        encoder_grad = model.model.visual_model.image_encoder.patch_embed.proj.weight.grad
        results.append((output.loss.detach(), output.mask_loss.detach(), encoder_grad.clone()))
    model.zero_grad()
    for from_uint8, from_float in zip(*results, strict=True):
        assert torch.equal(from_uint8, from_float)
    assert results[0][2].abs().sum() > 0  # the encoder did see the images


def test_masks_equal_the_float_inputs(model):
    pixels, floats = uint8_and_float(typed(make_batch((2, 1, 2))), side=128)
    with torch.no_grad():
        from_uint8 = model.predict_masks(pixels.to("cpu"))
        from_float = model.predict_masks(floats)
    for a, b in zip(from_uint8.pred_masks, from_float.pred_masks, strict=True):
        assert torch.equal(a, b)

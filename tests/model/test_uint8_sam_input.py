"""The model takes the uint8 SAM inputs the data code makes and normalises them where SAM runs:
the same losses, masks and gradients as the normalised float32 inputs, on every job."""

import dataclasses

import numpy as np
import pytest
import torch

from model.LISA import LISAForCausalLM
from utils.batch import LisaBatch
from utils.sam_input import normalize_sam_input
from utils.transforms import SamTransform

from .test_lisa import make_batch
from .test_lisa_jobs import typed


@pytest.fixture(scope="module")
def model(tiny_random_lisa_dir):
    return LISAForCausalLM.from_pretrained(tiny_random_lisa_dir)


def with_uint8_images(batch: LisaBatch, side: int) -> LisaBatch:
    """The batch with real uint8 SAM inputs (random pictures of its images' original sizes)."""
    rng = np.random.default_rng(0)
    sam = SamTransform(side)
    prepared = [
        sam(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for size in batch.original_sizes
    ]
    batch.images = torch.stack([pixels for pixels, _ in prepared])
    batch.resize_sizes = tuple(size for _, size in prepared)
    return batch


def as_float(batch: LisaBatch) -> LisaBatch:
    """The same batch with the float32 SAM inputs the data code used to make."""
    return dataclasses.replace(batch, images=normalize_sam_input(batch.images, batch.resize_sizes))


def test_training_losses_and_gradients_equal_the_float_inputs(model):
    pixels = with_uint8_images(typed(make_batch((2, 1))), side=128)
    assert pixels.images.dtype == torch.uint8
    floats = as_float(pixels)
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
    pixels = with_uint8_images(typed(make_batch((2, 1, 2))), side=128)
    with torch.no_grad():
        from_uint8 = model.predict_masks(pixels.to("cpu"))
        from_float = model.predict_masks(as_float(pixels))
    for a, b in zip(from_uint8.pred_masks, from_float.pred_masks, strict=True):
        assert torch.equal(a, b)

"""SAM inputs travel as uint8 and are normalised where SAM runs, to the very numbers of the
float32 normalise-then-pad the data code used to do on the CPU."""

import numpy as np
import pytest
import torch

from utils.batch import LisaBatch
from utils.sam_input import SAM_PIXEL_MEAN, SAM_PIXEL_STD, normalize_sam_input
from utils.transforms import SamTransform


def float_sam_input(resized: np.ndarray, side: int) -> torch.Tensor:
    """The former float path, step by step: float32 (x - mean) / std, then zeros to S x S."""
    height, width = resized.shape[:2]
    out = np.zeros((3, side, side), dtype=np.float32)
    image = out[:, :height, :width]
    image[...] = resized.transpose(2, 0, 1)
    image -= np.asarray(SAM_PIXEL_MEAN, dtype=np.float32).reshape(3, 1, 1)
    image /= np.asarray(SAM_PIXEL_STD, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(out)


# (H, W): landscape, portrait, square, already at size, thinner than 1 % of its length
SHAPES = [(37, 53), (53, 37), (40, 40), (64, 64), (120, 7), (3, 250), (200, 130)]


def test_normalised_uint8_equals_the_float_path():
    rng = np.random.default_rng(0)
    sam = SamTransform(64)
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in SHAPES]
    prepared = [sam(image) for image in images]
    pixels = torch.stack([p for p, _ in prepared])  # what collate_fn stacks
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(SHAPES), 3, 64, 64)
    sizes = [size for _, size in prepared]
    normalized = normalize_sam_input(pixels, sizes)
    assert normalized.dtype == torch.float32
    for i, image in enumerate(images):
        expected = float_sam_input(sam.resize(image), 64)
        assert torch.equal(normalized[i], expected), SHAPES[i]
        height, width = sizes[i]  # the padding is +0.0, not -mean / std
        assert not torch.signbit(normalized[i, :, height:]).any()
        assert not torch.signbit(normalized[i, :, :, width:]).any()


def test_every_value_normalises_as_before():
    values = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)
    pixels, size = SamTransform(16)(values)
    assert torch.equal(normalize_sam_input(pixels[None], [size])[0], float_sam_input(values, 16))


def test_float_inputs_pass_unchanged_and_other_dtypes_are_refused():
    already = torch.randn(2, 3, 8, 8)
    assert normalize_sam_input(already, [(8, 8), (4, 8)]) is already
    with pytest.raises(ValueError, match="uint8 or float"):
        normalize_sam_input(torch.zeros(1, 3, 8, 8, dtype=torch.int16), [(8, 8)])
    with pytest.raises(ValueError, match="1 resize sizes for 2 SAM inputs"):
        normalize_sam_input(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [(8, 8)])


def test_a_batch_moves_its_sam_input_as_uint8():
    pixels, size = SamTransform(16)(np.full((10, 16, 3), 200, dtype=np.uint8))
    batch = LisaBatch(
        images=pixels[None],
        images_clip=torch.randn(1, 3, 8, 8),
        input_ids=torch.tensor([[1, -200, 5]]),
        attention_mask=torch.ones(1, 3, dtype=torch.bool),
        offset=[0, 1],
        resize_sizes=[size],
        original_sizes=[(10, 16)],
    )
    moved = batch.to("meta", torch.float16)
    assert moved.images.dtype == torch.uint8 and moved.images.device.type == "meta"
    assert moved.images_clip.dtype == torch.float16

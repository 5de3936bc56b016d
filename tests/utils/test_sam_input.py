"""SAM inputs travel as the decoded uint8 pixels and become the encoder's input where SAM runs,
with the very numbers of the former path: Pillow's bilinear resize, then float32 (x - mean) / std,
then zeros to S x S, all on the CPU in the data loaders."""

import numpy as np
import pytest
import torch
from PIL import Image

from utils.batch import LisaBatch
from utils.sam_input import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    pil_bilinear_in_torch,
    resize_bilinear_like_pil,
    sam_encoder_input,
    stack_sam_pixels,
)
from utils.transforms import SamTransform, longest_side_shape


def former_sam_input(image: np.ndarray, side: int) -> torch.Tensor:
    """The former data path, step by step: Pillow's resize, float32 (x - mean) / std, pad."""
    height, width = longest_side_shape(image.shape[0], image.shape[1], side)
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    out = np.zeros((3, side, side), dtype=np.float32)
    inside = out[:, :height, :width]
    inside[...] = resized.transpose(2, 0, 1)
    inside -= np.asarray(SAM_PIXEL_MEAN, dtype=np.float32).reshape(3, 1, 1)
    inside /= np.asarray(SAM_PIXEL_STD, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(out)


def pillow_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def torch_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    pixels = torch.from_numpy(image).permute(2, 0, 1)
    return pil_bilinear_in_torch(pixels, (height, width)).permute(1, 2, 0).numpy()


# (H, W): landscape, portrait, square, already at size, larger than the input side (shrunk
# with Pillow's antialiasing), thinner than 1 % of its length
SHAPES = [(37, 53), (53, 37), (40, 40), (64, 64), (150, 97), (120, 7), (3, 250), (200, 130)]


def test_encoder_input_of_uint8_pixels_equals_the_former_path():
    rng = np.random.default_rng(0)
    sam = SamTransform(64)
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in SHAPES]
    prepared = [sam(image) for image in images]
    pixels = stack_sam_pixels([p for p, _ in prepared])  # what collate_fn does
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(SHAPES), 3, 200, 250)
    sizes = [size for _, size in prepared]
    encoder_input = sam_encoder_input(pixels, SHAPES, sizes, side=64)
    assert encoder_input.dtype == torch.float32 and encoder_input.shape == (len(SHAPES), 3, 64, 64)
    for i, image in enumerate(images):
        assert torch.equal(encoder_input[i], former_sam_input(image, 64)), SHAPES[i]
        height, width = sizes[i]  # the padding is +0.0, not -mean / std
        assert not torch.signbit(encoder_input[i, :, height:]).any()
        assert not torch.signbit(encoder_input[i, :, :, width:]).any()


def test_every_value_normalises_as_before():
    values = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)
    pixels, size = SamTransform(16)(values)
    encoder_input = sam_encoder_input(pixels[None], [(16, 16)], [size], side=16)[0]
    assert torch.equal(encoder_input, former_sam_input(values, 16))


def random_sizes(rng: np.random.Generator, count: int):
    """(H, W, h, w): any sizes, and longest-side targets of very thin images."""
    for _ in range(count):
        yield tuple(int(v) for v in rng.integers(1, 160, 4))
    for _ in range(count):
        height, width = int(rng.integers(1, 400)), int(rng.integers(1, 5))
        if rng.random() < 0.5:
            height, width = width, height
        new_height, new_width = longest_side_shape(height, width, 128)
        yield height, width, max(new_height, 1), max(new_width, 1)


def test_the_torch_resize_equals_pillow_for_any_sizes():
    rng = np.random.default_rng(1)
    cases = [(1, 1, 5, 7), (5, 7, 1, 1), (701, 3, 128, 1), (3, 701, 1, 128), (250, 2, 120, 1)]
    for height, width, new_height, new_width in [*cases, *random_sizes(rng, 40)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = pillow_resize(image, new_height, new_width)
        got = torch_resize(image, new_height, new_width)
        assert np.array_equal(got, expected), (height, width, new_height, new_width)
    pixels = torch.from_numpy(image).permute(2, 0, 1)  # on the CPU, Pillow itself
    assert torch.equal(
        resize_bilinear_like_pil(pixels, (9, 4)),
        torch.from_numpy(pillow_resize(image, 9, 4)).permute(2, 0, 1),
    )


def test_stacking_pads_with_zeros_and_stacks_equal_sizes():
    a, b = torch.full((3, 2, 5), 7, dtype=torch.uint8), torch.full((3, 4, 3), 9, dtype=torch.uint8)
    stacked = stack_sam_pixels([a, b])
    assert stacked.shape == (2, 3, 4, 5)
    assert torch.equal(stacked[0, :, :2], a) and stacked[0, :, 2:].sum() == 0
    assert torch.equal(stacked[1, :, :, :3], b) and stacked[1, :, :, 3:].sum() == 0
    floats = [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]
    assert torch.equal(stack_sam_pixels(floats), torch.stack(floats))


def test_float_inputs_pass_unchanged_and_bad_inputs_are_one_error():
    already = torch.randn(2, 3, 8, 8)
    assert sam_encoder_input(already, [(5, 8), (8, 4)], [(5, 8), (8, 4)], side=8) is already
    pixels = torch.zeros(1, 3, 10, 20, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8 pixels or float"):
        sam_encoder_input(pixels.short(), [(10, 20)], [(5, 10)], side=10)
    with pytest.raises(ValueError, match="1 original sizes and 2 resize sizes for 1 images"):
        sam_encoder_input(pixels, [(10, 20)], [(5, 10), (5, 10)], side=10)
    with pytest.raises(ValueError, match="original size 12x20 exceeds the 10x20 pixels"):
        sam_encoder_input(pixels, [(12, 20)], [(6, 10)], side=10)
    with pytest.raises(ValueError, match=r"resize size \(6, 10\), but .* is \(5, 10\)"):
        sam_encoder_input(pixels, [(10, 20)], [(6, 10)], side=10)
    with pytest.raises(ValueError, match="too narrow"):
        SamTransform(10)(np.zeros((1, 40, 3), dtype=np.uint8))


def test_a_batch_moves_its_sam_input_as_uint8():
    pixels, size = SamTransform(16)(np.full((10, 24, 3), 200, dtype=np.uint8))
    assert pixels.shape == (3, 10, 24) and size == (7, 16)
    batch = LisaBatch(
        images=pixels[None],
        images_clip=torch.randn(1, 3, 8, 8),
        input_ids=torch.tensor([[1, -200, 5]]),
        attention_mask=torch.ones(1, 3, dtype=torch.bool),
        offset=[0, 1],
        resize_sizes=[size],
        original_sizes=[(10, 24)],
    )
    moved = batch.to("meta", torch.float16)
    assert moved.images.dtype == torch.uint8 and moved.images.device.type == "meta"
    assert moved.images_clip.dtype == torch.float16

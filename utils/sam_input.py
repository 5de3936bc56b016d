"""The SAM encoder's input, made where the encoder runs.

Images travel from the data loaders to the model as their decoded ``uint8`` pixels, padded with
zeros to the largest height and width of the batch (:func:`stack_sam_pixels`). On the model's
device, :func:`sam_encoder_input` resizes each (longest side to the encoder's input side, with
Pillow's bilinear filter and Pillow's numbers: :func:`resize_bilinear_like_pil`), normalises it
and zero-pads it to a square: SAM's ``ResizeLongestSide``, normalise and pad, bit for bit. The
data loaders move the decoded image instead of a 1024 x 1024 float32 tensor (12 MB), and their
CPUs skip the resize, the largest part of a sample's preparation. A leaf module (torch, numpy,
Pillow).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

# SAM's normalisation, on the 0-255 scale, RGB order.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def stack_sam_pixels(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """B CPU images [3, H_i, W_i] -> [B, 3, max H, max W], each in the top-left corner, zeros
    around. Images of one size (such as already normalised float inputs) are just stacked.

    numpy does the copies: torch's would wait for its intra-op thread pool, which on a busy
    machine takes longer than the copies themselves.
    """
    arrays = [image.numpy() for image in images]
    if len({array.shape for array in arrays}) == 1:
        return torch.from_numpy(np.stack(arrays))
    height = max(array.shape[-2] for array in arrays)
    width = max(array.shape[-1] for array in arrays)
    out = np.zeros((len(arrays), 3, height, width), dtype=arrays[0].dtype)
    for i, array in enumerate(arrays):
        out[i, :, : array.shape[-2], : array.shape[-1]] = array
    return torch.from_numpy(out)


def sam_encoder_input(
    images: torch.Tensor,
    original_sizes: Sequence[Sequence[int]],
    resize_sizes: Sequence[Sequence[int]],
    side: int,
) -> torch.Tensor:
    """The encoder's float32 input [B, 3, side, side] from uint8 pixels, on their device.

    Args:
        images: [B, 3, H, W] uint8 RGB, image i in the top-left ``original_sizes[i]`` corner;
            or float [B, 3, side, side], already resized, normalised and padded (the original
            layout, returned unchanged).
        original_sizes: B pairs (H_i, W_i).
        resize_sizes: B pairs (h'_i, w'_i), the longest side scaled to ``side``.
        side: the encoder's input side (1024 for SAM).

    Returns:
        [B, 3, side, side] float32: ``(x - mean) / std`` of each resized image in its top-left
        (h'_i, w'_i) corner, exactly zero elsewhere (SAM normalises first, then pads).
    """
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise ValueError(f"SAM inputs must be uint8 pixels or float, got {images.dtype}.")
    if not len(original_sizes) == len(resize_sizes) == images.shape[0]:
        raise ValueError(
            f"{len(original_sizes)} original sizes and {len(resize_sizes)} resize sizes for "
            f"{images.shape[0]} images."
        )
    out = torch.zeros((images.shape[0], 3, side, side), dtype=torch.float32, device=images.device)
    for i, (original, resized) in enumerate(zip(original_sizes, resize_sizes, strict=True)):
        height, width = (int(v) for v in original)
        if height > images.shape[-2] or width > images.shape[-1]:
            raise ValueError(
                f"image {i}: its original size {height}x{width} exceeds the "
                f"{images.shape[-2]}x{images.shape[-1]} pixels of the SAM inputs."
            )
        expected = longest_side_shape(height, width, side)
        if tuple(int(v) for v in resized) != expected:
            raise ValueError(
                f"image {i}: resize size {tuple(resized)}, but a {height}x{width} image with "
                f"its longest side scaled to {side} is {expected}."
            )
        if 0 in expected:
            raise ValueError(f"image {i}: {height}x{width} is too narrow to scale to {side}.")
        pixels = resize_bilinear_like_pil(images[i, :, :height, :width], expected)
        out[i, :, : expected[0], : expected[1]] = normalise_pixels(pixels)
    return out


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """SAM's normalisation ``(x - mean) / std`` of RGB pixels [..., 3, h, w] on the 0-255 scale
    (any dtype), in float32 on their device: the one place it is computed."""
    mean, std = _normalisation(pixels.device)
    return (pixels.float() - mean) / std


@functools.cache
def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's mean and std [3, 1, 1] float32 on ``device``, copied there once (a copy from the
    host's pageable memory would wait for the device's queue)."""
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    return mean.to(device), std.to(device)


def longest_side_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h', w') with the longer side scaled to ``long_side``, rounded as SAM's ResizeLongestSide."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


# Pillow's 8-bit resampling: weights in fixed point with 22 fractional bits, a rounding half
# added before the shift, results clipped to 0-255 after each of the two passes.
_FRACTION_BITS = 22


def _bilinear_taps(
    in_size: int, out_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input indices [out, K] and fixed-point weights [out, K] (int32) of Pillow's bilinear
    resampling along one axis; a tap past the last input pixel has weight zero.

    Pillow centres output pixel x at (x + 0.5) * scale in input pixels, weighs the inputs
    around it with a triangle of half-width max(scale, 1) (wider when shrinking: the
    antialiasing), normalises the weights to sum 1 and rounds them to fixed point. Computed in
    float64 in Pillow's order of operations, so the rounded weights are Pillow's exactly.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)  # the triangle's half-width in input pixels
    num_taps = math.ceil(support) * 2 + 1
    f64 = dict(dtype=torch.float64, device=device)
    center = (torch.arange(out_size, **f64) + 0.5) * scale  # [out]
    first = (center - support + 0.5).trunc().clamp(min=0)  # [out], C's (int) cast
    end = (center + support + 0.5).trunc().clamp(max=in_size)  # [out], exclusive
    index = first[:, None] + torch.arange(num_taps, **f64)  # [out, K]
    weight = (1.0 - ((index - center[:, None] + 0.5) * (1.0 / support)).abs()).clamp(min=0)
    weight = torch.where(index < end[:, None], weight, 0.0)  # [out, K]
    total = torch.zeros(out_size, **f64)
    for tap in range(num_taps):  # in tap order, as Pillow sums (not pairwise)
        total = total + weight[:, tap]
    weight = weight / torch.where(total == 0, 1.0, total)[:, None]
    fixed = (weight * (1 << _FRACTION_BITS) + 0.5).trunc().to(torch.int32)
    return index.clamp(max=in_size - 1).long(), fixed


def _resample_axis(pixels: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One of Pillow's passes: int32 pixels [..., n, ...] -> [..., out_size, ...] along ``dim``."""
    index, weight = _bilinear_taps(pixels.shape[dim], out_size, pixels.device)
    shape = [1] * pixels.dim()
    shape[dim] = out_size
    total = None
    for tap in range(index.shape[1]):
        term = pixels.index_select(dim, index[:, tap]) * weight[:, tap].view(shape)
        total = term if total is None else total + term
    return ((total + (1 << (_FRACTION_BITS - 1))) >> _FRACTION_BITS).clamp(0, 255)


def resize_bilinear_like_pil(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``PIL.Image.resize(size[::-1], BILINEAR)`` of uint8 RGB pixels [3, H, W] -> [3, h, w] on
    their device: Pillow itself on the CPU (the fastest there), :func:`pil_bilinear_in_torch`
    elsewhere."""
    if pixels.device.type != "cpu":
        return pil_bilinear_in_torch(pixels, size)
    height, width = size
    image = Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()))
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1)


def pil_bilinear_in_torch(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow's bilinear resize in integer tensor operations: uint8 pixels [C, H, W] ->
    [C, h, w] on their device, with Pillow's numbers: one pass per axis that changes, each
    rounded to uint8, the width first unless Pillow shrinks a more than 100 times taller than
    wide image's height first.
    """
    height, width = size
    in_height, in_width = pixels.shape[-2:]
    resized = pixels.to(torch.int32)
    passes = [(width, -1), (height, -2)]
    if in_height > in_width * 100 and height < in_height:
        passes.reverse()
    for out_size, dim in passes:
        if out_size != resized.shape[dim]:
            resized = _resample_axis(resized, out_size, dim)
    return resized.to(torch.uint8)

"""SAM's pixel normalisation, applied where the image encoder runs.

Images travel from the data loaders to the model as ``uint8``: resized so the longest side is
the encoder's input side, zero-padded bottom/right to a square (a quarter of the bytes of the
normalised float32 input). :func:`normalize_sam_input` turns them into the encoder's input on
whatever device they are on. A leaf module (torch only), imported by the model and the data code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# SAM's normalisation, on the 0-255 scale, RGB order.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def normalize_sam_input(
    images: torch.Tensor, resize_sizes: Sequence[Sequence[int]]
) -> torch.Tensor:
    """uint8 SAM inputs -> the encoder's float32 input; float inputs are returned unchanged.

    Args:
        images: [B, 3, S, S] uint8 RGB, image i in the top-left (h'_i, w'_i) corner; or float,
            already normalised (the original layout, still accepted).
        resize_sizes: B pairs (h'_i, w'_i).

    Returns:
        [B, 3, S, S] float32 on the device of ``images``: ``(x - mean) / std`` inside each
        image, exactly zero in the padding (SAM normalises first, then pads).
    """
    if images.is_floating_point():
        return images
    if images.dtype != torch.uint8:
        raise ValueError(f"SAM inputs must be uint8 or float, got {images.dtype}.")
    if len(resize_sizes) != images.shape[0]:
        raise ValueError(f"{len(resize_sizes)} resize sizes for {images.shape[0]} SAM inputs.")
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1).to(images.device)
    std = torch.tensor(SAM_PIXEL_STD, dtype=torch.float32).view(3, 1, 1).to(images.device)
    normalized = torch.zeros(images.shape, dtype=torch.float32, device=images.device)
    for i, (height, width) in enumerate(resize_sizes):
        pixels = images[i, :, : int(height), : int(width)].float()  # [3, h', w']
        normalized[i, :, : int(height), : int(width)] = (pixels - mean) / std
    return normalized

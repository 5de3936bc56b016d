"""One dataset item: :class:`Sample`, what every training source and validation set returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Sample:
    """Everything a dataset returns for one image (the original's 10-tuple, in the same order)."""

    image_path: str
    image: torch.Tensor  # [3, H, W] uint8 SAM input: the decoded pixels (resized by the model)
    image_clip: torch.Tensor | dict[str, torch.Tensor]  # the base's vision input: [3, h, w]
    # float32 CLIP pixels, or a dict of tensors (Qwen2.5-VL: pixel_values, image_grid_thw)
    conversations: list[str]  # full conversations about this image, each with one "<image>"
    masks: torch.Tensor  # [n, H, W] ground truth, one per [SEG] over all conversations, in order
    label: torch.Tensor  # [H, W] class map at the original size (255 = ignore)
    resize: tuple[int, int]  # (h', w') of the image inside the padded SAM input
    questions: Any = None  # the questions asked (list[str]; kept for evaluation/logging)
    sampled_classes: Any = None  # class names / expressions behind the questions
    inference: bool = False  # validation item: no truncation

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image, the size its masks are predicted at."""
        height, width = self.label.shape[-2:]
        return int(height), int(width)

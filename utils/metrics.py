"""Mask IoU metrics exactly as LISA's ``validate()`` computes them (gIoU and cIoU).

The original counts, per predicted mask and its ground truth (``intersectionAndUnionGPU`` with two
classes, then the foreground class only):

* pixels whose ground truth is 255 are ignored: they count neither in the intersection nor in
  the union, whatever the prediction says there;
* intersection = predicted and target, union = predicted or target (foreground pixels);
* per-mask IoU = intersection / (union + 1e-5), and 1.0 when the union is empty (nothing to find
  and nothing predicted counts as a perfect answer);
* gIoU = the mean of the per-mask IoUs over all masks; cIoU = sum of intersections /
  (sum of unions + 1e-10).

The helpers are pure and take numpy arrays or torch tensors (on any device), so offline
evaluation and the distributed validation loop share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from utils.reason_seg import IGNORE_VALUE, TARGET_VALUE

IOU_EPSILON = 1e-5  # added to each union before the per-mask division (validate()'s value)
CUMULATIVE_EPSILON = 1e-10  # added to the summed union for cIoU (validate()'s value)

ArrayLike = np.ndarray | torch.Tensor


def intersection_and_union(
    prediction: ArrayLike, target: ArrayLike, ignore_index: int = IGNORE_VALUE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground intersection and union of binary predictions against labelled targets.

    Args:
        prediction: [..., H, W] bool or 0/1 (any non-zero value is foreground).
        target: [..., H, W] integer labels: 1 target, ``ignore_index`` ignored, anything else
            background.
        ignore_index: label of the pixels left out of both counts.
    Returns:
        (intersection, union): int64 tensors of shape [...] (one value per mask), on the device
        of the inputs.
    """
    prediction = torch.as_tensor(prediction)
    target = torch.as_tensor(target)
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(prediction.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )
    if prediction.dim() < 2:
        raise ValueError(f"masks must be at least 2-D [H, W], got shape {tuple(prediction.shape)}")
    predicted = (prediction != 0) & (target != ignore_index)  # [..., H, W]
    wanted = target == TARGET_VALUE  # never true on ignored pixels
    intersection = (predicted & wanted).sum(dim=(-2, -1))
    union = (predicted | wanted).sum(dim=(-2, -1))
    return intersection, union


def mask_iou(intersection: ArrayLike, union: ArrayLike) -> torch.Tensor:
    """Per-mask IoU of validate(): I / (U + 1e-5), and 1.0 where U == 0. Shapes [...] -> [...]."""
    intersection = torch.as_tensor(intersection).double()
    union = torch.as_tensor(union).double()
    return torch.where(union == 0, 1.0, intersection / (union + IOU_EPSILON))


@dataclass(frozen=True)
class IoUSummary:
    """gIoU and cIoU over a set of masks."""

    giou: float  # mean per-mask IoU
    ciou: float  # cumulative IoU: sum I / sum U
    num_masks: int


def summarize_iou(
    intersections: Sequence[int] | ArrayLike, unions: Sequence[int] | ArrayLike
) -> IoUSummary:
    """gIoU and cIoU of masks given their intersections and unions ([M] each, M >= 1)."""
    intersections = torch.as_tensor(intersections).flatten()
    unions = torch.as_tensor(unions).flatten()
    if intersections.shape != unions.shape:
        raise ValueError(f"{intersections.numel()} intersections but {unions.numel()} unions")
    if intersections.numel() == 0:
        raise ValueError("no masks to summarize")
    giou = mask_iou(intersections, unions).mean()
    ciou = intersections.double().sum() / (unions.double().sum() + CUMULATIVE_EPSILON)
    return IoUSummary(giou=float(giou), ciou=float(ciou), num_masks=intersections.numel())

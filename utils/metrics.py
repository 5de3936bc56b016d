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
) -> tuple[ArrayLike, ArrayLike]:
    """Foreground intersection and union of binary predictions against labelled targets.

    Args:
        prediction: [..., H, W] bool or 0/1 (any non-zero value is foreground).
        target: [..., H, W] integer labels: 1 target, ``ignore_index`` ignored, anything else
            background.
        ignore_index: label of the pixels left out of both counts.
    Returns:
        (intersection, union): int64 counts of shape [...] (one per mask), as torch tensors on
        the inputs' device when either input is a tensor, else as numpy arrays (numpy counts
        large CPU masks several times faster).
    """
    if isinstance(prediction, torch.Tensor) or isinstance(target, torch.Tensor):
        device = prediction.device if isinstance(prediction, torch.Tensor) else target.device
        prediction = torch.as_tensor(prediction, device=device)
        target = torch.as_tensor(target, device=device)

        def count(mask: torch.Tensor) -> torch.Tensor:
            return mask.sum(dim=(-2, -1))

    else:
        prediction, target = np.asarray(prediction), np.asarray(target)

        def count(mask: np.ndarray) -> np.ndarray:
            return np.asarray(np.count_nonzero(mask, axis=(-2, -1)), dtype=np.int64)

    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(prediction.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )
    if prediction.ndim < 2:
        raise ValueError(f"masks must be at least 2-D [H, W], got shape {tuple(prediction.shape)}")
    predicted = (prediction != 0) & (target != ignore_index)  # [..., H, W]
    wanted = target == TARGET_VALUE  # never true on ignored pixels
    return count(predicted & wanted), count(predicted | wanted)


def mask_iou(intersection: ArrayLike, union: ArrayLike) -> ArrayLike:
    """Per-mask IoU of validate(): I / (U + 1e-5), and 1.0 where U == 0. Shapes [...] -> [...]
    float64, torch or numpy as the inputs."""
    if isinstance(intersection, torch.Tensor) or isinstance(union, torch.Tensor):
        intersection, union = torch.as_tensor(intersection), torch.as_tensor(union)
        return torch.where(union == 0, 1.0, intersection.double() / (union.double() + IOU_EPSILON))
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, intersection / (union + IOU_EPSILON))


def _as_float64(values: Sequence[int] | ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


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
    intersections, unions = _as_float64(intersections), _as_float64(unions)
    if intersections.shape != unions.shape:
        raise ValueError(f"{intersections.size} intersections but {unions.size} unions")
    if intersections.size == 0:
        raise ValueError("no masks to summarize")
    giou = mask_iou(intersections, unions).mean()
    ciou = intersections.sum() / (unions.sum() + CUMULATIVE_EPSILON)
    return IoUSummary(giou=float(giou), ciou=float(ciou), num_masks=int(intersections.size))


def mean_pairwise_cosine(unit_vector_sum: torch.Tensor, count: int | float) -> float:
    """Mean cosine similarity over all ordered pairs of ``count`` unit vectors, from their sum.

    ``||sum e_i||^2 = count + sum_{i != j} e_i . e_j``, so the sum (which adds up across ranks and
    batches) is all that is needed. Near 1.0 for the ``[SEG]`` prompts of a validation set means
    the model prompts SAM the same way whatever the question: a collapse that gIoU alone does not
    name. NaN for fewer than two vectors.
    """
    if count < 2:
        return float("nan")
    squared_norm = float(unit_vector_sum.double().pow(2).sum())
    return (squared_norm - count) / (count * (count - 1))

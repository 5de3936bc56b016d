"""Mask losses as LISA defines them: per-mask sigmoid BCE and Dice, averaged over the masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The original divides predictions and targets by this before summing, which makes the
# smoothing term relatively 1000x stronger than it reads; kept for identical numbers.
DICE_SCALE = 1000.0
DICE_EPS = 1e-6


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of (1 - Dice) divided by num_masks.

    Args:
        logits: [n, H, W] mask logits.
        targets: [n, H, W] in {0, 1}.
        num_masks: the divisor (the number of masks of this image).
    """
    probs = logits.float().sigmoid().flatten(1)  # (n, H*W)
    targets = targets.float().flatten(1)
    numerator = 2 * (probs / DICE_SCALE * targets).sum(-1)
    denominator = (probs / DICE_SCALE).sum(-1) + (targets / DICE_SCALE).sum(-1)
    loss = 1 - (numerator + DICE_EPS) / (denominator + DICE_EPS)
    return loss.sum() / (num_masks + 1e-8)


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of the per-pixel mean BCE-with-logits, divided by num_masks ([n, H, W] inputs)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return loss.flatten(1).mean(1).sum() / (num_masks + 1e-8)


def mask_losses(
    pred_masks: list[torch.Tensor], gt_masks: list[torch.Tensor]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Unweighted (bce, dice) over a batch: per-image means weighted by mask count.

    pred_masks[i] and gt_masks[i] are [n_i, H_i, W_i]. Images without masks contribute nothing;
    returns (None, None) when the batch has no mask at all.
    """
    bce_sum = dice_sum = None
    total = 0
    for pred, gt in zip(pred_masks, gt_masks, strict=True):
        n = pred.shape[0]
        if n == 0:
            continue
        if gt.shape != pred.shape:
            raise ValueError(
                f"predicted masks {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ"
            )
        bce = sigmoid_bce_loss(pred, gt, n) * n
        dice = dice_loss(pred, gt, n) * n
        bce_sum = bce if bce_sum is None else bce_sum + bce
        dice_sum = dice if dice_sum is None else dice_sum + dice
        total += n
    if bce_sum is None:
        return None, None
    return bce_sum / (total + 1e-8), dice_sum / (total + 1e-8)

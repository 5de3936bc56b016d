"""gIoU / cIoU helpers against IoUs worked out by hand (validate()'s definitions)."""

import math

import numpy as np
import pytest
import torch

from utils.metrics import intersection_and_union, mask_iou, mean_pairwise_cosine, summarize_iou

# target: 1 = object, 255 = ignored; the prediction covers one object pixel too few, one
# background pixel too many, and both ignored pixels (which must not count).
TARGET = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 255],
        [0, 0, 0, 255],
        [0, 0, 0, 0],
    ],
    dtype=np.uint8,
)
PREDICTION = np.array(
    [
        [1, 0, 0, 0],
        [1, 1, 1, 1],
        [0, 0, 0, 1],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)


def test_ignored_pixels_count_in_neither_intersection_nor_union():
    intersection, union = intersection_and_union(PREDICTION, TARGET)
    # object pixels predicted: (0,0), (1,0), (1,1); union adds (0,1) missed and (1,2) extra
    assert (int(intersection), int(union)) == (3, 5)
    assert float(mask_iou(intersection, union)) == pytest.approx(3 / (5 + 1e-5), abs=1e-12)


def test_empty_union_is_a_perfect_score():
    nothing = np.zeros((4, 4), dtype=bool)
    assert intersection_and_union(nothing, np.zeros((4, 4), np.uint8)) == (0, 0)
    # a prediction only inside the ignored region is no prediction at all
    only_ignored = np.full((4, 4), 255, dtype=np.uint8)
    intersection, union = intersection_and_union(~nothing, only_ignored)
    assert (int(intersection), int(union)) == (0, 0)
    assert float(mask_iou(intersection, union)) == 1.0


def test_missed_target_scores_zero():
    target = np.zeros((3, 3), np.uint8)
    target[0, :2] = 1
    intersection, union = intersection_and_union(np.zeros((3, 3), bool), target)
    assert (int(intersection), int(union)) == (0, 2)
    assert float(mask_iou(intersection, union)) == 0.0


def test_stacked_targets_give_one_value_per_mask_and_summaries_follow_validate():
    empty_target = np.zeros((4, 4), np.uint8)
    missed = np.zeros((4, 4), np.uint8)
    missed[3, :2] = 1
    targets = np.stack([TARGET, empty_target, missed])  # [3, 4, 4]
    predictions = np.stack([PREDICTION, np.zeros((4, 4), bool), np.zeros((4, 4), bool)])
    intersection, union = intersection_and_union(predictions, targets)
    assert intersection.tolist() == [3, 0, 0] and union.tolist() == [5, 0, 2]
    summary = summarize_iou(intersection, union)
    assert summary.num_masks == 3
    assert summary.giou == pytest.approx((3 / (5 + 1e-5) + 1.0 + 0.0) / 3, abs=1e-12)
    assert summary.ciou == pytest.approx(3 / 7, abs=1e-9)


def test_torch_and_numpy_inputs_agree_and_keep_their_kind():
    numpy_counts = intersection_and_union(PREDICTION.astype(np.uint8), TARGET)
    torch_counts = intersection_and_union(torch.from_numpy(PREDICTION), torch.from_numpy(TARGET))
    assert [int(v) for v in numpy_counts] == [int(v) for v in torch_counts] == [3, 5]
    assert all(isinstance(v, np.ndarray) for v in numpy_counts)
    assert all(isinstance(v, torch.Tensor) for v in torch_counts)  # stays on the device
    iou = mask_iou(*torch_counts)
    assert isinstance(iou, torch.Tensor) and float(iou) == pytest.approx(3 / (5 + 1e-5))
    assert summarize_iou(*torch_counts).giou == pytest.approx(float(mask_iou(*numpy_counts)))


def test_mismatched_shapes_and_empty_summaries_are_refused():
    with pytest.raises(ValueError, match="differs from target shape"):
        intersection_and_union(PREDICTION[:3], TARGET)
    with pytest.raises(ValueError, match="no masks"):
        summarize_iou([], [])


def test_mean_pairwise_cosine_from_the_sum_of_unit_vectors():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(7, 16, generator=generator, dtype=torch.float64) + 0.5
    units = torch.nn.functional.normalize(vectors, dim=-1)
    cosines = units @ units.T
    brute_force = (cosines.sum() - cosines.diagonal().sum()) / (7 * 6)
    # summed in two parts, as batches and ranks add up
    assert mean_pairwise_cosine(units[:3].sum(0) + units[3:].sum(0), 7) == pytest.approx(
        float(brute_force), abs=1e-12
    )
    same = torch.nn.functional.normalize(torch.ones(5, 16, dtype=torch.float64), dim=-1)
    assert mean_pairwise_cosine(same.sum(0), 5) == pytest.approx(1.0)
    assert math.isnan(mean_pairwise_cosine(units[0], 1))

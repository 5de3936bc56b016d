"""LisaBatch: its shapes are checked when made, sizes become int pairs, .to() moves it once."""

import numpy as np
import pytest
import torch

from utils.batch import LisaBatch, one_prompt_per_image_offset


def small_batch(**overrides) -> LisaBatch:
    fields = dict(
        images=torch.randn(2, 3, 16, 16),
        images_clip=torch.randn(2, 3, 8, 8),
        input_ids=torch.tensor([[1, -200, 5, 0], [1, -200, 6, 7], [1, -200, 0, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]).bool(),
        offset=[0, 2, 3],
        resize_sizes=[torch.tensor([16, 12]), np.array([9, 16])],
        original_sizes=[(40, 30), (18, 32)],
        labels=torch.full((3, 4), -100),
        gt_masks=[torch.zeros(2, 40, 30), torch.zeros(0, 18, 32)],
    )
    fields.update(overrides)
    return LisaBatch(**fields)


def test_sizes_are_int_pairs_and_offset_a_long_tensor():
    batch = small_batch()
    assert batch.resize_sizes == ((16, 12), (9, 16))
    assert all(type(v) is int for pair in batch.resize_sizes for v in pair)
    assert batch.original_sizes == ((40, 30), (18, 32))
    assert batch.offset.dtype == torch.long and batch.offset.tolist() == [0, 2, 3]
    assert (batch.num_images, batch.num_conversations) == (2, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"offset": [0, 1, 3, 3]}, "offset \\[0, 1, 3, 3\\] for 2 images and 3 conversations"),
        ({"offset": [0, 2, 2]}, "offset \\[0, 2, 2\\] for 2 images and 3 conversations"),
        ({"images": torch.randn(1, 3, 16, 16)}, "1 SAM images for 2 CLIP images"),
        ({"labels": torch.zeros(3, 5, dtype=torch.long)}, "labels of shape \\[3, 5\\]"),
        ({"attention_mask": torch.ones(2, 4, dtype=torch.bool)}, "attention_mask of shape"),
        ({"resize_sizes": [(16, 16)]}, "1 resize_sizes for 2 images"),
        ({"gt_masks": [torch.zeros(1, 4, 4)] * 3}, "3 gt_masks for 2 images"),
        ({"original_sizes": [(1, 2, 3), (4, 5)]}, "original_sizes: expected \\(height, width\\)"),
    ],
)
def test_inconsistent_parts_are_one_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_batch(**overrides)


def test_unknown_fields_are_refused():
    with pytest.raises(TypeError, match="label_list"):
        small_batch(label_list=[torch.zeros(40, 30)])


def test_to_moves_every_tensor_and_casts_only_the_images():
    batch = small_batch()
    moved = batch.to("meta", torch.float16)
    assert moved.images.dtype == moved.images_clip.dtype == torch.float16
    assert moved.images.device.type == "meta"
    for tensor in (moved.input_ids, moved.attention_mask, moved.offset, moved.labels):
        assert tensor.device.type == "meta"
    assert moved.input_ids.dtype == torch.long and moved.attention_mask.dtype == torch.bool
    assert [m.device.type for m in moved.gt_masks] == ["meta", "meta"]
    assert [m.dtype for m in moved.gt_masks] == [torch.float32] * 2
    assert moved.original_sizes == batch.original_sizes
    assert batch.images.device.type == "cpu"  # the original batch is left as it was
    kept = batch.to("cpu")
    assert kept.images.dtype == torch.float32 and kept.labels is batch.labels


def test_a_batch_without_training_fields_moves_too():
    batch = small_batch(labels=None, gt_masks=None)
    moved = batch.to("cpu", torch.float64)
    assert moved.labels is None and moved.gt_masks is None
    assert moved.images.dtype == torch.float64


def test_default_offsets():
    assert one_prompt_per_image_offset(3, 3).tolist() == [0, 1, 2, 3]
    assert one_prompt_per_image_offset(1, 4).tolist() == [0, 4]
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        one_prompt_per_image_offset(2, 3)

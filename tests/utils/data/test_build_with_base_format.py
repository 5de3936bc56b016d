"""The readers feed any base through its format: every training source and the validation set
give conversations in the base's chat template and its vision inputs, which collate_with_format
batches (a tiny Qwen2.5-VL directory here)."""

import pytest
import torch

from model.bases.load import load_base_format
from tools.tiny_vlm_bases import build_tiny_qwen2_5_vl
from utils.collate import collate_with_format
from utils.data import DataConfig, build_datasets
from utils.data.sample_builder import SampleBuilder


@pytest.fixture(scope="module")
def qwen_format(tmp_path_factory):
    directory = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen") / "base")
    return load_base_format(directory, model_max_length=4096)


def test_every_source_speaks_the_bases_template(tree, qwen_format):
    train, val_sets = build_datasets(
        DataConfig(dataset_dir=str(tree), image_size=64),
        base_format=qwen_format,
        samples_per_epoch=24,
    )
    samples = [train[i] for i in range(24)] + [val_sets[0][0]]
    for sample in samples:
        assert isinstance(sample.image_clip, dict)
        assert sample.image_clip["image_grid_thw"].shape == (1, 3)
        for conversation in sample.conversations:
            assert conversation.startswith("<|im_start|>system\n")
            assert conversation.count("<image>") == 1
    for first in range(0, len(samples) - 1, 4):
        batch = collate_with_format(samples[first : first + 4], qwen_format, 4096)
        segs = (batch.input_ids == qwen_format.seg_token_id).sum()
        assert segs == sum(m.shape[0] for m in batch.gt_masks)
        assert batch.images_clip["image_grid_thw"].shape == (batch.num_images, 3)
        assert (batch.labels == qwen_format.seg_token_id).sum() == segs
    val_batch = collate_with_format(samples[-1:], qwen_format, 4096)
    assert val_batch.num_conversations == len(samples[-1].conversations)


def test_sample_builder_takes_one_image_path(qwen_format, clip_transform):
    for arguments in ({}, {"clip_transform": clip_transform, "base_format": qwen_format}):
        with pytest.raises(ValueError, match="either clip_transform or base_format"):
            SampleBuilder(**arguments)
    builder = SampleBuilder(clip_transform=clip_transform, image_size=64)
    assert builder.conversation([("<image>\nHi", "Hello")]).startswith("A chat between")
    assert isinstance(builder.vision_inputs(torch.zeros(8, 8, 3).byte().numpy()), torch.Tensor)

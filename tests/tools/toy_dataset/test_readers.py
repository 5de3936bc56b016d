"""The project's dataset readers take the toy tree as it is, every source, without a skip."""

import numpy as np
import pytest

from tests.tools.toy_dataset.conftest import TOY_SIZES
from tools.toy_dataset.write_refer_seg import COCO_REFER_SPLITS, GREFCOCO_SPLITS, REFCLEF_SPLITS
from utils.constants import SEG_TOKEN
from utils.data.build import DataConfig, build_train_dataset, build_val_datasets
from utils.data.sample_builder import SampleBuilder
from utils.transforms import ClipTransform

EVERY_SOURCE = {
    "dataset": "sem_seg||refer_seg||vqa||reason_seg",
    "sample_rates": "1,1,1,1",
    "sem_seg_data": "ade20k||cocostuff||pascal_part||paco_lvis||mapillary",
    "refer_seg_data": "refclef||refcoco||refcoco+||refcocog||grefcoco",
    "explanatory": 0.5,
}
VAL_NAMES = ["ReasonSeg|val", "ReasonSeg|test"] + [
    f"{dataset}|{split_by}|{split}"
    for dataset, splits_by in {
        **COCO_REFER_SPLITS,
        "refclef": REFCLEF_SPLITS,
        "grefcoco": {"unc": GREFCOCO_SPLITS},
    }.items()
    for split_by, splits in splits_by.items()
    for split in splits
]
DRAWS_PER_SOURCE = 6


@pytest.fixture(scope="module")
def builder() -> SampleBuilder:
    clip = ClipTransform(shortest_edge=32, crop_size=(32, 32))
    return SampleBuilder(clip_transform=clip, image_size=128, conv_template="llava_v1")


def test_every_training_source_yields_samples(toy_dir, builder):
    config = DataConfig(dataset_dir=str(toy_dir), **EVERY_SOURCE)
    dataset = build_train_dataset(config, builder, samples_per_epoch=16)
    sizes = dataset.source_sizes()
    assert sizes["ReasonSeg|train"] == TOY_SIZES["num_train"]
    assert sizes["ade20k"] == sizes["mapillary"] == TOY_SIZES["num_sem_seg"]
    for group in dataset.groups:
        for source in group.sources:
            for draw in range(DRAWS_PER_SOURCE):
                sample = source.sample(np.random.default_rng(draw))  # a bad sample raises
                seg_count = sum(text.count(SEG_TOKEN) for text in sample.conversations)
                assert sample.masks.shape[0] == seg_count, source.name
                if group.name != "vqa":
                    assert sample.masks.shape[1:] == sample.label.shape
    for index in range(len(dataset)):
        dataset[index]
    assert dataset.skip_counts() == {}


def test_every_validation_set_yields_samples(toy_dir, builder):
    config = DataConfig(dataset_dir=str(toy_dir), val_dataset="||".join(VAL_NAMES))
    for val_set in build_val_datasets(config, builder):
        assert len(val_set) > 0, val_set.name
        for index in range(len(val_set)):
            sample = val_set[index]
            assert sample.inference and sample.masks.shape[0] == len(sample.conversations)
            if val_set.name.startswith("ReasonSeg"):
                assert (sample.masks == 1).any()  # the target is in the mask
        assert val_set.skip_counts() == {}, val_set.name


def test_excluding_validation_images_drops_the_shared_coco_photos(toy_dir, builder):
    config = DataConfig(
        dataset_dir=str(toy_dir),
        dataset="sem_seg",
        sample_rates="1",
        sem_seg_data="cocostuff",
        val_dataset="refcoco|unc|val",
    )
    (val_set,) = build_val_datasets(config, builder)
    everything = build_train_dataset(config, builder, samples_per_epoch=1)
    excluded = build_train_dataset(
        config, builder, samples_per_epoch=1, exclude_images=val_set.image_keys()
    )
    assert excluded.source_sizes()["cocostuff"] < everything.source_sizes()["cocostuff"]


def test_every_segmentation_source_answers_with_the_given_templates(toy_dir):
    """--answer_templates reaches every source that asks for a mask."""
    clip = ClipTransform(shortest_edge=32, crop_size=(32, 32))
    answer = f"Look: {SEG_TOKEN}."
    builder = SampleBuilder(clip_transform=clip, image_size=128, answers=(answer,))
    config = DataConfig(dataset_dir=str(toy_dir), **EVERY_SOURCE)
    dataset = build_train_dataset(config, builder, samples_per_epoch=16)
    seen = set()
    for group in dataset.groups:
        for source in group.sources:
            for draw in range(DRAWS_PER_SOURCE):
                for conversation in source.sample(np.random.default_rng(draw)).conversations:
                    if SEG_TOKEN in conversation:
                        assert f"ASSISTANT: {answer}" in conversation, source.name
                        seen.add(source.name)
    assert {"ade20k", "pascal_part", "refcoco", "ReasonSeg|train"} <= seen

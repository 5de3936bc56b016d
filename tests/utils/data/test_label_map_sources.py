import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils.data.fake_tree import Box, write_image, write_label_map
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.label_map_sources import (
    ade20k_source,
    cocostuff_source,
    mapillary_source,
    read_class_names,
)


def _one_image(root: Path, image: str, label: str, values, fill: int) -> list[Box]:
    boxes = [Box(2, 3, 10, 20), Box(15, 5, 30, 12), Box(32, 0, 40, 40)][: len(values)]
    write_image(root / image, 40, 48, boxes, np.random.default_rng(0))
    write_label_map(root / label, 40, 48, boxes, values, fill)
    return boxes


def test_class_lists_are_the_originals():
    ade, coco = read_class_names("ade20k_classes.txt"), read_class_names("cocostuff_classes.txt")
    assert len(ade) == 150 and (ade[0], ade[12], ade[149]) == ("wall", "person", "flag")
    assert len(coco) == 182 and (coco[0], coco[95], coco[181]) == (
        "person",
        "building-other",
        "wood",
    )


def test_ade20k_shifts_labels_and_ignores_other(tmp_path, builder, rng):
    boxes = _one_image(
        tmp_path,
        "ade20k/images/training/ADE_train_00000001.jpg",
        "ade20k/annotations/training/ADE_train_00000001.png",
        values=[1, 13, 150],  # wall, person, flag
        fill=0,  # "other"
    )
    source = ade20k_source(tmp_path, builder, num_classes_per_sample=3, exclude=())
    sample = source.sample(rng)
    assert sorted(sample.sampled_classes) == ["flag", "person", "wall"]
    label = sample.label.numpy()
    assert sample.label.dtype.is_floating_point is False
    assert label[0, 0] == 255  # 0 ("other") is ignored
    assert label[boxes[0].top, boxes[0].left] == 0 and label[boxes[2].top, 0] == 149
    for name, mask in zip(sample.sampled_classes, sample.masks, strict=True):
        class_id = read_class_names("ade20k_classes.txt").index(name)
        assert np.array_equal(mask.numpy(), (label == class_id).astype(np.float32))
    assert len(sample.conversations) == 3
    assert all(
        f"{name}" in q for name, q in zip(sample.sampled_classes, sample.questions, strict=True)
    )


def test_num_classes_per_sample_limits_the_questions(tmp_path, builder, rng):
    _one_image(
        tmp_path, "ade20k/images/training/a.jpg", "ade20k/annotations/training/a.png", [5, 6, 7], 0
    )
    source = ade20k_source(tmp_path, builder, num_classes_per_sample=2, exclude=())
    sample = source.sample(rng)
    assert sample.masks.shape[0] == len(sample.conversations) == 2
    assert len(set(sample.sampled_classes)) == 2


def test_cocostuff_never_asks_about_dashed_classes(tmp_path, builder):
    names = read_class_names("cocostuff_classes.txt")
    wall_other, person = names.index("wall-other"), names.index("person")
    boxes = _one_image(
        tmp_path,
        "coco/train2017/000000000042.jpg",
        "cocostuff/train2017/000000000042.png",
        values=[wall_other, person],
        fill=255,
    )
    source = cocostuff_source(tmp_path, builder, num_classes_per_sample=3, exclude=())
    for seed in range(5):
        sample = source.sample(np.random.default_rng(seed))
        assert sample.sampled_classes == ["person"]
        assert sample.label[boxes[0].top, boxes[0].left] == 255  # wall-other became ignore
    assert sample.image_path.endswith("coco/train2017/000000000042.jpg")


def test_mapillary_reads_readable_names(tmp_path, builder, rng):
    labels = [{"readable": "Bird"}, {"readable": "Traffic Light"}, {"readable": "Unlabeled"}]
    (tmp_path / "mapillary").mkdir()
    (tmp_path / "mapillary/config_v2.0.json").write_text(json.dumps({"labels": labels}))
    _one_image(
        tmp_path, "mapillary/training/images/x.jpg", "mapillary/training/v2.0/labels/x.png", [1], 2
    )
    sample = mapillary_source(tmp_path, builder, 3, exclude=()).sample(rng)
    assert sorted(sample.sampled_classes) == ["traffic light", "unlabeled"]


def test_missing_folder_names_the_expected_path(tmp_path, builder):
    with pytest.raises(MissingSourceError, match=r"ade20k/images/training"):
        ade20k_source(tmp_path, builder, 3, exclude=())


def test_bad_label_maps_are_sample_errors(tmp_path, builder, rng):
    _one_image(
        tmp_path, "ade20k/images/training/a.jpg", "ade20k/annotations/training/a.png", [3], 0
    )
    source = ade20k_source(tmp_path, builder, 3, exclude=())
    label_path = tmp_path / "ade20k/annotations/training/a.png"
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(label_path)  # only "other"
    with pytest.raises(BadSampleError) as error:
        source.sample(rng)
    assert error.value.reason == SkipReason.NO_TARGET
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(label_path)  # RGB, not class ids
    with pytest.raises(BadSampleError) as error:
        source.sample(rng)
    assert error.value.reason == SkipReason.BAD_ANNOTATION
    label_path.unlink()
    with pytest.raises(BadSampleError) as error:
        source.sample(rng)
    assert error.value.reason == SkipReason.MISSING_FILE

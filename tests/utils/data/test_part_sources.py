import json

import numpy as np
import pytest

from tests.utils.data.fake_tree import Box, write_image
from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.part_sources import paco_lvis_source, parse_category_name, pascal_part_source

BOXES = [Box(2, 3, 10, 20), Box(15, 5, 30, 12)]


def _paco(root, categories, segmentations, size=(40, 48)):
    write_image(root / "coco/train2017/000000000007.jpg", *size, BOXES, np.random.default_rng(0))
    data = {
        "images": [
            {"id": 7, "file_name": "train2017/000000000007.jpg", "height": 40, "width": 48},
            {"id": 8, "file_name": "train2017/000000000008.jpg", "height": 40, "width": 48},
        ],
        "annotations": [
            {"id": i + 1, "image_id": 7, "category_id": cat, "segmentation": seg}
            for i, (cat, seg) in enumerate(zip(categories, segmentations, strict=True))
        ],
        "categories": [
            {"id": 1, "name": "mug:handle"},
            {"id": 2, "name": "bottle_(container)"},
            {"id": 3, "name": "trash_can:lid_(cover)"},
        ],
    }
    path = root / "vlpart/paco/annotations/paco_lvis_v1_train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))


def test_category_names():
    assert parse_category_name("mug:handle") == ("mug", "handle")
    assert parse_category_name("trash_can:lid_(cover)") == ("trash_can", "lid")
    assert parse_category_name("bottle_(container)") == "bottle"


def test_paco_parts_are_worded_both_ways_with_polygon_masks(tmp_path, builder):
    _paco(tmp_path, [1, 2], [[BOXES[0].polygon()], [BOXES[1].polygon()]])
    source = paco_lvis_source(tmp_path, builder, num_classes_per_sample=3, exclude=())
    assert len(source) == 1  # the image without annotations is never drawn
    wordings = set()
    for seed in range(20):
        sample = source.sample(np.random.default_rng(seed))
        by_name = dict(zip(sample.sampled_classes, sample.masks, strict=True))
        assert "bottle" in by_name
        part = next(name for name in by_name if name != "bottle")
        wordings.add(part)
        assert np.array_equal(by_name[part].numpy(), BOXES[0].mask(40, 48))
        assert np.array_equal(by_name["bottle"].numpy(), BOXES[1].mask(40, 48))
        assert sample.label.shape == (40, 48) and bool((sample.label == 255).all())
    assert wordings == {"mug handle", "the handle of the mug"}


def test_degenerate_polygons_and_size_mismatch_are_sample_errors(tmp_path, builder, rng):
    _paco(tmp_path, [2], [[[1.0, 1.0, 5.0, 5.0]]])  # two points
    source = paco_lvis_source(tmp_path, builder, 3, exclude=())
    with pytest.raises(BadSampleError) as error:
        source.sample(rng)
    assert error.value.reason == SkipReason.DEGENERATE_POLYGON


def test_polygon_outside_the_image_is_a_sample_error(tmp_path, builder, rng):
    _paco(tmp_path, [2], [[[100.0, 100.0, 120.0, 100.0, 120.0, 120.0]]])
    with pytest.raises(BadSampleError) as error:
        paco_lvis_source(tmp_path, builder, 3, exclude=()).sample(rng)
    assert error.value.reason == SkipReason.DEGENERATE_POLYGON


def test_pascal_part_image_folder(tmp_path, builder, rng):
    folder = tmp_path / "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages"
    write_image(folder / "2008_000001.jpg", 40, 48, BOXES, rng)
    data = {
        "images": [{"id": 1, "file_name": "2008_000001.jpg", "height": 40, "width": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [BOXES[1].polygon()]}
        ],
        "categories": [{"id": 5, "name": "dog:head"}],
    }
    (tmp_path / "vlpart/pascal_part/train.json").write_text(json.dumps(data))
    sample = pascal_part_source(tmp_path, builder, 3, exclude=()).sample(rng)
    assert sample.sampled_classes[0] in ("dog head", "the head of the dog")
    assert sample.image_path == str(folder / "2008_000001.jpg")


def test_missing_json_names_the_expected_path(tmp_path, builder):
    with pytest.raises(MissingSourceError, match=r"vlpart/pascal_part/train\.json"):
        pascal_part_source(tmp_path, builder, 3, exclude=())

import json

import numpy as np
import pytest
import torch

from tests.utils.data.fake_tree import Box, reason_seg_annotation, write_image, write_refer
from utils.data import MissingSourceError, ValDataset
from utils.data.bad_samples import SkipReason


def _reason_seg_val(root, texts, is_sentence):
    folder = root / "reason_seg/ReasonSeg/val"
    target, ignored = Box(2, 3, 10, 20), Box(20, 5, 30, 12)
    write_image(folder / "b.jpg", 40, 48, [target, ignored], np.random.default_rng(0))
    annotation = reason_seg_annotation(texts, is_sentence, [target], [ignored])
    (folder / "b.json").write_text(json.dumps(annotation))
    return target, ignored


def test_reason_seg_val_asks_the_first_query_like_the_original(tmp_path, builder):
    target, ignored = _reason_seg_val(tmp_path, ["  The Red Cup ", "other"], is_sentence=False)
    sample = ValDataset(tmp_path, "ReasonSeg|val", builder)[0]
    assert sample.inference and sample.sampled_classes == ["The Red Cup"]
    assert len(sample.conversations) == 1
    assert sample.conversations[0].endswith(
        "USER: <image>\n What is The Red Cup in this image? Please output segmentation mask. "
        "ASSISTANT: [SEG].</s>"
    )
    mask = sample.masks[0].numpy()
    assert mask[target.top, target.left] == 1 and mask[ignored.top, ignored.left] == 255
    assert set(np.unique(mask).tolist()) == {0, 1, 255}  # ignore kept for the metrics
    assert torch.equal(sample.label, torch.full((40, 48), 255.0))


def test_reason_seg_val_sentence(tmp_path, builder):
    _reason_seg_val(tmp_path, ["Where would you sit?"], is_sentence=True)
    sample = ValDataset(tmp_path, "ReasonSeg|val", builder)[0]
    assert (
        "USER: <image>\n Where would you sit? Please output segmentation mask. ASSISTANT:"
        in (sample.conversations[0])
    )


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("refer_val")
    rng = np.random.default_rng(5)
    write_refer(root, "refcoco+", "unc", rng, {"train": 1, "testA": 2}, (30, 40), first_id=1)
    write_refer(root, "grefcoco", "unc", rng, {"val": 1}, (30, 40), first_id=50)
    return root


def test_refer_val_has_every_expression_of_an_image(refer_root, builder):
    val = ValDataset(refer_root, "refcoco+|unc|testA", builder)
    assert len(val) == 2
    sample = val[0]
    assert sample.image_path.endswith("COCO_train2014_000000000002.jpg")
    expressions = val.refer.expressions[2]
    assert sample.sampled_classes == [e.text.strip().lower() for e in expressions]
    assert sample.masks.shape[0] == len(sample.conversations) == len(expressions) >= 2
    assert "What is the object 0 of image 2 in this image?" in sample.conversations[0]
    assert set(sample.masks.unique().tolist()) == {0.0, 1.0}


def test_grefcoco_val_no_target_expressions_have_empty_masks(refer_root, builder):
    sample = ValDataset(refer_root, "grefcoco|unc|val", builder)[0]
    by_text = dict(zip(sample.sampled_classes, sample.masks, strict=True))
    assert not by_text["the purple giraffe"].any() and by_text["all the objects"].any()


def test_bad_names_and_missing_sets(tmp_path, builder):
    with pytest.raises(ValueError, match="neither NAME|SPLIT"):
        ValDataset(tmp_path, "refcoco", builder)
    with pytest.raises(MissingSourceError, match=r"reason_seg/ReasonSeg/test"):
        ValDataset(tmp_path, "ReasonSeg|test", builder)


def test_absent_and_unreadable_images(tmp_path, builder):
    rng = np.random.default_rng(0)
    write_refer(tmp_path, "refcoco", "unc", rng, {"val": 3}, (30, 40), first_id=7)
    folder = tmp_path / "refer_seg/images/mscoco/images/train2014"
    (folder / "COCO_train2014_000000000007.jpg").unlink()
    (folder / "COCO_train2014_000000000008.jpg").write_bytes(b"not an image")
    val = ValDataset(tmp_path, "refcoco|unc|val", builder)
    assert len(val) == 2  # the absent image is left out up front
    assert val[0].image_path.endswith("000000000009.jpg")  # the unreadable one is replaced
    assert val.skip_counts() == {
        "refcoco|unc|val": {SkipReason.MISSING_FILE.value: 1, SkipReason.UNREADABLE_IMAGE.value: 1}
    }
    assert val.image_keys() == {"coco:7", "coco:8", "coco:9"}

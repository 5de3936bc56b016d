import pickle
from collections import OrderedDict

import numpy as np
import pytest

from tests.utils.data.fake_tree import write_refer
from utils.data.bad_samples import MissingSourceError
from utils.data.refer import load_refer_split
from utils.data.refer_seg_source import refer_seg_source


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("refer")
    rng = np.random.default_rng(3)
    splits = {"train": 3, "val": 2, "testA": 1, "testB": 1, "testAB": 1}
    write_refer(root, "refcoco", "unc", rng, splits, sizes=(40, 64), first_id=10)
    write_refer(root, "refcocog", "umd", rng, {"train": 2, "test": 1}, (40, 64), first_id=100)
    write_refer(root, "grefcoco", "unc", rng, {"train": 2, "val": 1}, (40, 64), first_id=200)
    write_refer(root, "refclef", "unc", rng, {"train": 2}, (40, 64), first_id=300)
    return root


def test_split_selection_follows_the_refer_api(refer_root):
    ids = {
        split: set(load_refer_split(refer_root, "refcoco", "unc", split).images)
        for split in ("train", "val", "testA", "testB", "test")
    }
    assert ids["train"] == {10, 11, 12} and ids["val"] == {13, 14}
    assert ids["testA"] == {15, 17} and ids["testB"] == {16, 17}  # testAB counts for both
    assert ids["test"] == {15, 16, 17}
    with pytest.raises(ValueError, match="unknown split"):
        load_refer_split(refer_root, "refcoco", "unc", "validation")


def test_expression_masks_are_the_referred_objects(refer_root):
    split = load_refer_split(refer_root, "refcoco", "unc", "val")
    image_id = 13
    info = split.images[image_id]
    assert info.path.endswith(
        "refer_seg/images/mscoco/images/train2014/COCO_train2014_000000000013.jpg"
    )
    expressions = split.expressions[image_id]
    assert expressions[0].text == " The Object 0 of image 13 "  # stored as is
    masks = [split.mask(image_id, e) for e in expressions]
    assert all(m.shape == (info.height, info.width) and m.max() == 1 for m in masks)
    assert np.array_equal(masks[0], masks[1])  # two sentences of the same reference


def test_grefcoco_no_target_and_multi_target(refer_root):
    split = load_refer_split(refer_root, "grefcoco", "unc", "train")
    image_id = next(iter(split.images))
    by_text = {e.text: split.mask(image_id, e) for e in split.expressions[image_id]}
    assert not by_text["the purple giraffe"].any()
    singles = [m for text, m in by_text.items() if text.startswith("thing number")]
    assert np.array_equal(by_text["all the objects"], np.maximum.reduce(singles))


def test_refclef_images_and_refcocog_umd(refer_root):
    clef = load_refer_split(refer_root, "refclef", "unc", "train")
    assert all("refer_seg/images/saiapr_tc-12/" in i.path for i in clef.images.values())
    assert set(load_refer_split(refer_root, "refcocog", "umd", "test").images) == {102}


def test_refs_pickle_with_objects_is_refused(tmp_path):
    folder = tmp_path / "refer_seg/refcoco"
    folder.mkdir(parents=True)
    with open(folder / "refs(unc).p", "wb") as handle:
        pickle.dump([OrderedDict(ref_id=1)], handle)  # needs find_class to load
    (folder / "instances.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(MissingSourceError, match="refusing to load collections.OrderedDict"):
        load_refer_split(tmp_path, "refcoco", "unc", "train")


def test_missing_refs_file_names_the_expected_path(tmp_path):
    with pytest.raises(MissingSourceError, match=r"refer_seg/refcoco\+/refs\(unc\)\.p"):
        load_refer_split(tmp_path, "refcoco+", "unc", "train")


def test_training_source_samples_lower_cased_stripped_expressions(refer_root, builder):
    source = refer_seg_source(refer_root, "refcoco", builder, num_classes_per_sample=3, exclude=())
    assert len(source) == 3
    sample = source.sample(np.random.default_rng(0))
    assert 1 <= len(sample.conversations) <= 3 and sample.masks.shape[0] == len(
        sample.conversations
    )
    for text, question in zip(sample.sampled_classes, sample.questions, strict=True):
        assert text == text.strip() and text.lower() in question
    excluded = refer_seg_source(refer_root, "refcoco", builder, 3, exclude={"coco:10", "coco:11"})
    assert excluded.image_ids == [12]

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tests.tools.toy_dataset.conftest import TOY_SIZES
from tools.toy_dataset.write_refer_seg import (
    COCO_REFER_SPLITS,
    GREFCOCO_SPLITS,
    REFCLEF_SPLITS,
    SAIAPR_DIR,
    TRAIN2014_DIR,
)

REF_FILES = [
    (dataset, split_by, evaluation_splits)
    for dataset, splits_by in {**COCO_REFER_SPLITS, "refclef": REFCLEF_SPLITS}.items()
    for split_by, evaluation_splits in splits_by.items()
]
REF_KEYS = {"ref_id", "ann_id", "image_id", "category_id", "split", "file_name", "sent_ids"}


def load_refs(toy_dir, dataset, split_by):
    with open(toy_dir / "refer_seg" / dataset / f"refs({split_by}).p", "rb") as file:
        return pickle.load(file)


def load_instances(toy_dir, dataset):
    return json.loads((toy_dir / "refer_seg" / dataset / "instances.json").read_text())


def image_dir(toy_dir, dataset):
    return toy_dir / (SAIAPR_DIR if dataset == "refclef" else TRAIN2014_DIR)


@pytest.mark.parametrize("dataset, split_by, evaluation_splits", REF_FILES)
def test_refs_have_the_refer_structure(toy_dir, dataset, split_by, evaluation_splits):
    refs = load_refs(toy_dir, dataset, split_by)
    instances = load_instances(toy_dir, dataset)
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    images = {image["id"]: image for image in instances["images"]}
    categories = {category["id"] for category in instances["categories"]}
    assert {ref["split"] for ref in refs} == {"train", *evaluation_splits}
    assert len({ref["ref_id"] for ref in refs}) == len(refs)
    sent_ids = [sentence["sent_id"] for ref in refs for sentence in ref["sentences"]]
    assert len(set(sent_ids)) == len(sent_ids)
    for ref in refs:
        assert set(ref) >= REF_KEYS
        assert annotations[ref["ann_id"]]["image_id"] == ref["image_id"]
        assert ref["category_id"] == annotations[ref["ann_id"]]["category_id"] in categories
        assert (image_dir(toy_dir, dataset) / images[ref["image_id"]]["file_name"]).is_file()
        assert ref["sent_ids"] == [sentence["sent_id"] for sentence in ref["sentences"]]
        for sentence in ref["sentences"]:
            assert set(sentence) == {"tokens", "raw", "sent_id", "sent"}
            assert sentence["tokens"] == sentence["sent"].split()
            assert sentence["raw"].lower() == sentence["sent"]


def test_splits_are_by_image(toy_dir):
    refs = load_refs(toy_dir, "refcoco", "unc")
    split_of_image = {}
    for ref in refs:
        assert split_of_image.setdefault(ref["image_id"], ref["split"]) == ref["split"]


@pytest.mark.parametrize("dataset", ["refcoco", "refcoco+", "refcocog", "grefcoco"])
def test_coco_instances_masks_match_the_pictures(toy_dir, dataset):
    coco = COCO(str(toy_dir / "refer_seg" / dataset / "instances.json"))
    assert len(coco.getImgIds()) == TOY_SIZES["num_refer"]
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.loadImgs(ann["image_id"])[0]
        picture = np.asarray(Image.open(image_dir(toy_dir, dataset) / image["file_name"]))
        mask = coco.annToMask(ann).astype(bool)
        assert mask.shape == picture.shape[:2]
        assert mask.sum() == pytest.approx(ann["area"], rel=0.15)
        # a shape stands out from the light background
        assert picture[mask].mean() < picture[~mask].mean() - 30


def test_refclef_masks_are_run_length_encoded_lists(toy_dir):
    instances = load_instances(toy_dir, "refclef")
    for ann in instances["annotations"]:
        segmentation = [
            {**rle, "counts": rle["counts"].encode()} for rle in ann["segmentation"]
        ]  # as the readers turn the json strings into bytes
        mask = mask_utils.decode(segmentation).sum(axis=2)
        assert mask.sum() == ann["area"] > 0


def test_grefcoco_refs_have_lists_and_no_target_expressions(toy_dir):
    refs = json.loads((toy_dir / "refer_seg" / "grefcoco" / "grefs(unc).json").read_text())
    annotations = {ann["id"] for ann in load_instances(toy_dir, "grefcoco")["annotations"]}
    assert {ref["split"] for ref in refs} == {"train", *GREFCOCO_SPLITS}
    target_counts = set()
    for ref in refs:
        assert REF_KEYS | {"no_target", "sentences"} <= set(ref)
        assert isinstance(ref["ann_id"], list) and isinstance(ref["category_id"], list)
        assert ref["no_target"] == (ref["ann_id"] == [-1]) == (ref["category_id"] == [-1])
        if not ref["no_target"]:
            assert set(ref["ann_id"]) <= annotations
            target_counts.add(min(len(ref["ann_id"]), 2))
        assert (toy_dir / TRAIN2014_DIR / ref["file_name"]).is_file()
    assert target_counts == {1, 2} and any(ref["no_target"] for ref in refs)


def test_coco_photos_of_both_years_are_the_same_pictures(toy_dir):
    """Some refCOCO pictures are COCO 2017 pictures too, as in the real data."""
    shared = 0
    for path in (toy_dir / "coco" / "train2017").glob("*.jpg"):
        twin = toy_dir / TRAIN2014_DIR / f"COCO_train2014_{path.name}"
        if twin.is_file():
            shared += 1
            assert twin.read_bytes() == path.read_bytes()
    assert shared > 0

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from tests.tools.toy_dataset.conftest import TOY_SIZES
from tools.toy_dataset.classes import (
    ADE20K_CLASS_ID,
    COCO_STUFF_CLASS_ID,
    SEM_SEG_CLASS_OF_KIND,
    ade20k_label_values,
    coco_stuff_label_values,
)
from tools.toy_dataset.scene import SHAPE_KINDS

CLASS_LISTS = Path(__file__).resolve().parents[3] / "utils" / "data"


def pictures_and_labels(image_dir: Path, label_dir: Path) -> list[tuple[np.ndarray, Image.Image]]:
    pairs = []
    for label_path in sorted(label_dir.glob("*.png")):
        picture = np.asarray(Image.open(image_dir / f"{label_path.stem}.jpg"))
        pairs.append((picture, Image.open(label_path)))
    return pairs


def assert_labels_mark_the_shapes(picture: np.ndarray, labels: np.ndarray, background: int):
    """Labelled pixels are shape-coloured, background pixels light."""
    assert labels.shape == picture.shape[:2]
    shapes = labels != background
    assert shapes.any() and (~shapes).any()
    assert picture[shapes].mean() < picture[~shapes].mean() - 30


def test_class_ids_name_the_intended_classes_in_the_shipped_lists():
    lists = {
        "ade20k_classes.txt": ADE20K_CLASS_ID,
        "cocostuff_classes.txt": COCO_STUFF_CLASS_ID,
    }
    if not all((CLASS_LISTS / name).is_file() for name in lists):
        pytest.skip(f"the class lists are not in {CLASS_LISTS}")
    for file_name, class_ids in lists.items():
        names = (CLASS_LISTS / file_name).read_text(encoding="utf-8").splitlines()
        for name, class_id in class_ids.items():
            assert names[class_id] == name
            assert "-" not in name  # COCO-Stuff readers ignore the classes with a dash
    assert set(SEM_SEG_CLASS_OF_KIND) == set(SHAPE_KINDS)
    assert len(set(SEM_SEG_CLASS_OF_KIND.values())) == len(SHAPE_KINDS)


def test_ade20k_annotations_hold_shifted_class_ids(toy_dir):
    pairs = pictures_and_labels(
        toy_dir / "ade20k/images/training", toy_dir / "ade20k/annotations/training"
    )
    assert len(pairs) == TOY_SIZES["num_sem_seg"]
    allowed = {0, *ade20k_label_values().values()}
    for picture, label in pairs:
        assert label.mode == "L"
        labels = np.asarray(label)
        assert set(np.unique(labels)) <= allowed
        assert_labels_mark_the_shapes(picture, labels, background=0)


def test_cocostuff_maps_beside_the_coco_pictures(toy_dir):
    pairs = pictures_and_labels(toy_dir / "coco/train2017", toy_dir / "cocostuff/train2017")
    assert len(pairs) == TOY_SIZES["num_sem_seg"]
    allowed = {255, *coco_stuff_label_values().values()}
    for picture, label in pairs:
        assert label.mode == "L"
        labels = np.asarray(label)
        assert set(np.unique(labels)) <= allowed
        assert_labels_mark_the_shapes(picture, labels, background=255)


def test_mapillary_labels_index_the_config(toy_dir):
    config = json.loads((toy_dir / "mapillary/config_v2.0.json").read_text())
    readable = [label["readable"].lower() for label in config["labels"]]
    assert set(SEM_SEG_CLASS_OF_KIND.values()) < set(readable)
    assert readable[-1] == "unlabeled"
    pairs = pictures_and_labels(
        toy_dir / "mapillary/training/images", toy_dir / "mapillary/training/v2.0/labels"
    )
    assert len(pairs) == TOY_SIZES["num_sem_seg"]
    for picture, label in pairs:
        assert label.mode == "P"
        labels = np.asarray(label)
        assert labels.max() < len(readable)
        assert_labels_mark_the_shapes(picture, labels, background=len(readable) - 1)


def test_paco_lvis_objects_and_star_parts(toy_dir):
    coco = COCO(str(toy_dir / "vlpart/paco/annotations/paco_lvis_v1_train.json"))
    names = {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
    assert set(names.values()) == {*SHAPE_KINDS, "star:point", "star:center"}
    for image in coco.loadImgs(coco.getImgIds()):
        assert image["file_name"].startswith("train2017/")
        assert (toy_dir / "coco" / image["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert anns
        by_name = {names[ann["category_id"]]: coco.annToMask(ann) for ann in anns}
        if "star" in by_name:  # the parts cover the star
            parts = by_name["star:point"] | by_name["star:center"]
            star = by_name["star"]
            assert (parts & star).sum() / (parts | star).sum() > 0.9


def test_pascal_part_has_only_part_categories_and_a_star_in_every_picture(toy_dir):
    coco = COCO(str(toy_dir / "vlpart/pascal_part/train.json"))
    names = [category["name"] for category in coco.loadCats(coco.getCatIds())]
    assert all(name.count(":") == 1 for name in names)
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == TOY_SIZES["num_sem_seg"]
    for image in images:
        path = toy_dir / "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages" / image["file_name"]
        assert path.is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert {ann["category_id"] for ann in anns} == set(coco.getCatIds())
        points = [ann for ann in anns if ann["category_id"] == coco.getCatIds()[0]]
        assert all(len(ann["segmentation"]) == 5 for ann in points)  # five tips per star


def test_llava_conversations_refer_to_coco_pictures(toy_dir):
    items = json.loads((toy_dir / "llava_dataset/llava_instruct_150k.json").read_text())
    assert len(items) == TOY_SIZES["num_sem_seg"]
    for item in items:
        assert set(item) == {"id", "image", "conversations"}
        assert (toy_dir / "coco/train2017" / item["image"]).is_file()
        roles = [turn["from"] for turn in item["conversations"]]
        assert roles == ["human", "gpt"] * (len(roles) // 2) and roles
        assert "<image>" in item["conversations"][0]["value"]

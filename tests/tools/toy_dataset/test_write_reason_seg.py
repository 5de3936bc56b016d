import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from tests.tools.toy_dataset.conftest import TOY_SEED, TOY_SIZES
from tools.toy_dataset.scene import COLOURS, polygon_mask
from tools.toy_dataset.write_reason_seg import (
    REASON_SEG_DIR,
    reason_seg_annotation,
    reason_seg_example,
)
from utils.data.reason_seg_source import reason_seg_source
from utils.data.sample_builder import SampleBuilder
from utils.reason_seg import IGNORE_VALUE, TARGET_VALUE, load_annotation, render_mask
from utils.transforms import ClipTransform

SPLITS = {"train": "num_train", "val": "num_val", "test": "num_test"}


def split_items(toy_dir, split):
    """(index, image path, annotation) of every image of a split, in order."""
    images = sorted((toy_dir / REASON_SEG_DIR / split).glob("*.jpg"))
    return [(i, p, load_annotation(p.with_suffix(".json"))) for i, p in enumerate(images)]


def intended(split, index):
    """The scene and query the generator drew for an image."""
    scene, query, _ = reason_seg_example(TOY_SEED, split, index, TOY_SIZES["image_size"])
    return scene, query


@pytest.mark.parametrize("split", SPLITS)
def test_every_image_has_its_json_and_the_asked_count(toy_dir, split):
    folder = toy_dir / REASON_SEG_DIR / split
    stems = sorted(path.stem for path in folder.glob("*.jpg"))
    assert len(stems) == TOY_SIZES[SPLITS[split]]
    assert stems == sorted(path.stem for path in folder.glob("*.json"))


@pytest.mark.parametrize("split", SPLITS)
def test_targets_render_to_exactly_the_drawn_shape(toy_dir, split):
    for index, image_path, annotation in split_items(toy_dir, split):
        picture = np.asarray(Image.open(image_path).convert("RGB"))
        height, width = picture.shape[:2]
        mask = render_mask(annotation, height, width)
        scene, query = intended(split, index)
        target = scene.shapes[query.target]
        drawn = polygon_mask(target.polygon, height, width)
        rendered = mask == TARGET_VALUE
        assert (drawn & rendered).sum() / (drawn | rendered).sum() > 0.95
        # the picture shows the target's colour where the mask says the target is
        colour = np.median(picture[rendered], axis=0)
        nearest = min(COLOURS, key=lambda name: np.abs(colour - COLOURS[name]).sum())
        assert nearest == target.colour and np.abs(colour - COLOURS[nearest]).max() < 20
        assert annotation.texts == list(query.texts)
        assert annotation.is_sentence == query.is_sentence


def test_some_images_have_ignore_regions_on_the_faded_shapes(toy_dir):
    with_ignore = 0
    for index, image_path, annotation in split_items(toy_dir, "train"):
        labels = [shape.label for shape in annotation.shapes]
        assert labels.count("target") == 1
        if "ignore" in labels:
            with_ignore += 1
            scene, _ = intended("train", index)
            height, width = np.asarray(Image.open(image_path)).shape[:2]
            ignored = render_mask(annotation, height, width) == IGNORE_VALUE
            faded = polygon_mask(scene.faded_shapes[0].polygon, height, width)
            assert (ignored == faded).all()
    assert 0 < with_ignore < len(split_items(toy_dir, "train"))


def test_flag_polygons_are_dropped_by_the_readers(toy_dir):
    scene, query = intended("train", 0)
    plain = reason_seg_annotation(scene, query, "a.jpg", flag_on=None)
    flagged = reason_seg_annotation(scene, query, "a.jpg", flag_on=query.target)
    assert [shape["label"] for shape in flagged["shapes"]][-1] == "flag"
    masks = []
    for payload in (plain, flagged):
        path = toy_dir.parent / "flag.json"
        path.write_text(json.dumps(payload))
        masks.append(render_mask(load_annotation(path), scene.height, scene.width))
    assert (masks[0] == masks[1]).all()


def test_json_holds_the_labelme_keys_the_readers_use(toy_dir):
    for _, image_path, _ in split_items(toy_dir, "val"):
        payload = json.loads(image_path.with_suffix(".json").read_text(encoding="utf-8"))
        assert isinstance(payload["text"], list) and all(payload["text"])
        assert isinstance(payload["is_sentence"], bool)
        assert payload["imagePath"] == image_path.name
        for shape in payload["shapes"]:
            assert shape["label"] in {"target", "ignore", "flag"}
            assert shape["shape_type"] == "polygon" and len(shape["points"]) >= 3


def test_validation_and_test_images_are_not_training_images(toy_dir):
    def digests(split):
        folder = toy_dir / REASON_SEG_DIR / split
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.jpg")}

    names = {s: {p.name for p in (toy_dir / REASON_SEG_DIR / s).glob("*.jpg")} for s in SPLITS}
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not digests("train") & digests("val")
    assert not digests("train") & digests("test")
    assert not digests("val") & digests("test")


def test_explanations_belong_to_training_images_and_their_queries(toy_dir):
    entries = json.loads((toy_dir / REASON_SEG_DIR / "explanatory" / "train.json").read_text())
    assert 0 < len(entries) < TOY_SIZES["num_train"]
    for entry in entries:
        assert set(entry) == {"image", "query", "outputs"}
        image = toy_dir / REASON_SEG_DIR / "train" / entry["image"]
        assert image.is_file()
        assert entry["query"] == load_annotation(image.with_suffix(".json")).texts[0]
        assert entry["outputs"].endswith(".") and "[SEG]" not in entry["outputs"]


def test_target_conversations_ask_as_the_reader_asks_and_answer_the_target(toy_dir):
    """reason_seg_targets.json: each training request, in the words the ReasonSeg reader uses,
    answered with the name of the shape its mask covers; the picture is the training picture."""
    entries = json.loads((toy_dir / "llava_dataset/reason_seg_targets.json").read_text())
    by_image = {}
    for entry in entries:
        by_image.setdefault(entry["image"], []).append(entry["conversations"])
    train = split_items(toy_dir, "train")
    assert len(by_image) == len(train)
    clip = ClipTransform(shortest_edge=32, crop_size=(32, 32))
    reader = reason_seg_source(
        toy_dir,
        "ReasonSeg|train",
        SampleBuilder(clip_transform=clip, image_size=96, answers=("NAME.",)),
        num_classes_per_sample=1,
        explanatory=-1,
        exclude=(),
    )
    for index, image_path, annotation in train[:8]:
        copy = toy_dir / "coco/train2017" / f"reason_seg_{image_path.name}"
        assert copy.read_bytes() == image_path.read_bytes()
        conversations = by_image[copy.name]
        picture = np.asarray(Image.open(image_path).convert("RGB"))
        rendered = render_mask(annotation, *picture.shape[:2]) == TARGET_VALUE
        colour = np.median(picture[rendered], axis=0)
        seen_colour = min(COLOURS, key=lambda name: np.abs(colour - COLOURS[name]).sum())
        reader_questions = {
            reader.sample_at(index, np.random.default_rng(draw)).questions[0]
            for draw in range(150)  # 12 wordings at most: all are drawn
        }
        asked = set()
        for question, answer in conversations:
            assert (question["from"], answer["from"]) == ("human", "gpt")
            assert answer["value"].split()[0] == seen_colour and answer["value"].endswith(".")
            assert question["value"] in reader_questions
            asked.add(question["value"])
        assert asked == reader_questions  # every wording the reader uses, each once
        assert len(conversations) == len(asked)

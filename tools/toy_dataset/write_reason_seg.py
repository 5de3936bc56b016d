"""The toy ReasonSeg: ``reason_seg/ReasonSeg/{train,val,test}/*.jpg`` + labelme-style ``*.json``,
and ``reason_seg/ReasonSeg/explanatory/train.json``; also ``llava_dataset/reason_seg_targets.json``
(the training queries answered in words, for a LLaVA that has yet to learn to see the targets).

Each json holds ``text`` (1..3 paraphrases of one query), ``is_sentence`` and ``shapes``: the
target polygon (label "target"); on some images the polygon of a faded look-alike shape, which
is ambiguous and labelled "ignore"; on a few images a stray "flag" polygon (the original's
deprecated annotations, which readers drop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.toy_dataset.output import DatasetWriter
from tools.toy_dataset.queries import QUERY_KINDS, QueryKind, ReasoningQuery, sample_query
from tools.toy_dataset.sampling import canvas_size, item_rng
from tools.toy_dataset.scene import Scene, draw_scene, sample_scene
from utils.data.questions import segmentation_questions

REASON_SEG_DIR = "reason_seg/ReasonSeg"
IGNORE_SHARE = 0.25  # images with a faded, ambiguous shape marked "ignore"
FLAG_SHARE = 0.1  # images with a "flag" polygon
EXPLANATORY_SHARE = 0.5  # training images listed in explanatory/train.json
TARGETS_JSON = "llava_dataset/reason_seg_targets.json"
TARGETS_IMAGE_DIR = "coco/train2017"  # where the LLaVA-format readers look for pictures
MAX_TEXTS = 3  # paraphrases per image (the original has 1..5)


@dataclass(frozen=True)
class ReasonSegItem:
    """One written ReasonSeg image."""

    image_name: str  # "train_000012.jpg"
    query: ReasoningQuery
    explained: bool  # listed in explanatory/train.json (training split only)
    target_name: str  # "red circle"


def _polygon_entry(label: str, polygon: np.ndarray) -> dict[str, Any]:
    """A labelme shape."""
    return {
        "label": label,
        "points": polygon.tolist(),
        "group_id": None,
        "shape_type": "polygon",
        "flags": {},
    }


def _box_polygon(polygon: np.ndarray) -> np.ndarray:
    """[4, 2] corners of the bounding box of ``polygon``."""
    (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def reason_seg_annotation(
    scene: Scene, query: ReasoningQuery, image_name: str, flag_on: int | None
) -> dict[str, Any]:
    """The labelme-style json of one image.

    Args:
        flag_on: index of a shape whose bounding box becomes a "flag" polygon, or None.
    """
    shapes = [_polygon_entry("target", scene.shapes[query.target].polygon)]
    shapes += [_polygon_entry("ignore", faded.polygon) for faded in scene.faded_shapes]
    if flag_on is not None:
        shapes.append(_polygon_entry("flag", _box_polygon(scene.shapes[flag_on].polygon)))
    return {
        "text": list(query.texts),
        "is_sentence": query.is_sentence,
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": scene.height,
        "imageWidth": scene.width,
    }


def reason_seg_example(
    seed: int,
    split: str,
    index: int,
    image_size: int,
    kinds: Sequence[QueryKind] = QUERY_KINDS,
) -> tuple[Scene, ReasoningQuery, np.random.Generator]:
    """The scene and query of image ``index`` of ``split``, and the image's generator.

    A scene where none of ``kinds`` applies is replaced by another (from the same generator).
    """
    rng = item_rng(seed, f"ReasonSeg {split}", index)
    width, height = canvas_size(rng, image_size)
    faded_count = int(rng.random() < IGNORE_SHARE)
    while True:
        scene = sample_scene(rng, width, height, faded_count=faded_count)
        query = sample_query(scene, rng, MAX_TEXTS, kinds)
        if query is not None:
            return scene, query, rng


def write_reason_seg_split(
    writer: DatasetWriter,
    seed: int,
    image_size: int,
    split: str,
    count: int,
    kinds: Sequence[QueryKind] = QUERY_KINDS,
) -> list[ReasonSegItem]:
    """Write ``count`` images of ``split`` with their jsons; returns what was written."""
    items = []
    for index in range(count):
        scene, query, rng = reason_seg_example(seed, split, index, image_size, kinds)
        flag_on = int(rng.integers(len(scene.shapes))) if rng.random() < FLAG_SHARE else None
        explained = split == "train" and bool(rng.random() < EXPLANATORY_SHARE)
        stem = f"{split}_{index:06d}"
        writer.write_jpeg(f"{REASON_SEG_DIR}/{split}/{stem}.jpg", draw_scene(scene))
        annotation = reason_seg_annotation(scene, query, f"{stem}.jpg", flag_on)
        writer.write_json(f"{REASON_SEG_DIR}/{split}/{stem}.json", annotation)
        target_name = scene.shapes[query.target].name
        items.append(ReasonSegItem(f"{stem}.jpg", query, explained, target_name))
    return items


def write_explanatory(writer: DatasetWriter, train_items: list[ReasonSegItem]) -> int:
    """``explanatory/train.json``: [{image, query, outputs}] for the explained training images;
    returns how many."""
    entries = [
        {"image": item.image_name, "query": item.query.texts[0], "outputs": item.query.explanation}
        for item in train_items
        if item.explained
    ]
    writer.write_json(f"{REASON_SEG_DIR}/explanatory/train.json", entries)
    return len(entries)


def write_reason_seg_targets(writer: DatasetWriter, train_items: list[ReasonSegItem]) -> int:
    """``llava_dataset/reason_seg_targets.json``: every training query, in every question template
    LISA trains with, answered with the target's name ("red circle."); LLaVA-Instruct format, the
    pictures copied to ``coco/train2017/reason_seg_<stem>.jpg``. Returns how many conversations.

    The questions are exactly the ones the ReasonSeg reader asks, so a model trained on this file
    (``train_ds.py --dataset vqa --vqa_data reason_seg_targets``) names the target from the state
    that later predicts ``[SEG]``.
    """
    entries = []
    for item in train_items:
        image_name = f"reason_seg_{item.image_name}"
        source = writer.root / REASON_SEG_DIR / "train" / item.image_name
        writer.write_bytes(f"{TARGETS_IMAGE_DIR}/{image_name}", source.read_bytes())
        questions = [
            question
            for text in item.query.texts
            for question in segmentation_questions(text, item.query.is_sentence)
        ]
        for question in questions:
            entries.append(
                {
                    "id": f"{Path(item.image_name).stem}_{len(entries)}",
                    "image": image_name,
                    "conversations": [
                        {"from": "human", "value": question},
                        {"from": "gpt", "value": f"{item.target_name}."},
                    ],
                }
            )
    writer.write_json(TARGETS_JSON, entries)
    return len(entries)

"""The toy referring segmentation datasets in the REFER layout.

``refer_seg/{refcoco,refcoco+,refcocog}/``: ``instances.json`` (COCO: images, polygon
annotations, categories) and ``refs(<splitBy>).p`` (a pickled list of refs: ref_id, ann_id,
image_id, category_id, split, file_name, sent_ids, sentences [{tokens, raw, sent_id, sent}]).
``refer_seg/grefcoco/``: ``instances.json`` and ``grefs(unc).json`` (refs with lists of ann_ids,
``[-1]`` and ``no_target`` for expressions that match nothing). ``refer_seg/refclef/``: the same
as refCOCO with run-length-encoded masks. Pictures: ``refer_seg/images/mscoco/images/train2014/
COCO_train2014_%012d.jpg`` (shared by the COCO-based datasets) and
``refer_seg/images/saiapr_tc-12/%02d/images/%d.jpg``.

Splits are by image: image i goes to the i-th evaluation split for i % 10 in 1..k, else to train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tools.toy_dataset.coco_format import image_entry, polygon_annotation, rle_annotation
from tools.toy_dataset.expressions import group_expressions, sample_expressions
from tools.toy_dataset.output import DatasetWriter
from tools.toy_dataset.sampling import COCO_PHOTOS, item_rng, photo_scene
from tools.toy_dataset.scene import SHAPE_KINDS, Scene, draw_scene
from tools.toy_dataset.words import capitalised

REFCLEF_PHOTOS = "saiapr photo"
TRAIN2014_DIR = "refer_seg/images/mscoco/images/train2014"
SAIAPR_DIR = "refer_seg/images/saiapr_tc-12"
MAX_SENTENCES = 3  # sentences per ref

# dataset -> {splitBy: evaluation splits}; every dataset also has "train".
COCO_REFER_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("val", "testA", "testB"), "google": ("val", "test")},
    "refcoco+": {"unc": ("val", "testA", "testB")},
    "refcocog": {"umd": ("val", "test"), "google": ("val",)},
}
REFCLEF_SPLITS: dict[str, tuple[str, ...]] = {
    "unc": ("val", "testA", "testB", "testC"),
    "berkeley": ("val", "test"),
}
GREFCOCO_SPLITS: tuple[str, ...] = ("val", "testA", "testB")
# Enough images for every split of every dataset to get one (see split_of).
MIN_REFER_IMAGES = 1 + max(
    len(splits)
    for splits in (
        GREFCOCO_SPLITS,
        *REFCLEF_SPLITS.values(),
        *(splits for by in COCO_REFER_SPLITS.values() for splits in by.values()),
    )
)
REFCLEF_STYLE = "refcoco"  # the COCO-based datasets' expression styles are named after them

CATEGORIES = [
    {"supercategory": "shape", "id": number, "name": kind}
    for number, kind in enumerate(SHAPE_KINDS, start=1)
]
CATEGORY_ID = {category["name"]: category["id"] for category in CATEGORIES}


@dataclass(frozen=True)
class ReferImage:
    """A picture of a REFER dataset and the annotation id of each of its shapes."""

    image_id: int
    file_name: str  # as instances.json names it (relative to the dataset's image folder)
    scene: Scene
    ann_ids: tuple[int, ...]  # one per scene.shapes entry


def split_of(position: int, evaluation_splits: tuple[str, ...]) -> str:
    """The split of the image at ``position`` (0-based) of a dataset."""
    slot = position % 10
    return evaluation_splits[slot - 1] if 1 <= slot <= len(evaluation_splits) else "train"


def coco_train2014_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def saiapr_name(image_id: int) -> str:
    """saiapr_tc-12 keeps image N in folder N // 1000 (two digits)."""
    return f"{image_id // 1000:02d}/images/{image_id}.jpg"


def instances_json(images: list[ReferImage], run_length: bool) -> dict[str, Any]:
    """The ``instances.json`` of a REFER dataset: polygons, or RLE masks for refCLEF."""
    annotations = []
    for image in images:
        for shape, ann_id in zip(image.scene.shapes, image.ann_ids, strict=True):
            category_id = CATEGORY_ID[shape.kind]
            if run_length:
                annotations.append(
                    rle_annotation(shape.polygon, image.scene, image.image_id, category_id, ann_id)
                )
            else:
                annotations.append(
                    polygon_annotation([shape.polygon], image.image_id, category_id, ann_id)
                )
    return {
        "info": {"description": "toy shapes in the REFER format"},
        "images": [image_entry(image.file_name, image.scene, image.image_id) for image in images],
        "licenses": [],
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def sentence_entry(text: str, sent_id: int) -> dict[str, Any]:
    """A REFER sentence: ``sent`` is the lower-case text the readers use, ``raw`` as typed."""
    return {"tokens": text.split(), "raw": capitalised(text), "sent_id": sent_id, "sent": text}


def make_refs(
    images: list[ReferImage],
    dataset: str,
    style: str,
    seed: int,
    ref_file_name: Callable[[ReferImage, int], str],
) -> list[tuple[int, dict[str, Any]]]:
    """One ref per shape with 1..MAX_SENTENCES expressions of ``style``, each with the position
    of its image (which decides its split).

    Args:
        ref_file_name: (image, ann_id) -> the ref's ``file_name`` (which the readers ignore).
    """
    refs: list[tuple[int, dict[str, Any]]] = []
    sent_id = 0
    for position, image in enumerate(images):
        rng = item_rng(seed, f"refs {dataset}", position)
        for index, (shape, ann_id) in enumerate(
            zip(image.scene.shapes, image.ann_ids, strict=True)
        ):
            texts = sample_expressions(image.scene, index, style, rng, MAX_SENTENCES)
            sentences = [sentence_entry(text, sent_id + k) for k, text in enumerate(texts)]
            sent_id += len(sentences)
            ref = {
                "sent_ids": [sentence["sent_id"] for sentence in sentences],
                "file_name": ref_file_name(image, ann_id),
                "ann_id": ann_id,
                "ref_id": len(refs),
                "image_id": image.image_id,
                "sentences": sentences,
                "category_id": CATEGORY_ID[shape.kind],
            }
            refs.append((position, ref))
    return refs


def with_splits(
    refs: list[tuple[int, dict[str, Any]]], evaluation_splits: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The refs, each with the ``split`` of its image."""
    return [{**ref, "split": split_of(position, evaluation_splits)} for position, ref in refs]


def group_refs(images: list[ReferImage], seed: int) -> list[dict[str, Any]]:
    """gRefCOCO refs: every expression of :func:`group_expressions`, one sentence each."""
    refs: list[dict[str, Any]] = []
    for position, image in enumerate(images):
        rng = item_rng(seed, "grefs grefcoco", position)
        split = split_of(position, GREFCOCO_SPLITS)
        for expression in group_expressions(image.scene, rng):
            targets = [image.scene.shapes[i] for i in expression.targets]
            no_target = not targets
            refs.append(
                {
                    "ref_id": len(refs),
                    "image_id": image.image_id,
                    "ann_id": [-1] if no_target else [image.ann_ids[i] for i in expression.targets],
                    "category_id": [-1] if no_target else [CATEGORY_ID[s.kind] for s in targets],
                    "split": split,
                    "sentences": [sentence_entry(expression.sentence, len(refs))],
                    "sent_ids": [len(refs)],
                    "file_name": image.file_name,
                    "no_target": no_target,
                }
            )
    return refs


def refer_images(
    seed: int,
    image_size: int,
    collection: str,
    image_ids: range,
    file_name: Callable[[int], str],
) -> list[ReferImage]:
    """The pictures of a REFER dataset, their shapes numbered 1, 2, ... as annotations."""
    images = []
    ann_id = 1
    for image_id in image_ids:
        scene = photo_scene(seed, collection, image_id, image_size)
        ann_ids = tuple(range(ann_id, ann_id + len(scene.shapes)))
        ann_id += len(scene.shapes)
        images.append(ReferImage(image_id, file_name(image_id), scene, ann_ids))
    return images


def write_coco_refer_datasets(
    writer: DatasetWriter, seed: int, image_size: int, image_ids: range
) -> dict[str, int]:
    """refCOCO, refCOCO+, refCOCOg and gRefCOCO on shared train2014 pictures; returns the
    number of refs per ``dataset|splitBy``."""
    images = refer_images(seed, image_size, COCO_PHOTOS, image_ids, coco_train2014_name)
    for image in images:
        writer.write_jpeg(f"{TRAIN2014_DIR}/{image.file_name}", draw_scene(image.scene))
    instances = instances_json(images, run_length=False)
    counts = {}
    for dataset, splits_by in COCO_REFER_SPLITS.items():
        writer.write_json(f"refer_seg/{dataset}/instances.json", instances)
        refs = make_refs(
            images,
            dataset,
            dataset,
            seed,
            lambda image, ann_id: f"{image.file_name[:-4]}_{ann_id}.jpg",
        )
        for split_by, evaluation_splits in splits_by.items():
            writer.write_pickle(
                f"refer_seg/{dataset}/refs({split_by}).p", with_splits(refs, evaluation_splits)
            )
            counts[f"{dataset}|{split_by}"] = len(refs)
    writer.write_json("refer_seg/grefcoco/instances.json", instances)
    grefs = group_refs(images, seed)
    writer.write_json("refer_seg/grefcoco/grefs(unc).json", grefs)
    counts["grefcoco|unc"] = len(grefs)
    return counts


def write_refclef(writer: DatasetWriter, seed: int, image_size: int, count: int) -> dict[str, int]:
    """refCLEF on its saiapr_tc-12 pictures, masks run-length encoded; returns ref counts."""
    images = refer_images(seed, image_size, REFCLEF_PHOTOS, range(1, count + 1), saiapr_name)
    for image in images:
        writer.write_jpeg(f"{SAIAPR_DIR}/{image.file_name}", draw_scene(image.scene))
    writer.write_json("refer_seg/refclef/instances.json", instances_json(images, run_length=True))
    refs = make_refs(
        images,
        "refclef",
        REFCLEF_STYLE,
        seed,
        lambda image, ann_id: f"{image.image_id}_{ann_id}.jpg",
    )
    counts = {}
    for split_by, evaluation_splits in REFCLEF_SPLITS.items():
        writer.write_pickle(
            f"refer_seg/refclef/refs({split_by}).p", with_splits(refs, evaluation_splits)
        )
        counts[f"refclef|{split_by}"] = len(refs)
    return counts

"""The toy semantic segmentation sources that have pictures of their own.

* ADE20K: ``ade20k/images/training/ADE_train_%08d.jpg`` + ``ade20k/annotations/training/
  ADE_train_%08d.png`` (8-bit grey, class position + 1, 0 = other).
* Mapillary Vistas v2.0: ``mapillary/config_v2.0.json`` (``labels``: name, readable, color,
  instances, evaluate) + ``mapillary/training/images/<id>.jpg`` + ``mapillary/training/v2.0/
  labels/<id>.png`` (palette PNG, value = label index, background = the last label,
  "Unlabeled").
* PASCAL-Part: ``vlpart/pascal_part/train.json`` (COCO json whose categories are all
  "object:part") + ``vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/2008_%06d.jpg``; every
  picture holds a star, annotated as "star:point" (its five tips) and "star:center".

COCO-Stuff and PACO-LVIS share the COCO 2017 pictures: see write_coco.py.
"""

from __future__ import annotations

from typing import Any

from tools.toy_dataset.classes import (
    ADE20K_OTHER,
    SEM_SEG_CLASS_OF_KIND,
    STAR_PARTS,
    ade20k_label_values,
)
from tools.toy_dataset.coco_format import image_entry, star_part_annotations
from tools.toy_dataset.output import DatasetWriter
from tools.toy_dataset.sampling import photo_scene
from tools.toy_dataset.scene import SHAPE_KINDS, draw_scene, label_map
from tools.toy_dataset.words import capitalised

ADE20K_IMAGES = "ade20k/images/training"
ADE20K_ANNOTATIONS = "ade20k/annotations/training"
MAPILLARY_ROOT = "mapillary"
PASCAL_PART_ROOT = "vlpart/pascal_part"
PASCAL_PART_IMAGES = f"{PASCAL_PART_ROOT}/VOCdevkit/VOC2010/JPEGImages"
# Colour of each label in config_v2.0.json (and in the palette of the label PNGs).
MAPILLARY_COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (220, 20, 60),
    "triangle": (0, 130, 180),
    "square": (250, 170, 30),
    "rectangle": (102, 102, 156),
    "pentagon": (70, 70, 70),
    "hexagon": (190, 153, 153),
    "star": (107, 142, 35),
}
UNLABELED_COLOUR = (0, 0, 0)


def write_ade20k(writer: DatasetWriter, seed: int, image_size: int, count: int) -> int:
    """Write ``count`` ADE20K pictures with their annotation PNGs; returns ``count``."""
    values = ade20k_label_values()
    for number in range(1, count + 1):
        scene = photo_scene(seed, "ade20k", number, image_size)
        stem = f"ADE_train_{number:08d}"
        writer.write_jpeg(f"{ADE20K_IMAGES}/{stem}.jpg", draw_scene(scene))
        writer.write_png(f"{ADE20K_ANNOTATIONS}/{stem}.png", label_map(scene, values, ADE20K_OTHER))
    return count


def mapillary_config() -> dict[str, Any]:
    """``config_v2.0.json``: one label per sem-seg class of the shapes, then "Unlabeled"."""
    labels = [
        {
            "color": list(MAPILLARY_COLOURS[kind]),
            "instances": True,
            "readable": capitalised(SEM_SEG_CLASS_OF_KIND[kind]),
            "name": f"object--{SEM_SEG_CLASS_OF_KIND[kind]}",
            "evaluate": True,
        }
        for kind in SHAPE_KINDS
    ]
    labels.append(
        {
            "color": list(UNLABELED_COLOUR),
            "instances": False,
            "readable": "Unlabeled",
            "name": "void--unlabeled",
            "evaluate": False,
        }
    )
    return {"labels": labels, "version": "2.0"}


def write_mapillary(writer: DatasetWriter, seed: int, image_size: int, count: int) -> int:
    """Write the config and ``count`` training pictures with label PNGs; returns ``count``."""
    config = mapillary_config()
    writer.write_json(f"{MAPILLARY_ROOT}/config_v2.0.json", config)
    values = {kind: index for index, kind in enumerate(SHAPE_KINDS)}
    unlabeled = len(config["labels"]) - 1
    palette = [channel for label in config["labels"] for channel in label["color"]]
    for number in range(1, count + 1):
        scene = photo_scene(seed, "mapillary", number, image_size)
        stem = f"toy{number:07d}"
        writer.write_jpeg(f"{MAPILLARY_ROOT}/training/images/{stem}.jpg", draw_scene(scene))
        writer.write_png(
            f"{MAPILLARY_ROOT}/training/v2.0/labels/{stem}.png",
            label_map(scene, values, unlabeled),
            palette=palette,
        )
    return count


def write_pascal_part(writer: DatasetWriter, seed: int, image_size: int, count: int) -> int:
    """Write ``train.json`` and ``count`` VOC pictures, each with a star; returns ``count``."""
    part_ids = {part: number for number, part in enumerate(STAR_PARTS, start=1)}
    images, annotations = [], []
    for number in range(1, count + 1):
        scene = photo_scene(seed, "pascal_part", number, image_size, required_kinds=("star",))
        file_name = f"2008_{number:06d}.jpg"
        writer.write_jpeg(f"{PASCAL_PART_IMAGES}/{file_name}", draw_scene(scene))
        images.append(image_entry(file_name, scene, number))
        annotations += star_part_annotations(scene, number, part_ids, len(annotations) + 1)
    categories = [
        {"supercategory": "star", "id": number, "name": f"star:{part}"}
        for part, number in part_ids.items()
    ]
    writer.write_json(
        f"{PASCAL_PART_ROOT}/train.json",
        {"images": images, "annotations": annotations, "categories": categories},
    )
    return count

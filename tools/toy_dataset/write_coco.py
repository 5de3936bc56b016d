"""The toy COCO 2017 pictures and the three sources built on them.

* ``coco/train2017/%012d.jpg``: the pictures.
* COCO-Stuff: ``cocostuff/train2017/%012d.png`` (stuffthingmaps: 8-bit grey, class position,
  255 = unlabeled).
* PACO-LVIS: ``vlpart/paco/annotations/paco_lvis_v1_train.json`` (COCO json, file names
  "train2017/%012d.jpg"; categories: the shape kinds as objects, and "star:point" /
  "star:center" as parts).
* LLaVA-Instruct-150k: ``llava_dataset/llava_instruct_150k.json`` ([{id, image, conversations
  [{from: human|gpt, value}]}], one per picture).

The pictures are COCO photos in the toy world too: a picture whose id is also a refCOCO image
(train2014) shows the same scene, as real COCO 2014 and 2017 share photos.
"""

from __future__ import annotations

from typing import Any

from tools.toy_dataset.classes import COCO_STUFF_UNLABELED, STAR_PARTS, coco_stuff_label_values
from tools.toy_dataset.coco_format import image_entry, polygon_annotation, star_part_annotations
from tools.toy_dataset.conversations import sample_conversation
from tools.toy_dataset.output import DatasetWriter
from tools.toy_dataset.sampling import COCO_PHOTOS, item_rng, photo_scene
from tools.toy_dataset.scene import SHAPE_KINDS, Scene, draw_scene, label_map

COCO_TRAIN2017 = "coco/train2017"
COCO_STUFF_LABELS = "cocostuff/train2017"
PACO_LVIS_JSON = "vlpart/paco/annotations/paco_lvis_v1_train.json"
LLAVA_JSON = "llava_dataset/llava_instruct_150k.json"
MAX_TURNS = 3  # question/answer pairs per conversation

PACO_OBJECT_IDS = {kind: number for number, kind in enumerate(SHAPE_KINDS, start=1)}
PACO_PART_IDS = {part: len(SHAPE_KINDS) + number for number, part in enumerate(STAR_PARTS, 1)}
PACO_CATEGORIES = [
    {"supercategory": "shape", "id": number, "name": kind}
    for kind, number in PACO_OBJECT_IDS.items()
] + [
    {"supercategory": "star", "id": number, "name": f"star:{part}"}
    for part, number in PACO_PART_IDS.items()
]


def paco_annotations(scene: Scene, image_id: int, first_ann_id: int) -> list[dict[str, Any]]:
    """Every shape as an object annotation, then the parts of the stars."""
    annotations = [
        polygon_annotation([shape.polygon], image_id, PACO_OBJECT_IDS[shape.kind], first_ann_id + i)
        for i, shape in enumerate(scene.shapes)
    ]
    return annotations + star_part_annotations(
        scene, image_id, PACO_PART_IDS, first_ann_id + len(annotations)
    )


def write_coco_sources(
    writer: DatasetWriter, seed: int, image_size: int, image_ids: range
) -> dict[str, int]:
    """Write the pictures, COCO-Stuff maps, PACO-LVIS json and LLaVA json; returns counts."""
    stuff_values = coco_stuff_label_values()
    images, annotations, conversations = [], [], []
    for image_id in image_ids:
        scene = photo_scene(seed, COCO_PHOTOS, image_id, image_size)
        name = f"{image_id:012d}"
        writer.write_jpeg(f"{COCO_TRAIN2017}/{name}.jpg", draw_scene(scene))
        writer.write_png(
            f"{COCO_STUFF_LABELS}/{name}.png", label_map(scene, stuff_values, COCO_STUFF_UNLABELED)
        )
        images.append(image_entry(f"train2017/{name}.jpg", scene, image_id))
        annotations += paco_annotations(scene, image_id, len(annotations) + 1)
        rng = item_rng(seed, "llava", image_id)
        conversations.append(
            {
                "id": name,
                "image": f"{name}.jpg",
                "conversations": sample_conversation(scene, rng, MAX_TURNS),
            }
        )
    writer.write_json(
        PACO_LVIS_JSON,
        {"images": images, "annotations": annotations, "categories": PACO_CATEGORIES},
    )
    writer.write_json(LLAVA_JSON, conversations)
    count = len(image_ids)
    return {"cocostuff": count, "paco_lvis": count, "llava_instruct_150k": count}

"""COCO-format records (images, polygon or RLE annotations) for the toy shapes.

refCOCO's ``instances.json``, PACO-LVIS and PASCAL-Part are all COCO json files that
``pycocotools.coco.COCO`` reads; these helpers write their entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from tools.toy_dataset.classes import STAR_PARTS
from tools.toy_dataset.scene import Scene, polygon_area, polygon_mask, star_parts


def image_entry(file_name: str, scene: Scene, image_id: int) -> dict[str, Any]:
    return {"file_name": file_name, "height": scene.height, "width": scene.width, "id": image_id}


def _box(points: np.ndarray) -> list[float]:
    """COCO box ``[x, y, width, height]`` around [K, 2] points."""
    low, high = points.min(axis=0), points.max(axis=0)
    return [round(float(v), 2) for v in (low[0], low[1], high[0] - low[0], high[1] - low[1])]


def polygon_annotation(
    polygons: list[np.ndarray], image_id: int, category_id: int, ann_id: int
) -> dict[str, Any]:
    """An annotation of one or more [K, 2] polygons (one object, possibly in pieces)."""
    return {
        "segmentation": [polygon.reshape(-1).tolist() for polygon in polygons],
        "area": round(sum(polygon_area(polygon) for polygon in polygons), 2),
        "iscrowd": 0,
        "image_id": image_id,
        "bbox": _box(np.concatenate(polygons)),
        "category_id": category_id,
        "id": ann_id,
    }


def rle_annotation(
    polygon: np.ndarray, scene: Scene, image_id: int, category_id: int, ann_id: int
) -> dict[str, Any]:
    """An annotation whose ``segmentation`` is a list holding one compressed RLE (``counts`` a
    string) of the polygon's painted pixels, as refCLEF stores masks."""
    mask = polygon_mask(polygon, scene.height, scene.width).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {
        "segmentation": [{"size": [scene.height, scene.width], "counts": rle["counts"].decode()}],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "image_id": image_id,
        "bbox": _box(polygon),
        "category_id": category_id,
        "id": ann_id,
    }


def star_part_annotations(
    scene: Scene, image_id: int, part_category_ids: dict[str, int], first_ann_id: int
) -> list[dict[str, Any]]:
    """The parts of every star of ``scene``: "point" (one annotation of its five tips) and
    "center", numbered from ``first_ann_id``."""
    annotations = []
    for star in (shape for shape in scene.shapes if shape.kind == "star"):
        tips, center = star_parts(star)
        for part, polygons in zip(STAR_PARTS, (tips, [center]), strict=True):
            ann_id = first_ann_id + len(annotations)
            annotations.append(
                polygon_annotation(polygons, image_id, part_category_ids[part], ann_id)
            )
    return annotations

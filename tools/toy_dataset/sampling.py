"""Deterministic randomness: one independent stream per generated item.

Each image (or annotation set) draws from a generator seeded by (seed, collection, item number),
so an item never depends on how many other items were asked for: a run with more images keeps
every image of a smaller run, and the same seed always gives the same bytes.
"""

from __future__ import annotations

import zlib

import numpy as np

from tools.toy_dataset.scene import Scene, sample_scene

LANDSCAPE_SHARE = 0.5  # pictures 3/4 as tall as wide; the others are square
# The collection of COCO photos: refCOCO's train2014 pictures and the COCO 2017 ones draw from it,
# so an id in both shows the same scene.
COCO_PHOTOS = "coco photo"


def item_rng(seed: int, collection: str, item: int) -> np.random.Generator:
    """The generator of item ``item`` of ``collection`` (a stable name such as "ade20k")."""
    return np.random.default_rng([seed, zlib.crc32(collection.encode("utf-8")), item])


def canvas_size(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """(width, height): ``image_size`` wide; as tall, or 3/4 as tall (a landscape photo)."""
    if rng.random() < LANDSCAPE_SHARE:
        return image_size, round(0.75 * image_size)
    return image_size, image_size


def photo_scene(
    seed: int,
    collection: str,
    item: int,
    image_size: int,
    *,
    required_kinds: tuple[str, ...] = (),
) -> Scene:
    """The scene of photo ``item`` of ``collection``.

    Two datasets that share photos (refCOCO's train2014 and COCO-Stuff's train2017 both hold
    COCO images) ask for the same collection and number and get the same scene.
    """
    rng = item_rng(seed, collection, item)
    width, height = canvas_size(rng, image_size)
    return sample_scene(rng, width, height, required_kinds=required_kinds)

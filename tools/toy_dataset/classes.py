"""Which class each shape kind is in the semantic segmentation sources.

ADE20K and COCO-Stuff readers take their class names from the lists the original ships (our
``utils/data/ade20k_classes.txt`` and ``cocostuff_classes.txt``), so the toy label maps must use
ids of classes in those lists; every kind gets a real class that exists in both, of a fitting
outline, and keeps it in Mapillary too (whose names come from the toy ``config_v2.0.json``).
PACO-LVIS, PASCAL-Part and the REFER datasets carry their own category names in their json
files, so they name the shapes themselves ("circle", "star:point").
"""

from __future__ import annotations

from tools.toy_dataset.scene import SHAPE_KINDS

SEM_SEG_CLASS_OF_KIND: dict[str, str] = {
    "circle": "plate",
    "triangle": "tent",
    "square": "pillow",
    "rectangle": "door",
    "pentagon": "house",
    "hexagon": "clock",
    "star": "flower",
}

# 0-based position of each class in the original's ADE20K list; the PNGs store position + 1
# (0 = "other", which the readers ignore).
ADE20K_CLASS_ID: dict[str, int] = {
    "plate": 142,
    "tent": 114,
    "pillow": 57,
    "door": 14,
    "house": 25,
    "clock": 148,
    "flower": 66,
}
ADE20K_OTHER = 0

# Position in the original's COCO-Stuff list (after its "0: unlabeled" header line), which is
# the value stuffthingmaps store; 255 = unlabeled.
COCO_STUFF_CLASS_ID: dict[str, int] = {
    "plate": 44,
    "tent": 165,
    "pillow": 140,
    "door": 70,
    "house": 127,
    "clock": 84,
    "flower": 118,
}
COCO_STUFF_UNLABELED = 255

STAR_PARTS = ("point", "center")  # PACO-LVIS / PASCAL-Part categories "star:point", "star:center"


def ade20k_label_values() -> dict[str, int]:
    """Shape kind -> the value an ADE20K annotation PNG stores for it."""
    return {kind: ADE20K_CLASS_ID[SEM_SEG_CLASS_OF_KIND[kind]] + 1 for kind in SHAPE_KINDS}


def coco_stuff_label_values() -> dict[str, int]:
    """Shape kind -> the value a COCO-Stuff stuffthingmap stores for it."""
    return {kind: COCO_STUFF_CLASS_ID[SEM_SEG_CLASS_OF_KIND[kind]] for kind in SHAPE_KINDS}

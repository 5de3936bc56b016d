"""Where each data source lives under ``--dataset_dir`` (the tree of the original README).

Readers, ``utils.check_dataset`` and ``dataset/README.md`` follow these paths; a source whose
files are absent fails at start-up with :class:`MissingSourceError` naming the expected path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.data.bad_samples import MissingSourceError
from utils.reason_seg import BadAnnotationError, read_json_text

# Semantic segmentation.
ADE20K_IMAGES = "ade20k/images/training"  # ADE_train_*.jpg
ADE20K_ANNOTATIONS = "ade20k/annotations/training"  # same stem, .png, 0 = other, 1..150
COCOSTUFF_LABELS = "cocostuff/train2017"  # stuffthingmaps *.png, 0..181, 255 = unlabeled
COCO_TRAIN2017 = "coco/train2017"  # COCO images: COCO-Stuff, PACO-LVIS, LLaVA-Instruct
COCO_ROOT = "coco"  # PACO-LVIS file names are relative to it ("train2017/...")
MAPILLARY_CONFIG = "mapillary/config_v2.0.json"
MAPILLARY_LABELS = "mapillary/training/v2.0/labels"  # *.png class indices
MAPILLARY_IMAGES = "mapillary/training/images"  # same stem, .jpg
PACO_LVIS_JSON = "vlpart/paco/annotations/paco_lvis_v1_train.json"
PASCAL_PART_JSON = "vlpart/pascal_part/train.json"
PASCAL_PART_IMAGES = "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages"

# Referring segmentation.
REFER_ROOT = "refer_seg"
REFER_IMAGE_DIRS = {
    "refclef": "refer_seg/images/saiapr_tc-12",
    "refcoco": "refer_seg/images/mscoco/images/train2014",
    "refcoco+": "refer_seg/images/mscoco/images/train2014",
    "refcocog": "refer_seg/images/mscoco/images/train2014",
    "grefcoco": "refer_seg/images/mscoco/images/train2014",
}
# The split each dataset is trained with (its validation names carry their own).
REFER_TRAIN_SPLIT_BY = {
    "refclef": "unc",
    "refcoco": "unc",
    "refcoco+": "unc",
    "refcocog": "umd",
    "grefcoco": "unc",
}

# Visual question answering.
LLAVA_DIR = "llava_dataset"  # <name>.json, e.g. llava_instruct_150k.json

# Reasoning segmentation.
REASON_SEG_ROOT = "reason_seg"  # <name>/<split>/*.jpg + *.json, <name>/explanatory/train.json


def refer_annotation_files(dataset: str, split_by: str) -> tuple[str, str]:
    """(references file, instances file) of a REFER-format dataset, relative to dataset_dir."""
    folder = f"{REFER_ROOT}/{dataset}"
    refs = f"grefs({split_by}).json" if dataset == "grefcoco" else f"refs({split_by}).p"
    return f"{folder}/{refs}", f"{folder}/instances.json"


def explanatory_file(reason_seg_name: str) -> str:
    return f"{REASON_SEG_ROOT}/{reason_seg_name}/explanatory/train.json"


def require_file(dataset_dir: Path, relative: str, source: str) -> Path:
    """``dataset_dir / relative`` if it is a file, else MissingSourceError."""
    path = dataset_dir / relative
    if not path.is_file():
        raise MissingSourceError(f"{source}: expected the file {path}, which does not exist.")
    return path


def require_dir(dataset_dir: Path, relative: str, source: str) -> Path:
    """``dataset_dir / relative`` if it is a folder, else MissingSourceError."""
    path = dataset_dir / relative
    if not path.is_dir():
        raise MissingSourceError(f"{source}: expected the folder {path}, which does not exist.")
    return path


def load_json(path: Path, source: str) -> Any:
    """Parse a start-up json file (UTF-8, or cp1252 as some released files are)."""
    try:
        return json.loads(read_json_text(path))
    except (BadAnnotationError, json.JSONDecodeError, OSError) as error:
        raise MissingSourceError(
            f"{source}: {path} is not a readable json file ({error})."
        ) from None

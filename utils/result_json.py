"""The JSON result of one answer, as chat.py --output_json and the web demo's download write it.

Schema::

    {"prompt": str, "image": str, "answer": str,
     "masks": [{"mask_path": str, "overlay_path": str, "area": int, "size": [H, W],
                "rle": {"size": [H, W], "counts": str}}, ...]}

one entry per [SEG] of the answer, in order; ``rle`` (COCO compressed run-length encoding, see
:mod:`utils.mask_rle`) only when asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.output_dir import write_bytes_atomic

RESULT_KEYS = {"prompt", "image", "answer", "masks"}
LARGEST_RESULT_BYTES = 64 * 2**20  # a result file is read back only to recognise it


def result_document(
    *,
    prompt: str,
    image: str,
    answer: str,
    masks: Sequence[np.ndarray],
    mask_paths: Sequence[str | Path],
    overlay_paths: Sequence[str | Path],
    rle: bool,
) -> dict:
    """The JSON-ready result; ``masks`` are [H, W] bool, one path of each kind per mask."""
    if not len(masks) == len(mask_paths) == len(overlay_paths):
        raise ValueError(
            f"{len(masks)} masks need as many mask and overlay paths, got "
            f"{len(mask_paths)} and {len(overlay_paths)}"
        )
    if rle:
        from utils.mask_rle import encode_rle  # pycocotools only when asked for
    entries = []
    for mask, mask_path, overlay_path in zip(masks, mask_paths, overlay_paths, strict=True):
        entry = {
            "mask_path": str(mask_path),
            "overlay_path": str(overlay_path),
            "area": int(np.count_nonzero(mask)),
            "size": list(mask.shape),
        }
        if rle:
            entry["rle"] = encode_rle(mask)
        entries.append(entry)
    return {"prompt": prompt, "image": image, "answer": answer, "masks": entries}


def write_json(path: str | Path, document: dict) -> None:
    """Write ``document`` as UTF-8 JSON under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def is_result_file(path: str | Path) -> bool:
    """Whether ``path`` is a regular file holding a result of this schema (one an earlier run
    wrote, which a new result may replace)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > LARGEST_RESULT_BYTES:
            return False
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and set(document) == RESULT_KEYS

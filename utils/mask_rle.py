"""COCO run-length encoding of binary masks (through pycocotools), for JSON results."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict:
    """[H, W] bool -> ``{"size": [H, W], "counts": str}`` (COCO compressed RLE, JSON-ready)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """Inverse of :func:`encode_rle`: -> [H, W] bool."""
    counts = rle["counts"]
    encoded = {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return coco_mask.decode(encoded).astype(bool)

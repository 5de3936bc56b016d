"""COCO-format segmentations (polygons or run-length encodings) to binary masks.

Used by the REFER / gRefCOCO readers and the PACO-LVIS / PASCAL-Part readers. Decoding is done
by ``pycocotools.mask``; the checks around it turn malformed annotations into
:class:`BadSampleError` instead of crashes inside the C code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from utils.data.bad_samples import BadSampleError, SkipReason


def decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """Binary mask of one annotation's ``segmentation`` field.

    Args:
        segmentation: a list of polygons ``[[x0, y0, x1, y1, ...], ...]``, one RLE dict
            (``counts`` compressed str/bytes or an uncompressed list), or a list of RLE dicts.
            An empty list gives an empty mask, as in the original.
        height, width: the image size the annotation refers to.
        where: names the annotation in error messages (file and id).

    Returns:
        ``[H, W]`` uint8 in {0, 1}: the union of all parts.

    Raises:
        BadSampleError: a polygon with fewer than 3 points, polygons wholly outside the image,
            or a malformed RLE.
    """
    if segmentation is None or (isinstance(segmentation, list) and len(segmentation) == 0):
        return np.zeros((height, width), dtype=np.uint8)
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if not isinstance(segmentation, list):
        raise BadSampleError(SkipReason.BAD_ANNOTATION, f"{where}: segmentation is not a list")
    if all(isinstance(part, list) for part in segmentation):
        return _decode_polygons(segmentation, height, width, where)
    if all(isinstance(part, dict) for part in segmentation):
        return _decode_rles(segmentation, height, width, where)
    raise BadSampleError(
        SkipReason.BAD_ANNOTATION, f"{where}: segmentation mixes polygons and RLEs"
    )


def _decode_polygons(polygons: list[list], height: int, width: int, where: str) -> np.ndarray:
    for polygon in polygons:
        if len(polygon) < 6 or len(polygon) % 2:
            raise BadSampleError(
                SkipReason.DEGENERATE_POLYGON,
                f"{where}: a polygon has {len(polygon) / 2:g} point(s), expected 3 or more",
            )
    try:
        rles = coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    except (TypeError, ValueError) as error:
        raise BadSampleError(
            SkipReason.BAD_ANNOTATION, f"{where}: bad polygon ({error})"
        ) from error
    mask = coco_mask.decode(rles).max(axis=2)  # [H, W]: union of the parts
    if not mask.any():
        raise BadSampleError(
            SkipReason.DEGENERATE_POLYGON,
            f"{where}: polygons lie outside the {width}x{height} image",
        )
    return mask


def _decode_rles(rles: list[dict], height: int, width: int, where: str) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for rle in rles:
        counts, size = rle.get("counts"), rle.get("size")
        if counts is None or list(size or []) != [height, width]:
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION,
                f"{where}: RLE of size {size} does not describe the {height}x{width} image",
            )
        try:
            if isinstance(counts, list):  # uncompressed RLE
                encoded = coco_mask.frPyObjects(rle, height, width)
            else:
                raw = counts.encode("ascii") if isinstance(counts, str) else counts
                encoded = {"size": [height, width], "counts": raw}
            mask |= coco_mask.decode(encoded)
        except (TypeError, ValueError, UnicodeEncodeError) as error:
            raise BadSampleError(
                SkipReason.BAD_ANNOTATION, f"{where}: bad RLE ({error})"
            ) from error
    return mask

"""ReasonSeg annotations: one json per image with the queries and labelled polygons.

Format (labelme-style): ``{"text": [str, ...], "is_sentence": bool, "shapes": [{"label":
"target" | "ignore" | "flag", "points": [[x, y], ...], ...}, ...]}``. Files are UTF-8, some
older ones cp1252. Rendering follows the original: "flag" shapes are dropped, the remaining
polygons are painted largest area first (so that smaller ones stay visible on top), outline and
interior, with 1 for targets and 255 for regions that evaluation ignores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils.regular_files import NotRegularFileError, check_regular_file

TARGET_VALUE = 1
IGNORE_VALUE = 255
MAX_COORDINATE = 2**30  # points beyond it are no pixel position (and overflow OpenCV's int32)


class BadAnnotationError(ValueError):
    """An annotation file that cannot be used (unreadable, malformed, degenerate polygon)."""


@dataclass
class Shape:
    label: str  # "target", "ignore" (any label containing "ignore") or "flag"
    points: np.ndarray  # [K, 2] (x, y) in pixels


@dataclass
class ReasonSegAnnotation:
    path: Path
    texts: list[str]
    is_sentence: bool
    shapes: list[Shape] = field(default_factory=list)


def read_json_text(path: str | Path) -> str:
    """Text of a json file: UTF-8, else cp1252 (which some ReasonSeg files use).

    Raises:
        BadAnnotationError: not a regular file (a FIFO would block), or neither encoding.
        OSError: the file cannot be read.
    """
    try:
        check_regular_file(path, "annotation")
    except NotRegularFileError as error:
        raise BadAnnotationError(str(error)) from None
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError as error:
            raise BadAnnotationError(f"{path}: neither UTF-8 nor cp1252 text") from error


def load_annotation(path: str | Path) -> ReasonSegAnnotation:
    """Parse one ReasonSeg json and check its fields.

    Raises:
        BadAnnotationError: with the file and the reason: unreadable or not json; no 'shapes'
            list; 'text' not a string or a list of strings; 'is_sentence' not true/false; a
            shape without a string label or with points that are not finite [x, y] numbers.
    """
    path = Path(path)
    try:
        data = json.loads(read_json_text(path))
    except (OSError, json.JSONDecodeError, RecursionError) as error:
        raise BadAnnotationError(f"{path}: not a readable json file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise BadAnnotationError(f"{path}: expected an object with a 'shapes' list")
    texts = _texts(path, data.get("text", []))
    is_sentence = data.get("is_sentence", False)
    if not isinstance(is_sentence, bool):
        raise BadAnnotationError(
            f"{path}: 'is_sentence' must be true or false, got {is_sentence!r:.40}"
        )
    shapes = [_shape(path, index, shape) for index, shape in enumerate(data["shapes"])]
    return ReasonSegAnnotation(path, texts, is_sentence, shapes)


def _texts(path: Path, texts: object) -> list[str]:
    """The queries: a string, or a list of non-empty strings."""
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise BadAnnotationError(
            f"{path}: 'text' must be a string or a list of strings, got {texts!r:.60}"
        )
    if any(not text.strip() for text in texts):
        raise BadAnnotationError(f"{path}: 'text' holds an empty query")
    return texts


def _is_coordinate(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < MAX_COORDINATE
    )


def _shape(path: Path, index: int, shape: object) -> Shape:
    """One labelled polygon; its points must be [x, y] pairs of finite numbers."""
    if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
        raise BadAnnotationError(f"{path}: shape {index} has no string 'label'")
    points = shape.get("points")
    if not isinstance(points, list) or not all(
        isinstance(point, list) and len(point) == 2 and all(map(_is_coordinate, point))
        for point in points
    ):
        raise BadAnnotationError(
            f"{path}: shape {index}'s 'points' must be a list of [x, y] pairs of finite "
            f"numbers, got {points!r:.60}"
        )
    return Shape(label=shape["label"], points=np.asarray(points, dtype=np.float64).reshape(-1, 2))


def _is_flag(shape: Shape) -> bool:
    return shape.label.lower() == "flag"


def _paint(canvas: np.ndarray, points: np.ndarray, value: int) -> None:
    polygon = [points.astype(np.int32)]  # truncation toward zero, as the original's int32 cast
    cv2.polylines(canvas, polygon, isClosed=True, color=value, thickness=1)
    cv2.fillPoly(canvas, polygon, color=value)


def render_mask(annotation: ReasonSegAnnotation, height: int, width: int) -> np.ndarray:
    """[H, W] uint8 label map: 0 background, 1 target, 255 ignore.

    Raises BadAnnotationError for a polygon with fewer than 3 points or lying wholly outside
    the image.
    """
    kept = []
    for shape in annotation.shapes:
        if _is_flag(shape):
            continue
        if len(shape.points) < 3:
            raise BadAnnotationError(
                f"{annotation.path}: a polygon has {len(shape.points)} point(s), expected 3 or more"
            )
        alone = np.zeros((height, width), dtype=np.uint8)
        _paint(alone, shape.points, 1)
        area = int(alone.sum())
        if area == 0:
            raise BadAnnotationError(
                f"{annotation.path}: a polygon lies outside the {width}x{height} image"
            )
        kept.append((area, shape))
    # largest first; a stable sort keeps the file order among equal areas
    kept.sort(key=lambda item: -item[0])
    mask = np.zeros((height, width), dtype=np.uint8)
    for _, shape in kept:
        _paint(
            mask, shape.points, IGNORE_VALUE if "ignore" in shape.label.lower() else TARGET_VALUE
        )
    return mask

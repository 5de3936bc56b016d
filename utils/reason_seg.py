"""ReasonSeg annotations: one json per image with the queries and labelled polygons.

Format (labelme-style): ``{"text": [str, ...], "is_sentence": bool, "shapes": [{"label":
"target" | "ignore" | "flag", "points": [[x, y], ...], ...}, ...]}``. Files are UTF-8, some
older ones cp1252. Rendering follows the original: "flag" shapes are dropped, the remaining
polygons are painted largest area first (so that smaller ones stay visible on top), outline and
interior, with 1 for targets and 255 for regions that evaluation ignores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

TARGET_VALUE = 1
IGNORE_VALUE = 255


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
    """Text of a json file: UTF-8, else cp1252 (which some ReasonSeg files use)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError as error:
            raise BadAnnotationError(f"{path}: neither UTF-8 nor cp1252 text") from error


def load_annotation(path: str | Path) -> ReasonSegAnnotation:
    """Parse one ReasonSeg json; raises BadAnnotationError with the file and the reason."""
    path = Path(path)
    try:
        data = json.loads(read_json_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise BadAnnotationError(f"{path}: not a readable json file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise BadAnnotationError(f"{path}: expected an object with a 'shapes' list")
    texts = data.get("text", [])
    texts = [texts] if isinstance(texts, str) else list(texts)
    shapes = []
    for index, shape in enumerate(data["shapes"]):
        try:
            points = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
            label = str(shape["label"])
        except (KeyError, TypeError, ValueError) as error:
            raise BadAnnotationError(f"{path}: shape {index} has no valid label/points") from error
        shapes.append(Shape(label=label, points=points))
    return ReasonSegAnnotation(path, texts, bool(data.get("is_sentence", False)), shapes)


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

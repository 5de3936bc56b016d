"""Toy scenes: a few coloured geometric shapes, apart from each other, on a light background.

A :class:`Scene` is pure geometry (shape kinds, colours, polygons); :func:`draw_scene` paints it
and :func:`paint_polygon` rasterises a polygon exactly as the ReasonSeg readers do (vertices
truncated to integers, outline plus interior), so an annotation written from a shape's polygon
renders to the very pixels the image shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Corners of each shape kind: what "the shape with the most corners" counts.
SHAPE_CORNERS: dict[str, int] = {
    "circle": 0,
    "triangle": 3,
    "square": 4,
    "rectangle": 4,
    "pentagon": 5,
    "hexagon": 6,
    "star": 10,
}
SHAPE_KINDS: tuple[str, ...] = tuple(SHAPE_CORNERS)

# Named colours (RGB), far from each other and from the light backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 195, 20),
    "purple": (140, 55, 175),
    "orange": (245, 125, 20),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

MIN_SHAPES = 2  # solid shapes per scene
MAX_SHAPES = 4
MIN_RADIUS = 0.09  # circumscribed radius, as a fraction of the shorter image side
MAX_RADIUS = 0.2
SHAPE_GAP = 3.0  # pixels between the circumscribed circles of two shapes
EDGE_MARGIN = 2.0  # pixels between a shape and the image border
CIRCLE_VERTICES = 48  # polygon approximating a circle (IoU with the true disc > 0.99)
STAR_INNER_RATIO = 0.45  # inner / outer radius of the five-pointed star
MAX_TILT_DEGREES = 8.0  # random tilt of the polygons away from their upright pose
FADED_OPACITY = 0.3  # a faded shape: 30% its colour, 70% the background
NOISE_SIGMA = 3.0  # pixel noise on background and shapes (grey levels)
_PLACEMENT_ATTEMPTS = 200


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a [K, 2] polygon in square pixels (shoelace formula)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


@dataclass(frozen=True)
class Shape:
    """One shape of a scene.

    ``polygon`` is ``[K, 2]`` float64 ``(x, y)`` vertices in pixels, rounded to 0.01 px; the
    annotations store these numbers and the pictures are drawn from their integer truncation.
    """

    kind: str  # one of SHAPE_KINDS
    colour: str  # one of COLOUR_NAMES
    center: tuple[float, float]  # (x, y) in pixels
    radius: float  # circumscribed radius in pixels
    polygon: np.ndarray

    @property
    def name(self) -> str:
        """``"red circle"``: unique within a scene."""
        return f"{self.colour} {self.kind}"

    @property
    def corners(self) -> int:
        return SHAPE_CORNERS[self.kind]

    @property
    def area(self) -> float:
        """Polygon area in square pixels."""
        return polygon_area(self.polygon)


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw and describe one toy image."""

    width: int
    height: int
    background: tuple[int, int, int]  # RGB of the plain background
    shapes: tuple[Shape, ...]  # solid shapes: all queries and labels are about these
    faded_shapes: tuple[Shape, ...] = ()  # pale look-alikes: ambiguous, ReasonSeg "ignore"
    pixel_seed: int = 0  # seeds the background gradient and the pixel noise


def _regular_polygon(
    center: tuple[float, float], radius: float, sides: int, first_angle: float
) -> np.ndarray:
    """[sides, 2] vertices on a circle, the first at ``first_angle`` radians (0 = +x, y down)."""
    angles = first_angle + 2.0 * math.pi * np.arange(sides) / sides
    return np.stack(
        [center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1
    )


def _rotated(points: np.ndarray, center: tuple[float, float], angle: float) -> np.ndarray:
    """``points`` [K, 2] rotated by ``angle`` radians about ``center``."""
    cos, sin = math.cos(angle), math.sin(angle)
    offsets = points - np.asarray(center)
    return np.asarray(center) + offsets @ np.array([[cos, sin], [-sin, cos]])


def _star_polygon(center: tuple[float, float], radius: float) -> np.ndarray:
    """[10, 2] vertices alternating outer point and inner corner, the first point upwards."""
    outer = _regular_polygon(center, radius, 5, -math.pi / 2)
    inner = _regular_polygon(center, radius * STAR_INNER_RATIO, 5, -math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def shape_polygon(
    kind: str, center: tuple[float, float], radius: float, tilt: float, upright: bool
) -> np.ndarray:
    """[K, 2] vertices of a shape inscribed in the circle (center, radius), rounded to 0.01 px.

    Args:
        tilt: rotation in radians (ignored for circles).
        upright: rectangles only: standing (taller than wide) rather than lying.
    """
    if kind == "circle":
        points = _regular_polygon(center, radius, CIRCLE_VERTICES, 0.0)
    elif kind == "triangle":
        points = _regular_polygon(center, radius, 3, -math.pi / 2)
    elif kind == "square":
        points = _regular_polygon(center, radius, 4, math.pi / 4)
    elif kind == "rectangle":
        half_long, half_short = radius * 2 / math.sqrt(5), radius / math.sqrt(5)  # 2:1 sides
        half_w, half_h = (half_short, half_long) if upright else (half_long, half_short)
        x, y = center
        points = np.array(
            [[x - half_w, y - half_h], [x + half_w, y - half_h], [x + half_w, y + half_h],
             [x - half_w, y + half_h]]
        )  # fmt: skip
    elif kind == "pentagon":
        points = _regular_polygon(center, radius, 5, -math.pi / 2)
    elif kind == "hexagon":
        points = _regular_polygon(center, radius, 6, 0.0)
    elif kind == "star":
        points = _star_polygon(center, radius)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")
    if kind != "circle":
        points = _rotated(points, center, tilt)
    return np.round(points, 2)


def star_parts(star: Shape) -> tuple[list[np.ndarray], np.ndarray]:
    """(points, center) of a star: five [3, 2] tip triangles and the [5, 2] inner pentagon.

    Together they cover the star exactly; PACO-LVIS and PASCAL-Part call them "star:point" and
    "star:center".
    """
    if star.kind != "star":
        raise ValueError(f"only stars have parts, got a {star.kind}")
    outer, inner = star.polygon[0::2], star.polygon[1::2]
    tips = [np.stack([inner[i - 1], outer[i], inner[i]]) for i in range(5)]
    return tips, inner


def _place_shapes(
    rng: np.random.Generator,
    width: int,
    height: int,
    pairs: list[tuple[str, str]],
    occupied: list[tuple[float, float, float]],
) -> list[Shape]:
    """Shapes for (kind, colour) ``pairs`` at random spots clear of ``occupied`` circles.

    ``occupied`` holds (x, y, radius) and grows with every placed shape; a pair that finds no
    room is left out.
    """
    short_side = min(width, height)
    placed = []
    for kind, colour in pairs:
        radius = float(rng.uniform(MIN_RADIUS, MAX_RADIUS)) * short_side
        low = radius + EDGE_MARGIN
        if 2 * low >= short_side:
            continue
        for _ in range(_PLACEMENT_ATTEMPTS):
            x = float(rng.uniform(low, width - 1 - low))
            y = float(rng.uniform(low, height - 1 - low))
            if all(math.hypot(x - ox, y - oy) >= radius + r + SHAPE_GAP for ox, oy, r in occupied):
                break
        else:
            continue
        tilt = math.radians(float(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES)))
        polygon = shape_polygon(kind, (x, y), radius, tilt, upright=bool(rng.random() < 0.5))
        occupied.append((x, y, radius))
        placed.append(Shape(kind, colour, (round(x, 2), round(y, 2)), round(radius, 2), polygon))
    return placed


def _random_pairs(
    rng: np.random.Generator,
    count: int,
    required_kinds: tuple[str, ...] = (),
    taken: frozenset[tuple[str, str]] = frozenset(),
) -> list[tuple[str, str]]:
    """``count`` distinct (kind, colour) pairs, not in ``taken``, the ``required_kinds`` first."""
    pairs: list[tuple[str, str]] = []
    for kind in required_kinds:
        free = [c for c in COLOUR_NAMES if (kind, c) not in pairs and (kind, c) not in taken]
        pairs.append((kind, free[int(rng.integers(len(free)))]))
    candidates = [
        (kind, colour)
        for kind in SHAPE_KINDS
        for colour in COLOUR_NAMES
        if (kind, colour) not in pairs and (kind, colour) not in taken
    ]
    extra = max(0, count - len(pairs))
    for index in rng.choice(len(candidates), size=extra, replace=False):
        pairs.append(candidates[int(index)])
    return pairs


def _background_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A light grey with a slight tint."""
    level = int(rng.integers(205, 240))
    tint = rng.integers(-8, 9, size=3)
    return tuple(int(v) for v in np.clip(level + tint, 0, 255))


def sample_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    required_kinds: tuple[str, ...] = (),
    faded_count: int = 0,
) -> Scene:
    """A random scene of MIN_SHAPES..MAX_SHAPES solid shapes with distinct (kind, colour).

    Args:
        required_kinds: kinds the scene must contain (e.g. ``("star",)`` for part annotations).
        faded_count: pale extra shapes to add (they never overlap the solid ones).
    """
    count = int(rng.integers(MIN_SHAPES, MAX_SHAPES + 1))
    while True:
        pairs = _random_pairs(rng, count, required_kinds)
        occupied: list[tuple[float, float, float]] = []
        shapes = _place_shapes(rng, width, height, pairs, occupied)
        placed_kinds = [shape.kind for shape in shapes]
        if len(shapes) >= MIN_SHAPES and all(kind in placed_kinds for kind in required_kinds):
            break
    taken = frozenset((shape.kind, shape.colour) for shape in shapes)
    faded = _place_shapes(
        rng, width, height, _random_pairs(rng, faded_count, taken=taken), occupied
    )
    return Scene(
        width=width,
        height=height,
        background=_background_colour(rng),
        shapes=tuple(shapes),
        faded_shapes=tuple(faded),
        pixel_seed=int(rng.integers(2**31)),
    )


def integer_vertices(polygon: np.ndarray) -> np.ndarray:
    """[K, 2] int32 vertices, truncated toward zero as the original readers cast them."""
    return polygon.astype(np.int32)


def paint_polygon(canvas: np.ndarray, polygon: np.ndarray, value: int | tuple[int, ...]) -> None:
    """Fill ``polygon`` (outline included) on ``canvas`` in place, as the ReasonSeg readers do."""
    vertices = [integer_vertices(polygon)]
    cv2.polylines(canvas, vertices, isClosed=True, color=value, thickness=1)
    cv2.fillPoly(canvas, vertices, color=value)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] bool: the pixels :func:`paint_polygon` covers."""
    mask = np.zeros((height, width), dtype=np.uint8)
    paint_polygon(mask, polygon, 1)
    return mask.astype(bool)


def _faded_colour(colour: tuple[int, int, int], background: tuple[int, int, int]) -> tuple:
    return tuple(
        int(round(FADED_OPACITY * c + (1 - FADED_OPACITY) * b))
        for c, b in zip(colour, background, strict=True)
    )


def draw_scene(scene: Scene) -> np.ndarray:
    """The picture of a scene: [H, W, 3] uint8 RGB.

    Background: the plain colour with a gentle linear gradient; shapes in flat colours; light
    noise everywhere. Deterministic for a given scene.
    """
    rng = np.random.default_rng(scene.pixel_seed)
    ys, xs = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32)
    direction = rng.uniform(-1.0, 1.0, size=2)
    gradient = 6.0 * (direction[0] * xs / scene.width + direction[1] * ys / scene.height)
    canvas = np.empty((scene.height, scene.width, 3), dtype=np.uint8)
    canvas[:] = scene.background
    for shape in scene.faded_shapes:
        paint_polygon(canvas, shape.polygon, _faded_colour(COLOURS[shape.colour], scene.background))
    for shape in scene.shapes:
        paint_polygon(canvas, shape.polygon, COLOURS[shape.colour])
    noise = rng.normal(0.0, NOISE_SIGMA, size=canvas.shape).astype(np.float32)
    return np.clip(canvas + gradient[:, :, None] + noise, 0, 255).round().astype(np.uint8)


def label_map(scene: Scene, value_of_kind: dict[str, int], background: int) -> np.ndarray:
    """[H, W] uint8 class map: ``value_of_kind[shape.kind]`` on each solid shape, else background."""
    labels = np.full((scene.height, scene.width), background, dtype=np.uint8)
    for shape in scene.shapes:
        paint_polygon(labels, shape.polygon, value_of_kind[shape.kind])
    return labels

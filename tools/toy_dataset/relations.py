"""Geometric facts about a scene that the toy language relies on: extremes and relative places.

Every predicate answers only when the answer is clear-cut (margins below), so that each query,
expression and question written from it has exactly one right answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tools.toy_dataset.scene import Scene

# A shape is "left of" another only when their centres are this far apart, as a fraction of
# the image width (height for above/below); closer pairs are neither, so no query names them.
POSITION_MARGIN = 0.08
# "largest" / "smallest" need the winner's area to differ from the runner-up's by this factor.
SIZE_RATIO = 1.3


def _best_and_runner_up(values: Sequence[float], larger_is_better: bool) -> tuple[int, int]:
    order = np.argsort(values, kind="stable")
    return (int(order[-1]), int(order[-2])) if larger_is_better else (int(order[0]), int(order[1]))


def unique_extreme(values: Sequence[float], larger_is_better: bool, gap: float) -> int | None:
    """Index of the single best value, if it beats the runner-up by more than ``gap``."""
    if len(values) < 2:
        return None
    best, runner_up = _best_and_runner_up(values, larger_is_better)
    return best if abs(values[best] - values[runner_up]) > gap else None


def unique_by_ratio(values: Sequence[float], larger_is_better: bool) -> int | None:
    """Index of the single best positive value, if it beats the runner-up by SIZE_RATIO times."""
    if len(values) < 2:
        return None
    best, runner_up = _best_and_runner_up(values, larger_is_better)
    big, small = (
        (values[best], values[runner_up]) if larger_is_better else (values[runner_up], values[best])
    )
    return best if big >= SIZE_RATIO * small else None


# (side: "the {side}most shape", axis 0 = x / 1 = y, the larger coordinate wins)
EXTREME_SIDES: tuple[tuple[str, int, bool], ...] = (
    ("left", 0, False),
    ("right", 0, True),
    ("top", 1, False),
    ("bottom", 1, True),
)

# (relation words, axis, the target's coordinate is smaller than the reference's)
RELATIONS: tuple[tuple[str, int, bool], ...] = (
    ("to the left of", 0, True),
    ("to the right of", 0, False),
    ("above", 1, True),
    ("below", 1, False),
)


def position_margin(scene: Scene, axis: int) -> float:
    return POSITION_MARGIN * (scene.width if axis == 0 else scene.height)


def extreme_shape(
    scene: Scene, axis: int, larger_is_better: bool, among: Sequence[int] | None = None
) -> int | None:
    """Index of the shape furthest along ``axis`` in one direction, if that is clear-cut: its
    centre beats every other centre by the position margin, and its outline reaches furthest.

    ``among``: indices of the shapes to compare (default: all).
    """
    indices = list(range(len(scene.shapes))) if among is None else list(among)
    shapes = [scene.shapes[i] for i in indices]
    centres = [shape.center[axis] for shape in shapes]
    best = unique_extreme(centres, larger_is_better, position_margin(scene, axis))
    reach = [
        float(shape.polygon[:, axis].max() if larger_is_better else shape.polygon[:, axis].min())
        for shape in shapes
    ]
    if best is None or unique_extreme(reach, larger_is_better, gap=0.0) != best:
        return None
    return indices[best]


def only_shape_beside(scene: Scene, reference: int, axis: int, before: bool) -> int | None:
    """The single shape clearly on one side of ``reference`` along ``axis``.

    None when no shape or several are on that side, or when a shape is too close to call.
    """
    margin = position_margin(scene, axis)
    origin = scene.shapes[reference].center[axis]
    beside = []
    for index, shape in enumerate(scene.shapes):
        if index == reference:
            continue
        offset = shape.center[axis] - origin
        if abs(offset) <= margin:
            return None
        if (offset < 0) == before:
            beside.append(index)
    return beside[0] if len(beside) == 1 else None

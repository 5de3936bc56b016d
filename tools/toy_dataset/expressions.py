"""Referring expressions for the toy scenes, in the style of each REFER dataset.

Every expression names exactly one shape (gRefCOCO: a set of shapes, possibly empty):

* refCOCO / refCLEF: short, location words allowed ("red circle", "left square").
* refCOCO+: appearance only, no location words ("blue one", "big triangle").
* refCOCOg: longer, complete descriptions ("the red circle to the left of the blue square").
* gRefCOCO: one, several ("all red shapes", "the circles") or no target ("the purple star"
  when there is none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.toy_dataset.relations import (
    EXTREME_SIDES,
    RELATIONS,
    SIZE_RATIO,
    extreme_shape,
    only_shape_beside,
)
from tools.toy_dataset.scene import COLOUR_NAMES, SHAPE_KINDS, Scene
from tools.toy_dataset.words import NUMBER_WORDS, plural, with_article

STYLES = ("refcoco", "refcoco+", "refcocog")  # refCLEF uses the refcoco style


@dataclass(frozen=True)
class GroupExpression:
    """A gRefCOCO expression and the shapes it names (empty: no target)."""

    sentence: str
    targets: tuple[int, ...]  # indices into scene.shapes


def _same_kind(scene: Scene, index: int) -> list[int]:
    kind = scene.shapes[index].kind
    return [i for i, shape in enumerate(scene.shapes) if shape.kind == kind]


def _appearance_expressions(scene: Scene, index: int) -> list[str]:
    """Colour, kind and size words that single out shape ``index``."""
    shape = scene.shapes[index]
    expressions = [shape.name]
    same_kind = _same_kind(scene, index)
    if len(same_kind) == 1:
        expressions.append(shape.kind)
    if [s.colour for s in scene.shapes].count(shape.colour) == 1:
        expressions += [f"{shape.colour} one", f"{shape.colour} shape"]
    if len(same_kind) == 2:
        other = scene.shapes[same_kind[0] if same_kind[1] == index else same_kind[1]]
        if shape.area >= SIZE_RATIO * other.area:
            expressions += [f"big {shape.kind}", f"larger {shape.kind}"]
        elif other.area >= SIZE_RATIO * shape.area:
            expressions += [f"small {shape.kind}", f"smaller {shape.kind}"]
    return expressions


def _location_expressions(scene: Scene, index: int) -> list[str]:
    """Location words that single out shape ``index``: "left square", "shape on the right"."""
    kind = scene.shapes[index].kind
    same_kind = _same_kind(scene, index)
    expressions = []
    for side, axis, larger_is_better in EXTREME_SIDES:
        if extreme_shape(scene, axis, larger_is_better) == index:
            expressions += [f"{side} shape", f"shape on the {side}"]
        if len(same_kind) > 1 and extreme_shape(scene, axis, larger_is_better, same_kind) == index:
            expressions += [f"{side} {kind}", f"{kind} on the {side}"]
    return expressions


def _relation_sentences(scene: Scene, index: int) -> list[str]:
    """refCOCOg-style sentences relating shape ``index`` to one of its neighbours."""
    shape = scene.shapes[index]
    sentences = []
    for reference, reference_shape in enumerate(scene.shapes):
        for relation, axis, before in RELATIONS:
            if only_shape_beside(scene, reference, axis, before) == index:
                sentences.append(f"the {shape.name} {relation} the {reference_shape.name}")
    return sentences


def referring_expressions(scene: Scene, index: int, style: str) -> list[str]:
    """Every expression of ``style`` (one of STYLES) that names shape ``index`` alone."""
    shape = scene.shapes[index]
    if style == "refcoco":
        return _appearance_expressions(scene, index) + _location_expressions(scene, index)
    if style == "refcoco+":
        return _appearance_expressions(scene, index)
    if style == "refcocog":
        corners = NUMBER_WORDS[shape.corners]
        return [
            f"{with_article(shape.name)} on a light background",
            f"the {shape.colour} shape that is {with_article(shape.kind)}",
            f"the {shape.kind} with {corners} corners that is coloured {shape.colour}",
        ] + _relation_sentences(scene, index)
    raise ValueError(f"unknown expression style {style!r}; expected one of {STYLES}")


def sample_expressions(
    scene: Scene, index: int, style: str, rng: np.random.Generator, most: int
) -> list[str]:
    """1..``most`` distinct expressions for shape ``index``, in random order."""
    options = referring_expressions(scene, index, style)
    count = int(rng.integers(1, min(most, len(options)) + 1))
    return [options[int(i)] for i in rng.choice(len(options), size=count, replace=False)]


def group_expressions(scene: Scene, rng: np.random.Generator) -> list[GroupExpression]:
    """gRefCOCO expressions for a scene: each shape, each colour or kind shared by several
    shapes, all shapes, and one absent (kind, colour) pair."""
    found = [GroupExpression(shape.name, (i,)) for i, shape in enumerate(scene.shapes)]
    for colour in COLOUR_NAMES:
        members = tuple(i for i, s in enumerate(scene.shapes) if s.colour == colour)
        if len(members) > 1:
            found.append(GroupExpression(f"all {colour} shapes", members))
    for kind in SHAPE_KINDS:
        members = tuple(i for i, s in enumerate(scene.shapes) if s.kind == kind)
        if len(members) > 1:
            found.append(
                GroupExpression(f"the {NUMBER_WORDS[len(members)]} {plural(kind)}", members)
            )
    found.append(GroupExpression("all shapes", tuple(range(len(scene.shapes)))))
    present = {(shape.kind, shape.colour) for shape in scene.shapes}
    absent = [(k, c) for k in SHAPE_KINDS for c in COLOUR_NAMES if (k, c) not in present]
    kind, colour = absent[int(rng.integers(len(absent)))]
    found.append(GroupExpression(f"{colour} {kind}", ()))
    return found

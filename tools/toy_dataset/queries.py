"""Reasoning queries for the toy ReasonSeg: implicit descriptions with exactly one answer.

A query kind ("the shape with the most corners", "something the colour of a ripe tomato", "the
shape to the left of the circle", ...) looks at a scene and lists every solid shape it can single
out unambiguously, with the words that fill its templates and a short explanation. A ReasonSeg
image gets one kind and one target, and 1..n paraphrases of that single query, either all short
noun phrases (``is_sentence`` false) or all full sentences (true), as the original's GPT-rephrased
instructions are. The rules are fixed and visible in the picture, which is what makes the task
learnable: corners, colour, size and position are all there to see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tools.toy_dataset.relations import (
    EXTREME_SIDES,
    RELATIONS,
    extreme_shape,
    only_shape_beside,
    unique_by_ratio,
    unique_extreme,
)
from tools.toy_dataset.scene import Scene
from tools.toy_dataset.words import NUMBER_WORDS, short_description

# Something everyone knows the colour of: (thing, the fact).
COLOUR_KNOWLEDGE: dict[str, tuple[str, str]] = {
    "red": ("a ripe tomato", "A ripe tomato is red"),
    "green": ("fresh grass", "Fresh grass is green"),
    "blue": ("a clear sky", "A clear sky is blue"),
    "yellow": ("a banana", "A banana is yellow"),
    "purple": ("an aubergine", "An aubergine is purple"),
    "orange": ("a carrot", "A carrot is orange"),
}

# Something everyone knows the shape of: (thing, the fact).
SHAPE_KNOWLEDGE: dict[str, tuple[str, str]] = {
    "circle": ("a coin", "A coin is round"),
    "triangle": ("a slice of pizza", "A slice of pizza is a triangle"),
    "square": ("a chessboard square", "A chessboard square has four equal sides"),
    "rectangle": ("a brick", "A brick is a long rectangle"),
    "pentagon": ("the Pentagon building", "The Pentagon building has five equal sides"),
    "hexagon": ("a honeycomb cell", "A honeycomb cell has six sides"),
    "star": ("a starfish", "A starfish has five points"),
}


@dataclass(frozen=True)
class Reasoning:
    """Why one shape answers a query kind."""

    target: int  # index into scene.shapes
    words: dict[str, str]  # values for the template slots
    explanation: str  # a short reason, one sentence


@dataclass(frozen=True)
class QueryKind:
    """One way of pointing at a shape without naming it plainly."""

    name: str  # an identifier ("most_corners"), as --query_kinds takes it
    phrases: tuple[str, ...]  # short noun phrases (is_sentence false), no leading article
    sentences: tuple[str, ...]  # full sentences (is_sentence true)
    find: Callable[[Scene], list[Reasoning]]  # every shape this kind singles out in a scene


@dataclass(frozen=True)
class ReasoningQuery:
    """The texts of one ReasonSeg image, all meaning the same single target."""

    kind: str
    target: int  # index into scene.shapes
    texts: tuple[str, ...]
    is_sentence: bool
    explanation: str


def _unique(scene: Scene, attribute: str) -> list[tuple[int, str]]:
    """(index, value) of the shapes whose ``attribute`` ("colour", "kind") no other shape has."""
    values = [getattr(shape, attribute) for shape in scene.shapes]
    return [(i, v) for i, v in enumerate(values) if values.count(v) == 1]


def _find_by_colour(scene: Scene) -> list[Reasoning]:
    return [
        Reasoning(
            i, {"colour": c}, f"The {scene.shapes[i].name} is the only {c} shape in the picture."
        )
        for i, c in _unique(scene, "colour")
    ]


def _find_by_kind(scene: Scene) -> list[Reasoning]:
    return [
        Reasoning(i, {"kind": k}, f"The {scene.shapes[i].name} is the only {k} in the picture.")
        for i, k in _unique(scene, "kind")
    ]


def _knowledge_finder(
    attribute: str, knowledge: dict[str, tuple[str, str]], explanation: str
) -> Callable[[Scene], list[Reasoning]]:
    """Finds the shapes of a unique ``attribute`` value by a thing known to share it;
    ``explanation`` is filled with the fact, the shape's name and the value."""

    def find(scene: Scene) -> list[Reasoning]:
        found = []
        for i, value in _unique(scene, attribute):
            thing, fact = knowledge[value]
            words = {"fact": fact, "name": scene.shapes[i].name, "value": value}
            found.append(Reasoning(i, {"thing": thing}, explanation.format(**words)))
        return found

    return find


_find_by_colour_knowledge = _knowledge_finder(
    "colour", COLOUR_KNOWLEDGE, "{fact}, and the {name} is the only {value} shape."
)
_find_by_shape_knowledge = _knowledge_finder(
    "kind", SHAPE_KNOWLEDGE, "{fact}, just like the {name}."
)


def _find_round(scene: Scene) -> list[Reasoning]:
    circles = [i for i, shape in enumerate(scene.shapes) if shape.kind == "circle"]
    if len(circles) != 1:
        return []
    name = scene.shapes[circles[0]].name
    return [Reasoning(circles[0], {}, f"The {name} is round and has no corners, so it could roll.")]


def _corner_extreme_finder(most: bool) -> Callable[[Scene], list[Reasoning]]:
    """Finds the shape with clearly the most (or the fewest) corners."""
    comparison = "more" if most else "fewer"

    def find(scene: Scene) -> list[Reasoning]:
        best = unique_extreme([shape.corners for shape in scene.shapes], most, gap=0.5)
        if best is None:
            return []
        shape = scene.shapes[best]
        count = NUMBER_WORDS[shape.corners]
        explanation = f"The {shape.name} has {count} corners, {comparison} than any other shape."
        return [Reasoning(best, {}, explanation)]

    return find


_find_most_corners = _corner_extreme_finder(most=True)
_find_fewest_corners = _corner_extreme_finder(most=False)


def _find_by_corner_count(scene: Scene) -> list[Reasoning]:
    counts = [shape.corners for shape in scene.shapes]
    found = []
    for i, count in enumerate(counts):
        if count > 0 and counts.count(count) == 1:
            word = NUMBER_WORDS[count]
            explanation = (
                f"The {scene.shapes[i].name} has {word} corners; no other shape has {word}."
            )
            found.append(Reasoning(i, {"count": word}, explanation))
    return found


def _size_extreme_finder(largest: bool, explanation: str) -> Callable[[Scene], list[Reasoning]]:
    """Finds the shape clearly larger (or smaller) than every other; ``explanation`` is filled
    with its name."""

    def find(scene: Scene) -> list[Reasoning]:
        best = unique_by_ratio([shape.area for shape in scene.shapes], larger_is_better=largest)
        if best is None:
            return []
        return [Reasoning(best, {}, explanation.format(name=scene.shapes[best].name))]

    return find


_find_largest = _size_extreme_finder(
    True, "The {name} covers more of the picture than any other shape."
)
_find_smallest = _size_extreme_finder(
    False, "The {name} is smaller than every other shape in the picture."
)


def _find_extreme_position(scene: Scene) -> list[Reasoning]:
    found = []
    for side, axis, larger_is_better in EXTREME_SIDES:
        best = extreme_shape(scene, axis, larger_is_better)
        if best is not None:
            name = scene.shapes[best].name
            explanation = f"The {name} is closer to the {side} edge than any other shape."
            found.append(Reasoning(best, {"side": side}, explanation))
    return found


def _find_relative_position(scene: Scene) -> list[Reasoning]:
    found = []
    for reference, reference_shape in enumerate(scene.shapes):
        for relation, axis, before in RELATIONS:
            target = only_shape_beside(scene, reference, axis, before)
            if target is None:
                continue
            words = {
                "relation": relation,
                "reference": "the " + short_description(scene, reference_shape),
            }
            explanation = (
                f"The {scene.shapes[target].name} is the only shape {relation} "
                f"{words['reference']}."
            )
            found.append(Reasoning(target, words, explanation))
    return found


def _find_by_colour_and_kind(scene: Scene) -> list[Reasoning]:
    return [
        Reasoning(i, {"colour": shape.colour, "kind": shape.kind}, f"It is the {shape.name}.")
        for i, shape in enumerate(scene.shapes)
    ]


QUERY_KINDS: tuple[QueryKind, ...] = (
    QueryKind(
        "colour",
        ("{colour} shape", "{colour} object", "shape that is {colour}"),
        ("Which shape in this picture is {colour}?", "Find the {colour} object in the image.",
         "Can you show me the shape that is painted {colour}?"),
        _find_by_colour,
    ),
    QueryKind(
        "colour_knowledge",
        ("shape with the colour of {thing}", "object coloured like {thing}"),
        ("Which shape has the same colour as {thing}?",
         "If you wanted something the colour of {thing}, which shape would you pick?"),
        _find_by_colour_knowledge,
    ),
    QueryKind(
        "kind",
        ("{kind}", "{kind} shape"),
        ("Where is the {kind} in this picture?", "Please find the {kind} in the image."),
        _find_by_kind,
    ),
    QueryKind(
        "shape_knowledge",
        ("shape that looks like {thing}", "object shaped like {thing}"),
        ("Which shape looks most like {thing}?",
         "What in this picture has the outline of {thing}?"),
        _find_by_shape_knowledge,
    ),
    QueryKind(
        "round",
        ("round shape", "shape that could roll", "something round"),
        ("Which object could roll across a table?", "Which shape has no corners at all?"),
        _find_round,
    ),
    QueryKind(
        "most_corners",
        ("shape with the most corners", "shape with the largest number of corners"),
        ("Which shape has more corners than any other shape?",
         "Find the shape with the most corners in this picture."),
        _find_most_corners,
    ),
    QueryKind(
        "fewest_corners",
        ("shape with the fewest corners", "shape with the smallest number of corners"),
        ("Which shape has fewer corners than any other shape?",
         "Find the shape with the fewest corners in this picture."),
        _find_fewest_corners,
    ),
    QueryKind(
        "corner_count",
        ("shape with exactly {count} corners", "shape that has {count} corners"),
        ("Which shape has exactly {count} corners?",
         "Can you find the shape with {count} corners in this image?"),
        _find_by_corner_count,
    ),
    QueryKind(
        "largest",
        ("largest shape", "biggest object"),
        ("Which shape takes up the most space in the picture?",
         "Find the biggest object in this image."),
        _find_largest,
    ),
    QueryKind(
        "smallest",
        ("smallest shape", "tiniest object"),
        ("Which shape is the smallest one here?", "Find the tiniest object in this image."),
        _find_smallest,
    ),
    QueryKind(
        "extreme_position",
        ("{side}most shape", "{side}most object"),
        ("Which shape is closest to the {side} edge of the picture?",
         "Find the shape nearest to the {side} of the image."),
        _find_extreme_position,
    ),
    QueryKind(
        "relative_position",
        ("shape {relation} {reference}", "object {relation} {reference}"),
        ("Which shape is {relation} {reference}?",
         "Find the object that sits {relation} {reference}."),
        _find_relative_position,
    ),
    QueryKind(
        "colour_and_kind",
        ("{colour} {kind}",),
        ("Where is the {colour} {kind} in this picture?", "Please find the {colour} {kind}."),
        _find_by_colour_and_kind,
    ),
)  # fmt: skip


QUERY_KIND_NAMES: tuple[str, ...] = tuple(kind.name for kind in QUERY_KINDS)


def query_kinds_named(names: Sequence[str]) -> tuple[QueryKind, ...]:
    """The kinds with these names, in QUERY_KINDS order; ValueError for an unknown name."""
    unknown = sorted(set(names) - set(QUERY_KIND_NAMES))
    if unknown:
        raise ValueError(
            f"unknown query kind(s) {', '.join(unknown)}; expected some of "
            f"{','.join(QUERY_KIND_NAMES)}"
        )
    return tuple(kind for kind in QUERY_KINDS if kind.name in names)


def sample_query(
    scene: Scene,
    rng: np.random.Generator,
    max_texts: int,
    kinds: Sequence[QueryKind] = QUERY_KINDS,
) -> ReasoningQuery | None:
    """One query for a scene: a kind chosen uniformly among ``kinds`` that apply (None if none
    does), one of its targets, phrases or sentences (even odds), and 1..max_texts distinct
    paraphrases."""
    applicable = [(kind, found) for kind in kinds if (found := kind.find(scene))]
    if not applicable:
        return None
    kind, found = applicable[int(rng.integers(len(applicable)))]
    reasoning = found[int(rng.integers(len(found)))]
    is_sentence = bool(rng.random() < 0.5)
    templates = kind.sentences if is_sentence else kind.phrases
    count = int(rng.integers(1, min(max_texts, len(templates)) + 1))
    chosen = rng.choice(len(templates), size=count, replace=False)
    texts = tuple(templates[int(i)].format(**reasoning.words) for i in chosen)
    return ReasoningQuery(kind.name, reasoning.target, texts, is_sentence, reasoning.explanation)

"""Visual question answering about a toy scene, as LLaVA-Instruct conversations.

Questions with one right answer each, read off the scene: how many shapes, the colour of a
shape, the kind of a coloured object, whether a kind is present, which shape is furthest to one
side, and a description of the picture.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tools.toy_dataset.relations import EXTREME_SIDES, extreme_shape
from tools.toy_dataset.scene import SHAPE_KINDS, Scene
from tools.toy_dataset.words import NUMBER_WORDS, capitalised, listing, plural, with_article
from utils.constants import DEFAULT_IMAGE_TOKEN

QuestionAnswer = tuple[str, str]


def _count(scene: Scene, rng: np.random.Generator) -> list[QuestionAnswer]:
    count = NUMBER_WORDS[len(scene.shapes)]
    return [("How many shapes are there in the image?", f"There are {count} shapes.")]


def _colour_of_kind(scene: Scene, rng: np.random.Generator) -> list[QuestionAnswer]:
    kinds = [shape.kind for shape in scene.shapes]
    return [
        (f"What colour is the {shape.kind}?", f"The {shape.kind} is {shape.colour}.")
        for shape in scene.shapes
        if kinds.count(shape.kind) == 1
    ]


def _kind_of_colour(scene: Scene, rng: np.random.Generator) -> list[QuestionAnswer]:
    colours = [shape.colour for shape in scene.shapes]
    return [
        (
            f"What shape is the {shape.colour} object?",
            f"The {shape.colour} object is {with_article(shape.kind)}.",
        )
        for shape in scene.shapes
        if colours.count(shape.colour) == 1
    ]


def _presence(scene: Scene, rng: np.random.Generator) -> list[QuestionAnswer]:
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    present = [shape for shape in scene.shapes if shape.kind == kind]
    question = f"Is there a {kind} in the picture?"
    if not present:
        return [(question, f"No, there is no {kind} in the picture.")]
    if len(present) == 1:
        return [(question, f"Yes, there is {with_article(present[0].name)}.")]
    colours = listing([shape.colour for shape in present])
    return [(question, f"Yes, there are {NUMBER_WORDS[len(present)]} {plural(kind)}: {colours}.")]


def _extreme(scene: Scene, rng: np.random.Generator) -> list[QuestionAnswer]:
    found = []
    for side, axis, larger_is_better in EXTREME_SIDES:
        best = extreme_shape(scene, axis, larger_is_better)
        if best is not None:
            name = scene.shapes[best].name
            found.append(
                (f"Which shape is closest to the {side} edge?", f"The {name} is closest to it.")
            )
    return found


def _description(scene: Scene, rng: np.random.Generator) -> list[QuestionAnswer]:
    names = listing([with_article(shape.name) for shape in scene.shapes])
    return [("Describe the image briefly.", f"{capitalised(names)} on a light background.")]


QUESTION_MAKERS: tuple[Callable[[Scene, np.random.Generator], list[QuestionAnswer]], ...] = (
    _count,
    _colour_of_kind,
    _kind_of_colour,
    _presence,
    _extreme,
    _description,
)


def sample_conversation(
    scene: Scene, rng: np.random.Generator, most_turns: int
) -> list[dict[str, str]]:
    """LLaVA-Instruct ``conversations``: 1..most_turns question/answer pairs about a scene.

    The image placeholder goes with the first question, before or after it (both occur in the
    released file).
    """
    pairs = [pair for make in QUESTION_MAKERS for pair in make(scene, rng)]
    count = int(rng.integers(1, min(most_turns, len(pairs)) + 1))
    chosen = [pairs[int(i)] for i in rng.choice(len(pairs), size=count, replace=False)]
    turns = []
    for number, (question, answer) in enumerate(chosen):
        if number == 0:
            question = (
                f"{DEFAULT_IMAGE_TOKEN}\n{question}"
                if rng.random() < 0.5
                else f"{question}\n{DEFAULT_IMAGE_TOKEN}"
            )
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return turns

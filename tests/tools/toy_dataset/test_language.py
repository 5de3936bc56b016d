"""Every query, expression and answer is checked against the scene by a plain re-computation."""

import collections

import pytest

from tools.toy_dataset.conversations import sample_conversation
from tools.toy_dataset.expressions import STYLES, group_expressions, referring_expressions
from tools.toy_dataset.queries import QUERY_KINDS, sample_query
from tools.toy_dataset.relations import POSITION_MARGIN, SIZE_RATIO
from tools.toy_dataset.sampling import item_rng, photo_scene
from tools.toy_dataset.scene import COLOUR_NAMES, SHAPE_KINDS

SCENES = [photo_scene(0, "language tests", item, 128) for item in range(300)]
KINDS = {kind.name: kind for kind in QUERY_KINDS}


def others(scene, target):
    return [shape for index, shape in enumerate(scene.shapes) if index != target]


def findings(kind_name):
    """(scene, reasoning) for every target the kind finds in the test scenes."""
    return [(scene, r) for scene in SCENES for r in KINDS[kind_name].find(scene)]


def test_every_kind_finds_targets_in_some_scenes():
    for kind in QUERY_KINDS:
        assert findings(kind.name), kind.name


def test_colour_queries_name_the_only_shape_of_that_colour():
    for scene, reasoning in findings("colour") + findings("colour_knowledge"):
        target = scene.shapes[reasoning.target]
        assert all(shape.colour != target.colour for shape in others(scene, reasoning.target))


def test_kind_queries_name_the_only_shape_of_that_kind():
    for scene, reasoning in findings("kind") + findings("shape_knowledge") + findings("round"):
        target = scene.shapes[reasoning.target]
        assert all(shape.kind != target.kind for shape in others(scene, reasoning.target))
    assert all(scene.shapes[r.target].kind == "circle" for scene, r in findings("round"))


def test_corner_queries_pick_a_strict_extreme():
    for scene, reasoning in findings("most_corners"):
        corners = scene.shapes[reasoning.target].corners
        assert all(shape.corners < corners for shape in others(scene, reasoning.target))
    for scene, reasoning in findings("fewest_corners"):
        corners = scene.shapes[reasoning.target].corners
        assert all(shape.corners > corners for shape in others(scene, reasoning.target))
    for scene, reasoning in findings("corner_count"):
        corners = scene.shapes[reasoning.target].corners
        assert all(shape.corners != corners for shape in others(scene, reasoning.target))


def test_size_queries_pick_a_clear_winner():
    for scene, reasoning in findings("largest"):
        area = scene.shapes[reasoning.target].area
        assert all(area >= SIZE_RATIO * shape.area for shape in others(scene, reasoning.target))
    for scene, reasoning in findings("smallest"):
        area = scene.shapes[reasoning.target].area
        assert all(shape.area >= SIZE_RATIO * area for shape in others(scene, reasoning.target))


def test_position_queries_hold_with_a_margin():
    axes = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
    for scene, reasoning in findings("extreme_position"):
        axis, sign = axes[reasoning.words["side"]]
        margin = POSITION_MARGIN * (scene.width, scene.height)[axis]
        mine = sign * scene.shapes[reasoning.target].center[axis]
        assert all(
            mine > sign * shape.center[axis] + margin for shape in others(scene, reasoning.target)
        )
        reach = (sign * scene.shapes[reasoning.target].polygon[:, axis]).max()
        assert all(
            reach > (sign * shape.polygon[:, axis]).max()
            for shape in others(scene, reasoning.target)
        )  # its outline also comes closest to that edge


def test_relative_queries_have_exactly_one_shape_on_that_side():
    sides = {
        "to the left of": (0, -1),
        "to the right of": (0, 1),
        "above": (1, -1),
        "below": (1, 1),
    }
    for scene, reasoning in findings("relative_position"):
        axis, sign = sides[reasoning.words["relation"]]
        reference_name = reasoning.words["reference"].removeprefix("the ")
        references = [shape for shape in scene.shapes if reference_name in (shape.name, shape.kind)]
        assert len(references) == 1  # the reference is itself unambiguous
        origin = references[0].center[axis]
        on_that_side = [shape for shape in scene.shapes if sign * (shape.center[axis] - origin) > 0]
        assert on_that_side == [scene.shapes[reasoning.target]]


def test_sampled_queries_are_balanced_paraphrases():
    kinds = collections.Counter()
    for item, scene in enumerate(SCENES):
        query = sample_query(scene, item_rng(0, "queries", item), max_texts=3)
        kinds[query.kind] += 1
        assert 1 <= len(query.texts) == len(set(query.texts)) <= 3
        assert "{" not in " ".join(query.texts)  # every template slot filled
        for text in query.texts:
            if query.is_sentence:
                assert text[0].isupper() and text[-1] in ".?"
            else:
                assert text[0].islower() and text[-1] not in ".?"
        assert query.explanation.endswith(".") and scene.shapes[query.target].kind in (
            query.explanation
        )
    assert len(kinds) == len(QUERY_KINDS)
    assert max(kinds.values()) < 4 * min(kinds.values())


@pytest.mark.parametrize("style", STYLES)
def test_referring_expressions_name_one_shape_only(style):
    for scene in SCENES[:100]:
        all_expressions = [referring_expressions(scene, i, style) for i in range(len(scene.shapes))]
        for index, expressions in enumerate(all_expressions):
            assert expressions
            if style == "refcocog":
                shape = scene.shapes[index]
                assert all({shape.colour, shape.kind} <= set(s.split()) for s in expressions)
            for other, other_expressions in enumerate(all_expressions):
                if other != index:
                    assert not set(expressions) & set(other_expressions)


def test_refcoco_plus_has_no_location_words():
    location_words = {"left", "right", "top", "bottom", "above", "below"}
    for scene in SCENES[:100]:
        for index in range(len(scene.shapes)):
            words = " ".join(referring_expressions(scene, index, "refcoco+")).split()
            assert not location_words & set(words)


def test_group_expressions_cover_single_multiple_and_no_targets():
    sizes = collections.Counter()
    for item, scene in enumerate(SCENES[:100]):
        for expression in group_expressions(scene, item_rng(0, "groups", item)):
            sizes[min(len(expression.targets), 2)] += 1
            named = [scene.shapes[i] for i in expression.targets]
            words = expression.sentence.split()
            if not named:  # the absent (colour, kind) pair
                colour, kind = words
                assert (kind, colour) not in {(s.kind, s.colour) for s in scene.shapes}
            elif words[0] == "all" and words[1] in COLOUR_NAMES:
                assert named == [s for s in scene.shapes if s.colour == words[1]]
            elif words[-1].removesuffix("s") in SHAPE_KINDS and words[0] == "the":
                assert named == [s for s in scene.shapes if s.kind == words[-1][:-1]]
    assert sizes[0] and sizes[1] and sizes[2]


def test_conversations_alternate_and_answer_from_the_scene():
    for item, scene in enumerate(SCENES[:100]):
        turns = sample_conversation(scene, item_rng(0, "talk", item), most_turns=3)
        assert [turn["from"] for turn in turns] == ["human", "gpt"] * (len(turns) // 2)
        questions = [turn["value"] for turn in turns[0::2]]
        assert questions[0].startswith("<image>\n") or questions[0].endswith("\n<image>")
        assert sum(question.count("<image>") for question in questions) == 1
        questions = [question.replace("<image>", "").strip() for question in questions]
        for question, answer in zip(
            questions, [turn["value"] for turn in turns[1::2]], strict=True
        ):
            if "How many shapes" in question:
                count = ["two", "three", "four"].index(answer.split()[2]) + 2
                assert count == len(scene.shapes)
            if question.startswith("What colour is the"):
                kind = question.removeprefix("What colour is the ").rstrip("?")
                colours = [shape.colour for shape in scene.shapes if shape.kind == kind]
                assert [answer] == [f"The {kind} is {colour}." for colour in colours]

import json

import numpy as np
import pytest

from utils.conversation import build_conversation
from utils.data.questions import (
    ANSWER_LIST,
    EXPLANATORY_QUESTION_LIST,
    LONG_QUESTION_LIST,
    SHORT_QUESTION_LIST,
    parse_answer_templates,
    short_question_turn,
    validation_question,
)


def test_lists_are_the_originals():
    assert len(SHORT_QUESTION_LIST) == 4 and len(LONG_QUESTION_LIST) == 2
    assert len(EXPLANATORY_QUESTION_LIST) == 3 and len(ANSWER_LIST) == 5
    assert SHORT_QUESTION_LIST[0] == "<image>\nCan you segment the {class_name} in this image?"
    assert LONG_QUESTION_LIST[1] == "<image>\n{sent} Please output segmentation mask."
    assert (
        EXPLANATORY_QUESTION_LIST[2] == "Please output segmentation mask and give some explanation."
    )
    assert ANSWER_LIST == (
        "It is [SEG].",
        "Sure, [SEG].",
        "Sure, it is [SEG].",
        "Sure, the segmentation result is [SEG].",
        "[SEG].",
    )


def test_short_question_lower_cases_and_uses_every_template():
    rng = np.random.default_rng(0)
    turns = [short_question_turn("Red Circle", rng) for _ in range(200)]
    assert {q for q, _ in turns} == {t.format(class_name="red circle") for t in SHORT_QUESTION_LIST}
    assert {a for _, a in turns} == set(ANSWER_LIST)


def test_validation_question_keeps_the_space_after_the_newline():
    assert validation_question("the cat", False) == (
        "<image>\n What is the cat in this image? Please output segmentation mask."
    )
    assert validation_question("Where to sit?", True) == (
        "<image>\n Where to sit? Please output segmentation mask."
    )


@pytest.mark.reference
def test_train_forward_conversations_come_from_the_templates(tiny_cases_dir):
    """Every conversation of train_forward.json is a template question with a listed answer."""
    record = json.loads((tiny_cases_dir / "train_forward.json").read_text())
    conversations = [
        c.replace("<im_start><image><im_end>", "<image>") for c in record["conversation_list"]
    ]
    short = SHORT_QUESTION_LIST[0].format(class_name="red circle")
    two_rounds = [
        (SHORT_QUESTION_LIST[3].format(class_name="blue rectangle"), ANSWER_LIST[0]),
        (
            SHORT_QUESTION_LIST[1].format(class_name="green square")[len("<image>\n") :],
            ANSWER_LIST[3],
        ),
    ]
    explained = (
        "<image>\nThe white circle is on the left. " + EXPLANATORY_QUESTION_LIST[0],
        ANSWER_LIST[2] + " The circle is white and it is on the left.",
    )
    assert conversations == [
        build_conversation([(short, ANSWER_LIST[1])], "llava_v1"),
        build_conversation(two_rounds, "llava_v1"),
        build_conversation([explained], "llava_v1"),
    ]


def test_answer_templates_flag():
    assert parse_answer_templates("") == ANSWER_LIST
    assert parse_answer_templates("[SEG].") == ("[SEG].",)
    assert parse_answer_templates(" It is [SEG]. || [SEG]. ") == ("It is [SEG].", "[SEG].")
    for bad in ("It is done.", "[SEG] and [SEG]."):
        with pytest.raises(ValueError, match="--answer_templates"):
            parse_answer_templates(bad)


def test_short_questions_answer_with_the_given_templates():
    rng = np.random.default_rng(0)
    answers = {short_question_turn("cat", rng, ("[SEG].",))[1] for _ in range(20)}
    assert answers == {"[SEG]."}

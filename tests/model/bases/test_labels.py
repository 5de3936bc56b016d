"""Labels supervise exactly each answer and the token that closes it, nothing else."""

import pytest
import torch

from utils.constants import IGNORE_INDEX

from .conftest import random_image

TURNS = [
    ("<image>\nWhat is the red shape in this image?", "Sure, it is [SEG]."),
    ("And the one on the left?", "It is the circle [SEG], next to [SEG]."),
]


def supervised_runs(ids: list[int], labels: torch.Tensor) -> list[list[int]]:
    """The supervised ids, in runs of consecutive positions."""
    runs, previous = [], None
    for position, label in enumerate(labels.tolist()):
        if label == IGNORE_INDEX:
            continue
        assert label == ids[position]  # a supervised label is the id at its position
        if previous != position - 1:
            runs.append([])
        runs[-1].append(label)
        previous = position
    return runs


def closer(base_format) -> str:
    return "</s>" if base_format.kind == "llava_hf" else "<|im_end|>"


def test_each_answer_and_its_closer_supervised(base_format):
    conversation = base_format.conversation(TURNS)
    vision = base_format.image_inputs(random_image(64, 64, seed=3))
    ids, labels = base_format.tokenise(conversation, vision)
    assert labels.shape == (len(ids),)
    runs = supervised_runs(ids, labels)
    decoded = [base_format.tokenizer.decode(run).strip() for run in runs]
    assert decoded == [answer + closer(base_format) for _, answer in TURNS]
    closer_id = base_format.tokenizer.convert_tokens_to_ids(closer(base_format))
    assert [run[-1] for run in runs] == [closer_id, closer_id]
    assert sum(run.count(base_format.seg_token_id) for run in runs) == 3
    image_positions = [i for i, t in enumerate(ids) if t == base_format.image_token_id]
    assert len(image_positions) == base_format.num_image_tokens(vision) > 1
    assert (labels[image_positions] == IGNORE_INDEX).all()


def test_the_generation_prompt_is_the_conversation_before_an_answer(base_format):
    """Ids of the prompt are those of the training conversation up to its last answer, and the
    prompt carries the image placeholder in front of the first question."""
    vision = base_format.image_inputs(random_image(40, 80, seed=4))
    history = [(TURNS[0][0].removeprefix("<image>\n"), TURNS[0][1])]
    prompt = base_format.generation_prompt(history, TURNS[1][0])
    prompt_ids, no_labels = base_format.tokenise(prompt, vision, with_labels=False)
    ids, labels = base_format.tokenise(base_format.conversation(TURNS), vision)
    assert no_labels is None
    assert ids[: len(prompt_ids)] == prompt_ids
    assert labels[len(prompt_ids) - 1] == IGNORE_INDEX  # the prompt's last token: not an answer
    assert labels[len(prompt_ids)] != IGNORE_INDEX  # the answer starts right after it


@pytest.mark.parametrize("count", [0, 2])
def test_a_conversation_needs_one_image(base_format, count):
    vision = base_format.image_inputs(random_image(64, 64, seed=5))
    text = base_format.conversation([("<image>" * count + "What is it?", "It is [SEG].")])
    with pytest.raises(ValueError, match="exactly once"):
        base_format.tokenise(text, vision)

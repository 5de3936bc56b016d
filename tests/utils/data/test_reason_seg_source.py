import json

import numpy as np
import pytest

from tests.utils.data.fake_tree import Box, reason_seg_annotation, write_image
from utils.data.bad_samples import MissingSourceError
from utils.data.questions import ANSWER_LIST, EXPLANATORY_QUESTION_LIST
from utils.data.reason_seg_source import reason_seg_source

TARGET, IGNORED = Box(2, 3, 10, 20), Box(20, 5, 30, 12)
EXPLANATION = "Because it is on top."


def _reason_seg(root, texts, is_sentence, explanation=True):
    folder = root / "reason_seg/ReasonSeg/train"
    write_image(folder / "a.jpg", 40, 48, [TARGET, IGNORED], np.random.default_rng(0))
    annotation = reason_seg_annotation(texts, is_sentence, [TARGET], [IGNORED])
    (folder / "a.json").write_text(json.dumps(annotation))
    if explanation:
        path = root / "reason_seg/ReasonSeg/explanatory/train.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps([{"image": "a.jpg", "query": texts[0], "outputs": EXPLANATION}]))


def _source(root, builder, explanatory, per_sample=3):
    return reason_seg_source(root, "ReasonSeg|train", builder, per_sample, explanatory, exclude=())


def test_sentences_use_long_templates_and_target_masks(tmp_path, builder):
    _reason_seg(tmp_path, ["What holds the tea?", "Which one is hot?"], is_sentence=True)
    sample = _source(tmp_path, builder, explanatory=-1).sample(np.random.default_rng(0))
    assert sorted(sample.sampled_classes) == ["What holds the tea?", "Which one is hot?"]
    for text, question in zip(sample.sampled_classes, sample.questions, strict=True):
        assert question in (
            f"<image>\n{text} Please respond with segmentation mask.",
            f"<image>\n{text} Please output segmentation mask.",
        )
    assert sample.masks.shape == (2, 40, 48)
    assert np.array_equal(sample.masks[0].numpy(), TARGET.mask(40, 48))  # ignore is not target
    assert all(c.endswith(tuple(a + "</s>" for a in ANSWER_LIST)) for c in sample.conversations)


def test_short_queries_use_short_templates_lower_cased(tmp_path, builder):
    _reason_seg(tmp_path, ["The Red Cup", "cup", "mug", "teacup"], is_sentence=False)
    sample = _source(tmp_path, builder, explanatory=-1).sample(np.random.default_rng(1))
    assert len(sample.questions) == 3  # num_classes_per_sample
    assert all(
        text.lower() in q for text, q in zip(sample.sampled_classes, sample.questions, strict=True)
    )


def test_explanatory_one_gives_text_answers_without_masks(tmp_path, builder):
    _reason_seg(tmp_path, ["Which one is hot?"], is_sentence=True)
    sample = _source(tmp_path, builder, explanatory=1.0).sample(np.random.default_rng(0))
    assert sample.masks.shape == (0, 40, 48)
    assert sample.questions == ["<image>\nWhich one is hot?"]
    assert sample.conversations[0].endswith(f"ASSISTANT: {EXPLANATION}</s>")


def test_explanatory_zero_still_explains_half_of_the_seg_answers(tmp_path, builder):
    _reason_seg(tmp_path, ["Which one is hot?"], is_sentence=True)
    source = _source(tmp_path, builder, explanatory=0.0)
    samples = [source.sample(np.random.default_rng(seed)) for seed in range(40)]
    explained = [s for s in samples if EXPLANATION in s.conversations[0]]
    assert 8 <= len(explained) <= 32 and all(s.masks.shape[0] == 1 for s in samples)
    question = explained[0].questions[0]
    assert question.startswith("<image>\nWhich one is hot? ")
    assert question.split("? ", 1)[1] in EXPLANATORY_QUESTION_LIST


def test_explanatory_file_required_unless_disabled(tmp_path, builder):
    _reason_seg(tmp_path, ["q"], is_sentence=False, explanation=False)
    with pytest.raises(MissingSourceError, match=r"ReasonSeg/explanatory/train\.json"):
        _source(tmp_path, builder, explanatory=0.1)
    assert len(_source(tmp_path, builder, explanatory=-1)) == 1

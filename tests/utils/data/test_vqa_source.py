import json

import numpy as np
import pytest

from tests.utils.data.fake_tree import write_image
from utils.data.bad_samples import BadSampleError, SkipReason
from utils.data.vqa_source import vqa_source

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)


def _llava(root, conversations):
    write_image(root / "coco/train2017/000000000001.jpg", 30, 40, [], np.random.default_rng(0))
    items = [{"id": "1", "image": "000000000001.jpg", "conversations": conversations}]
    (root / "llava_dataset").mkdir(parents=True)
    (root / "llava_dataset/llava_instruct_150k.json").write_text(json.dumps(items))


def test_conversation_as_the_original_builds_it(tmp_path, builder, rng):
    _llava(
        tmp_path,
        [
            {"from": "gpt", "value": "dropped leading answer"},
            {"from": "human", "value": "What is shown?\n<image>"},
            {"from": "gpt", "value": "A grey picture."},
            {"from": "human", "value": "Any objects?"},
            {"from": "gpt", "value": "No."},
        ],
    )
    sample = vqa_source(tmp_path, "llava_instruct_150k", builder, exclude=()).sample(rng)
    expected = (
        f"{SYSTEM} USER: <image>\nWhat is shown? ASSISTANT: A grey picture.</s>"
        "USER: Any objects? ASSISTANT: No.</s>"
    )
    assert sample.conversations == [expected]
    assert sample.questions == sample.sampled_classes == [expected]
    assert sample.masks.shape == (0, 30, 40) and sample.label.shape == (30, 40)
    assert sample.image_path.endswith("coco/train2017/000000000001.jpg")


@pytest.mark.parametrize(
    "conversations",
    [
        [{"from": "human", "value": "no image here"}, {"from": "gpt", "value": "ok"}],
        [{"from": "human", "value": "<image>\nq"}, {"from": "human", "value": "q2"}],
        [{"from": "human", "value": "<image>\nq"}],
    ],
)
def test_malformed_conversations_are_sample_errors(tmp_path, builder, rng, conversations):
    _llava(tmp_path, conversations)
    with pytest.raises(BadSampleError) as error:
        vqa_source(tmp_path, "llava_instruct_150k", builder, exclude=()).sample(rng)
    assert error.value.reason == SkipReason.BAD_ANNOTATION

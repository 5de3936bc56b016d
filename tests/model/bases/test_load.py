"""load_base_format on a base directory and on a LISA checkpoint directory whose base files
save_base_files wrote: the same tokenisation; one clear error for a directory that lacks what
its base needs."""

import json
import shutil

import pytest
import torch

from model.bases.load import load_base_format, save_base_files
from utils.errors import UsageError

from .conftest import MAX_LENGTH, random_image

TURNS = [("<image>\nWhat is in the image?", "It is [SEG]."), ("Where?", "Left, [SEG].")]


def lisa_checkpoint_config(base_dir) -> dict:
    """The config.json of a finished LISA on this base (model.detect's lisa_vlm layout)."""
    base_config = json.loads((base_dir / "config.json").read_text())
    return {
        "model_type": "lisa_vlm",
        "base_kind": "llava_hf" if base_config["model_type"] == "llava" else "qwen2_5_vl",
        "base_config": base_config,
        "segmenter_kind": "sam",
        "segmenter_config": {},
    }


def tokenised(base_format):
    image = random_image(70, 50, seed=7)
    vision = base_format.image_inputs(image)
    conversation = base_format.conversation(TURNS)
    ids, labels = base_format.tokenise(conversation, vision)
    prompt = base_format.generation_prompt(TURNS[:1], "And now?")
    return conversation, ids, labels, vision, prompt


def test_a_saved_checkpoint_tokenises_as_its_base(base_format, base_dir, tmp_path):
    checkpoint = tmp_path / "lisa"
    save_base_files(base_format, checkpoint)
    (checkpoint / "config.json").write_text(json.dumps(lisa_checkpoint_config(base_dir)))
    loaded = load_base_format(checkpoint, model_max_length=MAX_LENGTH)
    assert (loaded.kind, loaded.seg_token_id) == (base_format.kind, base_format.seg_token_id)
    assert len(loaded.tokenizer) == len(base_format.tokenizer)  # [SEG] not added twice
    ours, theirs = tokenised(base_format), tokenised(loaded)
    assert ours[0] == theirs[0] and ours[1] == theirs[1] and ours[4] == theirs[4]
    assert torch.equal(ours[2], theirs[2])
    if isinstance(ours[3], dict):
        assert all(torch.equal(ours[3][key], theirs[3][key]) for key in ours[3])
    else:
        assert torch.equal(ours[3], theirs[3])


def copy_without(base_dir, tmp_path, *names):
    copy = tmp_path / "base"
    shutil.copytree(base_dir, copy)
    for name in names:
        (copy / name).unlink()
    return copy


def test_a_base_without_chat_template_is_refused(base_dir, tmp_path):
    copy = copy_without(base_dir, tmp_path, "chat_template.json")
    with pytest.raises(UsageError, match=f"{copy}: no chat template"):
        load_base_format(copy, model_max_length=MAX_LENGTH)


def test_a_base_without_image_processor_is_refused(base_dir, tmp_path):
    copy = copy_without(base_dir, tmp_path, "preprocessor_config.json")
    with pytest.raises(UsageError, match="preprocessor_config.json does not exist"):
        load_base_format(copy, model_max_length=MAX_LENGTH)


def test_a_base_without_tokenizer_is_refused(base_dir, tmp_path):
    copy = copy_without(base_dir, tmp_path, "tokenizer.json", "tokenizer_config.json")
    with pytest.raises(UsageError, match="cannot read the tokenizer files"):
        load_base_format(copy, model_max_length=MAX_LENGTH)


def test_a_template_without_assistant_turns_is_refused(base_dir, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(base_dir, copy)
    plain = "{% for m in messages %}{{ m['content'][0]['text'] }}{% endfor %}"
    (copy / "chat_template.json").write_text(json.dumps({"chat_template": plain}))
    with pytest.raises(UsageError, match="writes no assistant turn"):
        load_base_format(copy, model_max_length=MAX_LENGTH)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "bert"}, "no base LISA knows"),
        ({"model_type": "lisa_vlm", "base_kind": "llava_hf"}, "has no base_config"),
    ],
)
def test_an_unknown_config_is_refused(base_dir, tmp_path, config, message):
    copy = tmp_path / "base"
    shutil.copytree(base_dir, copy)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match=message):
        load_base_format(copy, model_max_length=MAX_LENGTH)

"""Loading a checkpoint in Python (LisaSegmenter.from_pretrained, LISAForCausalLM.from_pretrained,
the weight-file reader of --weight): a checkpoint loads whole or not at all, and every broken
file is a CheckpointError whose one sentence names it."""

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint_files import CheckpointError, load_state_dict_file
from model.LISA import LISAForCausalLM
from model.segmenter import LisaSegmenter

from .broken_files import (
    BROKEN_CHECKPOINTS,
    WEIGHT_FILES,
    broken_checkpoint,
    copy_checkpoint_files,
    one_line,
    snapshot,
)

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("broken_checkpoints")


def load(directory, clip, **options):
    return LisaSegmenter.from_pretrained(
        directory, vision_tower=str(clip), precision="fp32", device="cpu", **options
    )


@pytest.mark.parametrize("name", list(BROKEN_CHECKPOINTS))
def test_a_broken_checkpoint_is_one_sentence_naming_the_file(tiny_lisa_dir, checkpoints, name):
    directory, clip = broken_checkpoint(tiny_lisa_dir, checkpoints, name)
    _, pieces, file_name = BROKEN_CHECKPOINTS[name]
    before = snapshot(directory)
    with pytest.raises(CheckpointError) as raised:
        load(directory, clip)
    message = one_line(str(raised.value), *pieces)
    assert str(directory / file_name).rstrip("/") in message
    assert "weights_only" not in message
    assert snapshot(directory) == before
    assert not (checkpoints / "code_ran").exists()


def test_the_documented_absences_load(tiny_lisa_dir, tmp_path):
    """The vision tower absent from the file (loaded from its own path) and rotary inv_freq
    buffers present in it are what released checkpoints look like: they load."""
    directory = copy_checkpoint_files(tiny_lisa_dir, tmp_path / "released")
    state = torch.load(tiny_lisa_dir / "pytorch_model.bin", weights_only=True)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(state, directory / "pytorch_model.bin")
    segmenter = load(directory, tiny_lisa_dir / "clip")
    assert not any(name.endswith("inv_freq") for name in segmenter.model.state_dict())


def test_a_checkpoint_with_its_vision_tower_loads_it_from_the_file(tiny_lisa_dir, tmp_path):
    directory = copy_checkpoint_files(tiny_lisa_dir, tmp_path / "with_tower")
    state = torch.load(tiny_lisa_dir / "pytorch_model.bin", weights_only=True)
    clip = torch.load(tiny_lisa_dir / "clip" / "pytorch_model.bin", weights_only=True)
    prefix = "model.vision_tower.vision_tower."
    state.update({prefix + name: tensor + 1 for name, tensor in clip.items()})
    torch.save(state, directory / "pytorch_model.bin")
    model = load(directory, tiny_lisa_dir / "clip").model
    tower = model.model.vision_tower.clip.state_dict()
    name = "vision_model.post_layernorm.weight"
    assert torch.equal(tower[name.removeprefix("vision_model.")], clip[name] + 1)


def test_a_bad_sam_file_for_a_llava_base_names_it(tiny_lisa_dir, tmp_path):
    directory, _ = broken_checkpoint(tiny_lisa_dir, tmp_path, "LLaVA base (no SAM, no [SEG] head)")
    sam = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save(torch.zeros(2), sam)
    with pytest.raises(CheckpointError) as raised:
        LISAForCausalLM.from_pretrained(
            directory, vision_tower=str(tiny_lisa_dir / "clip"), vision_pretrained=str(sam)
        )
    one_line(str(raised.value), str(sam), "single tensor")


# --- the weight files of --weight (train_ds.py --eval_only and the merge) --------------------


@pytest.mark.parametrize("name", list(WEIGHT_FILES))
def test_a_weight_file_that_is_no_state_dict_is_named(tmp_path, name):
    write, piece = WEIGHT_FILES[name]
    path = tmp_path / "pytorch_model.bin"
    write(path, tmp_path / "code_ran")
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as raised:
        load_state_dict_file(path)
    message = one_line(str(raised.value), str(path), piece)
    assert "weights_only" not in message
    assert not (tmp_path / "code_ran").exists()
    assert path.read_bytes() == before


def test_a_truncated_safetensors_weight_file_is_named(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as raised:
        load_state_dict_file(path)
    one_line(str(raised.value), str(path), "truncated or corrupt")

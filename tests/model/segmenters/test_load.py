"""load_segmenter and segmenter_kind_of on real files: tiny SAM 2 directories (the published video
layout and a plain image model) and tiny official SAM files; the refusals of wrong inputs; the
rebuild from a LISA config (segmenter_config -> build_segmenter)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Sam2Model

from model.checkpoint_files import load_state_dict_file
from model.segment_anything import Sam, build_sam_tiny
from model.segmenters import segmenter_ops
from model.segmenters.load import (
    build_segmenter,
    load_segmenter,
    segmenter_config,
    segmenter_kind_of,
    segmenter_prompt_width,
)
from utils.errors import CheckpointError, UsageError

from .conftest import SAM_IMAGE_SIZE


def assert_same_tensors(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Every tensor of ``module`` equals the file's (the file may hold more: a video model)."""
    state = module.state_dict()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in state.items())


def refusal(error: pytest.ExceptionInfo, *pieces: str) -> str:
    """The one-line message, holding every piece."""
    message = str(error.value)
    assert "\n" not in message, message
    for piece in pieces:
        assert piece in message, message
    return message


# ----------------------------------------------------------------------------------------------
# What loads


@pytest.mark.parametrize("layout", ["video", "image"])
def test_a_sam2_directory_loads_its_image_model_whole(layout, tiny_sam2_dir, tiny_sam2_image_dir):
    directory = tiny_sam2_dir if layout == "video" else tiny_sam2_image_dir
    model = load_segmenter(directory)
    assert isinstance(model, Sam2Model) and not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert_same_tensors(model, load_file(directory / "model.safetensors"))
    assert segmenter_kind_of(directory) == "sam2"
    assert segmenter_ops(model).kind == "sam2"


def test_a_sam2_file_or_config_stands_for_its_directory(tiny_sam2_dir):
    for path in (tiny_sam2_dir / "model.safetensors", tiny_sam2_dir / "config.json"):
        assert segmenter_kind_of(path) == "sam2"
        assert_same_tensors(load_segmenter(path), load_file(tiny_sam2_dir / "model.safetensors"))


@pytest.mark.parametrize("fixture", ["tiny_sam_file", "tiny_sam_safetensors"])
def test_an_official_sam_file_loads_at_the_size_of_its_weights(fixture, request):
    path = request.getfixturevalue(fixture)
    model = load_segmenter(path, "sam")
    assert isinstance(model, Sam) and not model.training
    assert model.image_size == SAM_IMAGE_SIZE
    assert_same_tensors(model, load_state_dict_file(path))
    assert segmenter_kind_of(path) == "sam"
    assert segmenter_ops(model).kind == "sam"


@pytest.mark.parametrize("fixture", ["tiny_sam2_dir", "tiny_sam_file", "tiny_sam_safetensors"])
def test_the_prompt_width_is_read_without_loading(fixture, request):
    path = request.getfixturevalue(fixture)
    module = load_segmenter(path)
    assert segmenter_prompt_width(path) == segmenter_ops(module).prompt_width(module)


def test_the_prompt_width_of_a_sam_of_another_width(tmp_path):
    path = tmp_path / "sam_narrow.pth"
    torch.save(build_sam_tiny(image_size=SAM_IMAGE_SIZE, prompt_embed_dim=48).state_dict(), path)
    assert segmenter_prompt_width(path) == 48


def test_a_folder_holding_one_sam_file(tmp_path, tiny_sam_file):
    shutil.copy(tiny_sam_file, tmp_path / "sam_vit_tiny.pth")
    (tmp_path / "notes.txt").write_text("not weights")
    assert segmenter_kind_of(tmp_path) == "sam"
    assert_same_tensors(load_segmenter(tmp_path), load_state_dict_file(tiny_sam_file))


def test_segmenter_chooses_in_a_folder_holding_both(tmp_path, tiny_sam2_dir, tiny_sam_file):
    both = tmp_path / "both"
    shutil.copytree(tiny_sam2_dir, both)
    shutil.copy(tiny_sam_file, both / "sam_vit_tiny.pth")
    with pytest.raises(UsageError) as error:
        load_segmenter(both)
    refusal(error, str(both), "--segmenter sam", "--segmenter sam2", "SAM 2", "official SAM")
    with pytest.raises(UsageError):
        segmenter_kind_of(both)
    assert segmenter_kind_of(both, "sam") == "sam"
    assert isinstance(load_segmenter(both, "sam"), Sam)
    assert isinstance(load_segmenter(both, "sam2"), Sam2Model)


# ----------------------------------------------------------------------------------------------
# What is refused, in one sentence naming the flag


def test_segmenter_is_checked_against_the_contents(tiny_sam2_dir, tiny_sam_file):
    with pytest.raises(UsageError) as error:
        load_segmenter(tiny_sam_file, "sam2")
    refusal(error, "--segmenter sam2", "--vision_pretrained", "official SAM")
    with pytest.raises(UsageError) as error:
        load_segmenter(tiny_sam2_dir, "sam")
    refusal(error, "--segmenter sam", "--vision_pretrained", "SAM 2")
    with pytest.raises(UsageError) as error:
        load_segmenter(tiny_sam2_dir, "sam3")
    refusal(error, "--segmenter", "sam3", "sam, sam2")


def test_a_missing_path(tmp_path):
    with pytest.raises(UsageError) as error:
        load_segmenter(tmp_path / "sam_vit_h_4b8939.pth")
    refusal(error, "--vision_pretrained", "does not exist", "sam_vit_h_4b8939.pth")


def test_files_and_folders_without_a_segmenter(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(UsageError) as error:
        load_segmenter(other)
    refusal(error, "--vision_pretrained", str(other), "encoder.weight")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError) as error:
        load_segmenter(empty)
    refusal(error, "--vision_pretrained", "holds no segmenter")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError) as error:
        load_segmenter(garbage)
    refusal(error, "--vision_pretrained", str(garbage))


def test_transformers_sam_is_not_taken_for_sam2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam"}))
    with pytest.raises(UsageError) as error:
        load_segmenter(tmp_path)
    refusal(error, "holds no segmenter", "official SAM checkpoint file", "SAM 2 directory")


def test_sam2_weights_without_their_config(tmp_path, tiny_sam2_dir):
    weights = tmp_path / "model.safetensors"
    shutil.copy(tiny_sam2_dir / "model.safetensors", weights)
    with pytest.raises(UsageError) as error:
        load_segmenter(weights)
    refusal(error, "SAM 2 weights", "config.json", "directory")


def test_several_sam_files_in_one_folder(tmp_path, tiny_sam_file, tiny_sam_safetensors):
    shutil.copy(tiny_sam_file, tmp_path / "a.pth")
    shutil.copy(tiny_sam_safetensors, tmp_path / "b.safetensors")
    with pytest.raises(UsageError) as error:
        load_segmenter(tmp_path)
    refusal(error, "several official SAM files", "a.pth", "b.safetensors")


def copy_without_weights(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors"))
    return target


def test_sam2_loads_from_safetensors_only(tmp_path, tiny_sam2_dir):
    directory = copy_without_weights(tiny_sam2_dir, tmp_path / "bin")
    torch.save(load_file(tiny_sam2_dir / "model.safetensors"), directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as error:
        load_segmenter(directory)
    refusal(error, "--vision_pretrained", "model.safetensors", "safetensors only")


def test_sam2_weights_load_whole_or_not_at_all(tmp_path, tiny_sam2_dir):
    weights = load_file(tiny_sam2_dir / "model.safetensors")
    incomplete = copy_without_weights(tiny_sam2_dir, tmp_path / "incomplete")
    dropped = "mask_decoder.iou_token.weight"
    save_file({k: v for k, v in weights.items() if k != dropped}, incomplete / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_segmenter(incomplete)
    refusal(error, "--vision_pretrained", "missing keys", dropped)

    truncated = copy_without_weights(tiny_sam2_dir, tmp_path / "truncated")
    data = (tiny_sam2_dir / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_segmenter(truncated)
    refusal(error, "--vision_pretrained", str(truncated), "SAM 2")


def test_a_sam2_config_of_the_wrong_sizes(tmp_path, tiny_sam2_dir):
    directory = tmp_path / "wrong"
    shutil.copytree(tiny_sam2_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config["mask_decoder_config"]["hidden_size"] = 64
    config["prompt_encoder_config"]["hidden_size"] = 64
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        load_segmenter(directory)
    refusal(error, "--vision_pretrained", str(directory))


# ----------------------------------------------------------------------------------------------
# Rebuilding from a LISA checkpoint's config


def test_official_sam_rebuilds_from_its_config():
    torch.manual_seed(0)
    sam = build_sam_tiny(image_size=SAM_IMAGE_SIZE, decoder_num_heads=4)
    config = json.loads(json.dumps(segmenter_config(sam)))  # through config.json
    assert config["decoder_num_heads"] == 4 and config["image_size"] == SAM_IMAGE_SIZE
    rebuilt = build_segmenter("sam", config)
    rebuilt.load_state_dict(sam.state_dict())
    embedding = torch.randn(1, 256, 4, 4)
    prompts = torch.randn(2, 256)
    ops = segmenter_ops(sam)
    with torch.no_grad():
        expected = ops.decode(sam, embedding, prompts, (64, 48), (32, 24))
        assert torch.equal(ops.decode(rebuilt, embedding, prompts, (64, 48), (32, 24)), expected)


def test_sam2_rebuilds_from_its_config(tiny_sam2_dir):
    loaded = load_segmenter(tiny_sam2_dir)
    attention = loaded.vision_encoder.backbone.config._attn_implementation
    config = json.loads(json.dumps(segmenter_config(loaded)))
    assert loaded.vision_encoder.backbone.config._attn_implementation == attention  # untouched
    rebuilt = build_segmenter("sam2", config)
    assert isinstance(rebuilt, Sam2Model) and not rebuilt.training
    rebuilt.load_state_dict(loaded.state_dict())  # strict: the same names and shapes
    image = torch.randint(0, 256, (1, 3, 40, 50), dtype=torch.uint8)
    prompts = torch.randn(3, 32)
    ops = segmenter_ops(loaded)
    with torch.no_grad():
        masks = [
            ops.decode(m, ops.encode(m, image, (40, 50), (0, 0)), prompts, (0, 0), (40, 50))
            for m in (loaded, rebuilt)
        ]
    assert torch.equal(*masks)


def test_build_segmenter_refuses_what_it_cannot_build():
    with pytest.raises(UsageError) as error:
        build_segmenter("sam3", {})
    refusal(error, "segmenter_kind", "sam3")
    with pytest.raises(UsageError) as error:
        build_segmenter("sam", None)
    refusal(error, "segmenter_config")
    with pytest.raises(UsageError) as error:
        build_segmenter("sam", {"encoder_embed_dim": 32, "colour": "red"})
    refusal(error, "segmenter_config", "sam")
    with pytest.raises(TypeError):
        segmenter_config(torch.nn.Linear(2, 2))

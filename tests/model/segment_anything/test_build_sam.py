import csv
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from model.segment_anything import (
    SAM_CONFIGS,
    SAM_TINY,
    SAM_VIT_B,
    SAM_VIT_H,
    SAM_VIT_L,
    SamConfig,
    build_sam,
    build_sam_tiny,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    load_sam_checkpoint,
    sam_config_from_state_dict,
    sam_model_registry,
    sam_size_name,
)


def meta_state_dict(builder, **overrides):
    with torch.device("meta"):
        return builder(**overrides).state_dict()


def numel(state_dict) -> int:
    return sum(t.numel() for t in state_dict.values())


@pytest.mark.reference
def test_vit_h_state_dict_equals_official_layout(reference):
    with open(reference / "full_size_keys" / "sam_vit_h_keys.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    expected = [
        (row["name"], [int(v) for v in row["shape"].strip("[]").split(",")]) for row in rows
    ]
    state_dict = meta_state_dict(build_sam_vit_h)
    assert [(name, list(t.shape)) for name, t in state_dict.items()] == expected
    assert len(expected) == 594
    assert numel(state_dict) == 641_090_864


def test_official_sizes_have_the_official_parameter_counts():
    state_dict = meta_state_dict(build_sam_vit_h)
    assert "pixel_mean" not in state_dict and "pixel_std" not in state_dict
    assert numel(state_dict) == 641_090_864
    assert numel(meta_state_dict(build_sam_vit_l)) == pytest.approx(312.3e6, abs=0.1e6)
    assert numel(meta_state_dict(build_sam_vit_b)) == pytest.approx(93.7e6, abs=0.1e6)


@pytest.mark.parametrize("name", ["vit_h", "vit_l", "vit_b", "tiny"])
def test_config_round_trips_through_state_dict_shapes(name):
    state_dict = meta_state_dict(sam_model_registry[name])
    config = sam_config_from_state_dict(state_dict)
    assert config == SAM_CONFIGS[name]
    assert sam_size_name(config) == name


def test_config_inference_reads_image_size_window_and_prefix():
    config = replace(SAM_TINY, image_size=256, window_size=7, encoder_global_attn_indexes=[0])
    state_dict = meta_state_dict(build_sam, config=config)
    prefixed = {"model.visual_model." + k: v for k, v in state_dict.items()}
    inferred = sam_config_from_state_dict(prefixed, prefix="model.visual_model.")
    assert inferred == config
    assert inferred.encoder_global_attn_indexes == (0,)
    assert sam_size_name(inferred).startswith("(encoder embed 32")
    assert sam_size_name(replace(SAM_VIT_B, image_size=512)) == "vit_b at image size 512"
    with pytest.raises(ValueError, match="image_encoder.pos_embed"):
        sam_config_from_state_dict(state_dict, prefix="model.")


@pytest.mark.reference
def test_config_from_tiny_lisa_checkpoint(tiny_lisa_dir):
    state_dict = torch.load(
        tiny_lisa_dir / "pytorch_model.bin", map_location="cpu", weights_only=True
    )
    assert sam_config_from_state_dict(state_dict, prefix="model.visual_model.") == SAM_TINY


def test_named_sizes_and_registry():
    assert (SAM_VIT_H.encoder_embed_dim, SAM_VIT_H.encoder_depth, SAM_VIT_H.encoder_num_heads) == (
        1280, 32, 16,
    )  # fmt: skip
    assert SAM_VIT_H.encoder_global_attn_indexes == (7, 15, 23, 31)
    assert SAM_VIT_L.encoder_global_attn_indexes == (5, 11, 17, 23)
    assert (SAM_VIT_B.encoder_embed_dim, SAM_VIT_B.encoder_num_heads) == (768, 12)
    assert sam_model_registry["default"] is build_sam_vit_h
    assert set(sam_model_registry) == {"default", *SAM_CONFIGS}
    assert build_sam_tiny(image_size=128).image_encoder.pos_embed.shape == (1, 8, 8, 32)
    assert not build_sam_tiny(image_size=64).training


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        replace(SAM_TINY, image_size=100)
    with pytest.raises(ValueError, match="must divide"):
        replace(SAM_TINY, encoder_num_heads=3)
    with pytest.raises(ValueError, match="must lie in"):
        SamConfig(
            encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
            encoder_global_attn_indexes=(2,),
        )  # fmt: skip


@pytest.fixture
def tiny_checkpoint(tmp_path, randomize):
    """A random tiny SAM at 64 px saved like the official files (a torch-saved state dict)."""
    sam = randomize(build_sam_tiny(image_size=64), seed=9)
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def test_official_format_loads_back_bit_identically(tiny_checkpoint, tmp_path):
    saved, path = tiny_checkpoint
    for file in (path, tmp_path / "sam_tiny.safetensors"):
        if file.suffix == ".safetensors":
            save_file(saved.state_dict(), file)
        loaded = build_sam(replace(SAM_TINY, image_size=64), checkpoint=file)
        for name, tensor in saved.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name


def test_prefixed_checkpoint_loads_with_prefix(tiny_checkpoint, tmp_path):
    saved, _ = tiny_checkpoint
    path = tmp_path / "lisa.bin"
    state_dict = {"model.visual_model." + k: v for k, v in saved.state_dict().items()}
    torch.save({**state_dict, "model.norm.weight": torch.ones(4)}, path)
    loaded = build_sam_tiny(image_size=64)
    load_sam_checkpoint(loaded, path, prefix="model.visual_model.")
    assert torch.equal(loaded.image_encoder.pos_embed, saved.image_encoder.pos_embed)


def test_wrong_size_checkpoint_raises_a_clear_error(tiny_checkpoint):
    _, path = tiny_checkpoint
    with torch.device("meta"):
        vit_b = build_sam_vit_b()
    with pytest.raises(ValueError) as error:
        load_sam_checkpoint(vit_b, path)
    message = str(error.value)
    assert str(path) in message
    assert "expected a SAM checkpoint of size vit_b" in message
    assert "holds a SAM of size tiny at image size 64" in message
    assert "image_encoder.pos_embed: file [1, 4, 4, 32], model [1, 64, 64, 768]" in message


def test_other_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "not_sam.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(
        ValueError, match="expected a SAM checkpoint of size tiny .* something else"
    ):
        load_sam_checkpoint(build_sam_tiny(image_size=64), path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth is not a torch checkpoint"):
        load_sam_checkpoint(build_sam_tiny(image_size=64), garbage)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    path = tmp_path / "sam_vit_h_4b8939.pth"
    with pytest.raises(FileNotFoundError) as error:
        build_sam(replace(SAM_TINY, image_size=64), checkpoint=path)
    assert str(path) in str(error.value)
    assert "expected a SAM checkpoint of size tiny at image size 64" in str(error.value)


def test_meta_model_refuses_to_load(tiny_checkpoint):
    _, path = tiny_checkpoint
    with torch.device("meta"):
        sam = build_sam_tiny(image_size=64)
    with pytest.raises(ValueError, match="meta device"):
        load_sam_checkpoint(sam, path)

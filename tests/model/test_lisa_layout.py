"""Checkpoint layout: parameter names and shapes equal the released LISA-7B layout."""

import csv

import pytest
import torch
from transformers import CLIPVisionConfig

from model.config import LisaConfig
from model.LISA import LISAForCausalLM

# openai/clip-vit-large-patch14, the vision tower of the released LISA-7B
CLIP_L_14 = CLIPVisionConfig(
    hidden_size=1024,
    image_size=224,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=24,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
)


def lisa_7b_config(vocab_size: int = 32003) -> LisaConfig:
    return LisaConfig(
        vocab_size=vocab_size,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        rms_norm_eps=1e-6,
        max_position_embeddings=2048,
        mm_vision_tower="openai/clip-vit-large-patch14",
        mm_hidden_size=1024,
        vision_config=CLIP_L_14.to_dict(),
        mm_use_im_start_end=True,
        train_mask_decoder=True,
        out_dim=256,
    )


def read_keys(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {
        row["name"]: [int(v) for v in row["shape"].strip("[]").split(",") if v] for row in rows
    }, rows


@pytest.mark.reference
def test_lisa_7b_state_dict_matches_released_layout(reference):
    expected, rows = read_keys(reference / "full_size_keys" / "lisa7b_keys.tsv")
    expected = {k: v for k, v in expected.items() if not k.endswith("rotary_emb.inv_freq")}
    with torch.device("meta"):
        model = LISAForCausalLM(lisa_7b_config())
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert set(ours) - set(expected) == set(), "keys the released checkpoint does not have"
    assert set(expected) - set(ours) == set(), "released keys we do not have"
    mismatched = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert mismatched == {}
    # the merge script saves every key except the vision tower
    saved = {row["name"] for row in rows if row["saved_by_merge_script"] == "yes"}
    assert saved == {k for k in expected if "vision_tower" not in k} | {
        r["name"] for r in rows if r["name"].endswith("inv_freq")
    }


def test_llava_15_projector_is_two_layer_mlp():
    config = lisa_7b_config()
    config.mm_projector_type = "mlp2x_gelu"
    config.vision_config = CLIPVisionConfig(**{**CLIP_L_14.to_dict(), "image_size": 336}).to_dict()
    with torch.device("meta"):
        model = LISAForCausalLM(config)
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items() if "mm_projector" in n}
    assert shapes == {
        "model.mm_projector.0.weight": (4096, 1024),
        "model.mm_projector.0.bias": (4096,),
        "model.mm_projector.2.weight": (4096, 4096),
        "model.mm_projector.2.bias": (4096,),
    }
    assert model.model.num_image_tokens == 576

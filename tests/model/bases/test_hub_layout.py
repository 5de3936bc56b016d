"""The key layout of the real checkpoints: llava-hf/llava-1.5-7b-hf and
Qwen/Qwen2.5-VL-7B-Instruct, built at full size on the meta device from their public config.json,
and their safetensors key names loading into transformers' classes."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    LlavaForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
)

# llava-hf/llava-1.5-7b-hf config.json (the hub file's fields)
LLAVA_1_5_7B_HF = {
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {
        "_name_or_path": "lmsys/vicuna-7b-v1.5",
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}

# Qwen/Qwen2.5-VL-7B-Instruct config.json (the hub file's fields; text fields at the top level)
QWEN2_5_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}

# How the hub files name what transformers' classes hold (prefix of ours -> prefix of theirs).
LLAVA_HUB_PREFIXES = {
    "model.language_model.": "language_model.model.",
    "lm_head.": "language_model.lm_head.",
    "model.vision_tower.": "vision_tower.vision_model.",
    "model.multi_modal_projector.": "multi_modal_projector.",
}
QWEN_HUB_PREFIXES = {
    "model.language_model.": "model.",
    "model.visual.": "visual.",
    "lm_head.": "lm_head.",
}

# Tensors of the hub files, with their shapes.
LLAVA_HUB_TENSORS = {
    "language_model.model.embed_tokens.weight": (32064, 4096),
    "language_model.lm_head.weight": (32064, 4096),
    "language_model.model.layers.31.mlp.down_proj.weight": (4096, 11008),
    "language_model.model.layers.0.self_attn.k_proj.weight": (4096, 4096),
    "multi_modal_projector.linear_1.weight": (4096, 1024),
    "multi_modal_projector.linear_2.weight": (4096, 4096),
    "vision_tower.vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
    "vision_tower.vision_model.embeddings.position_embedding.weight": (577, 1024),
    "vision_tower.vision_model.encoder.layers.23.self_attn.q_proj.weight": (1024, 1024),
    "vision_tower.vision_model.encoder.layers.23.mlp.fc1.weight": (4096, 1024),
}
QWEN_HUB_TENSORS = {
    "model.embed_tokens.weight": (152064, 3584),
    "lm_head.weight": (152064, 3584),
    "model.layers.27.self_attn.q_proj.weight": (3584, 3584),
    "model.layers.27.self_attn.k_proj.weight": (512, 3584),
    "model.layers.27.self_attn.k_proj.bias": (512,),
    "model.layers.0.mlp.gate_proj.weight": (18944, 3584),
    "visual.patch_embed.proj.weight": (1280, 3, 2, 14, 14),
    "visual.blocks.31.attn.qkv.weight": (3840, 1280),
    "visual.blocks.0.mlp.down_proj.weight": (1280, 3420),
    "visual.merger.ln_q.weight": (1280,),
    "visual.merger.mlp.0.weight": (5120, 5120),
    "visual.merger.mlp.2.weight": (3584, 5120),
}


def hub_name(name: str, prefixes: dict[str, str]) -> str:
    for ours, theirs in prefixes.items():
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    raise AssertionError(f"{name} has no hub name")


def meta_model(model_class, config_json: dict, tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    config = AutoConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        return model_class(config)


def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def llama_7b_parameters(vocab: int) -> int:
    layer = 4 * linear(4096, 4096, False) + 3 * linear(4096, 11008, False) + 2 * 4096
    return 2 * vocab * 4096 + 32 * layer + 4096


def clip_large_336_parameters() -> int:
    layer = 4 * linear(1024, 1024) + linear(1024, 4096) + linear(4096, 1024) + 4 * 1024
    embeddings = 1024 + 1024 * 3 * 14 * 14 + 577 * 1024  # class, patches, 24 x 24 + 1 positions
    return embeddings + 24 * layer + 2 * 2 * 1024  # pre and post layer norms


def qwen2_5_vl_7b_parameters() -> int:
    attention = linear(3584, 3584) + 2 * linear(3584, 512) + linear(3584, 3584, False)
    text_layer = attention + 3 * linear(3584, 18944, False) + 2 * 3584
    text = 2 * 152064 * 3584 + 28 * text_layer + 3584
    block = 2 * 1280 + linear(1280, 3840) + linear(1280, 1280)
    block += 2 * linear(1280, 3420) + linear(3420, 1280)  # gate and up, down
    merger = 1280 + linear(5120, 5120) + linear(5120, 3584)
    return text + 1280 * 3 * 2 * 14 * 14 + 32 * block + merger


def test_llava_1_5_7b_hf_layout(tmp_path):
    model = meta_model(LlavaForConditionalGeneration, LLAVA_1_5_7B_HF, tmp_path)
    assert model.config.image_token_id == 32000
    expected = llama_7b_parameters(32064) + clip_large_336_parameters()
    expected += linear(1024, 4096) + linear(4096, 4096)  # the two-layer projector
    assert sum(p.numel() for p in model.parameters()) == expected
    shapes = {
        hub_name(n, LLAVA_HUB_PREFIXES): tuple(t.shape) for n, t in model.state_dict().items()
    }
    assert {name: shapes.get(name) for name in LLAVA_HUB_TENSORS} == LLAVA_HUB_TENSORS
    assert sum(".self_attn.q_proj.weight" in name for name in shapes) == 32 + 24


def test_qwen2_5_vl_7b_layout(tmp_path):
    model = meta_model(Qwen2_5_VLForConditionalGeneration, QWEN2_5_VL_7B, tmp_path)
    assert model.config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    assert sum(p.numel() for p in model.parameters()) == qwen2_5_vl_7b_parameters()
    shapes = {hub_name(n, QWEN_HUB_PREFIXES): tuple(t.shape) for n, t in model.state_dict().items()}
    assert {name: shapes.get(name) for name in QWEN_HUB_TENSORS} == QWEN_HUB_TENSORS
    assert sum(name.endswith(".attn.qkv.weight") for name in shapes) == 32


@pytest.mark.parametrize(
    ("fixture", "model_class", "prefixes"),
    [
        ("llava_hf_dir", LlavaForConditionalGeneration, LLAVA_HUB_PREFIXES),
        ("qwen_dir", Qwen2_5_VLForConditionalGeneration, QWEN_HUB_PREFIXES),
    ],
)
def test_hub_key_names_load(request, tmp_path, fixture, model_class, prefixes):
    """A state dict written under the hub's names loads whole, every tensor where it belongs."""
    base = request.getfixturevalue(fixture)
    model = model_class.from_pretrained(base)
    tensors = {hub_name(n, prefixes): t.clone() + 0.5 for n, t in model.state_dict().items()}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((base / "config.json").read_text())
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, tensors[hub_name(name, prefixes)]), name

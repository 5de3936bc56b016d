"""The tiny base is read through the same paths as the real downloads."""

import json

import pytest
import torch
from transformers import CLIPVisionModel

import train_ds
from model.builder import build_lisa_from_settings
from model.LISA import LISAForCausalLM
from tools.tiny_base import TinyBaseSizes, build_tiny_base
from utils.errors import UsageError
from utils.tokenization import add_lisa_tokens, load_tokenizer, tokenizer_image_token

SIZES = TinyBaseSizes(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    sam_image_size=128,
    sam_patch_size=8,
    sam_embed_dim=32,
    sam_prompt_embed_dim=64,
    sam_decoder_mlp_dim=128,
    sam_iou_head_hidden_dim=32,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    corpus = ["What is the red circle in this image? Sure, it is the circle on the left."]
    return build_tiny_base(tmp_path_factory.mktemp("tiny_base"), corpus, SIZES)


def test_tokenizer_follows_llama_conventions(base):
    tokenizer = load_tokenizer(base["version"])
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token_id == 0
    ids = tokenizer("caf\u00e9 42").input_ids
    assert ids[0] == 1 and 0 not in ids[1:]  # byte fallback: nothing becomes <unk>
    assert tokenizer.decode(ids[1:]) == "caf\u00e9 42"
    seg = add_lisa_tokens(tokenizer, use_mm_start_end=True)
    assert seg == len(tokenizer) - 3
    prompt_ids = tokenizer_image_token("USER: <im_start><image><im_end>\nSure, [SEG].", tokenizer)
    assert prompt_ids.count(-200) == 1 and prompt_ids.count(seg) == 1


def test_lisa_builds_from_the_tiny_base(base):
    tokenizer = load_tokenizer(base["version"])
    seg = add_lisa_tokens(tokenizer)
    model, info = LISAForCausalLM.from_pretrained(
        base["version"],
        vision_pretrained=str(base["vision_pretrained"]),
        seg_token_idx=seg,
        output_loading_info=True,
    )
    assert {k.split(".")[1] for k in info["missing_keys"]} == {"text_hidden_fcs"}
    sam_file = torch.load(base["vision_pretrained"], weights_only=True)
    for name, tensor in sam_file.items():
        assert torch.equal(model.model.visual_model.state_dict()[name], tensor), name
    clip = CLIPVisionModel.from_pretrained(base["vision_tower"])
    for name, tensor in clip.state_dict().items():
        assert torch.equal(model.model.vision_tower.clip.state_dict()[name], tensor), name
    config = json.loads((base["version"] / "config.json").read_text())
    assert model.model.num_image_tokens == (SIZES.clip_image_size // SIZES.clip_patch_size) ** 2
    assert config["mm_vision_tower"] == str(base["vision_tower"].resolve())
    assert model.model.visual_model.image_size == SIZES.sam_image_size
    grid = SIZES.sam_image_size // SIZES.sam_patch_size  # 16, not the default patch's 8
    assert model.model.visual_model.image_encoder.pos_embed.shape[1:3] == (grid, grid)


def test_sam_decoder_sizes_reach_the_model_and_out_dim_must_match(base):
    def build(out_dim: int, image_size: int = SIZES.sam_image_size):
        config = train_ds.parse_args(
            [
                f"--version={base['version']}",
                f"--vision-tower={base['vision_tower']}",
                f"--vision_pretrained={base['vision_pretrained']}",
                f"--out_dim={out_dim}",
                f"--image_size={image_size}",
            ]
        )
        settings = train_ds.model_settings(config)
        return build_lisa_from_settings(settings, load_tokenizer(base["version"]), torch.float32)

    with pytest.raises(UsageError, match="--out_dim 256 differs .* pass --out_dim 64"):
        build(256)
    # the original's default --image_size (1024) against this SAM's 128-pixel input
    with pytest.raises(UsageError, match=r"--image_size 1024 differs from the 128-pixel input"):
        build(64, image_size=1024)
    model = build(64)
    decoder = model.model.visual_model.mask_decoder
    assert model.model.text_hidden_fcs[0][2].out_features == 64
    assert decoder.transformer.layers[0].mlp.lin1.out_features == SIZES.sam_decoder_mlp_dim
    assert decoder.iou_prediction_head.layers[0].out_features == SIZES.sam_iou_head_hidden_dim


def test_a_missing_corpus_file_is_one_line(tmp_path, capsys):
    from tools.tiny_base import main

    with pytest.raises(SystemExit) as exit_info:  # argparse's usage line, then the sentence
        main(["--output_dir", str(tmp_path / "base"), "--corpus", str(tmp_path / "no.txt")])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f"--corpus: {tmp_path / 'no.txt'} is not a file")
    )
    assert not (tmp_path / "base").exists()

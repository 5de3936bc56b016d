"""load_pretrained_model: the path chat.py, evaluation and the Python API load a checkpoint by."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from model.loading import load_pretrained_model
from model.vision_tower import VisionTowerNotFoundError
from utils.conversation import build_chat_prompt
from utils.devices import resolve_dtype
from utils.sam_input import sam_encoder_input
from utils.tokenization import decode_answer, tokenizer_image_token
from utils.transforms import load_image


@pytest.mark.reference
def test_chat_path_reproduces_the_original_chat(tiny_lisa_dir, tiny_cases_dir):
    tokenizer, model, processor = load_pretrained_model(
        tiny_lisa_dir, vision_tower=str(tiny_lisa_dir / "clip")
    )
    meta = json.loads((tiny_cases_dir / "evaluate_plain.json").read_text())
    assert model.config.seg_token_idx == 512 and tokenizer.pad_token_id == 0
    image = processor(load_image(tiny_cases_dir / "img1.png"))
    expected = np.load(tiny_cases_dir / "preprocess_img1.npz")
    assert image.images.dtype == torch.uint8  # resized and normalised where SAM runs
    sam_input = sam_encoder_input(image.images, [image.original_size], [image.resize], 1024)
    np.testing.assert_allclose(sam_input.numpy(), expected["sam_input"], atol=1e-5)
    np.testing.assert_allclose(image.images_clip.numpy(), expected["images_clip"], atol=1e-5)
    prompt = build_chat_prompt(meta["user_text"], "llava_v1", use_mm_start_end=True)
    assert prompt == meta["prompt"]
    input_ids = torch.tensor([tokenizer_image_token(prompt, tokenizer)])
    output_ids, masks = model.evaluate(
        image.images_clip,
        image.images,
        input_ids,
        [image.resize],
        [image.original_size],
        max_new_tokens=16,
    )
    assert output_ids[0].tolist() == meta["output_ids"]
    assert decode_answer(output_ids[0], tokenizer) == meta["chat_py_text_output"]
    assert int((masks[0][0] > 0).sum()) == pytest.approx(meta["pred_mask0_positive_pixels"], abs=2)


@pytest.mark.reference
def test_missing_vision_tower_names_the_flag(tiny_lisa_dir):
    with pytest.raises(VisionTowerNotFoundError, match="--vision-tower"):
        load_pretrained_model(tiny_lisa_dir)


@pytest.mark.reference
def test_tokenizer_larger_than_the_embeddings_is_refused(tiny_lisa_dir, tmp_path):
    shutil.copytree(tiny_lisa_dir, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["vocab_size"] = 514
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="515 tokens but config.json's vocab_size is 514"):
        load_pretrained_model(tmp_path / "ckpt", vision_tower=str(tiny_lisa_dir / "clip"))


def test_half_precision_on_cpu_falls_back_to_fp32(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype("bf16", torch.device("cpu")) == torch.float32
    assert "fp32" in caplog.text
    assert resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="--precision must be one of"):
        resolve_dtype("int8", torch.device("cpu"))


@pytest.mark.reference
@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_covers_the_llm_and_leaves_sam(tiny_lisa_dir, tiny_cases_dir, bits):
    bnb = pytest.importorskip("bitsandbytes")
    tokenizer, model, processor = load_pretrained_model(
        tiny_lisa_dir,
        vision_tower=str(tiny_lisa_dir / "clip"),
        load_in_8bit=bits == 8,
        load_in_4bit=bits == 4,
        device="cpu",
    )
    quantized = bnb.nn.Linear8bitLt if bits == 8 else bnb.nn.Linear4bit
    assert isinstance(model.model.layers[0].self_attn.q_proj, quantized)
    for module in (model.lm_head, model.model.mm_projector, model.model.text_hidden_fcs[0][0]):
        assert type(module) is torch.nn.Linear
    assert all(type(m) is not quantized for m in model.model.visual_model.modules())
    assert all(type(m) is not quantized for m in model.model.vision_tower.modules())
    image = processor(load_image(tiny_cases_dir / "img1.png"))
    prompt = build_chat_prompt("Can you segment the red circle in this image?", "llava_v1", True)
    output_ids, masks = model.evaluate(
        image.images_clip,
        image.images,
        torch.tensor([tokenizer_image_token(prompt, tokenizer)]),
        [image.resize],
        [image.original_size],
        max_new_tokens=4,
    )
    assert output_ids.shape[1] > 0 and len(masks) == 1

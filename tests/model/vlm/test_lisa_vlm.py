"""LISA on transformers bases (LLaVA in the Hugging Face layout, Qwen2.5-VL) with SAM or SAM 2:
the image merge equals the base's own forward, a training step changes what trains and nothing
else, a saved model reloads to the same outputs, and generation decodes one mask per [SEG]."""

import numpy as np
import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModel

from model.bases.load import save_base_files
from model.builder import (
    LoraSettings,
    ModelSettings,
    apply_lora,
    check_vlm_segmenter,
    set_trainable,
)
from model.LISA import LISAForCausalLM, conversation_image_index
from model.lisa_vlm import LisaVlm
from model.segment_anything import build_sam_tiny
from model.segmenter import LisaSegmenter
from model.segmenter_vlm import LisaVlmSegmenter
from utils.errors import UsageError

from .conftest import COMBINATIONS, build, random_image, toy_batch


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda c: f"{c[0]}-{c[1]}")
def built(request, vlm_inputs):
    base, segmenter = request.param
    model, tokenizer, base_format = build(vlm_inputs, base, segmenter)
    return model, base_format, request.param


def rows_vision(model: LisaVlm, batch):
    """The base's own forward arguments with each row's own copy of its image's pixels."""
    rows = conversation_image_index(batch.offset, batch.num_conversations, batch.num_images, "cpu")
    return model._generation_vision_inputs(batch.images_clip, batch.input_ids, rows)


def test_the_checkpoint_records_its_base_and_segmenter(built):
    model, base_format, (base, segmenter) = built
    assert model.config.base_kind == base == base_format.kind
    assert model.config.segmenter_kind == segmenter
    assert model.config.out_dim == model.text_hidden_fcs[0][2].out_features
    assert model.config.seg_token_idx == base_format.tokenizer.convert_tokens_to_ids("[SEG]")


@torch.no_grad()
def test_features_once_per_image_equal_the_base_forward_on_each_row(built):
    model, base_format, _ = built
    model.eval()
    batch = toy_batch(base_format, model, (1, 3))
    rows = conversation_image_index(batch.offset, batch.num_conversations, batch.num_images, "cpu")
    ours = model.llm_hidden_states(batch, rows)
    theirs = model.base(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask.long(),
        output_hidden_states=True,
        **rows_vision(model, batch),
    )
    real = batch.attention_mask
    torch.testing.assert_close(ours[real], theirs.hidden_states[-1][real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.lm_head(ours)[real], theirs.logits[real], rtol=1e-5, atol=1e-5)


def test_a_training_step_changes_what_trains_and_nothing_else(built):
    model, base_format, _ = built
    lora = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    try:
        trained = set(set_trainable(lora, "lisa"))
        assert any("lora_" in name for name in trained)
        assert any("visual_model.mask_decoder." in name for name in trained)
        assert any("text_hidden_fcs" in name for name in trained)
        assert any("lm_head" in name for name in trained)
        vision = (
            "vision_tower",
            ".visual.",
            "multi_modal_projector",
            "image_encoder",
            "vision_encoder",
        )
        assert not [n for n in trained if any(part in n for part in vision)]
        lora.train()
        before = {n: p.detach().clone() for n, p in lora.named_parameters()}
        optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
        batch = toy_batch(base_format, model, (2, 1), seed=3)
        for _ in range(2):  # LoRA's A matrices move from the second step (B starts at zero)
            optimizer.zero_grad()
            lora(batch).loss.backward()
            optimizer.step()
        changed = {n for n, p in lora.named_parameters() if not torch.equal(p, before[n])}
        assert changed <= trained
        # every trained tensor moved, except SAM 2's decoder parts a single-mask output never uses
        unused = {n for n in trained - changed if "visual_model.mask_decoder." in n}
        assert trained - changed == unused
        assert len(unused) < len([n for n in trained if "mask_decoder" in n])
    finally:
        if isinstance(lora, PeftModel):
            lora.unload()


@torch.no_grad()
def test_saved_directory_reloads_to_the_same_outputs(built, tmp_path):
    model, base_format, _ = built
    model.eval()
    model.save_pretrained(tmp_path / "lisa")
    save_base_files(base_format, tmp_path / "lisa")
    segmenter = LisaSegmenter.from_pretrained(tmp_path / "lisa", precision="fp32", device="cpu")
    assert isinstance(segmenter, LisaVlmSegmenter)
    # the original's class and transformers' AutoModel read such a folder too
    assert isinstance(LISAForCausalLM.from_pretrained(tmp_path / "lisa"), LisaVlm)
    assert isinstance(AutoModel.from_pretrained(tmp_path / "lisa"), LisaVlm)
    batch = toy_batch(base_format, model, (2, 1), seed=5)
    ours, theirs = model.predict_masks(batch), segmenter.model.predict_masks(batch)
    torch.testing.assert_close(ours.pred_embeddings, theirs.pred_embeddings, rtol=0, atol=0)
    for mine, loaded in zip(ours.pred_masks, theirs.pred_masks, strict=True):
        # the same weights (the prompts are bit-equal); the upsampling may round differently
        torch.testing.assert_close(mine, loaded, rtol=1e-5, atol=1e-6)
        assert torch.equal(mine > 0, loaded > 0)


def test_a_finished_lisa_takes_a_segmenter_of_its_prompt_width(built, vlm_inputs, tmp_path):
    model, _, (_, segmenter) = built
    model.config.save_pretrained(tmp_path / "lisa")
    check_vlm_segmenter(
        ModelSettings(version=str(tmp_path / "lisa"), vision_pretrained=str(vlm_inputs[segmenter]))
    )
    narrow = tmp_path / "sam_narrow.pth"
    torch.save(build_sam_tiny(image_size=64, prompt_embed_dim=48).state_dict(), narrow)
    settings = ModelSettings(version=str(tmp_path / "lisa"), vision_pretrained=str(narrow))
    with pytest.raises(UsageError, match=f"prompts 48 wide.*makes them {model.config.out_dim}"):
        check_vlm_segmenter(settings)


def always_seg(model: LisaVlm) -> None:
    """Give the head a bias that makes every greedy token [SEG]."""
    head = model.base.lm_head
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[model.seg_token_idx] = 1e4
    model.base.lm_head = biased


@torch.no_grad()
def test_generation_gives_one_mask_per_seg_at_the_image_size(vlm_inputs):
    model, _, base_format = build(vlm_inputs, "qwen2_5_vl", "sam2")
    model.eval()
    always_seg(model)
    segmenter = LisaVlmSegmenter(base_format, model, max_new_tokens=3)
    small, large = random_image(30, 44, 1), random_image(52, 36, 2)
    results = segmenter([(small, "Segment it."), (large, "And this?"), (small, "Again?")])
    for result, image in zip(results, (small, large, small), strict=True):
        assert result.text.count("[SEG]") == 3
        assert len(result.masks) == 3
        assert all(mask.shape == image.shape[:2] and mask.dtype == bool for mask in result.masks)
    follow_up = segmenter(small, "More?", history=results[0].history)
    assert len(follow_up.masks) == 3
    assert np.array_equal(follow_up.masks[0].shape, small.shape[:2])

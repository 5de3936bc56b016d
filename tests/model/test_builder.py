"""What trains under each recipe, and where LoRA goes."""

import pytest
import torch

from model.builder import (
    LoraSettings,
    apply_lora,
    load_trained_weights,
    lora_target_names,
    set_trainable,
    unwrap_lisa,
)
from model.LISA import LISAForCausalLM
from utils.errors import UsageError
from utils.train_config import TRAINABLE_RECIPES


@pytest.fixture
def model(tiny_random_lisa_dir):
    return LISAForCausalLM.from_pretrained(tiny_random_lisa_dir)


def test_lora_only_on_the_language_model(model):
    names = lora_target_names(model, ("q_proj", "v_proj"))
    assert names == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    ]
    # SAM and CLIP have q_proj/v_proj linears too; none is chosen
    assert any(n.endswith("q_proj") and "visual_model" in n for n, _ in model.named_modules())


def test_original_recipe_trains_lora_heads_decoder_and_fcs(model):
    wrapped = apply_lora(model, LoraSettings(r=4))
    trained = set_trainable(wrapped, "lisa")
    fully_trained = ("lm_head", "embed_tokens", "mask_decoder", "text_hidden_fcs")
    assert all("lora_" in n or any(k in n for k in fully_trained) for n in trained)
    for part in ("lora_A", "lora_B", *fully_trained):
        assert any(part in n for n in trained), part
    frozen = {n for n, p in wrapped.named_parameters() if not p.requires_grad}
    for part in (
        "vision_tower",
        "mm_projector",
        "image_encoder",
        "prompt_encoder",
        "q_proj.base_layer",
    ):
        assert any(part in n for n in frozen), part
    assert unwrap_lisa(wrapped) is model


def test_all_recipe_trains_everything(model):
    trained = set_trainable(model, "all")
    assert len(trained) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="--trainable must be one of"):
        set_trainable(model, "some")


def test_lora_changes_nothing_before_training(model):
    ids = torch.randint(3, 90, (1, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        after = apply_lora(model, LoraSettings(r=4))(input_ids=ids).logits
    torch.testing.assert_close(before, after)


def test_heads_recipe_keeps_the_seg_states_of_the_llm_it_starts_from(model):
    trained = set_trainable(model, "heads")
    assert trained
    for name in trained:
        assert any(part in name for part in ("lm_head", "mask_decoder", "text_hidden_fcs")), name
    for part in ("lm_head", "mask_decoder", "text_hidden_fcs"):
        assert any(part in n for n in trained), part
    # a step on every trainable weight leaves the LLM's hidden states as they were
    ids = torch.randint(3, 90, (1, 12))
    with torch.no_grad():
        before = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1)
        after = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(before, after)


@pytest.mark.parametrize("recipe", TRAINABLE_RECIPES)
def test_no_train_mask_decoder_freezes_the_decoder_in_every_recipe(model, recipe):
    decoder = {
        f"model.visual_model.mask_decoder.{name}"
        for name, _ in model.model.visual_model.mask_decoder.named_parameters()
    }
    trained = set(set_trainable(model, recipe))
    assert decoder and decoder <= trained
    frozen_decoder = set(set_trainable(model, recipe, train_mask_decoder=False))
    assert frozen_decoder == trained - decoder
    assert not any(p.requires_grad for p in model.model.visual_model.mask_decoder.parameters())


def test_trained_weights_load_not_strictly_and_name_what_the_file_lacks(model, tmp_path):
    own = model.state_dict()
    decoder = {k: v + 1 for k, v in own.items() if "mask_decoder" in k}
    # older transformers saved the rotary buffers; they are passed over
    torch.save(
        {**decoder, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)},
        tmp_path / "w.bin",
    )
    missing = load_trained_weights(model, tmp_path / "w.bin")
    assert set(missing) == set(own) - set(decoder)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in decoder.items())


def test_a_tensor_the_model_lacks_is_one_sentence_naming_the_flag(model, tmp_path):
    path = tmp_path / "w.bin"
    torch.save({"base_model.model.lm_head.lora_A.weight": torch.zeros(2)}, path)
    with pytest.raises(UsageError, match=r"^--weight: .*w\.bin has 1 tensors this model lacks"):
        load_trained_weights(model, path)


def test_a_file_with_none_of_the_models_tensors_is_refused(model, tmp_path):
    path = tmp_path / "w.bin"
    torch.save({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)}, path)
    with pytest.raises(UsageError, match="holds none of this model's tensors"):
        load_trained_weights(model, path)

"""Packed conversations give the unpacked numbers under every training setting: each trainable
recipe (every parameter, the heads alone, the original's LoRA set), gradient checkpointing on and
off, the SDPA and the eager attention, and the LLaVA-1.5 layout (an mlp2x_gelu projector, a CLIP
tower at 336 px with 14 px patches: the 576 image tokens of the full-size model). Tolerances are
those of test_packing.py; a bf16 comparison runs where a CUDA GPU is present."""

import pytest
import torch

from model.builder import LoraSettings, apply_lora, set_trainable
from tools.tiny_configs import tiny_clip_config

from .test_packing import assert_close, compare, random_batch, run, tiny_model

LLAVA_15_IMAGE_TOKENS = 576  # (336 / 14) ** 2 patches of CLIP ViT-L/14 at 336 px


def with_recipe(model, recipe: str, checkpointing: bool):
    """``model`` set up as train_ds.py does: checkpointing first, LoRA adapters for the original
    recipe, then the trainable parameters."""
    if checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if recipe == "lisa":
        model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    trained = set_trainable(model, recipe)
    assert trained
    return model, trained


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("recipe", ["all", "heads", "lisa"])
def test_packed_equals_unpacked_under_each_training_setting(recipe, attention, checkpointing):
    model, trained = with_recipe(tiny_model(attention), recipe, checkpointing)
    _, (_, gradients) = compare(model, random_batch(11, (3, 1, 2)))
    # every trainable parameter that the loss reaches has a gradient in both layouts
    assert set(gradients) <= set(trained)
    llm_weights = [name for name in gradients if name.startswith(("model.layers.", "model.embed"))]
    assert bool(llm_weights) == (recipe == "all")
    if recipe == "lisa":
        assert any("lora_" in name for name in gradients)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_equals_unpacked_in_the_llava_15_layout(attention):
    vision = tiny_clip_config(image_size=336, patch_size=14)
    model = tiny_model(attention, mm_projector_type="mlp2x_gelu", vision_config=vision.to_dict())
    assert model.model.num_image_tokens == LLAVA_15_IMAGE_TOKENS
    assert isinstance(model.model.mm_projector[1], torch.nn.GELU)
    model, _ = with_recipe(model, "all", checkpointing=True)
    batch = random_batch(12, (2, 3), clip_size=336)
    (unpacked, _), (packed, _) = compare(model, batch)
    assert unpacked.last_hidden_state.shape[1] > LLAVA_15_IMAGE_TOKENS


# bf16 rounds to 8 bits of mantissa (a relative step of 2**-8); packed and unpacked attention
# sum in different orders, so their results differ by a few such steps.
BF16_REL = 3e-2
BF16_GRADIENT_REL = 5e-2


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="bf16 is checked on a CUDA GPU only: this CPU has no fast bf16 (about 100x fp32)",
)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_equals_unpacked_in_bf16_on_cuda(attention):
    device = torch.device("cuda")
    model = tiny_model(attention).to(device=device, dtype=torch.bfloat16)
    model, _ = with_recipe(model, "lisa", checkpointing=True)
    batch = random_batch(13, (3, 1, 2)).to(device, torch.bfloat16)
    (out_u, grads_u), (out_p, grads_p) = (run(model, batch, packed) for packed in (False, True))
    for name in ("ce_loss", "mask_bce_loss", "mask_dice_loss"):
        assert out_p[name].item() == pytest.approx(out_u[name].item(), rel=BF16_REL), name
    assert torch.equal(out_p.seg_token_mask, out_u.seg_token_mask)
    seg = out_u.seg_token_mask
    assert_close(
        out_p.last_hidden_state[seg].float(),
        out_u.last_hidden_state[seg].float(),
        rel=BF16_REL,
        what="[SEG] states in bf16",
    )
    assert grads_p.keys() == grads_u.keys()
    scale = max(g.float().abs().max() for g in grads_u.values())
    for name, gradient in grads_u.items():
        difference = (grads_p[name].float() - gradient.float()).abs().max()
        assert difference <= BF16_GRADIENT_REL * scale, f"gradient of {name}: {difference}"

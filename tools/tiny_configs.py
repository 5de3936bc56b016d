"""The tiny sizes that tests and benchmarks build, each written once.

- :func:`tiny_lisa_config`: a random-weight LISA built in memory (the model tests, and with
  larger LLaMA sizes ``benchmarks/bench_model.py``).
- ``*_BASE``: the tiny bases :func:`tools.tiny_base.build_tiny_base` writes to disk for the
  end-to-end runs of the scripts (train_ds.py, the merge, chat.py, app.py).
"""

from __future__ import annotations

import dataclasses

from transformers import CLIPVisionConfig

from model.config import LisaConfig
from model.segment_anything import SAM_TINY
from tools.tiny_base import TinyBaseSizes

TINY_SEG_ID = 100  # the [SEG] id of tiny_lisa_config (no tokenizer: any id below the vocabulary)
TINY_VOCAB = 103


def tiny_clip_config(image_size: int = 32, patch_size: int = 8) -> CLIPVisionConfig:
    """A 2-layer, 32-wide CLIP vision tower; (image_size / patch_size)^2 image tokens."""
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_hidden_layers=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=16,
        hidden_act="quick_gelu",
    )


def tiny_lisa_config(**overrides) -> LisaConfig:
    """A LISA config with a 2-layer, 64-wide LLaMA, :func:`tiny_clip_config` and SAM_TINY at
    128 px; ``overrides`` replace any field (LLaMA sizes, ``vision_config``, ``sam_config`` ...)."""
    fields = dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        mm_vision_tower="tiny-clip",
        mm_hidden_size=32,
        vision_config=tiny_clip_config().to_dict(),
        mm_use_im_start_end=True,
        train_mask_decoder=True,
        out_dim=256,
        seg_token_idx=TINY_SEG_ID,
        sam_config=dataclasses.asdict(dataclasses.replace(SAM_TINY, image_size=128)),
    )
    fields.update(overrides)
    return LisaConfig(**fields)


# One LLaMA layer, 32 wide; SAM at its default 256 px: runs that stop before or soon after
# the model is built (flag checks, the flag walk).
FLAGS_BASE = TinyBaseSizes(
    vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1
)
# FLAGS_BASE with a 64 px SAM and a 32-wide decoder (--image_size 64 --out_dim 32): runs that
# train a few steps or merge (run folders, merge outputs).
SCRIPTS_BASE = dataclasses.replace(
    FLAGS_BASE,
    sam_image_size=64,
    sam_prompt_embed_dim=32,
    sam_decoder_mlp_dim=64,
    sam_iou_head_hidden_dim=32,
)
# SCRIPTS_BASE with an 8 px SAM patch and a 32-wide encoder: checkpoints of a few steps.
CHECKPOINTS_BASE = dataclasses.replace(SCRIPTS_BASE, sam_patch_size=8, sam_embed_dim=32)

"""A tiny random LISA configuration for tests that need no reference data."""

import dataclasses

from transformers import CLIPVisionConfig

from model.config import LisaConfig
from model.segment_anything import SAM_TINY

TINY_CLIP = CLIPVisionConfig(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=2,
    num_hidden_layers=2,
    image_size=32,
    patch_size=8,
    projection_dim=16,
    hidden_act="quick_gelu",
)
SEG_ID = 100
VOCAB = 103


def tiny_config(**overrides) -> LisaConfig:
    fields = dict(
        vocab_size=VOCAB,
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
        vision_config=TINY_CLIP.to_dict(),
        mm_use_im_start_end=True,
        train_mask_decoder=True,
        out_dim=256,
        seg_token_idx=SEG_ID,
        sam_config=dataclasses.asdict(dataclasses.replace(SAM_TINY, image_size=128)),
    )
    fields.update(overrides)
    return LisaConfig(**fields)

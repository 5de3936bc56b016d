"""A compact Segment Anything (SAM) with LISA's text prompts; parameter names follow the official
checkpoints."""

from .build_sam import (
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
from .common import LayerNorm2d, MLPBlock
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD, Sam
from .transformer import TwoWayAttentionBlock, TwoWayTransformer

__all__ = [
    "SAM_CONFIGS",
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "SAM_TINY",
    "SAM_VIT_B",
    "SAM_VIT_H",
    "SAM_VIT_L",
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "PositionEmbeddingRandom",
    "PromptEncoder",
    "Sam",
    "SamConfig",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
    "build_sam",
    "build_sam_tiny",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "load_sam_checkpoint",
    "sam_config_from_state_dict",
    "sam_model_registry",
    "sam_size_name",
]

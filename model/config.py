"""Configuration of a LISA checkpoint: a LLaMA config plus the LLaVA and LISA fields.

The field names are those the released checkpoints carry in ``config.json`` (``model_type`` is
"llava", as written by the original merge script), so a released directory loads unchanged and a
directory we save can be read by the original code. Fields the original never wrote (projector
type, SAM size, loss weights, ``[SEG]`` id) have defaults that reproduce its behaviour.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig


@strict
class LisaConfig(LlamaConfig):
    model_type = "llava"

    # --- LLaVA: vision tower and projector ---
    mm_vision_tower: str | None = None  # CLIP directory or hub id the LLaVA base was built with
    vision_tower: str | None = (
        None  # LISA's copy; overrides mm_vision_tower (chat.py --vision-tower)
    )
    mm_hidden_size: int | None = None  # CLIP hidden size (1024 for ViT-L/14)
    mm_vision_select_layer: int = -2  # CLIP hidden state fed to the projector
    mm_vision_select_feature: str = "patch"  # "patch" drops the CLS token, "cls_patch" keeps it
    mm_projector_type: str = "linear"  # "linear" (LLaVA v1) or "mlp2x_gelu" (LLaVA-1.5)
    mm_use_im_start_end: bool = False  # image wrapped in <im_start> ... <im_end>
    mm_use_im_patch_token: bool = False
    use_mm_proj: bool = True
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: list | None = None
    tune_mm_mlp_adapter: bool = False
    freeze_mm_mlp_adapter: bool = True
    pretrain_mm_mlp_adapter: str | None = None
    vision_config: dict | None = (
        None  # CLIPVisionConfig fields, so the tower builds without its path
    )

    # --- LISA ---
    train_mask_decoder: bool | None = None  # present in finished LISA checkpoints
    out_dim: int = 256  # SAM prompt dimension the [SEG] hidden state is projected to
    seg_token_idx: int | None = None  # id of [SEG]; read from the tokenizer when absent
    sam_config: dict | None = None  # SamConfig fields; absent in released checkpoints (ViT-H)
    ce_loss_weight: float = 1.0
    dice_loss_weight: float = 0.5
    bce_loss_weight: float = 2.0

    @property
    def vision_tower_path(self) -> str | None:
        """Where the CLIP vision tower comes from (``vision_tower`` wins, as in the original)."""
        return self.vision_tower or self.mm_vision_tower

    def use_token_ids_of(self, tokenizer) -> None:
        """Take the tokenizer's BOS, EOS and pad ids: generation stops at its EOS and pads
        with its pad id."""
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.pad_token_id = tokenizer.pad_token_id

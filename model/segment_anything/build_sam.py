"""Building SAM: a config dataclass, one general builder, named sizes, a registry, the inverse
(config from a state dict's shapes) and checkpoint loading."""

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from model.checkpoint_files import load_state_dict_file

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class SamConfig:
    """Hyper-parameters of a SAM model. The defaults are the official ones shared by all sizes."""

    encoder_embed_dim: int  # ViT width C (vit_h 1280)
    encoder_depth: int  # number of ViT blocks
    encoder_num_heads: int  # attention heads per ViT block
    encoder_global_attn_indexes: Sequence[int]  # blocks with global attention, others windowed
    image_size: int = 1024  # side of the square, padded encoder input
    patch_size: int = 16  # ViT patch side; the embedding grid is image_size // patch_size
    window_size: int = 14  # window side of the windowed blocks
    mlp_ratio: float = 4.0  # ViT MLP hidden width / C
    prompt_embed_dim: int = 256  # width of the image embedding, prompts and decoder tokens
    mask_in_chans: int = 16  # hidden channels of the prompt encoder's mask downscaler
    decoder_depth: int = 2  # two-way transformer blocks in the mask decoder
    decoder_num_heads: int = 8  # decoder attention heads (not recoverable from tensor shapes)
    decoder_mlp_dim: int = 2048  # hidden width of the decoder token MLPs
    num_multimask_outputs: int = 3  # masks for ambiguous prompts (plus one single-mask token)
    iou_head_depth: int = 3  # layers of the IoU prediction head
    iou_head_hidden_dim: int = 256  # hidden width of the IoU prediction head

    def __post_init__(self) -> None:
        # A tuple, so configs compare equal and hash whatever sequence was passed in.
        object.__setattr__(
            self, "encoder_global_attn_indexes", tuple(self.encoder_global_attn_indexes)
        )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.encoder_embed_dim % self.encoder_num_heads != 0:
            raise ValueError(
                f"encoder_num_heads {self.encoder_num_heads} must divide "
                f"encoder_embed_dim {self.encoder_embed_dim}"
            )
        if any(not 0 <= i < self.encoder_depth for i in self.encoder_global_attn_indexes):
            raise ValueError(
                f"encoder_global_attn_indexes {self.encoder_global_attn_indexes} must lie in "
                f"[0, {self.encoder_depth})"
            )

    @property
    def embedding_grid(self) -> int:
        """Side of the image-embedding grid (64 at 1024 px); low-res masks are 4x this."""
        return self.image_size // self.patch_size


SAM_VIT_H = SamConfig(
    encoder_embed_dim=1280,
    encoder_depth=32,
    encoder_num_heads=16,
    encoder_global_attn_indexes=(7, 15, 23, 31),
)
SAM_VIT_L = SamConfig(
    encoder_embed_dim=1024,
    encoder_depth=24,
    encoder_num_heads=16,
    encoder_global_attn_indexes=(5, 11, 17, 23),
)
SAM_VIT_B = SamConfig(
    encoder_embed_dim=768,
    encoder_depth=12,
    encoder_num_heads=12,
    encoder_global_attn_indexes=(2, 5, 8, 11),
)
# The random SAM inside the reference tiny LISA checkpoint.
SAM_TINY = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
)

SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_h": SAM_VIT_H,
    "vit_l": SAM_VIT_L,
    "vit_b": SAM_VIT_B,
    "tiny": SAM_TINY,
}


def build_sam(config: SamConfig, checkpoint: str | os.PathLike | None = None) -> Sam:
    """Build a SAM model in eval mode; load `checkpoint` (strict) when given.

    Parameters are created on the current default device and dtype, so
    ``with torch.device("meta"): build_sam(...)`` builds without memory.
    """
    grid = config.embedding_grid
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            qkv_bias=True,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    )
    sam.eval()
    if checkpoint is not None:
        load_sam_checkpoint(sam, checkpoint)
    return sam


def build_sam_vit_h(checkpoint: str | os.PathLike | None = None, **overrides: Any) -> Sam:
    """SAM ViT-H (641M parameters); `overrides` replace config fields, e.g. image_size=512."""
    return build_sam(replace(SAM_VIT_H, **overrides), checkpoint)


def build_sam_vit_l(checkpoint: str | os.PathLike | None = None, **overrides: Any) -> Sam:
    """SAM ViT-L (312M parameters)."""
    return build_sam(replace(SAM_VIT_L, **overrides), checkpoint)


def build_sam_vit_b(checkpoint: str | os.PathLike | None = None, **overrides: Any) -> Sam:
    """SAM ViT-B (94M parameters)."""
    return build_sam(replace(SAM_VIT_B, **overrides), checkpoint)


def build_sam_tiny(checkpoint: str | os.PathLike | None = None, **overrides: Any) -> Sam:
    """The tiny SAM of the reference checkpoint (ViT width 32, 2 blocks, block 1 global)."""
    return build_sam(replace(SAM_TINY, **overrides), checkpoint)


sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "tiny": build_sam_tiny,
}


def _count_indexed(state_dict: Mapping[str, Any], template: str) -> int:
    """Number of consecutive i from 0 for which template.format(i) is a key."""
    count = 0
    while template.format(count) in state_dict:
        count += 1
    return count


def sam_config_from_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> SamConfig:
    """Infer a SamConfig from the shapes of a SAM state dict (values need only `.shape`).

    Args:
        state_dict: maps names to tensors (meta tensors are fine).
        prefix: prepended to every SAM name, e.g. "model.visual_model." in a LISA checkpoint.

    Returns:
        The config; decoder_num_heads is the official 8, as head counts leave no trace in shapes.
    """

    def shape(name: str) -> tuple[int, ...]:
        key = prefix + name
        if key not in state_dict:
            raise ValueError(f"not a SAM state dict: the key {key!r} is missing")
        return tuple(state_dict[key].shape)

    _, grid, _, embed_dim = shape("image_encoder.pos_embed")
    patch_size = shape("image_encoder.patch_embed.proj.weight")[-1]
    depth = _count_indexed(state_dict, prefix + "image_encoder.blocks.{}.attn.qkv.weight")
    if depth == 0:
        raise ValueError(f"not a SAM state dict: no {prefix}image_encoder.blocks.* keys")
    head_dim = shape("image_encoder.blocks.0.attn.rel_pos_h")[1]
    rows = [shape(f"image_encoder.blocks.{i}.attn.rel_pos_h")[0] for i in range(depth)]
    # Global blocks attend over the whole grid: their tables have 2*grid-1 rows.
    global_indexes = tuple(i for i, n in enumerate(rows) if n == 2 * grid - 1)
    window_rows = {n for n in rows if n != 2 * grid - 1}
    if len(window_rows) > 1:
        raise ValueError(f"windowed blocks disagree on the window size: rel_pos_h rows {rows}")
    window_size = (window_rows.pop() + 1) // 2 if window_rows else SamConfig.window_size

    iou_head_depth = _count_indexed(
        state_dict, prefix + "mask_decoder.iou_prediction_head.layers.{}.weight"
    )
    return SamConfig(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=embed_dim // head_dim,
        encoder_global_attn_indexes=global_indexes,
        image_size=grid * patch_size,
        patch_size=patch_size,
        window_size=window_size,
        mlp_ratio=shape("image_encoder.blocks.0.mlp.lin1.weight")[0] / embed_dim,
        prompt_embed_dim=shape("image_encoder.neck.0.weight")[0],
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=_count_indexed(
            state_dict, prefix + "mask_decoder.transformer.layers.{}.norm1.weight"
        ),
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=(
            shape("mask_decoder.iou_prediction_head.layers.0.weight")[0]
            if iou_head_depth > 1
            else SamConfig.iou_head_hidden_dim
        ),
    )


def sam_size_name(config: SamConfig) -> str:
    """A registered size name ("vit_h"), "<name> at image size N", or the encoder numbers."""
    for name, known in SAM_CONFIGS.items():
        if config == known:
            return name
        if config == replace(known, image_size=config.image_size):
            return f"{name} at image size {config.image_size}"
    return (
        f"(encoder embed {config.encoder_embed_dim}, depth {config.encoder_depth}, "
        f"global blocks {list(config.encoder_global_attn_indexes)}, image {config.image_size})"
    )


def _describe_mismatch(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size]) -> str:
    """Summary of missing, unexpected and wrongly shaped keys."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and expected[k] != found[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} shape mismatches (e.g. {k}: file {list(found[k])}, "
            f"model {list(expected[k])})"
        )
    return ", ".join(parts)


def load_sam_checkpoint(model: Sam, path: str | os.PathLike, *, prefix: str = "") -> None:
    """Load SAM weights into `model` in place, with strict key and shape matching.

    Args:
        model: the SAM to fill; tensors keep the model's device and dtype.
        path: an official ``sam_vit_*.pth`` (a torch-saved plain state dict) or a .safetensors
            file with the same names.
        prefix: only keys starting with it are used, with it removed (e.g. "model.visual_model."
            to take SAM out of a LISA checkpoint).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read, its keys/shapes do not fit `model`, or `model` is on
            the meta device.
    """
    path = Path(path)
    model_state = model.state_dict()
    expected = {k: v.shape for k, v in model_state.items()}
    expected_name = sam_size_name(sam_config_from_state_dict(model_state))
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {path} does not exist (expected a SAM checkpoint of size "
            f"{expected_name}, an official sam_vit_*.pth or a .safetensors file)"
        )
    state_dict = load_state_dict_file(path)  # CheckpointError (a ValueError): not a state dict
    if prefix:
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    found = {k: v.shape for k, v in state_dict.items()}
    if found != expected:
        try:
            found_name = f"a SAM of size {sam_size_name(sam_config_from_state_dict(state_dict))}"
        except (ValueError, IndexError, ZeroDivisionError):
            found_name = "something else"
        raise ValueError(
            f"{path} does not fit the model: expected a SAM checkpoint of size {expected_name} "
            f"({len(expected)} tensors), but the file holds {found_name} ({len(found)} tensors; "
            f"{_describe_mismatch(expected, found)})."
        )
    if any(t.is_meta for t in model_state.values()):
        # Copying into meta tensors would silently load nothing.
        raise ValueError(
            f"cannot load {path} into a SAM built on the meta device; build it on a real device"
        )
    model.load_state_dict(state_dict, strict=True)

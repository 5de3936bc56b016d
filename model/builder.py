"""Building LISA for training (and for the LoRA merge), and choosing what trains.

The same construction serves train_ds.py and merge_lora_weights_and_save_hf_model.py, so that a
checkpoint written by one loads into the other with strict key matching.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from model.checkpoint_files import load_state_dict_file, read_tensor_shapes
from model.config import LisaConfig
from model.LISA import (
    SAM_PREFIX,
    LISAForCausalLM,
    checkpoint_tensor_shapes,
    sam_config_from_shapes,
)
from model.segment_anything import load_sam_checkpoint
from utils.errors import UsageError
from utils.tokenization import LegacyLlamaTokenizer, add_lisa_tokens, load_tokenizer
from utils.train_config import TRAINABLE_RECIPES

logger = logging.getLogger(__name__)

# Linear layers that LoRA never touches: only the language model's own layers get adapters.
NON_LLM_MODULES = (
    "visual_model",  # the segmenter
    "vision_tower",  # CLIP (original layout, LLaVA in the Hugging Face layout)
    "mm_projector",
    "multi_modal_projector",
    ".visual.",  # Qwen2.5-VL's vision encoder and merger
    "text_hidden_fcs",
)
# Trained in full under the original recipe (besides the LoRA adapters).
LISA_FULLY_TRAINED = ("lm_head", "embed_tokens", "mask_decoder", "text_hidden_fcs")
# Trained under "heads": the outputs of a frozen LLM (its lm_head, for saying [SEG]) and SAM's side.
HEADS_TRAINED = ("lm_head", "mask_decoder", "text_hidden_fcs")
MASK_DECODER = "visual_model.mask_decoder."  # SAM's decoder (--train_mask_decoder)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8  # rank; 0 disables LoRA
    alpha: int = 16  # scale numerator (the update is scaled by alpha / r)
    dropout: float = 0.05  # dropout on the adapter's input
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # last names of the LLM's Linears


@dataclass(frozen=True)
class ModelSettings:
    """What builds LISA for training or for the LoRA merge (train_ds.py and the merge script)."""

    version: str  # LLaVA base directory, or a finished LISA model
    vision_tower: str | None = None  # CLIP directory; None: the one --version's config names
    vision_pretrained: str | None = None  # SAM file or SAM 2 directory; None: --version's own
    segmenter: str = "auto"  # "sam" / "sam2" where --vision_pretrained's contents are ambiguous
    use_mm_start_end: bool = True  # <im_start>/<im_end> around the image tokens
    out_dim: int = 256  # [SEG] prompt width; must be the SAM decoder's
    image_size: int | None = 1024  # SAM input side the data is made for; None: the SAM's own
    train_mask_decoder: bool = True  # recorded in config.json; set_trainable freezes it if False
    loss_weights: tuple[float, float, float] = (1.0, 0.5, 2.0)  # ce, dice, bce


class ModelFlags(Protocol):
    """The model flags train_ds.py and the merge script share (TrainConfig, MergeConfig)."""

    version: str
    vision_tower: str
    vision_pretrained: str
    segmenter: str
    use_mm_start_end: bool
    out_dim: int
    image_size: int | None
    train_mask_decoder: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: str


def model_settings_from(
    flags: ModelFlags, *, loss_weights: tuple[float, float, float] = (1.0, 0.5, 2.0)
) -> ModelSettings:
    """The settings of the model flags. ``--vision-tower`` and ``--vision_pretrained`` count only
    when they name a local folder / file: their defaults are a hub id and a placeholder."""
    return ModelSettings(
        version=flags.version,
        vision_tower=flags.vision_tower if Path(flags.vision_tower).exists() else None,
        vision_pretrained=(
            flags.vision_pretrained if Path(flags.vision_pretrained).exists() else None
        ),
        segmenter=flags.segmenter,
        use_mm_start_end=flags.use_mm_start_end,
        out_dim=flags.out_dim,
        image_size=flags.image_size,
        train_mask_decoder=flags.train_mask_decoder,
        loss_weights=loss_weights,
    )


def lora_settings_from(flags: ModelFlags) -> LoraSettings:
    """The adapters of the LoRA flags (--lora_target_modules is comma-separated)."""
    return LoraSettings(
        r=flags.lora_r,
        alpha=flags.lora_alpha,
        dropout=flags.lora_dropout,
        target_modules=tuple(flags.lora_target_modules.split(",")),
    )


def build_lisa(
    version: str,
    tokenizer: LegacyLlamaTokenizer,
    *,
    vision_tower: str | None = None,
    vision_pretrained: str | None = None,
    use_mm_start_end: bool = True,
    out_dim: int = 256,
    train_mask_decoder: bool = True,
    loss_weights: tuple[float, float, float] = (1.0, 0.5, 2.0),
    dtype: torch.dtype = torch.float32,
) -> LISAForCausalLM:
    """LISA from a LLaVA base (SAM from ``vision_pretrained``) or from a finished LISA checkpoint.

    The tokenizer gets LISA's tokens (``[SEG]``, and ``<im_start>``/``<im_end>`` when
    ``use_mm_start_end``; existing ones are kept) and the embeddings follow its length.
    """
    seg_token_idx = add_lisa_tokens(tokenizer, use_mm_start_end=use_mm_start_end)
    ce_weight, dice_weight, bce_weight = loss_weights
    model = LISAForCausalLM.from_pretrained(
        version,
        vision_tower=vision_tower,
        vision_pretrained=vision_pretrained,
        seg_token_idx=seg_token_idx,
        use_mm_start_end=use_mm_start_end,
        out_dim=out_dim,
        train_mask_decoder=train_mask_decoder,
        ce_loss_weight=ce_weight,
        dice_loss_weight=dice_weight,
        bce_loss_weight=bce_weight,
        torch_dtype=dtype,
    )
    model.config.use_token_ids_of(tokenizer)
    if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model


def build_lisa_from_settings(
    settings: ModelSettings, tokenizer: LegacyLlamaTokenizer, dtype: torch.dtype
) -> LISAForCausalLM:
    """:func:`build_lisa` from typed settings, with the SAM it built checked against them.

    Raises:
        UsageError: ``out_dim`` or ``image_size`` differs from the SAM's (named by flag).
    """
    model = build_lisa(
        settings.version,
        tokenizer,
        vision_tower=settings.vision_tower,
        vision_pretrained=settings.vision_pretrained,
        use_mm_start_end=settings.use_mm_start_end,
        out_dim=settings.out_dim,
        train_mask_decoder=settings.train_mask_decoder,
        loss_weights=settings.loss_weights,
        dtype=dtype,
    )
    sam = model.model.visual_model
    sam_width = sam.prompt_encoder.embed_dim
    if sam_width != settings.out_dim:
        raise UsageError(
            f"--out_dim {settings.out_dim} differs from the SAM decoder's prompt width "
            f"{sam_width}; pass --out_dim {sam_width}"
        )
    if settings.image_size is not None and settings.image_size != sam.image_size:
        source = settings.vision_pretrained or settings.version
        raise UsageError(
            f"--image_size {settings.image_size} differs from the {sam.image_size}-pixel input "
            f"of the SAM in {source}; pass --image_size {sam.image_size}"
        )
    return model


def lora_target_names(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Full names of the language model's Linear layers whose name ends with one of ``targets``."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or any(part in name for part in NON_LLM_MODULES):
            continue
        if name.split(".")[-1] in targets:
            names.append(name)
    return sorted(names)


def apply_lora(model: LISAForCausalLM, settings: LoraSettings) -> PeftModel:
    """Wrap with LoRA adapters on the LLM's target projections (parameter names as the original's)."""
    targets = lora_target_names(model, settings.target_modules)
    if not targets:
        raise ValueError(
            f"--lora_target_modules {','.join(settings.target_modules)} matches no LLM layer"
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
    )
    return get_peft_model(model, config)


def set_trainable(model: nn.Module, recipe: str, *, train_mask_decoder: bool = True) -> list[str]:
    """Choose the trained parameters; returns their names.

    "lisa" (the original's): LoRA adapters when present, lm_head, embed_tokens, the SAM mask
    decoder and text_hidden_fcs; CLIP, the projector, the SAM image encoder and prompt encoder
    and the LLM's own weights are frozen. "all": every parameter (a model trained from scratch).
    "heads": lm_head, the SAM mask decoder and text_hidden_fcs; the [SEG] hidden states stay
    exactly those of the LLM one starts from (the second stage of the quick start).
    ``train_mask_decoder=False`` (--no-train_mask_decoder) freezes the SAM mask decoder in every
    recipe.
    """
    if recipe not in TRAINABLE_RECIPES:
        raise ValueError(
            f"--trainable must be one of {', '.join(TRAINABLE_RECIPES)}, got {recipe!r}"
        )
    names = []
    for name, parameter in model.named_parameters():
        if recipe == "all":
            trainable = True
        elif recipe == "heads":
            trainable = any(part in name for part in HEADS_TRAINED)
        else:
            trainable = "lora_" in name or any(part in name for part in LISA_FULLY_TRAINED)
        if MASK_DECODER in name and not train_mask_decoder:
            trainable = False
        parameter.requires_grad_(trainable)
        if trainable:
            names.append(name)
    return names


def load_trained_weights(model: nn.Module, path: str | Path, flag: str = "--weight") -> list[str]:
    """A consolidated state dict (zero_to_fp32.py's output, a merged model's weights) into
    ``model`` (LISA or its PEFT wrapper), not strictly: every tensor of the file must be one of
    the model's (the rotary ``inv_freq`` buffers older transformers saved are passed over), the
    model's others keep their values. train_ds.py --weight and the merge load through here.

    Returns:
        The names of the model's tensors the file lacks (DeepSpeed may leave out frozen ones).

    Raises:
        CheckpointError: the file cannot be read as a state dict.
        UsageError: the file has tensors the model lacks, or none of the model's (named by
            ``flag``).
    """
    state = load_state_dict_file(path)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise UsageError(
            f"{flag}: {path} has {len(unexpected)} tensors this model lacks (e.g. "
            f"{unexpected[:2]}); check --lora_r / --lora_target_modules / --use_mm_start_end "
            "against the training run"
        )
    if len(missing) == len(model.state_dict()):
        raise UsageError(f"{flag}: {path} holds none of this model's tensors")
    return missing


def unwrap_lisa(model: nn.Module) -> LISAForCausalLM:
    """The LISA model (LISAForCausalLM, or LisaVlm on a transformers base) inside a PEFT
    wrapper (or the model itself)."""
    from model.lisa_vlm import LisaVlm

    if isinstance(model, PeftModel):
        model = model.get_base_model()
    if not isinstance(model, LISAForCausalLM | LisaVlm):
        raise TypeError(f"expected a LISA model, got {type(model).__name__}")
    return model


def build_from_llava_base(
    path: str, vision_pretrained: str, config: LisaConfig, *model_args, **kwargs
) -> tuple[LISAForCausalLM, dict]:
    """LISA from a LLaVA base directory, SAM from an official SAM file.

    ``vision_pretrained`` is a plain SAM state dict (sam_vit_h_4b8939.pth layout) or a
    .safetensors file with its names; SAM's size is read from it. ``text_hidden_fcs`` starts
    fresh. A finished LISA checkpoint works too: its SAM is replaced by the file's.
    ``LISAForCausalLM.from_pretrained(path, vision_pretrained=...)`` comes here.

    Returns the model and transformers' loading info, where SAM's tensors do not count as
    missing.
    """
    shapes = checkpoint_tensor_shapes(path)
    has_sam = any(name.startswith(SAM_PREFIX) for name in shapes)
    if config.sam_config is None and not has_sam:
        config.sam_config = sam_config_from_shapes(
            read_tensor_shapes(vision_pretrained), "", Path(vision_pretrained)
        )
    model, info = LISAForCausalLM.load_checkpoint(
        path, config, *model_args, sam_elsewhere=True, **kwargs
    )
    load_sam_checkpoint(model.model.visual_model, vision_pretrained)
    if not has_sam:
        logger.info(
            "built LISA from the LLaVA base %s: SAM from %s, new text_hidden_fcs",
            path,
            vision_pretrained,
        )
    info["missing_keys"] = {key for key in info["missing_keys"] if not key.startswith(SAM_PREFIX)}
    return model, info


def build_lisa_vlm(settings: ModelSettings, base_format, dtype: torch.dtype):
    """LISA on a transformers base (LLaVA in the Hugging Face layout, Qwen2.5-VL) from the base
    directory ``settings.version`` and the segmenter ``settings.vision_pretrained``, or a finished
    LISA checkpoint of that kind (its segmenter replaced when ``vision_pretrained`` is given).

    ``base_format`` (model.bases.load.load_base_format) holds the tokenizer with [SEG] added; the
    embeddings follow its length.

    Raises:
        UsageError: no segmenter given for a base, or ``out_dim`` / ``image_size`` differ from
            the segmenter's (named by flag).
    """
    from model.bases.detect import base_kind_of, is_lisa_vlm
    from model.lisa_vlm import BASE_CLASSES, LisaVlm
    from model.segmenters.load import load_segmenter

    check_vlm_segmenter(settings)
    segmenter = None
    if settings.vision_pretrained is not None:
        segmenter = load_segmenter(settings.vision_pretrained, _segmenter_choice(settings))
    if is_lisa_vlm(settings.version):
        model = LisaVlm.from_pretrained(settings.version, dtype=dtype)
        if segmenter is not None:
            model.visual_model = segmenter.to(dtype)
    else:
        kind = base_kind_of(settings.version)
        base = BASE_CLASSES[kind][1].from_pretrained(settings.version, dtype=dtype)
        model = LisaVlm.from_parts(
            base,
            kind,
            segmenter.to(dtype),
            seg_token_idx=base_format.seg_token_id,
            loss_weights=settings.loss_weights,
            train_mask_decoder=settings.train_mask_decoder,
        )
    model.config.seg_token_idx = base_format.seg_token_id
    if model.get_input_embeddings().weight.shape[0] < len(base_format.tokenizer):
        model.resize_token_embeddings(len(base_format.tokenizer))
    _check_segmenter_input(model, settings)
    return model


def check_vlm_segmenter(settings: ModelSettings) -> None:
    """The segmenter flags of a transformers base, checked without loading any weights (so that
    train_ds.py can refuse them before it starts): a segmenter given unless ``version`` is a
    finished LISA, and ``out_dim`` equal to its prompt width for a fresh LISA.

    Raises:
        UsageError: one sentence naming the flag.
    """
    from model.bases.detect import is_lisa_vlm
    from model.lisa_vlm import LisaVlmConfig
    from model.segmenters.load import segmenter_prompt_width

    finished = is_lisa_vlm(settings.version)
    if settings.vision_pretrained is None:
        if not finished:
            raise UsageError(
                f"--vision_pretrained: LISA on the base {settings.version} needs a segmenter: "
                "an official SAM file (sam_vit_h_4b8939.pth) or a SAM 2 directory"
            )
        return
    width = segmenter_prompt_width(settings.vision_pretrained, _segmenter_choice(settings))
    if finished:
        trained = LisaVlmConfig.from_pretrained(settings.version).out_dim
        if trained != width:
            raise UsageError(
                f"--vision_pretrained {settings.vision_pretrained} takes prompts {width} wide, "
                f"but the LISA in {settings.version} makes them {trained} wide; pass a "
                f"segmenter of prompt width {trained}"
            )
    elif settings.out_dim != width:
        raise UsageError(
            f"--out_dim {settings.out_dim} differs from the segmenter's prompt width "
            f"{width}; pass --out_dim {width}"
        )


def _segmenter_choice(settings: ModelSettings) -> str | None:
    return None if settings.segmenter == "auto" else settings.segmenter


def _check_segmenter_input(model, settings: ModelSettings) -> None:
    """--image_size must be the official SAM's input side (the data resizes for it); SAM 2
    resizes the decoded pixels itself."""
    from model.segmenters import segmenter_ops

    ops = segmenter_ops(model.visual_model)
    side = ops.input_size(model.visual_model)
    if ops.kind == "sam" and settings.image_size is not None and settings.image_size != side:
        raise UsageError(
            f"--image_size {settings.image_size} differs from the {side}-pixel input of the "
            f"segmenter; pass --image_size {side}"
        )


def build_model_for_training(
    settings: ModelSettings, dtype: torch.dtype, *, model_max_length: int, base_format=None
) -> tuple[nn.Module, object, object | None]:
    """LISA on whatever base ``settings.version`` holds (train_ds.py and the merge).

    ``base_format``: the one the data was made with (loaded from ``settings.version`` when
    None). Returns the model, its tokenizer ([SEG] added) and, for a transformers base (LLaVA in the
    Hugging Face layout, Qwen2.5-VL), its :class:`model.bases.BaseFormat` (None for the original
    LLaVA layout, which keeps its own path: tokenizer, templates and collate of utils/).
    """
    from model.bases.detect import base_kind_of

    if base_kind_of(settings.version) == "llava":
        tokenizer = load_tokenizer(settings.version, model_max_length=model_max_length)
        return build_lisa_from_settings(settings, tokenizer, dtype), tokenizer, None
    from model.bases.load import load_base_format

    if base_format is None:
        base_format = load_base_format(settings.version, model_max_length=model_max_length)
    model = build_lisa_vlm(settings, base_format, dtype)
    return model, base_format.tokenizer, base_format

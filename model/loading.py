"""Loading a LISA checkpoint for inference: tokenizer, model and image preprocessing in one call.

Used by chat.py, evaluation and the Python API, so that all three see the same tokenizer facts
(pad = unk, ``[SEG]`` id from the tokenizer, the legacy spacing the released weights were trained
with), the same precision rules and the same image transforms.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BitsAndBytesConfig

from model.checkpoint_files import (
    CheckpointError,
    read_checkpoint_shapes,
    read_config,
    weight_files_label,
)
from model.LISA import SAM_PREFIX, TEXT_HIDDEN_FCS_PREFIX, LISAForCausalLM
from utils.constants import SEG_TOKEN
from utils.devices import resolve_device, resolve_dtype
from utils.tokenization import LegacyLlamaTokenizer, load_tokenizer
from utils.transforms import ClipTransform, ImagePreprocessor, SamTransform

# Kept in full precision when the LLM is quantized, as the original chat.py did for SAM.
UNQUANTIZED_MODULES = [
    "model.visual_model",
    "model.vision_tower",
    "model.mm_projector",
    "model.text_hidden_fcs",
    "lm_head",
]


def quantization_config(
    load_in_8bit: bool, load_in_4bit: bool, dtype: torch.dtype
) -> BitsAndBytesConfig | None:
    """The bitsandbytes settings of the original chat.py (SAM and the vision parts left as they are)."""
    if load_in_8bit and load_in_4bit:
        raise ValueError("choose one of --load_in_8bit and --load_in_4bit")
    if not (load_in_8bit or load_in_4bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RuntimeError(
            "8-bit / 4-bit loading needs bitsandbytes: pip install bitsandbytes"
        ) from error
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=UNQUANTIZED_MODULES)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=UNQUANTIZED_MODULES,
    )


def load_pretrained_model(
    path: str | Path,
    vision_tower: str | None = None,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    model_max_length: int = 512,
    image_size: int | None = None,
) -> tuple[LegacyLlamaTokenizer, LISAForCausalLM, ImagePreprocessor]:
    """Load a LISA checkpoint directory for inference.

    Args:
        path: a directory saved by the merge script (ours or the original's).
        vision_tower: CLIP directory; overrides the path stored in config.json (needed when the
            checkpoint holds no vision-tower weights and its config names a path not present here).
        precision: "fp32", "bf16" or "fp16" (half precisions fall back to fp32 on a CPU).
        device: "cuda", "cpu", ...; default CUDA when present.
        load_in_8bit, load_in_4bit: quantize the LLM's linear layers with bitsandbytes.
        model_max_length: the tokenizer's maximum length.
        image_size: SAM input side; default the size the checkpoint's SAM was built for.
    Returns:
        (tokenizer, model in eval mode, image preprocessor).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory (no config.json there)")
    device = resolve_device(device)
    dtype = resolve_dtype(precision, device)

    tokenizer = _load_checkpoint_tokenizer(path, model_max_length)
    quantization = quantization_config(load_in_8bit, load_in_4bit, dtype)
    extra = (
        {"quantization_config": quantization, "device_map": {"": device}} if quantization else {}
    )
    _refuse_llava_base(path)
    model = LISAForCausalLM.from_pretrained(
        path,
        vision_tower=vision_tower,
        seg_token_idx=tokenizer.convert_tokens_to_ids(SEG_TOKEN),
        torch_dtype=dtype,
        **extra,
    )
    model.config.use_token_ids_of(tokenizer)
    if quantization is None:
        model = model.to(device=device, dtype=dtype)
    model.eval()

    sam_size = image_size or model.model.visual_model.image_size
    processor = ImagePreprocessor(
        clip=_clip_transform(model, vision_tower), sam=SamTransform(sam_size)
    )
    return tokenizer, model, processor


def _refuse_llava_base(path: Path) -> None:
    """A LLaVA base loads for training (SAM and the [SEG] projection start there), never for
    inference: it would answer with a random SAM."""
    names = read_checkpoint_shapes(path)
    if names and not any(name.startswith((SAM_PREFIX, TEXT_HIDDEN_FCS_PREFIX)) for name in names):
        raise CheckpointError(
            f"{weight_files_label(path)} holds no SAM and no [SEG] projection (text_hidden_fcs) "
            "weights: it is a LLaVA base, not a LISA checkpoint; train one, or merge a trained "
            "one with merge_lora_weights_and_save_hf_model.py."
        )


def _load_checkpoint_tokenizer(path: Path, model_max_length: int) -> LegacyLlamaTokenizer:
    """The checkpoint's tokenizer, which must hold [SEG] and fit config.json's vocabulary.

    Raises:
        CheckpointError: unreadable tokenizer files.
        ValueError: no [SEG], or more tokens than the model has rows.
    """
    try:
        tokenizer = load_tokenizer(path, model_max_length=model_max_length)
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split()).rstrip(".")
        raise CheckpointError(f"cannot read the tokenizer files in {path}: {reason}.") from None
    if SEG_TOKEN not in tokenizer.get_vocab():
        raise ValueError(
            f"the tokenizer in {path} has no {SEG_TOKEN} token: is this a LISA checkpoint?"
        )
    vocab_size = read_config(path).vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {len(tokenizer)} tokens but config.json's vocab_size is {vocab_size}"
        )
    return tokenizer


def _clip_transform(model: LISAForCausalLM, vision_tower: str | None) -> ClipTransform:
    """CLIP preprocessing from the vision tower directory; from the tower's config when there is none."""
    transform = ClipTransform.from_first_directory(vision_tower or model.config.vision_tower_path)
    if transform is not None:
        return transform
    side = (
        model.model.vision_tower.config.image_size
    )  # LLaVA's CLIP processing: resize, crop to side
    return ClipTransform(shortest_edge=side, crop_size=(side, side))


# Kept in full precision when the LLM of a LISA on a transformers base is quantized.
UNQUANTIZED_VLM_MODULES = ["visual_model", "text_hidden_fcs", "base.lm_head", "base.model.visual"]


def load_lisa_vlm(
    path: str | Path,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    model_max_length: int = 512,
):
    """Load a LISA checkpoint on a transformers base (saved by the merge) for inference.

    Returns its :class:`model.bases.BaseFormat` (tokenizer with [SEG], chat template, image
    processing, from the files saved beside the weights) and the model in eval mode.

    Raises:
        CheckpointError: unreadable files, no [SEG] in the tokenizer, or weights that do not fit.
    """
    from model.bases.load import load_base_format
    from model.lisa_vlm import LisaVlm

    path = Path(path)
    device = resolve_device(device)
    dtype = resolve_dtype(precision, device)
    try:
        base_format = load_base_format(path, model_max_length=model_max_length)
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split()).rstrip(".")
        raise CheckpointError(
            f"cannot read the tokenizer or processor files in {path}: {reason}."
        ) from None
    quantization = quantization_config(load_in_8bit, load_in_4bit, dtype)
    if quantization is not None:
        quantization.llm_int8_skip_modules = UNQUANTIZED_VLM_MODULES
    extra = (
        {"quantization_config": quantization, "device_map": {"": device}} if quantization else {}
    )
    try:
        model, info = LisaVlm.from_pretrained(path, dtype=dtype, output_loading_info=True, **extra)
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split()).rstrip(".")
        raise CheckpointError(f"cannot load the LISA checkpoint {path}: {reason[:300]}.") from None
    problems = sorted(info["missing_keys"]) + sorted(info["unexpected_keys"])
    if problems or info.get("mismatched_keys"):
        raise CheckpointError(
            f"checkpoint {weight_files_label(path)} does not fit its config.json "
            f"(e.g. {(problems or [str(info['mismatched_keys'])])[:2]})."
        )
    if model.config.seg_token_idx != base_format.seg_token_id:
        raise CheckpointError(
            f"{path}: config.json's seg_token_idx {model.config.seg_token_idx} is not the "
            f"tokenizer's {SEG_TOKEN} id {base_format.seg_token_id}."
        )
    if quantization is None:
        model = model.to(device=device, dtype=dtype)
    return base_format, model.eval()

"""Which base a model directory holds, read from its ``config.json`` alone (no weights read)."""

from __future__ import annotations

import json
from pathlib import Path

from utils.errors import UsageError

BASE_KINDS = ("llava", "llava_hf", "qwen2_5_vl")
# model_type of a finished LISA on a transformers base (model.lisa_vlm); its config names the base
LISA_VLM_MODEL_TYPE = "lisa_vlm"


def read_json_object(path: Path, expected: str) -> dict:
    """The JSON object in ``path``; UsageError naming the file (``expected``: what a missing
    file should have been) otherwise."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist: {expected}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is not readable JSON ({type(error).__name__})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds no JSON object")
    return value


def read_config_json(directory: str | Path) -> dict:
    """The parsed ``config.json`` of ``directory``; UsageError naming the file otherwise."""
    return read_json_object(
        Path(directory) / "config.json", "expected a model directory with a config.json"
    )


def base_kind_from_config(config: dict) -> str | None:
    """The base kind of a parsed config.json, None when it is no base we know."""
    model_type = config.get("model_type")
    if model_type == LISA_VLM_MODEL_TYPE:
        return config.get("base_kind")
    if model_type == "qwen2_5_vl":
        return "qwen2_5_vl"
    if model_type == "llava" and "text_config" in config:
        return "llava_hf"
    # The original layout: "llava" (LLaVA v1, released LISA), "llava_llama" (LLaVA-1.5), or any
    # LLaMA config with LLaVA's vision fields.
    if model_type in ("llava", "llava_llama") or "mm_vision_tower" in config:
        return "llava"
    return None


def base_kind_of(directory: str | Path) -> str:
    """``"llava"``, ``"llava_hf"`` or ``"qwen2_5_vl"``: the base of a ``--version`` directory
    (a base to start from, or a finished LISA checkpoint on that base)."""
    config = read_config_json(directory)
    kind = base_kind_from_config(config)
    if kind not in BASE_KINDS:
        raise UsageError(
            f"{Path(directory) / 'config.json'}: model_type {config.get('model_type')!r} is no "
            "base LISA knows; expected a LLaVA checkpoint (original or Hugging Face layout), "
            "Qwen2.5-VL, or a LISA checkpoint"
        )
    return kind


def is_lisa_vlm(directory: str | Path) -> bool:
    """True for a finished LISA checkpoint on a transformers base (saved by model.lisa_vlm);
    False for anything else, an unreadable directory included (its loading says what is
    wrong)."""
    try:
        return read_config_json(directory).get("model_type") == LISA_VLM_MODEL_TYPE
    except UsageError:
        return False

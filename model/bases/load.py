"""The :class:`model.bases.BaseFormat` of a ``--version`` directory, and the files that make a
saved model directory loadable the same way again."""

from __future__ import annotations

import json
from pathlib import Path

from model.bases import BaseFormat
from model.bases.detect import base_kind_of
from model.bases.llava_hf import LlavaHfFormat
from model.bases.original import OriginalLlavaFormat
from model.bases.qwen2_5_vl import Qwen25VlFormat
from model.bases.templated_format import TemplatedFormat

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def load_base_format(
    version_dir: str | Path,
    *,
    model_max_length: int,
    use_mm_start_end: bool = True,
    conv_type: str = "llava_v1",
    vision_tower: str | None = None,
) -> BaseFormat:
    """The format of the base in ``version_dir``: a base to start from, or a finished LISA
    checkpoint on that base (its tokenizer, with [SEG], and processor files sit beside it).

    Args:
        model_max_length: the LLM's context, given to the tokenizer.
        use_mm_start_end, conv_type, vision_tower: the original LLaVA layout's settings
            (``<im_start>``/``<im_end>`` wrapping, template, CLIP directory); the other bases
            read theirs from the directory.

    Raises:
        UsageError: not a base we know, or a file it needs is missing or unreadable.
    """
    kind = base_kind_of(version_dir)
    if kind == "llava":
        return OriginalLlavaFormat.from_directory(
            version_dir,
            model_max_length=model_max_length,
            use_mm_start_end=use_mm_start_end,
            conv_type=conv_type,
            vision_tower=vision_tower,
        )
    if kind == "llava_hf":
        return LlavaHfFormat.from_directory(version_dir, model_max_length=model_max_length)
    return Qwen25VlFormat.from_directory(version_dir, model_max_length=model_max_length)


def save_base_files(base_format: BaseFormat, directory: str | Path) -> None:
    """Write what :func:`load_base_format` reads besides ``config.json`` and the weights: the
    tokenizer ([SEG] included), and for the transformers bases the processor files and the chat
    template (``chat_template.jinja``).

    ``directory`` is the caller's new model directory (files of these names are replaced).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base_format.tokenizer.save_pretrained(str(directory))
    if not isinstance(base_format, TemplatedFormat):
        return  # the original layout's CLIP preprocessing stays in its vision tower directory
    for name, content in base_format.processor_files.items():
        (directory / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    (directory / CHAT_TEMPLATE_FILE).write_text(base_format.chat_template.source, encoding="utf-8")

"""Tiny transformers multimodal bases, written from random configs in their hub layouts.

Two directories, small enough for CPU tests and laid out as what ``from_pretrained`` of the
real hub checkpoint sees:

- ``llava_hf``: a ``LlavaForConditionalGeneration`` (LLaMA + CLIP vision tower + projector) as
  llava-hf/llava-1.5-7b-hf is: ``config.json``, ``model.safetensors`` (hub key names),
  ``tokenizer.json`` + ``tokenizer_config.json`` (a LLaMA tokenizer: sentencepiece conventions,
  ``<image>`` and ``<pad>`` added), ``preprocessor_config.json`` (CLIPImageProcessor),
  ``processor_config.json`` and ``chat_template.json`` ("USER: <image>\\n... ASSISTANT:").
- ``qwen2_5_vl``: a ``Qwen2_5_VLForConditionalGeneration`` as Qwen/Qwen2.5-VL-7B-Instruct is:
  a byte-level BPE tokenizer with Qwen's special tokens in Qwen's order, the Qwen2-VL image
  processor's ``preprocessor_config.json`` (min/max pixels small enough that a 64-pixel image
  gives 4 image tokens), the ChatML ``chat_template.json``, a vision tower of the real structure
  (window attention with full-attention blocks, 2 x 2 patch merger), only narrow and shallow.

    python -m tools.tiny_vlm_bases --output_dir D [--base llava_hf|qwen2_5_vl] [--seed 0]

From Python: :func:`build_tiny_llava_hf` and :func:`build_tiny_qwen2_5_vl` (one directory
each), or :func:`build_tiny_vlm_bases` (both).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.tokenization_utils_base import AddedToken

from tools.tiny_base import TEMPLATE_TEXT, train_tokenizer
from tools.toy_corpus import template_texts
from utils.errors import UsageError

TINY_VLM_BASES = ("llava_hf", "qwen2_5_vl")

# The chat template of llava-hf/llava-1.5-*-hf (its chat_template.json): images first, then
# the texts, each followed by a space; no system prompt and nothing closing an answer.
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# The chat template of Qwen/Qwen2.5-VL-*-Instruct (ChatML with the default system prompt).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5's special tokens, in the order (and so with the relative ids) of the real vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's, used by both bases
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Words the tiny tokenizers learn, so that both chat templates tokenise into real pieces.
CHAT_WORDS = (
    "USER: ASSISTANT: system user assistant You are a helpful assistant. "
    "Sure, it is [SEG]. What is in this image? Please output segmentation mask."
)


@dataclass
class TinyLlavaHfSizes:
    """Sizes of the tiny LlavaForConditionalGeneration (llava-1.5-7b-hf at full size)."""

    sentencepiece_pieces: int = 512  # 32000 in LLaMA
    hidden_size: int = 64  # 4096
    intermediate_size: int = 128  # 11008
    num_hidden_layers: int = 2  # 32
    num_attention_heads: int = 4  # 32
    clip_image_size: int = 32  # 336: (32 / 8)^2 = 16 image tokens (576 at full size)
    clip_patch_size: int = 8  # 14
    clip_hidden_size: int = 32  # 1024
    clip_layers: int = 2  # 24
    clip_heads: int = 2  # 16
    vocab_multiple: int = 64  # the embedding rows are padded to a multiple of this (32064)


@dataclass
class TinyQwen25VlSizes:
    """Sizes of the tiny Qwen2_5_VLForConditionalGeneration (Qwen2.5-VL-7B at full size)."""

    bpe_vocab_size: int = 600  # 151643 byte-level BPE tokens before the special ones
    hidden_size: int = 64  # 3584
    intermediate_size: int = 128  # 18944
    num_hidden_layers: int = 2  # 28
    num_attention_heads: int = 4  # 28
    num_key_value_heads: int = 2  # 4
    mrope_section: list[int] = field(default_factory=lambda: [2, 3, 3])  # [16, 24, 24]; sums
    # to head_dim / 2 (64 / 4 / 2 = 8)
    vision_depth: int = 2  # 32
    vision_hidden_size: int = 32  # 1280
    vision_intermediate_size: int = 64  # 3420
    vision_heads: int = 2  # 16
    vision_fullatt_block_indexes: list[int] = field(default_factory=lambda: [1])  # [7, 15, 23, 31]
    patch_size: int = 14  # as the real one
    merge_size: int = 2  # as the real one: 2 x 2 patches become one LLM token
    window_size: int = 56  # 112: window attention over 2 x 2 merged tokens (4 x 4 real)
    min_pixels: int = 56 * 56  # 3136 as the real one: a 64-px image is 56 x 56, 4 tokens
    max_pixels: int = 112 * 112  # 12845056: at most 8 x 8 patches, 16 tokens
    vocab_multiple: int = 64  # 152064 rows for 151665 tokens


def _padded(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


def _corpus(extra: Iterable[str]) -> list[str]:
    return [TEMPLATE_TEXT, CHAT_WORDS, *template_texts(), *extra]


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _fresh_directory(output_dir: Path) -> None:
    """Refuse to write into a folder that holds files (nothing of the user's is overwritten)."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UsageError(f"--output_dir {output_dir} exists and is not an empty folder")


def _publish(staging: Path, output_dir: Path) -> Path:
    """Move a finished staging folder to ``output_dir`` (an empty folder there is replaced)."""
    if output_dir.is_dir():
        output_dir.rmdir()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(output_dir))
    return output_dir


# --- llava_hf ------------------------------------------------------------------------------------


def llava_hf_tokenizer(sizes: TinyLlavaHfSizes, corpus: Iterable[str] = ()) -> LlamaTokenizer:
    """A LLaMA tokenizer (sentencepiece conventions, byte fallback) with ``<image>`` and
    ``<pad>`` added after the pieces, as llava-1.5-hf has them (ids 32000 and 32001 there)."""
    with tempfile.TemporaryDirectory() as scratch:
        train_tokenizer(_corpus(corpus), Path(scratch), sizes.sentencepiece_pieces)
        tokenizer = LlamaTokenizer.from_pretrained(scratch, legacy=False)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def llava_hf_config(sizes: TinyLlavaHfSizes, tokenizer: LlamaTokenizer) -> LlavaConfig:
    """llava-1.5-7b-hf's config with tiny sizes; ids from ``tokenizer``."""
    text = LlamaConfig(
        vocab_size=_padded(len(tokenizer), sizes.vocab_multiple),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_attention_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=sizes.clip_hidden_size,
        intermediate_size=sizes.clip_hidden_size * 4,
        num_attention_heads=sizes.clip_heads,
        num_hidden_layers=sizes.clip_layers,
        image_size=sizes.clip_image_size,
        patch_size=sizes.clip_patch_size,
        projection_dim=sizes.clip_hidden_size,
        hidden_act="quick_gelu",
    )
    return LlavaConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def _write_llava_hf_processor(directory: Path, sizes: TinyLlavaHfSizes) -> None:
    side = sizes.clip_image_size
    _write_json(
        directory / "preprocessor_config.json",
        {
            "crop_size": {"height": side, "width": side},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": CLIP_MEAN,
            "image_processor_type": "CLIPImageProcessor",
            "image_std": CLIP_STD,
            "processor_class": "LlavaProcessor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"shortest_edge": side},
        },
    )
    _write_json(
        directory / "processor_config.json",
        {
            "image_token": "<image>",
            "num_additional_image_tokens": 1,  # CLIP's CLS token
            "patch_size": sizes.clip_patch_size,
            "processor_class": "LlavaProcessor",
            "vision_feature_select_strategy": "default",
        },
    )
    _write_json(directory / "chat_template.json", {"chat_template": LLAVA_HF_CHAT_TEMPLATE})


def build_tiny_llava_hf(
    output_dir: str | Path,
    *,
    sizes: TinyLlavaHfSizes | None = None,
    corpus: Iterable[str] = (),
    seed: int = 0,
) -> Path:
    """Write a random tiny LlavaForConditionalGeneration directory; returns its path.

    Raises:
        UsageError: ``output_dir`` exists and holds files.
    """
    sizes = sizes or TinyLlavaHfSizes()
    output_dir = Path(output_dir)
    _fresh_directory(output_dir)
    torch.manual_seed(seed)
    tokenizer = llava_hf_tokenizer(sizes, corpus)
    model = LlavaForConditionalGeneration(llava_hf_config(sizes, tokenizer))
    # the hub's key names ("language_model.model.layers...")
    return _write_base(output_dir, model, tokenizer, lambda d: _write_llava_hf_processor(d, sizes))


def _write_base(output_dir: Path, model, tokenizer, write_processor) -> Path:
    """The model, tokenizer and processor files written into a staging folder beside
    ``output_dir``, then renamed into place."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=".tiny_base.") as staging:
        target = Path(staging) / "base"
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        write_processor(target)
        return _publish(target, output_dir)


# --- qwen2_5_vl ----------------------------------------------------------------------------------


def _byte_level_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple]]:
    """Vocabulary and merges of a byte-level BPE trained with Qwen2's pre-tokenisation."""
    trainee = Tokenizer(models.BPE())
    trainee.normalizer = normalizers.NFC()
    trainee.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainee.train_from_iterator(texts, trainer)
    state = json.loads(trainee.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return dict(state["vocab"]), merges


def qwen2_5_vl_tokenizer(sizes: TinyQwen25VlSizes, corpus: Iterable[str] = ()) -> Qwen2Tokenizer:
    """A Qwen2 tokenizer: byte-level BPE, then Qwen's special tokens in Qwen's order; EOS is
    ``<|im_end|>`` and pad ``<|endoftext|>`` as in the Instruct checkpoints."""
    vocab, merges = _byte_level_bpe(_corpus(corpus), sizes.bpe_vocab_size)
    first_special = len(vocab)
    vocab.update({token: first_special + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS],
        special_tokens=True,
    )
    return tokenizer


def qwen2_5_vl_config(sizes: TinyQwen25VlSizes, tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-7B-Instruct's config with tiny sizes; ids from ``tokenizer``."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    text = dict(
        vocab_size=_padded(len(tokenizer), sizes.vocab_multiple),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": list(sizes.mrope_section),
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    vision = dict(
        depth=sizes.vision_depth,
        hidden_size=sizes.vision_hidden_size,
        intermediate_size=sizes.vision_intermediate_size,
        num_heads=sizes.vision_heads,
        out_hidden_size=sizes.hidden_size,
        patch_size=sizes.patch_size,
        spatial_merge_size=sizes.merge_size,
        temporal_patch_size=2,
        window_size=sizes.window_size,
        fullatt_block_indexes=list(sizes.vision_fullatt_block_indexes),
        tokens_per_second=2,
        hidden_act="silu",
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _write_qwen_processor(directory: Path, sizes: TinyQwen25VlSizes) -> None:
    _write_json(
        directory / "preprocessor_config.json",
        {
            "min_pixels": sizes.min_pixels,
            "max_pixels": sizes.max_pixels,
            "patch_size": sizes.patch_size,
            "temporal_patch_size": 2,
            "merge_size": sizes.merge_size,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
        },
    )
    _write_json(directory / "chat_template.json", {"chat_template": QWEN2_5_VL_CHAT_TEMPLATE})


def build_tiny_qwen2_5_vl(
    output_dir: str | Path,
    *,
    sizes: TinyQwen25VlSizes | None = None,
    corpus: Iterable[str] = (),
    seed: int = 0,
) -> Path:
    """Write a random tiny Qwen2_5_VLForConditionalGeneration directory; returns its path.

    Raises:
        UsageError: ``output_dir`` exists and holds files.
    """
    sizes = sizes or TinyQwen25VlSizes()
    output_dir = Path(output_dir)
    _fresh_directory(output_dir)
    torch.manual_seed(seed)
    tokenizer = qwen2_5_vl_tokenizer(sizes, corpus)
    model = Qwen2_5_VLForConditionalGeneration(qwen2_5_vl_config(sizes, tokenizer))
    # the hub's key names ("model.layers...", "visual...")
    return _write_base(output_dir, model, tokenizer, lambda d: _write_qwen_processor(d, sizes))


BUILDERS = {"llava_hf": build_tiny_llava_hf, "qwen2_5_vl": build_tiny_qwen2_5_vl}


def build_tiny_vlm_bases(
    output_dir: str | Path, bases: Iterable[str] = TINY_VLM_BASES, seed: int = 0
) -> dict[str, Path]:
    """``output_dir/<base>`` for each of ``bases``; returns {base: directory}."""
    return {base: BUILDERS[base](Path(output_dir) / base, seed=seed) for base in bases}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.tiny_vlm_bases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output_dir", required=True, help="the bases go to OUTPUT_DIR/<base>")
    parser.add_argument(
        "--base",
        choices=TINY_VLM_BASES,
        action="append",
        help="which base to write (repeatable); both when absent",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    try:
        paths = build_tiny_vlm_bases(args.output_dir, args.base or TINY_VLM_BASES, args.seed)
    except UsageError as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    for base, path in paths.items():
        print(f"{base}: --version={path}")


if __name__ == "__main__":
    main()

"""Build a tiny LLaVA base and a tiny SAM checkpoint from nothing, in the real on-disk formats.

What it writes is what a researcher downloads at full scale, only small:

    OUTPUT/
      llava/            --version: LLaMA + projector, config.json (model_type "llava"),
                        model.safetensors, sentencepiece tokenizer.model + tokenizer_config.json
      clip/             --vision-tower: CLIPVisionModel directory + preprocessor_config.json
      sam_tiny.pth      --vision_pretrained: a plain SAM state dict, as sam_vit_h_4b8939.pth

The tokenizer is a sentencepiece BPE model trained on a corpus with LLaMA's conventions (unk 0,
bos 1, eos 2, no pad piece, byte fallback, split digits, dummy prefix), so the legacy tokenizer
path treats it exactly as the real LLaMA tokenizer.

    python -m tools.tiny_base --output_dir runs/tiny_base [--corpus FILE ...] [--hidden_size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from model.segment_anything import SAM_TINY, SamConfig, build_sam
from model.vision_tower import build_projector
from utils.errors import UsageError

# Text the tokenizer always sees, so that prompts of both templates tokenize into real pieces.
TEMPLATE_TEXT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions. USER: ASSISTANT: [INST] <<SYS>> "
    "<</SYS>> [/INST] Please output segmentation mask. Can you segment the object in this image? "
    "What is it in this image? Please respond with segmentation mask. Sure, it is. Sure, the "
    "segmentation result is. Please output segmentation mask and explain why."
)


@dataclass
class TinyBaseSizes:
    """Sizes of the tiny base; the defaults train the toy task on a CPU in minutes."""

    vocab_size: int = 1024  # sentencepiece pieces (256 byte pieces included)
    hidden_size: int = 128  # LLaMA width
    intermediate_size: int = 352  # LLaMA MLP width
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    clip_image_size: int = 64  # CLIP input side
    clip_patch_size: int = 8  # 64 / 8 -> 8 x 8 = 64 image tokens
    clip_hidden_size: int = 64
    clip_layers: int = 2
    clip_heads: int = 2
    sam_image_size: int = 256  # SAM input side (--image_size when training)
    sam_patch_size: int = 16  # SAM patch side: the image embedding is (side / patch) squared
    sam_embed_dim: int = 64
    sam_depth: int = 2
    sam_heads: int = 2
    sam_prompt_embed_dim: int = 256  # SAM decoder width; LISA's --out_dim must equal it
    sam_decoder_mlp_dim: int = 2048  # hidden width of the SAM decoder's token MLPs
    sam_iou_head_hidden_dim: int = 256


def train_tokenizer(texts: Iterable[str], output_dir: Path, vocab_size: int) -> Path:
    """Train a LLaMA-style sentencepiece BPE model; writes tokenizer.model and its configs."""
    output_dir.mkdir(parents=True, exist_ok=True)
    sentences = [line for text in texts for line in text.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (output_dir / "tokenizer.model").write_bytes(model.getvalue())
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "legacy": True,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 512,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        **special,
        "pad_token": None,
    }
    (output_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (output_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return output_dir / "tokenizer.model"


def write_clip(output_dir: Path, sizes: TinyBaseSizes) -> CLIPVisionConfig:
    """A random CLIPVisionModel directory with the preprocessor config LLaVA reads."""
    config = CLIPVisionConfig(
        hidden_size=sizes.clip_hidden_size,
        intermediate_size=sizes.clip_hidden_size * 4,
        num_attention_heads=sizes.clip_heads,
        num_hidden_layers=sizes.clip_layers,
        image_size=sizes.clip_image_size,
        patch_size=sizes.clip_patch_size,
        projection_dim=sizes.clip_hidden_size,
        hidden_act="quick_gelu",
    )
    CLIPVisionModel(config).save_pretrained(output_dir)
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "crop_size": {"height": sizes.clip_image_size, "width": sizes.clip_image_size},
        "size": {"shortest_edge": sizes.clip_image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 1 / 255,
    }
    (output_dir / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return config


def write_llava(output_dir: Path, sizes: TinyBaseSizes, vocab_size: int, clip_dir: Path) -> None:
    """A LLaVA-v1-style base: LLaMA weights + linear projector, config naming the CLIP directory."""
    llama_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_attention_heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    llama = LlamaForCausalLM(llama_config)
    projector = build_projector("linear", sizes.clip_hidden_size, sizes.hidden_size)
    tensors = {name: t.contiguous() for name, t in llama.state_dict().items()}
    tensors.update(
        {f"model.mm_projector.{n}": t.contiguous() for n, t in projector.state_dict().items()}
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, output_dir / "model.safetensors", metadata={"format": "pt"})
    config = llama_config.to_dict()
    config.update(
        model_type="llava",
        architectures=["LlavaLlamaForCausalLM"],
        mm_vision_tower=str(clip_dir.resolve()),
        mm_hidden_size=sizes.clip_hidden_size,
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_projector_type="linear",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        use_cache=False,
    )
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_sam(path: Path, sizes: TinyBaseSizes) -> SamConfig:
    """A random tiny SAM saved as the official checkpoint files are: a plain state dict."""
    config = dataclasses.replace(
        SAM_TINY,
        encoder_embed_dim=sizes.sam_embed_dim,
        encoder_depth=sizes.sam_depth,
        encoder_num_heads=sizes.sam_heads,
        encoder_global_attn_indexes=(sizes.sam_depth - 1,),
        image_size=sizes.sam_image_size,
        patch_size=sizes.sam_patch_size,
        prompt_embed_dim=sizes.sam_prompt_embed_dim,
        decoder_mlp_dim=sizes.sam_decoder_mlp_dim,
        iou_head_hidden_dim=sizes.sam_iou_head_hidden_dim,
    )
    torch.save(build_sam(config).state_dict(), path)
    return config


def build_tiny_base(
    output_dir: str | Path,
    corpus: Iterable[str] = (),
    sizes: TinyBaseSizes | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the tiny LLaVA base, CLIP directory and SAM checkpoint; returns their paths."""
    sizes = sizes or TinyBaseSizes()
    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    paths = {
        "version": output_dir / "llava",
        "vision_tower": output_dir / "clip",
        "vision_pretrained": output_dir / "sam_tiny.pth",
    }
    train_tokenizer([TEMPLATE_TEXT, *corpus], paths["version"], sizes.vocab_size)
    vocab_size = spm.SentencePieceProcessor(
        model_file=str(paths["version"] / "tokenizer.model")
    ).get_piece_size()
    write_clip(paths["vision_tower"], sizes)
    write_llava(paths["version"], sizes, vocab_size, paths["vision_tower"])
    write_sam(paths["vision_pretrained"], sizes)
    return paths


def _read_corpus(files: list[str]) -> list[str]:
    texts = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"--corpus: {path} is not a file")
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output_dir", required=True, help="where llava/, clip/ and sam_tiny.pth go"
    )
    parser.add_argument(
        "--corpus", nargs="*", default=[], help="text files the tokenizer is trained on"
    )
    parser.add_argument("--seed", type=int, default=0)
    for field in dataclasses.fields(TinyBaseSizes):
        parser.add_argument(f"--{field.name}", type=int, default=field.default)
    args = parser.parse_args(argv)
    sizes = TinyBaseSizes(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TinyBaseSizes)}
    )
    try:
        corpus = _read_corpus(args.corpus)
    except UsageError as error:
        parser.error(str(error))
    paths = build_tiny_base(args.output_dir, corpus, sizes, seed=args.seed)
    for flag, path in paths.items():
        print(f"--{flag.replace('_', '-') if flag == 'vision_tower' else flag}={path}")


if __name__ == "__main__":
    main()

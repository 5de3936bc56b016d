"""Merge trained LoRA weights into LISA and save a Hugging Face model directory (safetensors).

    cd runs/lisa-7b/ckpt_model && python zero_to_fp32.py . ../pytorch_model.bin
    CUDA_VISIBLE_DEVICES="" python merge_lora_weights_and_save_hf_model.py \
      --version="PATH_TO_LLaVA" --weight="runs/lisa-7b/pytorch_model.bin" --save_path="./LISA-7B"

Use the same model flags as for training (--lora_r ..., --use_mm_start_end, --vision-tower,
--vision_pretrained). The result loads with chat.py and LISAForCausalLM.from_pretrained. The
vision tower is left out by default, as the original did (the directory then needs its CLIP via
--vision-tower or the path in config.json); --include_vision_tower puts it in.

--save_path must be a new or empty folder, or one an earlier merge wrote (listed in its
.lisa_outputs file); it may not be, hold or lie inside an input. The model is written into a hidden
temporary folder beside it and renamed into place, so an interrupted merge changes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from model.builder import LoraSettings, apply_lora, build_lisa_from_flags, unwrap_lisa
from model.checkpoint_files import CheckpointError, load_state_dict_file, read_tensor_shapes
from model.loading import PRECISIONS
from utils.console import quiet_libraries
from utils.output_dir import OVERWRITE_HELP, OutputDirError, OutputFolder
from utils.tokenization import load_tokenizer

logger = logging.getLogger("merge")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Merge LoRA weights and save a Hugging Face format LISA model"
    )
    on_off = argparse.BooleanOptionalAction
    add = parser.add_argument
    add(
        "--version",
        default="liuhaotian/llava-llama-2-13b-chat-lightning-preview",
        help="the LLaVA base trained from",
    )
    add(
        "--vis_save_path",
        default="./vis_output",
        type=str,
        help="unused; kept for the original command lines",
    )
    add("--precision", default="bf16", choices=list(PRECISIONS), help="dtype of the saved weights")
    add("--vision_pretrained", default="PATH_TO_SAM_ViT-H", type=str)
    add("--out_dim", default=256, type=int)
    add("--image_size", default=1024, type=int)
    add("--model_max_length", default=512, type=int)
    add(
        "--vision-tower",
        "--vision_tower",
        dest="vision_tower",
        default="openai/clip-vit-large-patch14",
    )
    add(
        "--lora_r",
        default=8,
        type=int,
        help="0 when the run trained without LoRA (--trainable all)",
    )
    add("--lora_alpha", default=16, type=int)
    add("--lora_dropout", default=0.05, type=float)
    add("--lora_target_modules", default="q_proj,v_proj", type=str)
    add("--local-rank", "--local_rank", dest="local_rank", default=0, type=int)
    add("--train_mask_decoder", action=on_off, default=True)
    add("--use_mm_start_end", action=on_off, default=True)
    add("--conv_type", default="llava_v1", choices=["llava_v1", "llava_llama_2"])
    add("--weight", required=True, help="state dict of the trained model (zero_to_fp32.py output)")
    add(
        "--save_path",
        required=True,
        help="output directory: new, empty, or written by an earlier merge",
    )
    add("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add(
        "--include_vision_tower",
        action=on_off,
        default=False,
        help="also save the CLIP weights, so the directory needs no --vision-tower",
    )
    return parser.parse_args(argv)


def merge(args: argparse.Namespace) -> Path:
    for flag, path in (("--version", args.version), ("--weight", args.weight)):
        if not Path(path).exists():
            raise SystemExit(f"{flag}: {path} does not exist")
    read_tensor_shapes(args.weight)  # a file that is no state dict: said before the model builds
    output = OutputFolder(
        args.save_path,
        flag="--save_path",
        inputs={
            "--version": args.version,
            "--weight": args.weight,
            "--vision-tower": args.vision_tower,
            "--vision_pretrained": args.vision_pretrained,
        },
        overwrite=args.overwrite,
    )
    output.claim()  # before the model is built: a refused output costs nothing
    with output:
        lisa, state, tokenizer = merged_model(args)
        lisa.save_pretrained(output.staging, state_dict=state)
        tokenizer.save_pretrained(output.staging)
        output.commit()
    tower = (
        "included"
        if args.include_vision_tower
        else f"not included (load with --vision-tower={args.vision_tower})"
    )
    print(f"saved {args.save_path} ({args.precision}, {len(state)} tensors); vision tower {tower}")
    return Path(args.save_path)


def merged_model(args: argparse.Namespace):
    """The merged LISA model, the state dict to save (the vision tower left out unless asked
    for) and the tokenizer."""
    dtype = PRECISIONS[args.precision]
    tokenizer = load_tokenizer(args.version, model_max_length=args.model_max_length)
    model = build_lisa_from_flags(args, tokenizer, torch.float32)
    if args.lora_r > 0:
        targets = tuple(args.lora_target_modules.split(","))
        model = apply_lora(
            model, LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, targets)
        )

    state = load_state_dict_file(args.weight)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise SystemExit(
            f"--weight: {args.weight} has {len(unexpected)} keys this model lacks (e.g. {unexpected[:2]}); "
            "check --lora_r / --lora_target_modules / --use_mm_start_end against the training run"
        )
    # DeepSpeed may leave out frozen weights (--exclude_frozen_parameters); those come from --version.
    trained_missing = [
        k for k in missing if "lora_" in k or "text_hidden_fcs" in k or "mask_decoder" in k
    ]
    if trained_missing:
        raise SystemExit(
            f"--weight: {args.weight} lacks trained weights such as {trained_missing[:2]}"
        )

    if args.lora_r > 0:
        model = model.merge_and_unload()
    lisa = unwrap_lisa(model).to(dtype)
    lisa.config.vision_tower = args.vision_tower
    state = lisa.state_dict()
    if not args.include_vision_tower:
        state = {k: v for k, v in state.items() if "vision_tower" not in k}

    return lisa, state, tokenizer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    try:
        merge(args)
    except OutputDirError as error:
        print(f"merge: {error}", file=sys.stderr)
        return 2
    except CheckpointError as error:  # --weight, or a checkpoint file of --version
        print(f"merge: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

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
from dataclasses import dataclass
from pathlib import Path

import torch

from model.builder import (
    LoraSettings,
    apply_lora,
    build_model_for_training,
    load_trained_weights,
    lora_settings_from,
    model_settings_from,
    unwrap_lisa,
)
from utils.console import quiet_libraries
from utils.conversation import CONV_TYPES
from utils.devices import PRECISIONS
from utils.errors import UsageError
from utils.ignored_flags import IGNORED_HELP, announce_ignored_flags, flags_off_default
from utils.output_dir import OVERWRITE_HELP, OutputFolder
from utils.train_config import (
    NO_SAM_FILE,
    SEGMENTER_CHOICES,
    add_lora_flags,
    check_state_dict_file,
    config_from_namespace,
)

logger = logging.getLogger("merge")
PROGRAM = "merge"


@dataclass(frozen=True)
class MergeConfig:
    """Every flag of the merge, by its destination name (the model flags as for training)."""

    weight: str  # state dict of the trained model (zero_to_fp32.py output)
    save_path: str  # output folder: new, empty, or written by an earlier merge
    version: str = "liuhaotian/llava-llama-2-13b-chat-lightning-preview"  # the base trained from
    vision_tower: str = "openai/clip-vit-large-patch14"  # CLIP directory, recorded in config.json
    vision_pretrained: str = NO_SAM_FILE  # the SAM file (or SAM 2 directory) of the training run
    segmenter: str = "auto"  # as train_ds.py's --segmenter
    precision: str = "bf16"  # dtype of the saved weights
    out_dim: int = 256  # [SEG] prompt width; must be the SAM decoder's
    image_size: int | None = None  # SAM input side; None: the SAM's own; another is refused
    model_max_length: int = 512  # saved with the tokenizer
    use_mm_start_end: bool = True  # as in training
    train_mask_decoder: bool = True  # recorded in config.json, as the original did
    lora_r: int = 8  # 0 when the run trained without LoRA (--trainable all / heads)
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = "q_proj,v_proj"
    overwrite: bool = False  # write beside files the merge did not write
    include_vision_tower: bool = False  # also save the CLIP weights
    conv_type: str = "llava_v1"  # ignored; kept for the original's command lines
    vis_save_path: str = "./vis_output"  # ignored, as --conv_type
    local_rank: int = 0  # ignored, as --conv_type (the merge runs on the CPU)

    def ignored_flags(self) -> list[str]:
        """The flags kept only for the original's command lines that are set to another value."""
        return flags_off_default(self, IGNORED)


IGNORED = ("conv_type", "vis_save_path", "local_rank")


def parse_args(argv: list[str] | None = None) -> MergeConfig:
    parser = argparse.ArgumentParser(
        description="Merge LoRA weights and save a Hugging Face format LISA model"
    )
    add = parser.add_argument
    d = MergeConfig(weight="", save_path="")
    add("--version", default=d.version, help="the LLaVA base trained from")
    add("--weight", required=True, help="state dict of the trained model (zero_to_fp32.py output)")
    add(
        "--save_path",
        required=True,
        help="output directory: new, empty, or written by an earlier merge",
    )
    add("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add(
        "--precision",
        default=d.precision,
        choices=list(PRECISIONS),
        help="dtype of the saved weights",
    )
    add("--vision-tower", "--vision_tower", dest="vision_tower", default=d.vision_tower)
    add("--vision_pretrained", default=d.vision_pretrained, type=str, help="as for training")
    add("--segmenter", default=d.segmenter, choices=SEGMENTER_CHOICES, help="as for training")
    add("--out_dim", default=d.out_dim, type=int)
    add(
        "--image_size",
        default=d.image_size,
        type=int,
        help="SAM input side; default the SAM's own; another value is refused",
    )
    add("--model_max_length", default=d.model_max_length, type=int, help="saved with the tokenizer")
    add("--use_mm_start_end", action=argparse.BooleanOptionalAction, default=d.use_mm_start_end)
    add(
        "--train_mask_decoder",
        action=argparse.BooleanOptionalAction,
        default=d.train_mask_decoder,
        help="recorded in the saved config.json",
    )
    add_lora_flags(add, d)
    add(
        "--include_vision_tower",
        action=argparse.BooleanOptionalAction,
        default=d.include_vision_tower,
        help="also save the CLIP weights, so the directory needs no --vision-tower",
    )
    add("--conv_type", default=d.conv_type, choices=list(CONV_TYPES), help=IGNORED_HELP)
    add("--vis_save_path", default=d.vis_save_path, type=str, help=IGNORED_HELP)
    add(
        "--local-rank",
        "--local_rank",
        dest="local_rank",
        default=d.local_rank,
        type=int,
        help=IGNORED_HELP,
    )
    return config_from_namespace(MergeConfig, parser.parse_args(argv))


def lora_settings(config: MergeConfig) -> LoraSettings | None:
    """The adapters the run trained; None with --lora_r 0."""
    return lora_settings_from(config) if config.lora_r > 0 else None


def merge(config: MergeConfig) -> Path:
    """Build, load --weight, merge and save into --save_path (written whole or not at all).

    Raises:
        UsageError (CheckpointError, OutputDirError): one sentence naming the flag or file.
    """
    announce_ignored_flags(config.ignored_flags(), PROGRAM)
    if not Path(config.version).exists():
        raise UsageError(f"--version: {config.version} does not exist")
    check_state_dict_file(config.weight, "--weight")  # said before the model builds
    output = OutputFolder(
        config.save_path,
        flag="--save_path",
        inputs={
            "--version": config.version,
            "--weight": config.weight,
            "--vision-tower": config.vision_tower,
            "--vision_pretrained": config.vision_pretrained,
        },
        overwrite=config.overwrite,
    )
    output.claim()  # before the model is built: a refused output costs nothing
    with output:
        lisa, state, tokenizer, base_format = merged_model(config)
        lisa.save_pretrained(output.staging, state_dict=state)
        if base_format is None:
            tokenizer.save_pretrained(output.staging)
        else:  # tokenizer, image processor and chat template, as the base directory has them
            from model.bases.load import save_base_files

            save_base_files(base_format, output.staging)
        output.commit()
    print(
        f"saved {config.save_path} ({config.precision}, {len(state)} tensors); "
        + saved_parts(config, lisa)
    )
    return Path(config.save_path)


def saved_parts(config: MergeConfig, lisa) -> str:
    """What the saved directory holds, in words."""
    if lisa.config.model_type == "lisa_vlm":
        return f"base {lisa.config.base_kind}, segmenter {lisa.config.segmenter_kind}"
    if config.include_vision_tower:
        return "vision tower included"
    return f"vision tower not included (load with --vision-tower={config.vision_tower})"


def merged_model(config: MergeConfig):
    """The merged LISA model, the state dict to save (the original layout's CLIP tower left out
    unless asked for), the tokenizer and the base format (None for the original layout)."""
    model, tokenizer, base_format = build_model_for_training(
        model_settings_from(config), torch.float32, model_max_length=config.model_max_length
    )
    lora = lora_settings(config)
    if lora is not None:
        model = apply_lora(model, lora)
    load_merge_weights(model, config.weight)
    if lora is not None:
        model = model.merge_and_unload()
    lisa = unwrap_lisa(model).to(PRECISIONS[config.precision])
    state = lisa.state_dict()
    if base_format is None:
        lisa.config.vision_tower = config.vision_tower
        if not config.include_vision_tower:
            state = {k: v for k, v in state.items() if "vision_tower" not in k}
    return lisa, state, tokenizer, base_format


def load_merge_weights(model: torch.nn.Module, weight: str) -> None:
    """--weight into the model; every key must fit and the trained ones must all be there."""
    missing = load_trained_weights(model, weight)
    # DeepSpeed may leave out frozen weights (--exclude_frozen_parameters); those come from --version.
    trained_missing = [
        k for k in missing if "lora_" in k or "text_hidden_fcs" in k or "mask_decoder" in k
    ]
    if trained_missing:
        raise UsageError(f"--weight: {weight} lacks trained weights such as {trained_missing[:2]}")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    quiet_libraries()
    try:
        merge(config)
    except UsageError as error:  # flags, output folders and checkpoint files alike
        print(f"merge: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

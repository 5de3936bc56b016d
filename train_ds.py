"""Train (or validate) LISA with DeepSpeed.

    deepspeed --master_port=24999 train_ds.py \
      --version=PATH_TO_LLaVA --dataset_dir=./dataset --vision_pretrained=PATH_TO_SAM \
      --dataset="sem_seg||refer_seg||vqa||reason_seg" --sample_rates="9,3,3,1" --exp_name="lisa-7b"

    # validation only, of a merged model or of a consolidated checkpoint
    deepspeed --master_port=24999 train_ds.py --version=PATH_TO_LISA --dataset_dir=./dataset \
      --vision_pretrained=PATH_TO_SAM --exp_name="lisa-7b" [--weight=pytorch_model.bin] --eval_only

Runs on GPUs (NCCL) and on CPUs (gloo), with the `deepspeed` launcher, `torchrun`, or plain
`python` (a world of one). Logs and checkpoints go to runs/<exp_name>/ (see utils/checkpointing).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from model.builder import (
    TRAINABLE_RECIPES,
    LoraSettings,
    apply_lora,
    build_lisa_from_flags,
    set_trainable,
    unwrap_lisa,
)
from model.config import LisaConfig
from model.loading import resolve_dtype
from utils.checkpointing import (
    CheckpointSpaceError,
    check_resume_settings,
    choose_resume_checkpoint,
    finish_interrupted_saves,
    load_resume_checkpoint,
    promote_to_best,
    save_checkpoint,
    write_json_atomic,
)
from utils.collate import collate_fn
from utils.console import quiet_libraries
from utils.data import build_datasets
from utils.data.bad_samples import MissingSourceError
from utils.data.build import DataConfig, check_data_flags
from utils.data.questions import parse_answer_templates
from utils.deepspeed_config import (
    build_deepspeed_config,
    check_deepspeed_config,
    load_deepspeed_config,
)
from utils.distributed import DistributedInfo, all_reduce_sum, barrier, init_distributed
from utils.errors import UsageError
from utils.metrics import (
    CUMULATIVE_EPSILON,
    intersection_and_union,
    mask_iou,
    mean_pairwise_cosine,
)
from utils.run_dir import check_run_dir, create_run_dir
from utils.tokenization import load_tokenizer
from utils.transforms import ClipTransform

logger = logging.getLogger("train_ds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LISA training and validation (DeepSpeed)")
    on_off = argparse.BooleanOptionalAction
    add = parser.add_argument
    # --- the original's flags, same names and defaults ---
    add("--local_rank", "--local-rank", default=0, type=int, help="set by the launcher; unused")
    add(
        "--version",
        default="liuhaotian/llava-llama-2-13b-chat-lightning-preview",
        help="LLaVA base (or a finished LISA checkpoint to continue from)",
    )
    add("--vis_save_path", default="./vis_output", type=str)
    add(
        "--precision",
        default="bf16",
        choices=["fp32", "bf16", "fp16"],
        help="bf16 on GPUs; on a CPU the run falls back to fp32",
    )
    add("--image_size", default=1024, type=int, help="SAM input side")
    add("--model_max_length", default=512, type=int)
    add("--lora_r", default=8, type=int, help="LoRA rank on the LLM; 0 trains no adapters")
    add(
        "--vision-tower",
        "--vision_tower",
        dest="vision_tower",
        default="openai/clip-vit-large-patch14",
    )
    add("--load_in_8bit", action=on_off, default=False, help="not supported for training")
    add("--load_in_4bit", action=on_off, default=False, help="not supported for training")
    add("--dataset", default="sem_seg||refer_seg||vqa||reason_seg", type=str)
    add("--sample_rates", default="9,3,3,1", type=str)
    add("--sem_seg_data", default="ade20k||cocostuff||pascal_part||paco_lvis||mapillary", type=str)
    add("--refer_seg_data", default="refclef||refcoco||refcoco+||refcocog", type=str)
    add("--vqa_data", default="llava_instruct_150k", type=str)
    add("--reason_seg_data", default="ReasonSeg|train", type=str)
    add("--val_dataset", default="ReasonSeg|val", type=str)
    add("--dataset_dir", default="./dataset", type=str)
    add("--log_base_dir", default="./runs", type=str)
    add(
        "--exp_name",
        default="lisa",
        type=str,
        help="the run folder is <log_base_dir>/<exp_name>: new, empty, or an earlier run's "
        "(auto-resume continues it)",
    )
    add(
        "--overwrite",
        action=on_off,
        default=False,
        help="use a run folder that holds files no training run wrote: the run writes its own "
        "files (lisa_run.json, ckpt_latest/, ckpt_model/, best.json, last_epoch.json, TensorBoard "
        "events) beside them, and nothing else there is replaced or deleted",
    )
    add("--epochs", default=10, type=int)
    add("--steps_per_epoch", default=500, type=int)
    add("--batch_size", default=2, type=int, help="batch size per device per step")
    add("--grad_accumulation_steps", default=10, type=int)
    add("--val_batch_size", default=1, type=int)
    add("--workers", default=4, type=int)
    add("--lr", default=0.0003, type=float)
    add("--ce_loss_weight", default=1.0, type=float)
    add("--dice_loss_weight", default=0.5, type=float)
    add("--bce_loss_weight", default=2.0, type=float)
    add("--lora_alpha", default=16, type=int)
    add("--lora_dropout", default=0.05, type=float)
    add("--lora_target_modules", default="q_proj,v_proj", type=str)
    add("--explanatory", default=0.1, type=float)
    add("--beta1", default=0.9, type=float)
    add("--beta2", default=0.95, type=float)
    add("--num_classes_per_sample", default=3, type=int)
    add("--exclude_val", action=on_off, default=False)
    add("--no_eval", action=on_off, default=False)
    add("--eval_only", action=on_off, default=False)
    add("--vision_pretrained", default="PATH_TO_SAM_ViT-H", type=str)
    add("--out_dim", default=256, type=int)
    add("--resume", default="", type=str, help="a checkpoint folder (ckpt_latest / ckpt_model)")
    add("--print_freq", default=1, type=int)
    add("--start_epoch", default=0, type=int)
    add("--gradient_checkpointing", action=on_off, default=True)
    add("--train_mask_decoder", action=on_off, default=True)
    add("--use_mm_start_end", action=on_off, default=True)
    add("--auto_resume", action=on_off, default=True)
    add("--conv_type", default="llava_v1", choices=["llava_v1", "llava_llama_2"])
    # --- added ---
    add(
        "--weight",
        default="",
        type=str,
        help="a state dict (e.g. the pytorch_model.bin from zero_to_fp32.py) loaded before training or --eval_only",
    )
    add("--seed", default=0, type=int)
    add("--zero_stage", default=2, type=int, choices=[2, 3])
    add(
        "--trainable",
        default="lisa",
        choices=list(TRAINABLE_RECIPES),
        help="lisa: the original's (LoRA, lm_head, embeddings, mask decoder, text_hidden_fcs); "
        "all: every parameter, for a model trained from scratch; heads: lm_head, "
        "text_hidden_fcs and the mask decoder only (the LLM, embeddings and CLIP frozen)",
    )
    add(
        "--answer_templates",
        default="",
        type=str,
        help="answers of the segmentation questions, joined by '||', each with one [SEG] "
        "(default: the original's five, e.g. 'Sure, it is [SEG].')",
    )
    add(
        "--deepspeed_config",
        default="",
        type=str,
        help="a DeepSpeed json used instead of the generated one",
    )
    add(
        "--save_steps",
        default=0,
        type=int,
        help="also write ckpt_latest every N optimizer steps (0: only at the end of each epoch)",
    )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> dict | None:
    """Every flag and input file, before anything is built; one sentence per mistake.

    Returns the user's DeepSpeed config (--deepspeed_config) when one is given.

    Raises:
        UsageError: the flag or file and what was expected.
    """
    if args.load_in_8bit or args.load_in_4bit:
        raise UsageError(
            "--load_in_8bit / --load_in_4bit are for inference (chat.py); train in bf16, fp16 or fp32"
        )
    _check_numbers(args)
    _check_paths(args)
    if args.eval_only and args.no_eval:
        raise UsageError("--eval_only and --no_eval exclude each other")
    try:
        parse_answer_templates(args.answer_templates)
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_data_flags(DataConfig.from_args(args), training=not args.eval_only)
    if not args.deepspeed_config:
        return None
    return check_deepspeed_config(
        load_deepspeed_config(args.deepspeed_config),
        args.deepspeed_config,
        micro_batch_size=args.batch_size,
        grad_accumulation_steps=args.grad_accumulation_steps,
    )


POSITIVE_INTS = (
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "grad_accumulation_steps",
    "val_batch_size",
    "model_max_length",
    "out_dim",
    "print_freq",
)
NON_NEGATIVE_INTS = ("workers", "lora_r", "save_steps", "start_epoch")
NON_NEGATIVE_FLOATS = ("lr", "ce_loss_weight", "dice_loss_weight", "bce_loss_weight")


def _check_numbers(args: argparse.Namespace) -> None:
    for name in POSITIVE_INTS:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(args, name)}")
    for name in NON_NEGATIVE_INTS:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name} must be 0 or more, got {getattr(args, name)}")
    for name in NON_NEGATIVE_FLOATS:
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name} must be a finite number >= 0, got {value}")
    for name in ("beta1", "beta2", "lora_dropout"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise UsageError(f"--{name} must be within [0, 1), got {getattr(args, name)}")
    if args.lora_r > 0 and args.trainable == "lisa":
        if args.lora_alpha <= 0:
            raise UsageError(f"--lora_alpha must be positive, got {args.lora_alpha}")
        if not [name for name in args.lora_target_modules.split(",") if name.strip()]:
            raise UsageError("--lora_target_modules is empty (e.g. q_proj,v_proj)")


def _check_paths(args: argparse.Namespace) -> None:
    if not Path(args.version).is_dir():
        raise UsageError(
            f"--version: {args.version} is not a local directory (a LLaVA base or a LISA checkpoint)"
        )
    if not (Path(args.version) / "config.json").is_file():
        raise UsageError(f"--version: {args.version} has no config.json")
    if args.vision_pretrained != "PATH_TO_SAM_ViT-H" and not Path(args.vision_pretrained).is_file():
        raise UsageError(
            f"--vision_pretrained: {args.vision_pretrained} is not a file (e.g. sam_vit_h_4b8939.pth)"
        )
    if args.weight:
        check_state_dict_file(args.weight, "--weight")


def check_state_dict_file(path: str, flag: str) -> None:
    """A readable file of named tensors (safetensors, or a torch file of a dict of tensors)."""
    from model.checkpoint_files import CheckpointError, read_tensor_shapes

    if not Path(path).is_file():
        raise UsageError(f"{flag}: {path} is not a file")
    try:
        shapes = read_tensor_shapes(path)
    except CheckpointError as error:
        raise UsageError(f"{flag}: {error}") from None
    if not shapes:
        raise UsageError(f"{flag}: {path} holds no tensors")


# ------------------------------------------------------------------------------------------------
# Data


class MicroBatchSampler(Sampler[int]):
    """Endless dataset indices for one rank, from a given micro-batch onward.

    Micro-batch k of rank r holds indices ((k * world + r) * batch_size + j). The training
    dataset maps each index to a sample deterministically, so a resumed run sees exactly the data
    an uninterrupted one would have seen.
    """

    def __init__(self, start_micro_batch: int, rank: int, world_size: int, batch_size: int) -> None:
        self.start, self.rank, self.world, self.batch = (
            start_micro_batch,
            rank,
            world_size,
            batch_size,
        )

    def __iter__(self) -> Iterator[int]:
        k = self.start
        while True:
            first = (k * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)
            k += 1


def base_tower_path(version: str) -> str | None:
    """The CLIP directory that --version's config.json names."""
    try:
        return LisaConfig.from_pretrained(version).vision_tower_path
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(
            f"--version: {Path(version) / 'config.json'} is not a readable model config "
            f"({type(error).__name__})"
        ) from None


def clip_transform_for(args: argparse.Namespace, tower_path: str | None) -> ClipTransform:
    """CLIP preprocessing from the vision tower directory (--vision-tower, else the base's config)."""
    for candidate in (args.vision_tower, tower_path):
        if candidate and (Path(candidate) / "preprocessor_config.json").is_file():
            return ClipTransform.from_pretrained(candidate)
    raise UsageError(
        f"--vision-tower: no preprocessor_config.json in {args.vision_tower} or {tower_path}; "
        "pass the local CLIP directory"
    )


# ------------------------------------------------------------------------------------------------
# Loops


class RunningMean:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)


LOSS_NAMES = ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "mask_loss")


class StepMeters:
    """Means of the losses (per micro-batch) and timings (per optimizer step) between log lines."""

    def __init__(self) -> None:
        self.losses = {name: RunningMean() for name in LOSS_NAMES}
        self.step_seconds = RunningMean()
        self.data_seconds = RunningMean()

    def add_losses(self, output) -> None:
        for name, meter in self.losses.items():
            meter.update(output[name].detach().item())

    def log(self, writer, lr: float, skipped: int, global_step: int, where: str) -> None:
        """TensorBoard scalars and one console line."""
        values = {name: meter.mean for name, meter in self.losses.items()}
        for name, value in values.items():
            writer.add_scalar(f"train/{name}", value, global_step)
        writer.add_scalar("train/lr", lr, global_step)
        writer.add_scalar("metrics/total_secs_per_batch", self.step_seconds.mean, global_step)
        writer.add_scalar("metrics/data_secs_per_batch", self.data_seconds.mean, global_step)
        writer.add_scalar("data/skipped_samples", skipped, global_step)
        losses = " ".join(f"{name} {value:.4f}" for name, value in values.items())
        tqdm.write(
            f"{where} | {losses} | lr {lr:.2e} | {self.step_seconds.mean:.2f} s/step "
            f"(data {self.data_seconds.mean:.2f} s) | skipped samples {skipped}"
        )


def show_progress(info) -> bool:
    """Progress bars on the main process of an interactive terminal only; logs (and the
    deepspeed launcher's pipes) get the periodic console lines instead."""
    return info.is_main and sys.stderr.isatty()


@torch.no_grad()
def validate(
    engine, loader: DataLoader, info: DistributedInfo, dtype: torch.dtype
) -> tuple[float, float, float]:
    """gIoU (mean per-mask IoU), cIoU (cumulative IoU) and the mean pairwise cosine of the
    ``[SEG]`` prompts of one validation set, over all ranks."""
    engine.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # intersection, union, sum of IoUs, masks
    out_dim = unwrap_lisa(engine.module).config.out_dim
    prompt_sum = torch.zeros(out_dim, dtype=torch.float64)  # sum of the unit-length [SEG] prompts
    prompts = 0
    for batch in tqdm(loader, desc="validate", disable=not show_progress(info), leave=False):
        batch = batch.to(info.device, dtype)
        output = engine.module.predict_masks(batch)  # engine.module: LISA, or PEFT around it
        prompt_sum += F.normalize(output.pred_embeddings.double(), dim=-1).sum(0).cpu()
        prompts += output.pred_embeddings.shape[0]
        for pred, gt in zip(output.pred_masks, batch.gt_masks, strict=True):
            intersection, union = intersection_and_union(pred > 0, gt)
            totals += (
                torch.stack(
                    [
                        intersection.sum(),
                        union.sum(),
                        mask_iou(intersection, union).sum(),
                        torch.tensor(len(gt)),
                    ]
                )
                .double()
                .cpu()
            )
    totals = torch.cat([totals, torch.tensor([float(prompts)], dtype=torch.float64), prompt_sum])
    totals = all_reduce_sum(totals.to(info.device)).cpu()
    intersection, union, iou_sum, masks, prompts = totals[:5].tolist()
    cosine = mean_pairwise_cosine(totals[5:], prompts)
    return iou_sum / max(masks, 1), intersection / (union + CUMULATIVE_EPSILON), cosine


def validate_all(
    engine, loaders: dict, info: DistributedInfo, dtype: torch.dtype, writer, epoch: int
) -> dict:
    """Every validation set; gIoU/cIoU are their means (one set: its own values, as the original)."""
    results = {name: validate(engine, loader, info, dtype) for name, loader in loaders.items()}
    giou = sum(g for g, _, _ in results.values()) / len(results)
    ciou = sum(c for _, c, _ in results.values()) / len(results)
    if info.is_main:
        for name, (set_giou, set_ciou, cosine) in results.items():
            if len(results) > 1:
                print(f"  {name}: giou {set_giou:.4f}, ciou {set_ciou:.4f}")
                writer.add_scalar(f"val/{name}/giou", set_giou, epoch)
                writer.add_scalar(f"val/{name}/ciou", set_ciou, epoch)
            # TensorBoard only: near 1.0 = the same prompt for every question (see utils.metrics)
            tag = f"val/{name}/prompt_cosine" if len(results) > 1 else "val/prompt_cosine"
            writer.add_scalar(tag, cosine, epoch)
        print(f"epoch {epoch}: giou: {giou:.4f}, ciou: {ciou:.4f}")
        writer.add_scalar("val/giou", giou, epoch)
        writer.add_scalar("val/ciou", ciou, epoch)
    return {"giou": giou, "ciou": ciou}


def run_folder(args: argparse.Namespace) -> Path:
    """<log_base_dir>/<exp_name>, checked before anything is built (see utils.run_dir)."""
    log_dir = Path(args.log_base_dir) / args.exp_name
    inputs = {
        "--version": args.version,
        "--vision-tower": args.vision_tower,
        "--dataset_dir": args.dataset_dir,
        "--weight": args.weight,
        "--vision_pretrained": args.vision_pretrained,
    }
    check_run_dir(log_dir, inputs, overwrite=args.overwrite)
    return log_dir


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_libraries(logging.INFO)
    user_ds_config = check_args(args)
    log_dir = run_folder(args)
    info = init_distributed()
    torch.manual_seed(args.seed)
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    precision = args.precision
    dtype = resolve_dtype(precision, info.device)
    if dtype == torch.float32:
        precision = "fp32"
    if info.is_main:
        create_run_dir(log_dir)

    # --- data (before the model: a data mistake costs no model build) ---
    samples_per_epoch = (
        args.batch_size * args.grad_accumulation_steps * args.steps_per_epoch * info.world_size
    )
    train_dataset, val_datasets = build_datasets(
        args,
        clip_transform=clip_transform_for(args, base_tower_path(args.version)),
        samples_per_epoch=samples_per_epoch,
        with_validation=not args.no_eval,
    )
    # --- model ---
    tokenizer = load_tokenizer(args.version, model_max_length=args.model_max_length)
    model = build_lisa_from_flags(args, tokenizer, dtype)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if args.trainable == "lisa" and args.lora_r > 0:
        targets = tuple(args.lora_target_modules.split(","))
        model = apply_lora(
            model, LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, targets)
        )
    elif args.lora_r > 0:
        logger.info("--trainable %s uses no LoRA adapters (--lora_r ignored)", args.trainable)
    trainable = set_trainable(model, args.trainable)
    if args.weight:
        load_weights(model, args.weight)
    lisa = unwrap_lisa(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %d tensors, %d values", len(trainable), n_trainable)

    collate = partial(
        collate_fn,
        tokenizer=tokenizer,
        conv_type=args.conv_type,
        use_mm_start_end=args.use_mm_start_end,
        model_max_length=args.model_max_length,
        num_image_tokens=lisa.model.num_image_tokens,
    )
    val_loaders = (
        {
            name: DataLoader(
                dataset,
                batch_size=args.val_batch_size,
                sampler=list(
                    range(info.rank, len(dataset), info.world_size)
                ),  # no padding duplicates
                num_workers=args.workers,
                collate_fn=collate,
            )
            for name, dataset in zip(args.val_dataset.split("||"), val_datasets, strict=True)
        }
        if val_datasets
        else {}
    )

    # --- engine ---
    import deepspeed

    total_steps = args.epochs * args.steps_per_epoch
    on_cpu = info.device.type == "cpu"
    if user_ds_config is not None:
        ds_config = user_ds_config
    else:
        ds_config = build_deepspeed_config(
            micro_batch_size=args.batch_size,
            grad_accumulation_steps=args.grad_accumulation_steps,
            lr=args.lr,
            betas=(args.beta1, args.beta2),
            total_steps=total_steps,
            precision=precision,
            zero_stage=args.zero_stage,
            with_optimizer=not on_cpu,
        )
    parameters = [p for p in model.parameters() if p.requires_grad]
    client_optimizer = None
    if "optimizer" not in ds_config:  # torch's AdamW: no extension to compile on a CPU
        client_optimizer = torch.optim.AdamW(
            parameters, lr=args.lr, betas=(args.beta1, args.beta2), weight_decay=0.0
        )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=parameters, optimizer=client_optimizer, config=ds_config
    )

    # --- resume ---
    global_step, best, resumed_rng = 0, {"giou": -1.0, "ciou": 0.0, "epoch": -1}, None
    settings = checkpoint_settings(args, info, engine, precision)
    if info.is_main and not args.eval_only:  # a kill while saving left something to repair
        for line in finish_interrupted_saves(log_dir):
            print(line)
    barrier()
    resume, skipped = choose_resume_checkpoint(
        log_dir, args.resume, args.auto_resume and not args.eval_only
    )
    if resume is not None:
        warning = check_resume_settings(resume, settings)
        if info.is_main:
            for line in [*skipped, warning] if warning else skipped:
                print(line)
        client_state = load_resume_checkpoint(engine, resume)
        global_step = int(client_state.get("global_step", 0))
        best = client_state.get("best", best)
        resumed_rng = client_state.get("rng")
        logger.info(
            "resumed from %s at step %d (epoch %d)",
            resume,
            global_step,
            global_step // args.steps_per_epoch,
        )
    elif args.start_epoch:
        global_step = args.start_epoch * args.steps_per_epoch

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))

    if args.eval_only:
        validate_all(engine, val_loaders, info, dtype, writer, epoch=0)
        if writer is not None:
            writer.close()
        return

    train_loader = DataLoader(
        train_dataset,
        batch_size=args.batch_size,
        sampler=MicroBatchSampler(
            global_step * args.grad_accumulation_steps, info.rank, info.world_size, args.batch_size
        ),
        num_workers=args.workers,
        collate_fn=collate,
        persistent_workers=args.workers > 0,
    )
    train_iter = iter(train_loader)  # draws a seed from the RNG: restore the RNG after this
    if resumed_rng is not None:  # dropout draws continue as if never interrupted
        torch.set_rng_state(resumed_rng)
    if info.is_main:
        print(
            f"training {args.epochs} epochs x {args.steps_per_epoch} steps on {info.world_size} process(es), "
            f"{sum(len(d) for d in val_datasets)} validation samples"
        )

    for epoch in range(global_step // args.steps_per_epoch, args.epochs):
        engine.train()
        meters = StepMeters()
        first_step = global_step - epoch * args.steps_per_epoch
        progress = tqdm(
            range(first_step, args.steps_per_epoch),
            desc=f"epoch {epoch}",
            disable=not show_progress(info),
            initial=first_step,
            total=args.steps_per_epoch,
        )
        for step_in_epoch in progress:
            step_start = time.perf_counter()
            for _ in range(args.grad_accumulation_steps):
                data_start = time.perf_counter()
                batch = next(train_iter)
                meters.data_seconds.update(time.perf_counter() - data_start)
                output = engine(batch.to(info.device, dtype))
                engine.backward(output.loss)
                engine.step()
                meters.add_losses(output)
            meters.step_seconds.update(time.perf_counter() - step_start)
            global_step += 1
            if not math.isfinite(meters.losses["loss"].mean):
                raise SystemExit(
                    f"the loss became {meters.losses['loss'].mean} at step {global_step}; "
                    "lower --lr or check the data"
                )
            if global_step % args.print_freq == 0:
                if info.is_main:
                    lr = scheduler.get_last_lr()[0] if scheduler is not None else args.lr
                    where = f"epoch {epoch} step {step_in_epoch + 1}/{args.steps_per_epoch}"
                    meters.log(writer, lr, train_dataset.skips.total(), global_step, where)
                meters = StepMeters()
            if (
                args.save_steps
                and global_step % args.save_steps == 0
                and step_in_epoch + 1 < args.steps_per_epoch
            ):
                record = {"global_step": global_step, "best_metrics": None, "settings": settings}
                path = save_checkpoint(
                    engine, log_dir, client_state_of(global_step, best), info.is_main, record
                )
                announce_checkpoint(path, global_step, info)

        metrics = {"epoch": epoch}
        if val_loaders:
            metrics.update(validate_all(engine, val_loaders, info, dtype, writer, epoch))
        if info.is_main and train_dataset.skip_counts():
            print(f"skipped training samples so far: {train_dataset.skip_counts()}")
        is_best = not val_loaders or metrics["giou"] > best["giou"]
        if is_best and val_loaders:
            best = {"giou": metrics["giou"], "ciou": metrics["ciou"], "epoch": epoch}
        record = {
            "global_step": global_step,
            "best_metrics": metrics if is_best else None,  # ckpt_model is made from it next
            "settings": settings,
        }
        path = save_checkpoint(
            engine, log_dir, client_state_of(global_step, best), info.is_main, record
        )
        announce_checkpoint(path, global_step, info)
        if is_best:
            announce_checkpoint(promote_to_best(log_dir, metrics, info.is_main), global_step, info)
        if info.is_main:
            write_json_atomic(log_dir / "last_epoch.json", metrics)
    if writer is not None:
        writer.close()
    barrier()


def client_state_of(global_step: int, best: dict) -> dict:
    """What a checkpoint needs besides DeepSpeed's own state to resume exactly."""
    return {"global_step": global_step, "best": best, "rng": torch.get_rng_state()}


def checkpoint_settings(args: argparse.Namespace, info, engine, precision: str) -> dict:
    """What this run's checkpoints are saved with and checked against on resume (see
    utils.checkpointing.MUST_MATCH / SHOULD_MATCH): the flags that decide the tensors and their
    split among processes, the schedule, and every parameter's shape and whether it trains."""
    with_lora = args.trainable == "lisa" and args.lora_r > 0
    return {
        "world_size": info.world_size,
        "zero_stage": int(engine.zero_optimization_stage()),
        "trainable": args.trainable,
        "lora_r": args.lora_r if with_lora else 0,
        "lora_alpha": args.lora_alpha if with_lora else None,
        "lora_target_modules": args.lora_target_modules if with_lora else None,
        "lora_dropout": args.lora_dropout if with_lora else None,
        "out_dim": args.out_dim,
        "image_size": args.image_size,
        "precision": precision,
        "batch_size": args.batch_size,
        "grad_accumulation_steps": args.grad_accumulation_steps,
        "steps_per_epoch": args.steps_per_epoch,
        "lr": args.lr,
        "seed": args.seed,
        "parameters": {  # under ZeRO-3 a parameter's own shape is that of its local shard
            name: [list(getattr(parameter, "ds_shape", parameter.shape)), parameter.requires_grad]
            for name, parameter in engine.module.named_parameters()
        },
    }


def announce_checkpoint(path: Path, global_step: int, info) -> None:
    if info.is_main:
        tqdm.write(f"checkpoint written: {path} (step {global_step})")


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Load a state dict saved by zero_to_fp32.py (or a merged model's) into the model."""
    from model.checkpoint_files import load_state_dict_file

    state = load_state_dict_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "inv_freq" not in k]
    if unexpected or (missing and len(missing) == len(list(model.state_dict()))):
        raise UsageError(
            f"--weight: {path} does not fit this model ({len(unexpected)} unexpected keys, "
            f"e.g. {unexpected[:3]})"
        )
    if missing:
        logger.warning(
            "--weight: %d keys not in %s keep their loaded values (e.g. %s)",
            len(missing),
            path,
            missing[:3],
        )


def run(argv: list[str] | None = None) -> int:
    """main() with a user's mistake shown as one line (exit status 2), never a traceback."""
    try:
        main(argv)
    except KeyboardInterrupt:
        return 130
    except (UsageError, MissingSourceError) as error:
        print(f"train_ds.py: {error}", file=sys.stderr)
        return 2
    except CheckpointSpaceError as error:
        print(f"train_ds.py: {error.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

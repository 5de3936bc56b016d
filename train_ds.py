"""Train (or validate) LISA with DeepSpeed.

    deepspeed --master_port=24999 train_ds.py \
      --version=PATH_TO_LLaVA --dataset_dir=./dataset --vision_pretrained=PATH_TO_SAM \
      --dataset="sem_seg||refer_seg||vqa||reason_seg" --sample_rates="9,3,3,1" --exp_name="lisa-7b"

    # validation only, of a merged model or of a consolidated checkpoint
    deepspeed --master_port=24999 train_ds.py --version=PATH_TO_LISA --dataset_dir=./dataset \
      --vision_pretrained=PATH_TO_SAM --exp_name="lisa-7b" [--weight=pytorch_model.bin] --eval_only

Runs on GPUs (NCCL) and on CPUs (gloo), with the `deepspeed` launcher, `torchrun`, or plain
`python` (a world of one). Logs and checkpoints go to runs/<exp_name>/ (see utils/checkpointing).

The file reads in the order a run goes: the flags (parsed once into utils.train_config.TrainConfig),
the set-up (run folder and processes, data, model, engine), resuming, the training epochs (the
Trainer and its one-micro-batch loss step), validation, checkpoints, and main() with them in order.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from model.bases.detect import base_kind_of
from model.builder import (
    LoraSettings,
    ModelSettings,
    apply_lora,
    build_model_for_training,
    check_vlm_segmenter,
    load_trained_weights,
    lora_settings_from,
    model_settings_from,
    set_trainable,
    unwrap_lisa,
)
from model.config import LisaConfig
from utils.batch import LisaBatch
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
from utils.data import HybridDataset, ValDataset, build_datasets
from utils.data.bad_samples import MissingSourceError
from utils.deepspeed_config import build_deepspeed_config
from utils.devices import resolve_dtype
from utils.distributed import (
    DistributedInfo,
    all_reduce_sum,
    barrier,
    init_distributed,
    launcher_rank,
)
from utils.errors import UsageError
from utils.ignored_flags import announce_ignored_flags
from utils.metrics import (
    CUMULATIVE_EPSILON,
    intersection_and_union,
    mask_iou,
    mean_pairwise_cosine,
)
from utils.run_dir import check_run_dir, create_run_dir
from utils.tokenization import LegacyLlamaTokenizer
from utils.train_config import TrainConfig, parse_train_flags
from utils.transforms import ClipTransform

logger = logging.getLogger("train_ds")
PROGRAM = "train_ds.py"


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line as a :class:`TrainConfig` (the flags are listed in utils.train_config)."""
    return parse_train_flags(argv)


class LossNotFiniteError(RuntimeError):
    """The training loss became NaN or infinite; the message says at which step."""


# ------------------------------------------------------------------------------------------------
# Set-up: run folder and processes, data, model, engine


@dataclass(frozen=True)
class RunContext:
    """What every stage of a run shares."""

    config: TrainConfig
    info: DistributedInfo  # rank, world size, device
    dtype: torch.dtype  # the dtype the model computes in
    precision: str  # its name: "fp32" on a CPU whatever --precision asked for
    log_dir: Path  # <log_base_dir>/<exp_name>


def run_folder(config: TrainConfig) -> Path:
    """<log_base_dir>/<exp_name>, checked before anything is built (see utils.run_dir)."""
    log_dir = Path(config.log_base_dir) / config.exp_name
    inputs = {
        "--version": config.version,
        "--vision-tower": config.vision_tower,
        "--dataset_dir": config.dataset_dir,
        "--weight": config.weight,
        "--vision_pretrained": config.vision_pretrained,
    }
    check_run_dir(log_dir, inputs, overwrite=config.overwrite)
    return log_dir


def start_run(config: TrainConfig) -> RunContext:
    """Check the run folder, join the processes, seed, and create the folder (main process)."""
    log_dir = run_folder(config)
    info = init_distributed(config.local_rank)
    torch.manual_seed(config.seed)
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    dtype, precision = run_precision(config.precision, info.device)
    if info.is_main:
        create_run_dir(log_dir)
    return RunContext(config, info, dtype, precision, log_dir)


def run_precision(precision: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype the model computes in and its name (fp32 on a CPU, whatever was asked)."""
    dtype = resolve_dtype(precision, device)
    return dtype, "fp32" if dtype == torch.float32 else precision


def base_format_of(config: TrainConfig):
    """The :class:`model.bases.BaseFormat` of a transformers base (LLaVA in the Hugging Face
    layout, Qwen2.5-VL): its tokenizer, chat template and image processing; None for the
    original LLaVA layout (utils/ serves it)."""
    if base_kind_of(config.version) == "llava":
        return None
    from model.bases.load import load_base_format

    return load_base_format(config.version, model_max_length=config.model_max_length)


def build_data(run: RunContext, base_format=None) -> tuple[HybridDataset, list[ValDataset]]:
    """The training mixture (endless; an epoch's worth of samples per epoch) and the validation
    sets (none with --no_eval), made for ``base_format`` (None: the original layout)."""
    config = run.config
    samples_per_epoch = (
        config.batch_size
        * config.grad_accumulation_steps
        * config.steps_per_epoch
        * run.info.world_size
    )
    if base_format is None:
        inputs = {"clip_transform": clip_transform_for(config, base_tower_path(config.version))}
    else:
        inputs = {"base_format": base_format}
    return build_datasets(
        config.data_config(),
        **inputs,
        samples_per_epoch=samples_per_epoch,
        with_validation=not config.no_eval,
    )


def model_settings(config: TrainConfig) -> ModelSettings:
    weights = (config.ce_loss_weight, config.dice_loss_weight, config.bce_loss_weight)
    return model_settings_from(config, loss_weights=weights)


def lora_settings(config: TrainConfig) -> LoraSettings | None:
    """The LoRA adapters of the "lisa" recipe; None without adapters."""
    return lora_settings_from(config) if config.with_lora else None


def build_model(
    config: TrainConfig, dtype: torch.dtype, base_format=None
) -> tuple[torch.nn.Module, LegacyLlamaTokenizer]:
    """LISA with its adapters and trainable parameters chosen, --weight loaded; its tokenizer."""
    model, tokenizer, _ = build_model_for_training(
        model_settings(config),
        dtype,
        model_max_length=config.model_max_length,
        base_format=base_format,
    )
    if base_format is None:
        model.pack_conversations = config.pack_conversations
    else:
        announce_unread_layout_flags(config)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    lora = lora_settings(config)
    if lora is not None:
        model = apply_lora(model, lora)
    elif config.lora_r > 0:
        logger.info("--trainable %s uses no LoRA adapters (--lora_r ignored)", config.trainable)
    trainable = set_trainable(model, config.trainable, train_mask_decoder=config.train_mask_decoder)
    if config.weight:
        load_weights(model, config.weight)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable parameters: %d tensors, %d values", len(trainable), n_trainable)
    return model, tokenizer


def announce_unread_layout_flags(config: TrainConfig) -> None:
    """One line naming the flags of the original LLaVA layout that another base does not read."""
    defaults = TrainConfig()
    unread = [
        flag
        for flag, is_set in (
            ("--conv_type", config.conv_type != defaults.conv_type),
            ("--no-use_mm_start_end", not config.use_mm_start_end),
            ("--vision-tower", Path(config.vision_tower).exists()),
        )
        if is_set
    ]
    if unread and launcher_rank() == 0:
        print(
            f"{PROGRAM}: {', '.join(unread)} not read: they serve the original LLaVA layout, and "
            "this base brings its own chat template and image processing"
        )
    if config.pack_conversations:
        logger.info("packed conversations serve the original LLaVA layout; this base runs unpacked")


def make_collate(
    config: TrainConfig, tokenizer: LegacyLlamaTokenizer, model: torch.nn.Module, base_format=None
):
    """The batching function of both loaders: prompts built, tokenised and padded."""
    if base_format is not None:
        from utils.collate import collate_with_format

        return partial(
            collate_with_format, base_format=base_format, model_max_length=config.model_max_length
        )
    return partial(
        collate_fn,
        tokenizer=tokenizer,
        conv_type=config.conv_type,
        use_mm_start_end=config.use_mm_start_end,
        model_max_length=config.model_max_length,
        num_image_tokens=unwrap_lisa(model).model.num_image_tokens,
    )


def validation_loaders(
    config: TrainConfig, datasets: list[ValDataset], collate, info: DistributedInfo
) -> dict[str, DataLoader]:
    """One loader per --val_dataset name (none with --no_eval); each rank takes every
    world_size-th sample (no padding duplicates)."""
    if not datasets:
        return {}
    return {
        name: DataLoader(
            dataset,
            batch_size=config.val_batch_size,
            sampler=list(range(info.rank, len(dataset), info.world_size)),
            num_workers=config.workers,
            collate_fn=collate,
        )
        for name, dataset in zip(config.val_dataset.split("||"), datasets, strict=True)
    }


def training_batches(
    run: RunContext, dataset: HybridDataset, collate, global_step: int
) -> Iterator[LisaBatch]:
    """This rank's micro-batches from ``global_step`` onward (the same data a run that was
    never interrupted sees)."""
    config, info = run.config, run.info
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=MicroBatchSampler(
            global_step * config.grad_accumulation_steps,
            info.rank,
            info.world_size,
            config.batch_size,
        ),
        num_workers=config.workers,
        collate_fn=collate,
        persistent_workers=config.workers > 0,
    )
    return iter(loader)


def deepspeed_config_for(run: RunContext) -> dict[str, Any]:
    """--deepspeed_config, else the generated one (no optimizer on a CPU: see build_engine)."""
    config = run.config
    user_config = config.user_deepspeed_config()
    if user_config is not None:
        return user_config
    return build_deepspeed_config(
        micro_batch_size=config.batch_size,
        grad_accumulation_steps=config.grad_accumulation_steps,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        total_steps=config.epochs * config.steps_per_epoch,
        precision=run.precision,
        zero_stage=config.zero_stage,
        with_optimizer=run.info.device.type != "cpu",
    )


def build_engine(run: RunContext, model: torch.nn.Module) -> tuple[Any, Any]:
    """The DeepSpeed engine over the trainable parameters, and its learning-rate scheduler."""
    import deepspeed

    config = run.config
    ds_config = deepspeed_config_for(run)
    parameters = [p for p in model.parameters() if p.requires_grad]
    client_optimizer = None
    if "optimizer" not in ds_config:  # torch's AdamW: no extension to compile on a CPU
        client_optimizer = torch.optim.AdamW(
            parameters, lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=0.0
        )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=parameters, optimizer=client_optimizer, config=ds_config
    )
    return engine, scheduler


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


def clip_transform_for(config: TrainConfig, tower_path: str | None) -> ClipTransform:
    """CLIP preprocessing from the vision tower directory (--vision-tower, else the base's config)."""
    transform = ClipTransform.from_first_directory(config.vision_tower, tower_path)
    if transform is not None:
        return transform
    raise UsageError(
        f"--vision-tower: no preprocessor_config.json in {config.vision_tower} or {tower_path}; "
        "pass the local CLIP directory"
    )


# ------------------------------------------------------------------------------------------------
# Resuming


@dataclass
class Progress:
    """Where training stands; every checkpoint saves it, with the random state."""

    global_step: int = 0  # optimizer steps done
    best: dict = field(default_factory=lambda: {"giou": -1.0, "ciou": 0.0, "epoch": -1})
    rng: torch.Tensor | None = None  # the random state a resumed run continues from


def find_resume(run: RunContext) -> tuple[Path | None, list[str]]:
    """Before anything is built: repair what a kill left, then pick the checkpoint to continue
    from (--resume, else the run folder's latest complete one with --auto_resume) and the lines
    naming the incomplete ones passed over; an incomplete --resume folder stops the run here."""
    config, info = run.config, run.info
    if info.is_main and not config.eval_only:  # a kill while saving left something to repair
        for line in finish_interrupted_saves(run.log_dir):
            print(line)
    barrier()
    return choose_resume_checkpoint(
        run.log_dir, config.resume, config.auto_resume and not config.eval_only
    )


def resume_progress(
    run: RunContext, engine, settings: dict, found: tuple[Path | None, list[str]]
) -> Progress:
    """Load the checkpoint :func:`find_resume` chose, after checking it was written with this
    run's settings, or start at --start_epoch."""
    config, info = run.config, run.info
    resume, skipped = found
    if resume is None:
        return Progress(global_step=config.start_epoch * config.steps_per_epoch)
    warning = check_resume_settings(resume, settings)
    if info.is_main:
        for line in [*skipped, warning] if warning else skipped:
            print(line)
    client_state = load_resume_checkpoint(engine, resume)
    progress = Progress(int(client_state.get("global_step", 0)), rng=client_state.get("rng"))
    progress.best = client_state.get("best", progress.best)
    logger.info(
        "resumed from %s at step %d (epoch %d)",
        resume,
        progress.global_step,
        progress.global_step // config.steps_per_epoch,
    )
    return progress


# ------------------------------------------------------------------------------------------------
# Training


@dataclass
class Trainer:
    """The built run: the engine and the data every epoch uses, and where training stands."""

    run: RunContext
    engine: Any  # deepspeed.DeepSpeedEngine
    scheduler: Any  # its learning-rate scheduler (None with a user config that has none)
    train_dataset: HybridDataset
    batches: Iterator[LisaBatch]  # this rank's micro-batches, endless
    val_loaders: dict[str, DataLoader]
    writer: Any  # TensorBoard's SummaryWriter on the main process, else None
    settings: dict  # what checkpoints are saved with (see checkpoint_settings)
    progress: Progress

    def fit(self) -> None:
        config = self.run.config
        for epoch in range(self.progress.global_step // config.steps_per_epoch, config.epochs):
            self.train_epoch(epoch)
            self.end_epoch(epoch)

    def train_epoch(self, epoch: int) -> None:
        """The epoch's remaining optimizer steps, each of --grad_accumulation_steps micro-batches."""
        config, info = self.run.config, self.run.info
        self.engine.train()
        meters = StepMeters()
        first_step = self.progress.global_step - epoch * config.steps_per_epoch
        steps = tqdm(
            range(first_step, config.steps_per_epoch),
            desc=f"epoch {epoch}",
            disable=not show_progress(info),
            initial=first_step,
            total=config.steps_per_epoch,
        )
        for step_in_epoch in steps:
            step_start = time.perf_counter()
            for _ in range(config.grad_accumulation_steps):
                data_start = time.perf_counter()
                batch = next(self.batches)
                meters.data_seconds.update(time.perf_counter() - data_start)
                meters.add_losses(self.loss_step(batch))
            meters.step_seconds.update(time.perf_counter() - step_start)
            self.progress.global_step += 1
            check_finite(meters.losses["loss"].mean, self.progress.global_step)
            if self.progress.global_step % config.print_freq == 0:
                self.log(meters, f"epoch {epoch} step {step_in_epoch + 1}/{config.steps_per_epoch}")
                meters = StepMeters()
            if self.saves_within_epoch(step_in_epoch):
                self.save(best_metrics=None)

    def loss_step(self, batch: LisaBatch):
        """One micro-batch: forward, backward, and the engine's step (it updates the weights at
        the end of each accumulation)."""
        info, dtype = self.run.info, self.run.dtype
        output = self.engine(batch.to(info.device, dtype))
        self.engine.backward(output.loss)
        self.engine.step()
        return output

    def log(self, meters: StepMeters, where: str) -> None:
        if self.run.info.is_main:
            scheduler = self.scheduler
            lr = scheduler.get_last_lr()[0] if scheduler is not None else self.run.config.lr
            skipped = self.train_dataset.skips.total()
            meters.log(self.writer, lr, skipped, self.progress.global_step, where)

    def saves_within_epoch(self, step_in_epoch: int) -> bool:
        """--save_steps: a checkpoint every N steps, except at an epoch's end (saved there)."""
        save_steps = self.run.config.save_steps
        return (
            save_steps > 0
            and self.progress.global_step % save_steps == 0
            and step_in_epoch + 1 < self.run.config.steps_per_epoch
        )

    def end_epoch(self, epoch: int) -> None:
        """Validate, checkpoint, and promote the checkpoint to ckpt_model when it is the best."""
        run, progress = self.run, self.progress
        metrics: dict = {"epoch": epoch}
        if self.val_loaders:
            metrics.update(
                validate_all(self.engine, self.val_loaders, run.info, run.dtype, self.writer, epoch)
            )
        if run.info.is_main and self.train_dataset.skip_counts():
            print(f"skipped training samples so far: {self.train_dataset.skip_counts()}")
        is_best = not self.val_loaders or metrics["giou"] > progress.best["giou"]
        if is_best and self.val_loaders:
            progress.best = {"giou": metrics["giou"], "ciou": metrics["ciou"], "epoch": epoch}
        self.save(best_metrics=metrics if is_best else None)  # ckpt_model is made from it next
        if is_best:
            promoted = promote_to_best(run.log_dir, metrics, run.info.is_main)
            announce_checkpoint(promoted, progress.global_step, run.info)
        if run.info.is_main:
            write_json_atomic(run.log_dir / "last_epoch.json", metrics)

    def save(self, best_metrics: dict | None) -> None:
        """ckpt_latest, with what resuming needs and what the checkpoint is checked against."""
        global_step = self.progress.global_step
        record = {
            "global_step": global_step,
            "best_metrics": best_metrics,
            "settings": self.settings,
        }
        client_state = client_state_of(global_step, self.progress.best)
        path = save_checkpoint(
            self.engine, self.run.log_dir, client_state, self.run.info.is_main, record
        )
        announce_checkpoint(path, global_step, self.run.info)


def check_finite(loss: float, global_step: int) -> None:
    if not math.isfinite(loss):
        raise LossNotFiniteError(
            f"the loss became {loss} at step {global_step}; lower --lr or check the data"
        )


# ------------------------------------------------------------------------------------------------
# Logging and validation


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


# ------------------------------------------------------------------------------------------------
# Checkpoints


def client_state_of(global_step: int, best: dict) -> dict:
    """What a checkpoint needs besides DeepSpeed's own state to resume exactly."""
    return {"global_step": global_step, "best": best, "rng": torch.get_rng_state()}


def checkpoint_settings(config: TrainConfig, info, engine, precision: str) -> dict:
    """What this run's checkpoints are saved with and checked against on resume (see
    utils.checkpointing.MUST_MATCH / SHOULD_MATCH): the flags that decide the tensors and their
    split among processes, the schedule, and every parameter's shape and whether it trains."""
    with_lora = config.with_lora
    return {
        "world_size": info.world_size,
        "zero_stage": int(engine.zero_optimization_stage()),
        "trainable": config.trainable,
        "lora_r": config.lora_r if with_lora else 0,
        "lora_alpha": config.lora_alpha if with_lora else None,
        "lora_target_modules": config.lora_target_modules if with_lora else None,
        "lora_dropout": config.lora_dropout if with_lora else None,
        "out_dim": config.out_dim,
        "image_size": config.image_size,
        "precision": precision,
        "batch_size": config.batch_size,
        "grad_accumulation_steps": config.grad_accumulation_steps,
        "steps_per_epoch": config.steps_per_epoch,
        "lr": config.lr,
        "seed": config.seed,
        "parameters": {  # under ZeRO-3 a parameter's own shape is that of its local shard
            name: [list(getattr(parameter, "ds_shape", parameter.shape)), parameter.requires_grad]
            for name, parameter in engine.module.named_parameters()
        },
    }


def announce_checkpoint(path: Path, global_step: int, info) -> None:
    if info.is_main:
        tqdm.write(f"checkpoint written: {path} (step {global_step})")


def load_weights(model: torch.nn.Module, path: str) -> None:
    """--weight (zero_to_fp32.py's output, or a merged model's weights) into the model."""
    missing = load_trained_weights(model, path)
    if missing:
        logger.warning(
            "--weight: %d keys not in %s keep their loaded values (e.g. %s)",
            len(missing),
            path,
            missing[:3],
        )


# ------------------------------------------------------------------------------------------------
# The recipe


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    quiet_libraries(logging.INFO)
    if launcher_rank() == 0:
        announce_ignored_flags(config.ignored_flags(), PROGRAM)
    config.validate()
    # the base and segmenter flags before the processes meet: a mistake costs no process group
    base_format = base_format_of(config)
    if base_format is not None:
        check_vlm_segmenter(model_settings(config))
    run = start_run(config)
    found = find_resume(run)
    # the data before the model: a data mistake costs no model build
    train_dataset, val_datasets = build_data(run, base_format)
    model, tokenizer = build_model(config, run.dtype, base_format)
    collate = make_collate(config, tokenizer, model, base_format)
    val_loaders = validation_loaders(config, val_datasets, collate, run.info)
    engine, scheduler = build_engine(run, model)
    settings = checkpoint_settings(config, run.info, engine, run.precision)
    progress = resume_progress(run, engine, settings, found)
    writer = open_writer(run)
    if config.eval_only:
        validate_all(engine, val_loaders, run.info, run.dtype, writer, epoch=0)
    else:
        batches = training_batches(run, train_dataset, collate, progress.global_step)
        if progress.rng is not None:  # after the loader drew its seed: dropout continues exactly
            torch.set_rng_state(progress.rng)
        announce_training(run, val_datasets)
        trainer = Trainer(
            run, engine, scheduler, train_dataset, batches, val_loaders, writer, settings, progress
        )
        trainer.fit()
    if writer is not None:
        writer.close()
    if not config.eval_only:
        barrier()


def open_writer(run: RunContext):
    """TensorBoard's writer into the run folder, on the main process only."""
    if not run.info.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run.log_dir))


def announce_training(run: RunContext, val_datasets: list[ValDataset]) -> None:
    if run.info.is_main:
        config = run.config
        print(
            f"training {config.epochs} epochs x {config.steps_per_epoch} steps on "
            f"{run.info.world_size} process(es), "
            f"{sum(len(d) for d in val_datasets)} validation samples"
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
    except LossNotFiniteError as error:
        print(f"train_ds.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

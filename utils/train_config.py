"""The settings of a training run: train_ds.py's flags, parsed once into :class:`TrainConfig`.

The flag names, aliases and defaults are the original train_ds.py's (some flags were added, none
renamed). The flags are declared here in groups; each flag's destination is a field of
:class:`TrainConfig`, whose default is the flag's default. :meth:`TrainConfig.validate` checks
every value and input file before anything is built, with one sentence per mistake. The builders
(model, data, DeepSpeed) take settings made from the config explicitly, never the parsed flags.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from utils.conversation import CONV_TYPES
from utils.data.build import DataConfig, check_data_flags
from utils.data.questions import parse_answer_templates
from utils.deepspeed_config import check_deepspeed_config, load_deepspeed_config
from utils.devices import PRECISIONS
from utils.errors import UsageError
from utils.ignored_flags import IGNORED_HELP, flags_off_default

# What may train (see model.builder.set_trainable); the choices of --trainable.
TRAINABLE_RECIPES = ("lisa", "all", "heads")
# The choices of --segmenter: "auto" reads the kind from --vision_pretrained's contents.
SEGMENTER_CHOICES = ("auto", "sam", "sam2")
# The value of --vision_pretrained that names no file: SAM then comes from --version's weights.
NO_SAM_FILE = "PATH_TO_SAM_ViT-H"
ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class TrainConfig:
    """Every flag of train_ds.py, by its destination name, with the original's defaults."""

    # --- model ---
    version: str = "liuhaotian/llava-llama-2-13b-chat-lightning-preview"  # LLaVA base or LISA
    vision_tower: str = "openai/clip-vit-large-patch14"  # CLIP directory (else the base's own)
    vision_pretrained: str = NO_SAM_FILE  # official SAM file or a SAM 2 directory
    segmenter: str = "auto"  # one of SEGMENTER_CHOICES: which kind --vision_pretrained holds
    weight: str = ""  # state dict loaded before training or --eval_only (zero_to_fp32.py output)
    precision: str = "bf16"  # fp32 | bf16 | fp16; a CPU runs in fp32
    image_size: int = 1024  # SAM input side; must be the built SAM's
    model_max_length: int = 512  # longest token sequence
    out_dim: int = 256  # width of the [SEG] prompt; must be the SAM decoder's
    use_mm_start_end: bool = True  # wrap the image tokens in <im_start> ... <im_end>
    train_mask_decoder: bool = True  # False freezes the SAM mask decoder
    gradient_checkpointing: bool = True  # recompute activations in the backward pass
    pack_conversations: bool = True  # one LLM row per image, its shared prefix computed once
    load_in_8bit: bool = False  # refused: quantized loading is for inference only
    load_in_4bit: bool = False  # refused, as --load_in_8bit

    # --- what trains ---
    trainable: str = "lisa"  # one of TRAINABLE_RECIPES
    lora_r: int = 8  # LoRA rank on the LLM; 0: no adapters
    lora_alpha: int = 16  # LoRA scale numerator
    lora_dropout: float = 0.05  # dropout on the LoRA input
    lora_target_modules: str = "q_proj,v_proj"  # comma-separated names of the LLM's projections

    # --- data (see utils.data.build.DataConfig) ---
    dataset_dir: str = "./dataset"  # root of the tree described in dataset/README.md
    dataset: str = "sem_seg||refer_seg||vqa||reason_seg"  # tasks of the training mixture
    sample_rates: str = "9,3,3,1"  # relative weight of each task
    sem_seg_data: str = "ade20k||cocostuff||pascal_part||paco_lvis||mapillary"
    refer_seg_data: str = "refclef||refcoco||refcoco+||refcocog"
    vqa_data: str = "llava_instruct_150k"  # llava_dataset/<name>.json
    reason_seg_data: str = "ReasonSeg|train"  # NAME|SPLIT[_SPLIT...]
    val_dataset: str = "ReasonSeg|val"  # one or several validation sets joined by '||'
    num_classes_per_sample: int = 3  # most questions (and masks) per training sample
    explanatory: float = 0.1  # share of ReasonSeg answers with an explanation; -1: none
    exclude_val: bool = False  # leave the validation images out of the training sources
    conv_type: str = "llava_v1"  # conversation template
    answer_templates: str = ""  # '||'-joined answers, each with one [SEG]; "": the original's

    # --- optimisation ---
    epochs: int = 10
    steps_per_epoch: int = 500  # optimizer steps per epoch
    batch_size: int = 2  # samples per process per micro-batch
    grad_accumulation_steps: int = 10  # micro-batches per optimizer step
    lr: float = 0.0003  # peak learning rate (linear warm-up, then linear decay)
    beta1: float = 0.9  # AdamW betas
    beta2: float = 0.95
    ce_loss_weight: float = 1.0  # weights of the token and mask losses
    dice_loss_weight: float = 0.5
    bce_loss_weight: float = 2.0
    zero_stage: int = 2  # DeepSpeed ZeRO stage, 2 or 3
    deepspeed_config: str = ""  # a DeepSpeed json used instead of the generated one
    seed: int = 0  # seed of the initialisation and the data draws

    # --- validation ---
    val_batch_size: int = 1
    no_eval: bool = False  # train without validation
    eval_only: bool = False  # validate once and stop
    workers: int = 4  # data loader processes

    # --- run folder, logs, checkpoints ---
    log_base_dir: str = "./runs"
    exp_name: str = "lisa"  # the run folder is <log_base_dir>/<exp_name>
    overwrite: bool = False  # write beside files no training run wrote
    print_freq: int = 1  # optimizer steps between log lines
    save_steps: int = 0  # also checkpoint every N steps; 0: at the end of each epoch only
    resume: str = ""  # a checkpoint folder to resume from
    auto_resume: bool = True  # continue the run folder's latest complete checkpoint
    start_epoch: int = 0  # first epoch of a run that does not resume
    local_rank: int = 0  # this process's device index when the launcher's environment has none
    vis_save_path: str = "./vis_output"  # ignored; kept for the original's command lines

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> TrainConfig:
        """The config of parsed flags; every field must be there, and nothing else."""
        return config_from_namespace(cls, namespace)

    @property
    def with_lora(self) -> bool:
        """Whether the run trains LoRA adapters (only the "lisa" recipe has them)."""
        return self.trainable == "lisa" and self.lora_r > 0

    def lora_targets(self) -> tuple[str, ...]:
        return tuple(self.lora_target_modules.split(","))

    def data_config(self) -> DataConfig:
        """The data flags, for utils.data.build."""
        return DataConfig(
            dataset_dir=self.dataset_dir,
            dataset=self.dataset,
            sample_rates=self.sample_rates,
            sem_seg_data=self.sem_seg_data,
            refer_seg_data=self.refer_seg_data,
            vqa_data=self.vqa_data,
            reason_seg_data=self.reason_seg_data,
            val_dataset=self.val_dataset,
            num_classes_per_sample=self.num_classes_per_sample,
            explanatory=self.explanatory,
            exclude_val=self.exclude_val,
            image_size=self.image_size,
            conv_type=self.conv_type,
            answer_templates=self.answer_templates,
            seed=self.seed,
        )

    def user_deepspeed_config(self) -> dict[str, Any] | None:
        """The --deepspeed_config json, checked against the batch flags (None without one)."""
        if not self.deepspeed_config:
            return None
        return check_deepspeed_config(
            load_deepspeed_config(self.deepspeed_config),
            self.deepspeed_config,
            micro_batch_size=self.batch_size,
            grad_accumulation_steps=self.grad_accumulation_steps,
        )

    def validate(self) -> None:
        """Every value and input file, before anything is built; one sentence per mistake.

        Raises:
            UsageError: the flag or file and what was expected.
        """
        if self.load_in_8bit or self.load_in_4bit:
            raise UsageError(
                "--load_in_8bit / --load_in_4bit are for inference (chat.py); "
                "train in bf16, fp16 or fp32"
            )
        _check_numbers(self)
        _check_paths(self)
        if self.eval_only and self.no_eval:
            raise UsageError("--eval_only and --no_eval exclude each other")
        try:
            parse_answer_templates(self.answer_templates)
        except ValueError as error:
            raise UsageError(str(error)) from None
        check_data_flags(self.data_config(), training=not self.eval_only)
        self.user_deepspeed_config()

    def ignored_flags(self) -> list[str]:
        """The flags kept only for the original's command lines that are set to another value."""
        return flags_off_default(self, IGNORED_FIELDS)


IGNORED_FIELDS = ("vis_save_path",)


def config_from_namespace(cls: type[ConfigT], namespace: argparse.Namespace) -> ConfigT:
    """A settings dataclass from parsed flags: one flag per field, each field a flag's.

    Raises:
        TypeError: a flag without a field or a field without a flag (a programming error).
    """
    values = vars(namespace)
    names = {field.name for field in fields(cls)}
    if set(values) != names:
        raise TypeError(
            f"flags without a {cls.__name__} field: {sorted(set(values) - names)}; "
            f"fields without a flag: {sorted(names - set(values))}"
        )
    return cls(**values)


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
FRACTIONS = ("beta1", "beta2", "lora_dropout")  # within [0, 1)


def _check_numbers(config: TrainConfig) -> None:
    values = asdict(config)
    for name in POSITIVE_INTS:
        if values[name] <= 0:
            raise UsageError(f"--{name} must be positive, got {values[name]}")
    for name in NON_NEGATIVE_INTS:
        if values[name] < 0:
            raise UsageError(f"--{name} must be 0 or more, got {values[name]}")
    for name in NON_NEGATIVE_FLOATS:
        if not (math.isfinite(values[name]) and values[name] >= 0):
            raise UsageError(f"--{name} must be a finite number >= 0, got {values[name]}")
    for name in FRACTIONS:
        if not 0.0 <= values[name] < 1.0:
            raise UsageError(f"--{name} must be within [0, 1), got {values[name]}")
    if config.with_lora:
        if config.lora_alpha <= 0:
            raise UsageError(f"--lora_alpha must be positive, got {config.lora_alpha}")
        if not [name for name in config.lora_targets() if name.strip()]:
            raise UsageError("--lora_target_modules is empty (e.g. q_proj,v_proj)")


def _check_paths(config: TrainConfig) -> None:
    if not Path(config.version).is_dir():
        raise UsageError(
            f"--version: {config.version} is not a local directory "
            "(a LLaVA base or a LISA checkpoint)"
        )
    if not (Path(config.version) / "config.json").is_file():
        raise UsageError(f"--version: {config.version} has no config.json")
    if config.vision_pretrained != NO_SAM_FILE and not Path(config.vision_pretrained).exists():
        raise UsageError(
            f"--vision_pretrained: {config.vision_pretrained} does not exist (expected an "
            "official SAM file such as sam_vit_h_4b8939.pth, or a SAM 2 directory)"
        )
    if config.weight:
        check_state_dict_file(config.weight, "--weight")


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
# The flags, by group; each one's destination is a TrainConfig field and its default the field's.

AddFlag = Callable[..., argparse.Action]
ON_OFF = argparse.BooleanOptionalAction


def parse_train_flags(argv: list[str] | None = None) -> TrainConfig:
    """train_ds.py's command line as a :class:`TrainConfig` (not yet validated)."""
    return TrainConfig.from_namespace(build_parser().parse_args(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LISA training and validation (DeepSpeed)")
    defaults = TrainConfig()
    groups = {
        "model": _model_flags,
        "what trains": _trainable_flags,
        "data": _data_flags,
        "optimisation": _optimisation_flags,
        "validation": _validation_flags,
        "run folder, logs and checkpoints": _run_flags,
    }
    for title, add_flags in groups.items():
        add_flags(parser.add_argument_group(title).add_argument, defaults)
    return parser


def _model_flags(add: AddFlag, d: TrainConfig) -> None:
    add(
        "--version",
        default=d.version,
        help="LLaVA base (or a finished LISA checkpoint to continue from)",
    )
    add(
        "--vision-tower",
        "--vision_tower",
        dest="vision_tower",
        default=d.vision_tower,
        help="CLIP directory (original LLaVA layout only; default: the one --version names)",
    )
    add(
        "--weight",
        default=d.weight,
        type=str,
        help="a state dict (e.g. the pytorch_model.bin from zero_to_fp32.py) loaded before "
        "training or --eval_only",
    )
    add(
        "--precision",
        default=d.precision,
        choices=list(PRECISIONS),
        help="bf16 on GPUs; on a CPU the run falls back to fp32",
    )
    add("--model_max_length", default=d.model_max_length, type=int)
    add(
        "--use_mm_start_end",
        action=ON_OFF,
        default=d.use_mm_start_end,
        help="wrap the image tokens in <im_start> ... <im_end> (original LLaVA layout only)",
    )
    add("--gradient_checkpointing", action=ON_OFF, default=d.gradient_checkpointing)
    add(
        "--pack_conversations",
        action=ON_OFF,
        default=d.pack_conversations,
        help="run the conversations about one image as one LLM row, the prefix they share "
        "(system prompt, image) once: the same losses and masks, less work "
        "(--no-pack_conversations: one row per conversation)",
    )
    add("--load_in_8bit", action=ON_OFF, default=d.load_in_8bit, help="not supported for training")
    add("--load_in_4bit", action=ON_OFF, default=d.load_in_4bit, help="not supported for training")
    _segmenter_flags(add, d)


def _segmenter_flags(add: AddFlag, d: TrainConfig) -> None:
    add(
        "--vision_pretrained",
        default=d.vision_pretrained,
        type=str,
        help="the segmenter: an official SAM file (sam_vit_h_4b8939.pth) or a local SAM 2 "
        "directory (facebook/sam2.1-hiera-large); default: the one --version holds",
    )
    add(
        "--segmenter",
        default=d.segmenter,
        choices=SEGMENTER_CHOICES,
        help="which segmenter --vision_pretrained holds: read from its contents (auto), or "
        "sam / sam2 where they are ambiguous",
    )
    add(
        "--image_size",
        default=d.image_size,
        type=int,
        help="SAM input side; must be the input side of the SAM --vision_pretrained (or --version) holds",
    )
    add("--out_dim", default=d.out_dim, type=int, help="the SAM decoder's prompt width")
    add(
        "--train_mask_decoder",
        action=ON_OFF,
        default=d.train_mask_decoder,
        help="train the SAM mask decoder (--no-train_mask_decoder freezes it)",
    )


def _trainable_flags(add: AddFlag, d: TrainConfig) -> None:
    add(
        "--trainable",
        default=d.trainable,
        choices=list(TRAINABLE_RECIPES),
        help="lisa: the original's (LoRA, lm_head, embeddings, mask decoder, text_hidden_fcs); "
        "all: every parameter, for a model trained from scratch; heads: lm_head, "
        "text_hidden_fcs and the mask decoder only (the LLM, embeddings and CLIP frozen)",
    )
    add_lora_flags(add, d)


def add_lora_flags(add: AddFlag, d: Any) -> None:
    """The LoRA flags, shared with the merge script (``d`` holds their defaults)."""
    add("--lora_r", default=d.lora_r, type=int, help="LoRA rank on the LLM; 0: no adapters")
    add("--lora_alpha", default=d.lora_alpha, type=int)
    add("--lora_dropout", default=d.lora_dropout, type=float)
    add("--lora_target_modules", default=d.lora_target_modules, type=str)


def _data_flags(add: AddFlag, d: TrainConfig) -> None:
    for name in ("dataset_dir", "dataset", "sample_rates", "sem_seg_data", "refer_seg_data"):
        add(f"--{name}", default=getattr(d, name), type=str)
    for name in ("vqa_data", "reason_seg_data", "val_dataset"):
        add(f"--{name}", default=getattr(d, name), type=str)
    add("--num_classes_per_sample", default=d.num_classes_per_sample, type=int)
    add("--explanatory", default=d.explanatory, type=float)
    add("--exclude_val", action=ON_OFF, default=d.exclude_val)
    add(
        "--conv_type",
        default=d.conv_type,
        choices=list(CONV_TYPES),
        help="conversation template (original LLaVA layout only; other bases bring their own)",
    )
    add(
        "--answer_templates",
        default=d.answer_templates,
        type=str,
        help="answers of the segmentation questions, joined by '||', each with one [SEG] "
        "(default: the original's five, e.g. 'Sure, it is [SEG].')",
    )


def _optimisation_flags(add: AddFlag, d: TrainConfig) -> None:
    add("--epochs", default=d.epochs, type=int)
    add("--steps_per_epoch", default=d.steps_per_epoch, type=int)
    add("--batch_size", default=d.batch_size, type=int, help="batch size per device per step")
    add("--grad_accumulation_steps", default=d.grad_accumulation_steps, type=int)
    for name in ("lr", "beta1", "beta2", "ce_loss_weight", "dice_loss_weight", "bce_loss_weight"):
        add(f"--{name}", default=getattr(d, name), type=float)
    add("--zero_stage", default=d.zero_stage, type=int, choices=[2, 3])
    add(
        "--deepspeed_config",
        default=d.deepspeed_config,
        type=str,
        help="a DeepSpeed json used instead of the generated one",
    )
    add("--seed", default=d.seed, type=int)


def _validation_flags(add: AddFlag, d: TrainConfig) -> None:
    add("--val_batch_size", default=d.val_batch_size, type=int)
    add("--no_eval", action=ON_OFF, default=d.no_eval)
    add("--eval_only", action=ON_OFF, default=d.eval_only)
    add("--workers", default=d.workers, type=int)


def _run_flags(add: AddFlag, d: TrainConfig) -> None:
    add("--log_base_dir", default=d.log_base_dir, type=str)
    add(
        "--exp_name",
        default=d.exp_name,
        type=str,
        help="the run folder is <log_base_dir>/<exp_name>: new, empty, or an earlier run's "
        "(auto-resume continues it)",
    )
    add(
        "--overwrite",
        action=ON_OFF,
        default=d.overwrite,
        help="use a run folder that holds files no training run wrote: the run writes its own "
        "files (lisa_run.json, ckpt_latest/, ckpt_model/, best.json, last_epoch.json, TensorBoard "
        "events) beside them, and nothing else there is replaced or deleted",
    )
    add("--print_freq", default=d.print_freq, type=int)
    add(
        "--save_steps",
        default=d.save_steps,
        type=int,
        help="also write ckpt_latest every N optimizer steps (0: only at the end of each epoch)",
    )
    add(
        "--resume",
        default=d.resume,
        type=str,
        help="a checkpoint folder (ckpt_latest / ckpt_model)",
    )
    add("--auto_resume", action=ON_OFF, default=d.auto_resume)
    add("--start_epoch", default=d.start_epoch, type=int)
    add(
        "--local_rank",
        "--local-rank",
        default=d.local_rank,
        type=int,
        help="set by the launcher; this process's device index when the launcher's environment "
        "(LOCAL_RANK) gives none",
    )
    add("--vis_save_path", default=d.vis_save_path, type=str, help=IGNORED_HELP)

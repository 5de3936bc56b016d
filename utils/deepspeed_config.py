"""The DeepSpeed configuration of a training run (the original's, plus the ZeRO stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.errors import UsageError

WARMUP_STEPS = 100


def build_deepspeed_config(
    *,
    micro_batch_size: int,
    grad_accumulation_steps: int,
    lr: float,
    betas: tuple[float, float],
    total_steps: int,
    precision: str,
    zero_stage: int = 2,
    with_optimizer: bool = True,
) -> dict[str, Any]:
    """AdamW (no weight decay), linear warm-up then linear decay, clipping 1.0, ZeRO 2 or 3.

    ``with_optimizer=False`` leaves the optimizer out so that a client optimizer can be passed
    (on a CPU, DeepSpeed's own Adam would first compile a C++ extension).
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"--zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    zero: dict[str, Any] = {"stage": zero_stage, "contiguous_gradients": True, "overlap_comm": True}
    if zero_stage == 2:
        zero.update(reduce_scatter=True, reduce_bucket_size=5e8, allgather_bucket_size=5e8)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accumulation_steps,
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": max(total_steps, WARMUP_STEPS + 1),
                "warmup_min_lr": 0,
                "warmup_max_lr": lr,
                "warmup_num_steps": min(WARMUP_STEPS, max(total_steps - 1, 1)),
                "warmup_type": "linear",
            },
        },
        "fp16": {"enabled": precision == "fp16"},
        "bf16": {"enabled": precision == "bf16"},
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # our own logging prints progress
    }
    if with_optimizer:
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": lr, "weight_decay": 0.0, "betas": list(betas)},
        }
    return config


def load_deepspeed_config(path: str | Path) -> dict[str, Any]:
    """A user's DeepSpeed json, used instead of the generated one.

    Raises:
        UsageError: the file is absent, not json, or not a json object.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--deepspeed_config: {path} is not a file")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"--deepspeed_config: {path} is not valid json ({error})") from None
    if not isinstance(config, dict):
        raise UsageError(f"--deepspeed_config: {path} holds {type(config).__name__}, not an object")
    return config


def check_deepspeed_config(
    config: dict[str, Any], path: str | Path, *, micro_batch_size: int, grad_accumulation_steps: int
) -> dict[str, Any]:
    """The fields the training loop relies on agree with its flags (it counts micro-batches itself).

    Raises:
        UsageError: a field of the wrong type, or a batch setting that differs from the flags.
    """
    expected = {
        "train_micro_batch_size_per_gpu": ("--batch_size", micro_batch_size),
        "gradient_accumulation_steps": ("--grad_accumulation_steps", grad_accumulation_steps),
    }
    for key, (flag, value) in expected.items():
        if key in config and config[key] != "auto" and config[key] != value:
            raise UsageError(
                f"--deepspeed_config: {path} sets {key} to {config[key]!r} but {flag} is {value}; "
                "make them agree (or leave the key out)"
            )
    for key in ("zero_optimization", "optimizer", "scheduler", "bf16", "fp16"):
        if key in config and not isinstance(config[key], dict):
            raise UsageError(f"--deepspeed_config: {path}: {key!r} must be a json object")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UsageError(f"--deepspeed_config: {path}: zero_optimization.stage must be 0-3")
    return config

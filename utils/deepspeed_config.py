"""The DeepSpeed configuration of a training run (the original's, plus the ZeRO stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    """A user's DeepSpeed json, used instead of the generated one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--deepspeed_config: {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--deepspeed_config: {path} is not valid json ({error})") from error

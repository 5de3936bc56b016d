"""Where and in what precision the model runs: the precisions every script's --precision offers,
their dtypes, and device names checked against this machine (one sentence when it lacks one)."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device that is not a device name, or that this machine does not have."""


def resolve_device(
    device: str | torch.device | None, local_rank: int | None = None
) -> torch.device:
    """``device`` checked against this machine. ``None`` means CUDA when present (the device
    ``local_rank`` names when given), else the CPU.

    Raises:
        DeviceError: not a device name ("gpu"), or a device this machine lacks ("cuda" without
            a GPU, "cuda:7" with one GPU); the message is one sentence naming it.
    """
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if local_rank is None:
            return torch.device("cuda")
        device = torch.device("cuda", local_rank)
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"{str(device)!r} is not a device name; expected cpu, cuda or cuda:N."
        ) from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        backend = getattr(torch, resolved.type, None)
        available = getattr(backend, "is_available", None)
        if resolved.type == "meta" or available is None or not available():
            raise DeviceError(
                f"{str(device)!r} is not a device this program can run on here; use cpu or cuda."
            )
        return resolved
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(
            f"{str(device)!r} names a CUDA device, but torch {torch.__version__} sees none on "
            "this machine; use cpu."
        )
    if resolved.index is not None and resolved.index >= count:
        raise DeviceError(
            f"{str(device)!r} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}."
        )
    return resolved


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype to run in; on a CPU, half precisions fall back to fp32 with one log line."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if device.type == "cpu" and dtype != torch.float32:
        logger.warning(
            "%s requested on a CPU: running in fp32 (half precision is slow or unsupported there)",
            precision,
        )
        return torch.float32
    return dtype

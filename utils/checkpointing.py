"""Training checkpoints that survive a crash at any moment.

Layout under ``runs/<exp_name>/``:
  ckpt_latest/  DeepSpeed checkpoint written at the end of every epoch (what auto-resume uses)
  ckpt_model/   the best one by validation gIoU (every epoch with --no_eval), as the original;
                ``python zero_to_fp32.py . ../pytorch_model.bin`` works inside it
  best.json     epoch, gIoU and cIoU of ckpt_model

Every checkpoint is written to ``<name>.tmp`` and swapped in by renames; the previous one stays as
``<name>.old`` until the new one is in place. ckpt_model is a hard-linked copy of ckpt_latest, so
it costs no extra disk.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from utils.distributed import barrier

LATEST = "ckpt_latest"
BEST = "ckpt_model"
COMPAT_SCRIPT = Path(__file__).with_name("zero_to_fp32_compat.py")


def _swap_in(staged: Path, final: Path) -> None:
    """Replace ``final`` by ``staged``; a crash leaves either the old or the new one findable."""
    previous = final.with_name(final.name + ".old")
    if previous.exists():
        shutil.rmtree(previous)
    if final.exists():
        final.rename(previous)
    staged.rename(final)
    if previous.exists():
        shutil.rmtree(previous)


def save_checkpoint(engine, log_dir: Path, client_state: dict[str, Any], is_main: bool) -> Path:
    """Write ckpt_latest atomically (every rank calls this: ZeRO state is sharded)."""
    final = log_dir / LATEST
    staged = log_dir / (LATEST + ".tmp")
    if is_main and staged.exists():
        shutil.rmtree(staged)
    barrier()
    tag = f"global_step{client_state['global_step']}"
    engine.save_checkpoint(str(staged), tag=tag, client_state=client_state)
    barrier()
    if is_main:
        shutil.copyfile(COMPAT_SCRIPT, staged / "zero_to_fp32.py")
        _swap_in(staged, final)
    barrier()
    return final


def promote_to_best(log_dir: Path, metrics: dict[str, Any], is_main: bool) -> None:
    """Make ckpt_model a hard-linked copy of ckpt_latest and record its metrics."""
    if is_main:
        staged = log_dir / (BEST + ".tmp")
        if staged.exists():
            shutil.rmtree(staged)
        shutil.copytree(log_dir / LATEST, staged, copy_function=_link_or_copy)
        _swap_in(staged, log_dir / BEST)
        write_json_atomic(log_dir / "best.json", metrics)
    barrier()


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # file systems without hard links
        shutil.copy2(source, destination)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(partial, path)


def find_resume_checkpoint(log_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run: ckpt_latest, its pre-swap copy, or ckpt_model."""
    for name in (LATEST, LATEST + ".old", BEST, BEST + ".old"):
        candidate = log_dir / name
        if (candidate / "latest").is_file():
            return candidate
    return None

"""The run folder of train_ds.py (``--log_base_dir/--exp_name``): a run's own, or refused.

A run writes ``lisa_run.json`` into its folder when it creates it; a folder with that marker is an
earlier run of this project's and is used again (auto-resume continues it). A folder without the
marker is used only when it holds nothing but names a run writes (a run from before the marker
existed); one that holds other files is refused unless ``--overwrite``, which lets the run write
its own names beside them (nothing else there is replaced or deleted). The run folder may not be,
nor lie inside, an input (--version, --vision-tower, --dataset_dir, --weight, --vision_pretrained).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from utils.output_dir import OutputDirError, check_apart_from_inputs, write_json_atomic

RUN_MARKER = "lisa_run.json"
# What a run writes into its folder (utils.checkpointing, TensorBoard), with the temporary names
# of those writes, and the consolidated weights the README has users write there.
RUN_NAMES = ("ckpt_latest", "ckpt_model", "best.json", "last_epoch.json", "pytorch_model.bin")
TEMPORARY_SUFFIXES = ("", ".tmp", ".old", ".partial")
TENSORBOARD_PREFIX = "events.out.tfevents."
FLAG = "--log_base_dir/--exp_name"


def is_run_entry(name: str) -> bool:
    """Whether a top-level name of a run folder is one a run writes."""
    if name == RUN_MARKER or name.startswith(TENSORBOARD_PREFIX):
        return True
    return any(name == base + suffix for base in RUN_NAMES for suffix in TEMPORARY_SUFFIXES)


def check_run_dir(
    run_dir: Path, inputs: Mapping[str, str | os.PathLike | None], *, overwrite: bool
) -> None:
    """Refuse a run folder that is a file, that is or lies inside an input, that holds files of
    something else, or that cannot be created. Reads only; every rank may call it.

    Raises:
        OutputDirError: one sentence naming the folder and what is wrong.
    """
    shown = f"the run folder {run_dir} ({FLAG})"
    target = run_dir.resolve()
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"{shown} is a file; expected a folder.")
    # an input inside the run folder (--weight runs/x/pytorch_model.bin) is fine: a run replaces
    # only its own names
    check_apart_from_inputs(run_dir, FLAG, inputs, refuse_containing=False, subject=shown)
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise OutputDirError(f"{shown} cannot be created: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"{shown} cannot be written: {existing} is not writable.")
    if existing != target or (target / RUN_MARKER).is_file() or overwrite:
        return
    foreign = sorted(name for name in os.listdir(target) if not is_run_entry(name))
    if foreign:
        raise OutputDirError(
            f"{shown} holds {len(foreign)} file(s) that no training run wrote (e.g. {foreign[0]}) "
            f"and no {RUN_MARKER}; choose another --exp_name, or pass --overwrite to write the "
            "run's files beside them."
        )


def create_run_dir(run_dir: Path) -> None:
    """Create the run folder and its marker (the main process only).

    Raises:
        OutputDirError: the folder or the marker cannot be written.
    """
    marker = run_dir / RUN_MARKER
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_json_atomic(marker, {"written_by": "train_ds.py", "created": created})
    except OSError as error:
        raise OutputDirError(
            f"the run folder {run_dir} ({FLAG}) cannot be written ({error.strerror or error})."
        ) from None

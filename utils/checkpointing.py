"""Training checkpoints that survive a kill at any moment and a full disk.

Layout under ``runs/<exp_name>/``:
  ckpt_latest/  DeepSpeed checkpoint written at the end of every epoch (what auto-resume uses)
  ckpt_model/   the best one by validation gIoU (every epoch with --no_eval), as the original;
                ``python zero_to_fp32.py . ../pytorch_model.bin`` works inside it
  best.json     epoch, gIoU and cIoU of ckpt_model

Every checkpoint is written to ``<name>.tmp`` and swapped in by renames; the previous one stays as
``<name>.old`` until the new one is in place. ckpt_model is a hard-linked copy of ckpt_latest, so
it costs no extra disk. Each checkpoint folder holds ``lisa_checkpoint.json`` beside DeepSpeed's
``latest``: its step, the settings it can only be resumed with, and, when it is the best so far,
the metrics it is promoted with. That makes every interruption repairable at start-up
(:func:`finish_interrupted_saves`): a half-written ``.tmp`` is removed, a swap is rolled back, and a
promotion whose checkpoint was written is completed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from utils.distributed import barrier
from utils.errors import CheckpointError, UsageError

LATEST = "ckpt_latest"
BEST = "ckpt_model"
BEST_METRICS = "best.json"
RECORD = "lisa_checkpoint.json"
COMPAT_SCRIPT = Path(__file__).with_name("zero_to_fp32_compat.py")
# After a write failed for want of space a disk has (almost) nothing left; torch's zip writer
# does not keep the errno, so the free space tells it.
LOW_SPACE_BYTES = 64 * 2**20
# Settings a checkpoint can only be resumed with: they decide which tensors exist, their shapes,
# and how the optimizer state is split among the processes.
MUST_MATCH = (
    "world_size",
    "zero_stage",
    "trainable",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "out_dim",
    "image_size",
)
# Settings that may change on resume, at the price of a run that differs from the interrupted one.
SHOULD_MATCH = (
    "precision",
    "batch_size",
    "grad_accumulation_steps",
    "steps_per_epoch",
    "lr",
    "lora_dropout",
    "seed",
)


class CheckpointSpaceError(OSError):
    """No space left to write a checkpoint; ``str(error)`` is one sentence."""


# ------------------------------------------------------------------------------------------------
# Writing


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


def save_checkpoint(
    engine, log_dir: Path, client_state: dict[str, Any], is_main: bool, record: dict[str, Any]
) -> Path:
    """Write ckpt_latest atomically (every rank calls this: ZeRO state is sharded).

    ``record`` is stored as ``lisa_checkpoint.json`` (see the module docstring). A write that
    fails for want of space removes the partial ``ckpt_latest.tmp`` and raises
    :class:`CheckpointSpaceError`; the previous ckpt_latest stays as it was.
    """
    final = log_dir / LATEST
    staged = log_dir / (LATEST + ".tmp")
    if is_main and staged.exists():
        shutil.rmtree(staged)
    barrier()
    tag = f"global_step{client_state['global_step']}"
    try:
        engine.save_checkpoint(str(staged), tag=tag, client_state=client_state)
        barrier()
        if is_main:
            shutil.copyfile(COMPAT_SCRIPT, staged / "zero_to_fp32.py")
            write_json_atomic(staged / RECORD, record)
            _swap_in(staged, final)
    except (OSError, RuntimeError) as error:
        _abandon(staged, final)
        if is_out_of_space(error, log_dir):
            raise CheckpointSpaceError(
                errno.ENOSPC,
                f"no space left on the disk of {log_dir} while writing the checkpoint of step "
                f"{client_state['global_step']}: the partial {staged.name} was removed, "
                f"{_describe(final)}; free some space and run the same command to resume",
            ) from None
        raise
    barrier()
    return final


def _abandon(staged: Path, final: Path) -> None:
    """After a failed write: remove the partial folder and undo a half-done swap."""
    shutil.rmtree(staged, ignore_errors=True)
    previous = final.with_name(final.name + ".old")
    if previous.exists() and not final.exists():
        previous.rename(final)


def _describe(final: Path) -> str:
    tag = latest_tag(final)
    if tag is None:
        return "there is no earlier checkpoint"
    return f"{final} (step {tag.removeprefix('global_step')}) is intact"


def is_out_of_space(error: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of disk space (or quota)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__ or cause.__context__
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def promote_to_best(log_dir: Path, metrics: dict[str, Any], is_main: bool) -> Path:
    """Make ckpt_model a hard-linked copy of ckpt_latest and record its metrics in best.json."""
    if is_main:
        _promote(log_dir, metrics)
    barrier()
    return log_dir / BEST


def _promote(log_dir: Path, metrics: dict[str, Any]) -> None:
    staged = log_dir / (BEST + ".tmp")
    if staged.exists():
        shutil.rmtree(staged)
    try:
        shutil.copytree(log_dir / LATEST, staged, copy_function=_link_or_copy)
        _swap_in(staged, log_dir / BEST)
        write_json_atomic(log_dir / BEST_METRICS, metrics)
    except OSError as error:
        _abandon(staged, log_dir / BEST)
        if is_out_of_space(error, log_dir):
            raise CheckpointSpaceError(
                errno.ENOSPC,
                f"no space left on the disk of {log_dir} while making {BEST}: the partial "
                f"{staged.name} was removed, {log_dir / LATEST} is intact; free some space "
                "and run the same command to finish",
            ) from None
        raise


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError as error:  # file systems without hard links
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        shutil.copy2(source, destination)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------
# Start-up: repair what a kill left, find a complete checkpoint


def latest_tag(folder: Path) -> str | None:
    marker = folder / "latest"
    try:
        return marker.read_text().strip() if marker.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``lisa_checkpoint.json`` of a checkpoint folder (None for one written without it)."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finish_interrupted_saves(log_dir: Path) -> list[str]:
    """Repair what a kill during a save left in a run folder (main process only); returns one
    line per repair. Partial ``.tmp`` folders are removed, a half-done swap is rolled back to the
    previous checkpoint, and a promotion to ckpt_model that did not finish is done again."""
    notes = []
    for name in (LATEST, BEST):
        final = log_dir / name
        staged, previous = log_dir / (name + ".tmp"), log_dir / (name + ".old")
        if staged.is_dir():
            shutil.rmtree(staged)
            notes.append(f"removed {staged}, a checkpoint whose writing was interrupted")
        if previous.is_dir():
            if final.exists():
                shutil.rmtree(previous)
            else:
                previous.rename(final)
                notes.append(f"restored {final} from {previous.name} (a swap was interrupted)")
    for partial in (log_dir / BEST_METRICS, log_dir / "last_epoch.json"):
        partial.with_name(partial.name + ".partial").unlink(missing_ok=True)
    latest = log_dir / LATEST
    record = read_record(latest)
    metrics = (record or {}).get("best_metrics")
    if metrics is None or checkpoint_problem(latest) is not None:
        return notes
    if latest_tag(log_dir / BEST) != latest_tag(latest) or (
        _read_json(log_dir / BEST_METRICS) != metrics
    ):
        _promote(log_dir, metrics)
        notes.append(
            f"completed the interrupted promotion of {latest} ({latest_tag(latest)}) to {BEST}"
        )
    return notes


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete DeepSpeed checkpoint (one clause), or None if it is.

    Checks the ``latest`` marker, its tag folder, the model and optimizer state files (one per
    process, as many as the record says) and that each zip-format file is whole (its central
    directory, written last, is readable). Nothing is unpickled.
    """
    if not folder.is_dir():
        return f"{folder} is not a folder"
    tag = latest_tag(folder)
    if not tag:
        return f"{folder} has no 'latest' file (it is not a DeepSpeed checkpoint folder)"
    step_dir = folder / tag
    if not step_dir.is_dir():
        return f"{folder}/latest names {tag}, but {step_dir} is missing"
    model_files = sorted(step_dir.glob("*model_states.pt"))
    optim_files = sorted(step_dir.glob("*optim_states.pt"))
    if not model_files:
        return f"{step_dir} has no model states file (*model_states.pt)"
    settings = (read_record(folder) or {}).get("settings") or {}
    processes = settings.get("world_size") if isinstance(settings.get("world_size"), int) else 1
    for kind, files, expected in (
        ("model", model_files, processes if settings.get("zero_stage") == 3 else 1),
        ("optimizer", optim_files, processes),
    ):
        if len(files) < expected:
            return (
                f"{step_dir} holds {len(files)} {kind} state files where the run that wrote it "
                f"had {expected}"
            )
    for path in model_files + optim_files:
        if not _whole_file(path):
            return f"{path} is truncated or damaged"
    return None


def _whole_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"PK\x03\x04":  # torch's legacy (non-zip) format: only emptiness shows
            return len(magic) > 0
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
        return True
    except (OSError, zipfile.BadZipFile):
        return False


def find_resume_checkpoint(log_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint of a run (ckpt_latest, else ckpt_model) and one line for
    each incomplete one passed over. Raises :class:`CheckpointError` when checkpoints exist but
    none is complete (starting over would replace them)."""
    problems = []
    for name in (LATEST, LATEST + ".old", BEST, BEST + ".old"):
        candidate = log_dir / name
        if not candidate.exists():
            continue
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate, [f"not resuming from an incomplete checkpoint: {p}" for p in problems]
        problems.append(problem)
    if problems:
        raise CheckpointError(
            f"{log_dir} holds no complete checkpoint to resume from ({problems[0]}); "
            "pass --no-auto_resume to start this run over"
        )
    return None, []


# ------------------------------------------------------------------------------------------------
# Settings a checkpoint must be resumed with


def settings_differences(saved: dict[str, Any], current: dict[str, Any]) -> tuple[str, str]:
    """(must-match differences, should-match differences) between a checkpoint's settings and this
    run's, each a short clause ('' when there is none). Settings hold the flags of MUST_MATCH and
    SHOULD_MATCH and ``parameters``: name -> [shape, trained] of every model parameter."""

    def clause(keys) -> str:
        parts = [
            f"{_flag(key)} {saved[key]} there, {current.get(key)} here"
            for key in keys
            if key in saved and saved[key] != current.get(key)
        ]
        return "; ".join(parts)

    must = clause(MUST_MATCH)
    parameters = _parameter_difference(saved.get("parameters"), current.get("parameters"))
    if parameters and not must:  # a flag difference already explains different tensors
        must = parameters
    return must, clause(SHOULD_MATCH)


def _flag(key: str) -> str:
    return "world size" if key == "world_size" else f"--{key}"


def _parameter_difference(saved: Any, current: Any) -> str:
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return ""
    only_saved = [name for name in saved if name not in current]
    only_current = [name for name in current if name not in saved]
    if only_saved or only_current:
        examples = ", ".join((only_saved + only_current)[:3])
        return (
            f"{len(only_saved)} parameters only there and {len(only_current)} only here "
            f"(e.g. {examples})"
        )
    changed = [name for name in saved if list(saved[name]) != list(current[name])]
    if changed:
        name = changed[0]
        (old_shape, old_trained), (new_shape, new_trained) = saved[name], current[name]
        if old_shape != new_shape:
            return f"{name} has shape {old_shape} there, {new_shape} here"
        state = {True: "trained", False: "frozen"}
        return f"{name} is {state[bool(old_trained)]} there, {state[bool(new_trained)]} here"
    return ""


# ------------------------------------------------------------------------------------------------
# Resuming


def choose_resume_checkpoint(
    log_dir: Path, explicit: str, auto: bool
) -> tuple[Path | None, list[str]]:
    """The folder to resume from (``--resume``, else with ``auto`` the run's newest complete
    checkpoint) and one line per incomplete checkpoint passed over. An explicit folder that is
    not complete raises :class:`CheckpointError` (a different one is never used instead)."""
    if explicit:
        problem = checkpoint_problem(Path(explicit))
        if problem is not None:
            raise CheckpointError(f"--resume: {problem}")
        return Path(explicit), []
    if not auto:
        return None, []
    return find_resume_checkpoint(log_dir)


def check_resume_settings(folder: Path, settings: dict[str, Any]) -> str | None:
    """Compare this run's settings with those ``folder`` was written with (nothing to compare for
    a checkpoint without a record). Raises :class:`CheckpointError` when it cannot be resumed
    with them; returns one warning line when it can, but the run will differ."""
    saved = (read_record(folder) or {}).get("settings")
    if not isinstance(saved, dict):
        return None
    must, should = settings_differences(saved, settings)
    if must:
        raise CheckpointError(
            f"{folder} was written by a run with other settings ({must}); resume it with that "
            "run's flags, or start a new run (another --exp_name, or --no-auto_resume)"
        )
    if should:
        return (
            f"resuming {folder} with other settings than the run that wrote it ({should}): "
            "the result will differ from that of an uninterrupted run"
        )
    return None


def load_resume_checkpoint(engine, folder: Path) -> dict[str, Any]:
    """``engine.load_checkpoint`` with every file read by restricted unpickling (see
    utils.deepspeed_safe_loading); returns the client state. A file that holds other objects, is
    damaged, or does not fit the model raises a :class:`~utils.errors.UsageError`."""
    import pickle

    from utils.deepspeed_safe_loading import (
        UnsafeCheckpointError,
        first_refused_file,
        forced_weights_only,
        refusal_sentence,
        use_weights_only_loading,
    )

    use_weights_only_loading(engine)
    try:
        with forced_weights_only():  # also DeepSpeed's few reads that bypass its engine
            load_path, client_state = engine.load_checkpoint(str(folder))
    except UsageError:
        raise
    except pickle.UnpicklingError:
        raise UnsafeCheckpointError(
            refusal_sentence(first_refused_file(folder) or folder)
        ) from None
    except (RuntimeError, KeyError, ValueError, AssertionError) as error:
        summary = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"{folder} does not fit this model ({type(error).__name__}: {summary})"
        ) from None
    if load_path is None:
        raise CheckpointError(f"{folder} could not be loaded (DeepSpeed found no checkpoint in it)")
    return client_state or {}

"""Reading DeepSpeed checkpoints without running code from them.

DeepSpeed's own checkpoint engine reads its ``*.pt`` files with full unpickling, so a crafted file
in a resume folder could run any code. Here every file is read with ``weights_only=True``:
tensors, plain containers and numbers, plus the few DeepSpeed classes its training state holds.
That list was found by saving real checkpoints of this project's engine (ZeRO-2 and ZeRO-3, fp32
and bf16, one and two processes) and asking ``torch.serialization.get_unsafe_globals_in_checkpoint``
which globals the restricted unpickler would refuse:

* ``LossScaler`` (and, for fp16 runs, ``DynamicLossScaler``): the ZeRO optimizer pickles its loss
  scaler object. Only its attributes come back (numbers, bools, a torch dtype); no method runs.
* ``ZeroStageEnum``: the ZeRO stage is stored as this int enum; loading it calls the enum with
  the stored number.
* ``fragment_address``: ZeRO-2 and the bf16 optimizer store, per parameter, a dataclass of two
  ints (``numel``, ``start``) giving its place in the flat partition.

The model-state files (``*model_states.pt``) hold only tensors and plain data. Nothing else is
allowed: a file naming any other global is refused with one sentence that names it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine

from utils.errors import UsageError


class UnsafeCheckpointError(UsageError):
    """A checkpoint file holds objects whose loading could run code, or is not readable."""


def deepspeed_state_types() -> list[type]:
    """The DeepSpeed classes its checkpoints hold besides tensors and plain data (see above)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load`` restricted to tensors, plain data and :func:`deepspeed_state_types`."""
    try:
        with torch.serialization.safe_globals(deepspeed_state_types()), warnings.catch_warnings():
            # a file pickled with a newer protocol than torch's default is still read in full
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeCheckpointError(refusal_sentence(Path(path))) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise UnsafeCheckpointError(
            f"{path} is damaged or not a torch checkpoint file ({type(error).__name__})"
        ) from None


def refusal_sentence(path: Path) -> str:
    """One sentence naming the file and the first global it would need. (Torch's own message
    is not shown: it suggests turning the protection off.)"""
    names = refused_globals(path)
    what = f"refers to {names[0]}" if names else "holds objects other than tensors and plain data"
    return (
        f"{path} is not loaded: it {what}, and unpickling it could run code (a checkpoint of "
        "this project holds only tensors and training state)"
    )


@contextlib.contextmanager
def forced_weights_only() -> Iterator[None]:
    """Make every ``torch.load`` inside the block restricted, even one that asks for full
    unpickling (DeepSpeed's ``zero_to_fp32`` helpers and its universal-checkpoint reader do),
    through torch's own switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``; DeepSpeed's state classes stay
    readable."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(deepspeed_state_types()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def refused_globals(path: Path) -> list[str]:
    """The globals a checkpoint file names that restricted loading refuses (a scan of its pickled
    record: nothing is unpickled). Empty for a legacy-format or damaged file, which cannot be
    scanned."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # zipfile, pickle or OS errors of a file that is not a zip checkpoint
        return []
    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in deepspeed_state_types()}
    return [name for name in names if name not in allowed]


def first_refused_file(folder: Path) -> Path | None:
    """The first ``*.pt`` file under ``folder`` that names a refused global."""
    return next((path for path in sorted(folder.rglob("*.pt")) if refused_globals(path)), None)


class WeightsOnlyCheckpointEngine(CheckpointEngine):
    """DeepSpeed's checkpoint engine with restricted loading; saving is left to the engine
    DeepSpeed configured (``inner``), whichever it is."""

    def __init__(self, inner: CheckpointEngine) -> None:
        super().__init__()
        self.inner = inner
        self.name = f"WeightsOnly({inner.name})"

    def load(self, path: str, map_location=None):
        return load_weights_only(path, map_location=map_location)

    # everything else is the configured engine's
    def create(self, info):
        return self.inner.create(info)

    def save(self, state_dict, path: str):
        return self.inner.save(state_dict, path)

    def commit(self, info):
        return self.inner.commit(info)

    def makedirs(self, path, exist_ok=False):
        return self.inner.makedirs(path, exist_ok=exist_ok)

    def is_data_parallel_writer(self, dp_rank):
        return self.inner.is_data_parallel_writer(dp_rank)

    def is_decoupled(self):
        return self.inner.is_decoupled()

    def set_commit_info(self, info):
        return self.inner.set_commit_info(info)

    def get_commit_info(self):
        return self.inner.get_commit_info()

    def cleanup(self):
        return self.inner.cleanup()

    def preserves_storage_sharing(self):
        return self.inner.preserves_storage_sharing()


def use_weights_only_loading(engine) -> None:
    """Route every checkpoint file a DeepSpeed engine reads through restricted loading.

    ``engine.checkpoint_engine`` is the object DeepSpeed asks to read and write each file
    (DeepSpeed has no constructor argument for it; its config only picks among its own engines).
    """
    if not isinstance(engine.checkpoint_engine, WeightsOnlyCheckpointEngine):
        engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine.checkpoint_engine)

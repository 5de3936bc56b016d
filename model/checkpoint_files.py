"""Reading checkpoint files: tensor names and shapes without the tensors, or whole state dicts.

Used before a model is built, to size its parts (SAM) from the weights it will receive, and to
load ``--weight`` files. Formats: safetensors and torch pickles (``pytorch_model.bin``), single
files or sharded with an index json, as transformers writes them. Pickles are read with
``weights_only=True``: a file that needs anything beyond tensors and plain containers is refused.

Every problem with a file is a :class:`CheckpointError` whose message is one sentence naming it.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open

from model.config import LisaConfig
from utils.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
LISTED_KEYS = 3  # how many tensor names a message lists


def first_line(error: BaseException) -> str:
    """A library's error message cut to its first sentence (some span a page)."""
    text = str(error).strip().split("\n", 1)[0].split(". ", 1)[0]
    return text.rstrip(".") or type(error).__name__


def listed(names: Iterable[str]) -> str:
    """The first few of ``names``, comma-separated, with how many more there are."""
    names = list(names)
    shown = ", ".join(names[:LISTED_KEYS])
    return shown + (f" and {len(names) - LISTED_KEYS} more" if len(names) > LISTED_KEYS else "")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist (or is not a regular file).")


def _torch_load(path: Path, mmap: bool) -> object:
    """``torch.load(weights_only=True)``, with every failure turned into one sentence."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes on pickle protocols, not about this file
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # the safe unpickler met a class or function to import
            raise CheckpointError(
                f"{path} holds Python objects other than tensors, which are not loaded because "
                "unpickling them can run code; save a state dict of tensors (torch.save of "
                "model.state_dict(), or safetensors)."
            ) from None
        raise CheckpointError(
            f"{path} is not a torch checkpoint (a plain pickle, or not a pickle at all); "
            "expected a state dict saved with torch.save, or a safetensors file."
        ) from None
    except (RuntimeError, zipfile.BadZipFile) as error:
        if mmap and "mmap can only be used" in str(error):
            raise  # a legacy (non-zip) pickle: the caller reads it without mmap
        raise CheckpointError(
            f"{path} is truncated or corrupt: it cannot be read as a torch checkpoint "
            f"({first_line(error)})."
        ) from None
    except (EOFError, KeyError, ValueError, TypeError, OSError, AttributeError) as error:
        raise CheckpointError(
            f"{path} is not a torch checkpoint or is truncated ({type(error).__name__}: "
            f"{first_line(error)})."
        ) from None


def _as_state_dict(path: Path, state: object) -> dict[str, torch.Tensor]:
    """The mapping of names to tensors in a loaded file (under "state_dict" when nested)."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, torch.Tensor):
        raise CheckpointError(
            f"{path} holds a single tensor of shape {list(state.shape)}, not a state dict "
            "(a mapping of parameter names to tensors)."
        )
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a state dict (a mapping of parameter "
            "names to tensors)."
        )
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not state:
        what = f"entries that are not tensors ({listed(not_tensors)})" if state else "no tensor"
        raise CheckpointError(f"{path} holds {what}; expected a state dict of tensors.")
    return state


def _read_torch_file(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        state = _torch_load(path, mmap=mmap)
    except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
        state = _torch_load(path, mmap=False)
    return _as_state_dict(path, state)


def _safetensors_failure(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is truncated or corrupt: it cannot be read as a safetensors file "
        f"({first_line(error)})."
    )


def read_tensor_shapes(path: str | Path) -> dict[str, torch.Size]:
    """name -> shape of one weight file (.safetensors, or a torch pickle loaded memory-mapped).

    Raises:
        CheckpointError: the file is absent, corrupt, truncated, or holds no state dict.
    """
    path = Path(path)
    _require_file(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {
                    name: torch.Size(handle.get_slice(name).get_shape())
                    for name in handle.keys()  # noqa: SIM118
                }
        except (SafetensorError, OSError) as error:
            raise _safetensors_failure(path, error) from None
    return {name: tensor.shape for name, tensor in _read_torch_file(path, mmap=True).items()}


def _index_shards(index: Path) -> list[str]:
    """The shard file names an index json lists."""
    try:
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        return sorted({str(name) for name in shards})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{index} is not a readable weight index (a json object with a 'weight_map'): "
            f"{type(error).__name__}: {first_line(error)}."
        ) from None


def weight_files_label(directory: str | Path) -> Path:
    """The file a message about a checkpoint directory's weights should name (index or file)."""
    directory = Path(directory)
    for name in (*INDEX_FILES, *WEIGHT_FILES):
        if (directory / name).is_file():
            return directory / name
    return directory


def read_checkpoint_shapes(directory: str | Path) -> dict[str, torch.Size]:
    """name -> shape over all weight files of a Hugging Face checkpoint directory ({} if none).

    Raises:
        CheckpointError: an index names a missing shard, or a weight file cannot be read.
    """
    directory = Path(directory)
    for index_name in INDEX_FILES:
        index = directory / index_name
        if index.is_file():
            shapes: dict[str, torch.Size] = {}
            for shard in _index_shards(index):
                if not (directory / shard).is_file():
                    raise CheckpointError(f"{index} lists the shard {shard}, which does not exist.")
                shapes.update(read_tensor_shapes(directory / shard))
            return shapes
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return read_tensor_shapes(directory / name)
    return {}


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file (.safetensors, or a torch pickle read with weights_only).

    Raises:
        CheckpointError: the file is absent, corrupt or truncated, or holds something other
            than a state dict (a bare tensor, other Python objects).
    """
    path = Path(path)
    _require_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise _safetensors_failure(path, error) from None
    return _read_torch_file(path, mmap=False)


def _collapsed(error: BaseException) -> str:
    """An error message on one line, whitespace collapsed."""
    return " ".join(str(error).split()).rstrip(".") or type(error).__name__


def read_config(directory: str | Path) -> LisaConfig:
    """The ``config.json`` of a checkpoint directory, checked.

    Raises:
        CheckpointError: absent, not json, not an object, or a setting of the wrong type.
    """
    path = Path(directory) / "config.json"
    _require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not valid json ({_collapsed(error)}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a json {type(data).__name__}, not an object of model settings."
        )
    try:
        return LisaConfig.from_pretrained(directory)
    except (StrictDataclassError, OSError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path} has an invalid setting: {_collapsed(error)}.") from None

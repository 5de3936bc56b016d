"""Reading tensor names and shapes from checkpoint files without loading the tensors.

Used before a model is built, to size its parts (SAM) from the weights it will receive.
Formats: safetensors and torch pickles (``pytorch_model.bin``), single files or sharded with an
index json, as transformers writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_tensor_shapes(path: str | Path) -> dict[str, torch.Size]:
    """name -> shape of one weight file (.safetensors, or a torch pickle loaded memory-mapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return {name: torch.Size(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {
        name: tensor.shape for name, tensor in state.items() if isinstance(tensor, torch.Tensor)
    }


def read_checkpoint_shapes(directory: str | Path) -> dict[str, torch.Size]:
    """name -> shape over all weight files of a Hugging Face checkpoint directory ({} if none)."""
    directory = Path(directory)
    for index_name in INDEX_FILES:
        index = directory / index_name
        if index.is_file():
            shard_names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            shapes: dict[str, torch.Size] = {}
            for shard in shard_names:
                shapes.update(read_tensor_shapes(directory / shard))
            return shapes
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return read_tensor_shapes(directory / name)
    return {}


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file (.safetensors, or a torch pickle read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state

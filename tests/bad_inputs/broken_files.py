"""Broken inputs shared by the bad-input tests of the readers: checkpoints that are incomplete,
corrupt or of another shape (built from the tiny reference checkpoint), ReasonSeg annotations
with fields of the wrong kind, and the checks every refusal must pass."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

# --- what a refusal looks like ----------------------------------------------------------------


def one_line(text: str, *pieces: str) -> str:
    """The only line of ``text``, with no traceback and every piece in it."""
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    for piece in pieces:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every regular file under ``root`` (FIFOs and links to nowhere are not read)."""
    return {
        path: path.read_bytes()
        for path in sorted(root.rglob("*"))
        if not path.is_symlink() and path.is_file()
    }


def fifo(path: Path) -> Path:
    """A named pipe nobody writes to: a reader that opens it waits for ever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def link_loop(path: Path) -> Path:
    """A symbolic link that points at itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.name, path)
    return path


def png_bomb(path: Path, side: int = 40000) -> Path:
    """A valid PNG header announcing side x side pixels (over Pillow's bomb limit), tiny data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )
    return path


class RunsCode:
    """A pickle that creates a file when it is loaded with full unpickling."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# --- ReasonSeg annotations --------------------------------------------------------------------

SQUARE = [[1, 1], [6, 1], [6, 4], [1, 4]]


def annotation(**fields) -> dict:
    """A valid ReasonSeg annotation for an 8x6 image, with ``fields`` replaced."""
    data = {
        "text": ["the grey square"],
        "is_sentence": False,
        "shapes": [{"label": "target", "points": SQUARE, "shape_type": "polygon"}],
    }
    data.update(fields)
    return data


def with_points(points) -> dict:
    return annotation(shapes=[{"label": "target", "points": points}])


# name -> (json text, a piece of the one-sentence reason)
BAD_ANNOTATIONS: dict[str, tuple[str, str]] = {
    "text null": (json.dumps(annotation(text=None)), "'text' must be a string or a list"),
    "text number": (json.dumps(annotation(text=42)), "'text' must be a string or a list"),
    "text list of numbers": (json.dumps(annotation(text=[1, 2])), "'text' must be a string"),
    "text object": (json.dumps(annotation(text={"q": "a"})), "'text' must be a string"),
    "text empty string": (json.dumps(annotation(text=["  "])), "'text' holds an empty query"),
    "is_sentence string": (json.dumps(annotation(is_sentence="yes")), "'is_sentence' must be"),
    "is_sentence null": (json.dumps(annotation(is_sentence=None)), "'is_sentence' must be"),
    "points NaN": (json.dumps(with_points([[1, 1], [float("nan"), 1], [6, 4]])), "finite"),
    "points Infinity": (json.dumps(with_points([[1, 1], [float("inf"), 1], [6, 4]])), "finite"),
    "points strings": (json.dumps(with_points([["1", "1"], ["6", "1"], ["6", "4"]])), "finite"),
    "points booleans": (json.dumps(with_points([[True, False], [1, 1], [6, 4]])), "finite"),
    "points flat list": (json.dumps(with_points([1, 1, 6, 1, 6, 4])), "[x, y] pairs"),
    "points huge": (json.dumps(with_points([[1, 1], [1e300, 1], [6, 4]])), "finite"),
    "label number": (
        json.dumps(annotation(shapes=[{"label": 3, "points": SQUARE}])),
        "no string 'label'",
    ),
    "shape not an object": (json.dumps(annotation(shapes=[5])), "no string 'label'"),
    "top level list": ("[1, 2]", "expected an object with a 'shapes' list"),
}
# the ones the slower tools walk (one of each kind of field)
SOME_BAD_ANNOTATIONS = ("text null", "text number", "is_sentence string", "points NaN")


# --- checkpoints ------------------------------------------------------------------------------

Tensors = dict[str, torch.Tensor]


def copy_checkpoint_files(reference: Path, target: Path) -> Path:
    """The reference checkpoint's config and tokenizer files (no weights) in ``target``."""
    target.mkdir(parents=True)
    for path in reference.iterdir():
        if path.is_file() and path.name != "pytorch_model.bin":
            shutil.copy(path, target / path.name)
    return target


def _edit_weights(edit: Callable[[Tensors], None], file_name: str = "pytorch_model.bin"):
    def build(reference: Path, target: Path, marker: Path) -> None:
        state = torch.load(reference / "pytorch_model.bin", weights_only=True)
        edit(state)
        if file_name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in state.items()}, target / file_name)
        else:
            torch.save(state, target / file_name)

    return build


def _drop(*prefixes: str) -> Callable[[Tensors], None]:
    def edit(state: Tensors) -> None:
        for name in [n for n in state if n.startswith(prefixes)]:
            del state[name]

    return edit


def _reshape(name: str, shape: tuple[int, ...]) -> Callable[[Tensors], None]:
    def edit(state: Tensors) -> None:
        state[name] = torch.zeros(shape)

    return edit


def _add(name: str) -> Callable[[Tensors], None]:
    def edit(state: Tensors) -> None:
        state[name] = torch.zeros(4)

    return edit


def _add_partial_tower(state: Tensors) -> None:
    # one tensor of the vision tower: the file then claims to hold the tower, and lacks the rest
    state["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(32)


def _write_config(edit: Callable[[dict], object]):
    def build(reference: Path, target: Path, marker: Path) -> None:
        shutil.copy(reference / "pytorch_model.bin", target)
        config = json.loads((reference / "config.json").read_text())
        written = edit(config)
        (target / "config.json").write_text(
            written if isinstance(written, str) else json.dumps(config)
        )

    return build


def _truncated(file_name: str):
    def build(reference: Path, target: Path, marker: Path) -> None:
        _edit_weights(lambda state: None, file_name)(reference, target, marker)
        data = (target / file_name).read_bytes()
        (target / file_name).write_bytes(data[: len(data) // 2])

    return build


def _raw_weights(write: Callable[[Path, Path], None]):
    def build(reference: Path, target: Path, marker: Path) -> None:
        write(target / "pytorch_model.bin", marker)

    return build


def _missing_shard(reference: Path, target: Path, marker: Path) -> None:
    index = {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))


def _garbage_tokenizer(reference: Path, target: Path, marker: Path) -> None:
    shutil.copy(reference / "pytorch_model.bin", target)
    (target / "tokenizer.model").write_bytes(b"not a sentencepiece model")


def _incomplete_clip(reference: Path, target: Path, marker: Path) -> None:
    """The checkpoint whole, but its separately loaded vision tower lacks a tensor."""
    shutil.copy(reference / "pytorch_model.bin", target)
    clip = copy_checkpoint_files(reference / "clip", target / "clip")
    state = torch.load(reference / "clip" / "pytorch_model.bin", weights_only=True)
    del state["vision_model.post_layernorm.weight"]
    torch.save(state, clip / "pytorch_model.bin")


def _set(key: str, value) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config[key] = value

    return edit


Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
# name -> (builder(reference, target, marker), pieces of the message besides the file name,
#          the file the message names)
BROKEN_CHECKPOINTS: dict[str, tuple[Callable, tuple[str, ...], str]] = {
    "LLM tensor missing": (
        _edit_weights(_drop(Q_PROJ)),
        ("lacks 1 tensor", Q_PROJ),
        "pytorch_model.bin",
    ),
    "SAM tensor missing": (
        _edit_weights(_drop("model.visual_model.mask_decoder.iou_token")),
        ("lacks 1 tensor", "iou_token"),
        "pytorch_model.bin",
    ),
    "text_hidden_fcs half missing": (
        _edit_weights(_drop("model.text_hidden_fcs.0.0")),
        ("lacks 2 tensor", "text_hidden_fcs"),
        "pytorch_model.bin",
    ),
    "lm_head missing (safetensors)": (
        _edit_weights(_drop("lm_head"), "model.safetensors"),
        ("lacks 1 tensor", "lm_head.weight"),
        "model.safetensors",
    ),
    "vision tower partly in the file": (
        _edit_weights(_add_partial_tower),
        ("lacks", "model.vision_tower.vision_tower.vision_model"),
        "pytorch_model.bin",
    ),
    "unexpected tensor": (
        _edit_weights(_add("model.extra_head.weight")),
        ("does not have", "model.extra_head.weight"),
        "pytorch_model.bin",
    ),
    "LLM tensor of another shape": (
        _edit_weights(_reshape(Q_PROJ, (64, 32))),
        ("another shape", f"{Q_PROJ} is [64, 32] in the file, [64, 64] in the model"),
        "pytorch_model.bin",
    ),
    "SAM tensor of another shape": (
        _edit_weights(_reshape("model.visual_model.mask_decoder.iou_token.weight", (2, 3))),
        ("another shape", "iou_token"),
        "pytorch_model.bin",
    ),
    "vocab_size not the file's": (
        _write_config(_set("vocab_size", 600)),
        ("another shape", "embed_tokens"),
        "pytorch_model.bin",
    ),
    "LLaVA base (no SAM, no [SEG] head)": (
        _edit_weights(_drop("model.visual_model.", "model.text_hidden_fcs.")),
        ("no SAM and no [SEG] projection", "LLaVA base, not a LISA checkpoint"),
        "pytorch_model.bin",
    ),
    "config.json not json": (
        _write_config(lambda c: "{not json"),
        ("not valid json",),
        "config.json",
    ),
    "config.json empty": (_write_config(lambda c: ""), ("not valid json",), "config.json"),
    "config.json a list": (_write_config(lambda c: "[1, 2]"), ("json list",), "config.json"),
    "config.json wrong type": (
        _write_config(_set("hidden_size", "big")),
        ("invalid setting", "hidden_size"),
        "config.json",
    ),
    "safetensors truncated": (
        _truncated("model.safetensors"),
        ("truncated or corrupt",),
        "model.safetensors",
    ),
    "torch file truncated": (
        _truncated("pytorch_model.bin"),
        ("truncated or corrupt",),
        "pytorch_model.bin",
    ),
    "weights a text file": (
        _raw_weights(lambda path, marker: path.write_text("hello")),
        ("not a torch checkpoint",),
        "pytorch_model.bin",
    ),
    "weights a bare tensor": (
        _raw_weights(lambda path, marker: torch.save(torch.zeros(3), path)),
        ("single tensor", "not a state dict"),
        "pytorch_model.bin",
    ),
    "weights a pickle that runs code": (
        _raw_weights(lambda path, marker: torch.save({"w": RunsCode(marker)}, path)),
        ("Python objects other than tensors",),
        "pytorch_model.bin",
    ),
    "index names a missing shard": (
        _missing_shard,
        ("model-00002-of-00002.safetensors", "does not exist"),
        "model.safetensors.index.json",
    ),
    "no weight file": (lambda r, t, m: None, ("holds no weights",), ""),
    "tokenizer.model garbage": (_garbage_tokenizer, ("tokenizer",), "tokenizer.model"),
    "vision tower directory incomplete": (
        _incomplete_clip,
        ("vision tower", "lacks", "post_layernorm"),
        "clip",
    ),
}


def broken_checkpoint(reference: Path, root: Path, name: str) -> tuple[Path, Path]:
    """(checkpoint directory, vision tower directory) of the case ``name``, built once."""
    target = root / re.sub(r"\W+", "_", name).strip("_")
    clip = target / "clip" if name == "vision tower directory incomplete" else reference / "clip"
    if not target.exists():
        build, _, _ = BROKEN_CHECKPOINTS[name]
        copy_checkpoint_files(reference, target)
        build(reference, target, root / "code_ran")
    return target, clip


# --- files given as --weight (a state dict expected) -------------------------------------


def plain_pickle(path, marker):
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))


WEIGHT_FILES = {
    "bare tensor": (lambda p, m: torch.save(torch.zeros(3, 4), p), "single tensor of shape [3, 4]"),
    "pickle of an object": (
        lambda p, m: torch.save({"w": RunsCode(m)}, p),
        "Python objects other than tensors",
    ),
    "pickle of a list": (lambda p, m: torch.save([torch.zeros(2)], p), "holds a list"),
    "plain pickle": (plain_pickle, "not a torch checkpoint"),
    "dict with numbers": (
        lambda p, m: torch.save({"w": torch.zeros(2), "step": 3}, p),
        "entries that are not tensors (step)",
    ),
    "empty dict": (lambda p, m: torch.save({}, p), "holds no tensor"),
    "text": (lambda p, m: p.write_text("weights"), "not a torch checkpoint"),
    "empty file": (lambda p, m: p.write_bytes(b""), "not a torch checkpoint"),
    "truncated": (
        lambda p, m: p.write_bytes(_saved_bytes({"w": torch.zeros(100)})[:300]),
        "truncated or corrupt",
    ),
}


def _saved_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()

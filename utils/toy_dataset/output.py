"""Writing the toy tree: atomic files, a marker that says who owns the folders, no stale leftovers.

Every file goes to a hidden temporary name beside its final path and is renamed into place, so a
reader never sees half a file and an interrupted run leaves only complete files (and temporaries
that the next run removes). The marker file ``toy_dataset.json`` at the root records the
generator's parameters; without it the generator refuses to write into source folders that already
hold files, so real datasets are never mixed with or overwritten by toy data. With it, files a
previous run left in the toy folders and this run did not write (say, from a larger ``--num_train``)
are removed at the end, so the readers' globs see exactly this run's dataset.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MARKER_FILE = "toy_dataset.json"
# The top-level folders of the original README's tree that the generator writes.
TOY_FOLDERS = (
    "ade20k",
    "coco",
    "cocostuff",
    "llava_dataset",
    "mapillary",
    "reason_seg",
    "refer_seg",
    "vlpart",
)
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = 0  # 4:4:4: keeps the colours of small shapes (4:2:0 blurs them into the ground)
PICKLE_PROTOCOL = 2  # the protocol of the released refs(*).p files (written by Python 2)


class ToyDatasetError(Exception):
    """A request the generator cannot carry out; the message is one sentence for the user."""


def _encode_image(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


class DatasetWriter:
    """Writes files under ``root`` atomically and remembers which ones it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[Path] = set()

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Write ``data`` to ``root / relative_path`` through a temporary file and a rename."""
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
        self.written.add(path)

    def write_json(self, relative_path: str, payload: Any) -> None:
        """Compact UTF-8 json, keys in insertion order (deterministic for the same payload)."""
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        self.write_bytes(relative_path, text.encode("utf-8"))

    def write_pickle(self, relative_path: str, payload: Any) -> None:
        self.write_bytes(relative_path, pickle.dumps(payload, protocol=PICKLE_PROTOCOL))

    def write_jpeg(self, relative_path: str, rgb: np.ndarray) -> None:
        """An RGB uint8 [H, W, 3] picture as a baseline JPEG."""
        image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        self.write_bytes(
            relative_path,
            _encode_image(image, "JPEG", quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING),
        )

    def write_png(
        self, relative_path: str, labels: np.ndarray, palette: list[int] | None = None
    ) -> None:
        """A uint8 [H, W] label map as an 8-bit greyscale PNG, or a palette PNG with ``palette``
        (flat RGB triples, index i = label value i)."""
        height, width = labels.shape
        data = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
        image = Image.frombytes("L" if palette is None else "P", (width, height), data)
        if palette is not None:
            image.putpalette(palette)
        self.write_bytes(relative_path, _encode_image(image, "PNG"))

    def remove_stale_files(self) -> int:
        """Delete files under the toy folders that this writer did not write; returns how many.

        Empty folders left behind are removed too.
        """
        removed = 0
        for folder in TOY_FOLDERS:
            for directory, subdirectories, files in os.walk(self.root / folder, topdown=False):
                for name in files:
                    path = Path(directory) / name
                    if path not in self.written:
                        path.unlink()
                        removed += 1
                for name in subdirectories:
                    subdirectory = Path(directory) / name
                    if not any(subdirectory.iterdir()):
                        subdirectory.rmdir()
        return removed


def claim_output_dir(root: Path) -> None:
    """Make sure the generator may write under ``root``.

    Raises:
        ToyDatasetError: ``root`` is a file, or one of the toy folders holds files while no
            marker says a previous toy run wrote them.
    """
    if root.exists() and not root.is_dir():
        raise ToyDatasetError(f"--dataset_dir {root} is a file; expected a folder.")
    if (root / MARKER_FILE).is_file():
        return
    occupied = [
        folder
        for folder in TOY_FOLDERS
        if (root / folder).is_dir() and any((root / folder).iterdir())
    ]
    if occupied:
        raise ToyDatasetError(
            f"{root} already holds {', '.join(occupied)} without the toy marker {MARKER_FILE}, "
            "so it may be a real dataset; choose an empty --dataset_dir."
        )

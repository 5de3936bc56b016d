"""Writing the toy tree: files staged in a private folder, a marker that lists what the generator
wrote, and nothing else ever deleted.

The generator writes the whole tree into a hidden folder beside ``--dataset_dir`` that it creates
itself, then moves the files into place (:class:`utils.output_dir.OutputFolder`), so an interrupted
run leaves the dataset folder as it was. The marker file ``toy_dataset.json`` at the root records
the generator's parameters and every file it placed. The generator refuses to write into toy
folders (``TOY_FOLDERS``) that hold files its marker does not list, so real data is never mixed
with or overwritten by toy data (``overwrite`` writes beside such files, replacing only those with
the names it writes). On a re-run, files an earlier run wrote and this one does not (say, from a
larger ``--num_train``) are deleted, so the readers' globs see exactly this run's dataset; files
beside the toy folders (a README) are never looked at.
"""

from __future__ import annotations

import io
import json
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
    """Writes files under ``root`` (the private staging folder) and counts them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written = 0

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Write ``data`` to ``root / relative_path``."""
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.written += 1

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

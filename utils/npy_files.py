"""Reading an ``.npy`` mask file a user gave, checked before anything is allocated.

``np.load`` trusts the header: a file claiming a huge shape makes it allocate that much before
finding the data missing, and an ``.npz`` archive under an ``.npy`` name comes back as a lazy
archive object. Here the header is read first and checked against the file's size, the dtype
must be plain numbers, and each mask's pixel count must stay under the limit Pillow applies to
images (``Image.MAX_IMAGE_PIXELS``), so a mask file can be no larger than an image allowed to be.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from utils.regular_files import NotRegularFileError, check_regular_file

ZIP_MAGIC = b"PK\x03\x04"  # how an .npz (a zip archive) starts


class NpyFileError(ValueError):
    """An .npy file that cannot be read safely; ``str()`` is one sentence naming it."""


def _read_header(handle, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header; the handle is left at the data."""
    start = handle.read(len(ZIP_MAGIC))
    if start == ZIP_MAGIC:
        raise NpyFileError(
            f"{path} is an .npz archive (a zip of arrays) named .npy; save one array with np.save."
        )
    handle.seek(0)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(handle)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(handle)
    except (ValueError, SyntaxError, EOFError, OSError) as error:
        reason = " ".join(str(error).split())[:200]
        raise NpyFileError(f"{path} is not an .npy array file ({reason}).") from None
    raise NpyFileError(f"{path} uses .npy format version {version}; expected 1.0 or 2.0.")


def read_npy(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """The array of an .npy file holding bool or numbers, ``[H, W]`` or ``[n, H, W]``-like.

    Args:
        path: the file.
        max_pixels: largest H * W (the last two dimensions); default Pillow's
            ``Image.MAX_IMAGE_PIXELS`` (no limit when that is None).

    Raises:
        NpyFileError: not a regular file, an .npz under an .npy name, a malformed header, a
            dtype that is not bool or numbers, masks over ``max_pixels``, or fewer bytes of data
            than the header promises (a truncated file, or a forged shape).
    """
    path = Path(path)
    try:
        size = check_regular_file(path, "array file").st_size
    except NotRegularFileError as error:
        raise NpyFileError(str(error)) from None
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with open(path, "rb") as handle:
        shape, fortran_order, dtype = _read_header(handle, path)
        if dtype.hasobject or dtype.kind not in "biuf":
            raise NpyFileError(f"{path} holds {dtype} values; expected bool or numbers.")
        pixels = math.prod(shape[-2:]) if len(shape) >= 2 else math.prod(shape)
        if limit is not None and pixels > limit:
            raise NpyFileError(
                f"{path} holds masks of {pixels} pixels ({'x'.join(map(str, shape))}), more than "
                f"the {limit} pixels an image may have."
            )
        expected = math.prod(shape) * dtype.itemsize
        available = size - handle.tell()
        if available < expected:
            raise NpyFileError(
                f"{path} is truncated or its header is wrong: shape {list(shape)} of {dtype} "
                f"needs {expected} bytes, the file holds {available}."
            )
        data = handle.read(expected)
    array = np.frombuffer(data, dtype=dtype)
    order = "F" if fortran_order else "C"
    return array.reshape(shape, order=order).copy(order="C")

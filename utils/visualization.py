"""Mask pictures as the original chat.py saves them: the mask alone and the image with the mask.

For each mask ``i`` of an image whose file name stem is ``stem``:

* ``{stem}_mask_{i}.jpg``: the mask as a grey picture, 100 on the mask and 0 elsewhere (the
  original writes ``mask * 100``);
* ``{stem}_masked_img_{i}.jpg``: the image with the masked pixels blended half and half with pure
  red (``image * 0.5 + (255, 0, 0) * 0.5``, truncated to integers as numpy's cast does).

The folder may hold other files: a picture is written only where no file of that name exists or
where the file is one this module wrote before (listed in the folder's ``.lisa_outputs``, see
:mod:`utils.output_dir`); each goes to a temporary name first and is renamed into place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.output_dir import claim_file_names, record_files, write_bytes_atomic

MASK_VALUE = 100  # grey level of mask pixels in {stem}_mask_{i}.jpg (the original's)
OVERLAY_COLOR = (255, 0, 0)  # RGB blended into masked pixels
OVERLAY_ALPHA = 0.5  # weight of the colour in the blend


@dataclass(frozen=True)
class MaskFiles:
    """The two pictures saved for one mask."""

    mask_path: Path
    overlay_path: Path


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = OVERLAY_COLOR,
    alpha: float = OVERLAY_ALPHA,
) -> np.ndarray:
    """The image with ``color`` blended into the masked pixels.

    Args:
        image: [H, W, 3] RGB uint8.
        mask: [H, W] bool.
    Returns:
        [H, W, 3] RGB uint8; pixels outside the mask are unchanged.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    mask = mask.astype(bool)
    blended = image[mask] * (1 - alpha) + np.asarray(color, dtype=np.float64) * alpha  # [n, 3]
    result = image.copy()
    result[mask] = blended.astype(np.uint8)  # truncation, as the original's assignment
    return result


def _write_jpg(path: Path, picture: np.ndarray) -> None:
    """Encode in memory first so that a failure names the file instead of returning False."""
    ok, encoded = cv2.imencode(".jpg", picture)
    if not ok:
        raise OSError(f"could not encode {path} as JPEG")
    write_bytes_atomic(path, encoded.tobytes())


def mask_file_paths(save_dir: Path, stem: str, first_index: int, count: int) -> list[MaskFiles]:
    """The two picture paths of each of ``count`` masks, numbered from ``first_index``."""
    return [
        MaskFiles(
            mask_path=save_dir / f"{stem}_mask_{index}.jpg",
            overlay_path=save_dir / f"{stem}_masked_img_{index}.jpg",
        )
        for index in range(first_index, first_index + count)
    ]


def save_mask_pictures(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    save_dir: str | Path,
    stem: str,
    first_index: int = 0,
    *,
    overwrite: bool = False,
    flag: str = "--vis_save_path",
) -> list[MaskFiles]:
    """Write ``{stem}_mask_{i}.jpg`` and ``{stem}_masked_img_{i}.jpg`` for every mask.

    Args:
        image: [H, W, 3] RGB uint8, the picture the masks belong to.
        masks: [H, W] bool each.
        save_dir: created when missing.
        stem: file name stem of the image.
        first_index: ``i`` of the first mask (a conversation numbers its masks across turns so
            that a later answer does not overwrite an earlier one).
        overwrite: also replace files of those names that this module did not write.
        flag: the flag that named ``save_dir``, for the message of a refusal.
    Returns:
        The paths written, one pair per mask, in order.
    Raises:
        utils.output_dir.OutputDirError: a file of one of the names is not this module's (and
            ``overwrite`` is off); nothing is written then.
    """
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    paths = mask_file_paths(save_dir, stem, first_index, len(masks))
    names = [path.name for files in paths for path in (files.mask_path, files.overlay_path)]
    claim_file_names(save_dir, names, flag=flag, overwrite=overwrite)
    record_files(save_dir, names)
    written = []
    for files, mask in zip(paths, masks, strict=True):
        mask = np.asarray(mask).astype(bool)
        _write_jpg(files.mask_path, mask.astype(np.uint8) * MASK_VALUE)
        overlay = overlay_mask(image, mask)
        _write_jpg(files.overlay_path, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        written.append(files)
    return written

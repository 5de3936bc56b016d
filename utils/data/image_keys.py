"""Image identity across datasets, so that ``--exclude_val`` can find a validation image again.

The same COCO photo is ``COCO_train2014_000000123456.jpg`` in refCOCO and ``000000123456.jpg``
in COCO-Stuff, PACO-LVIS and LLaVA-Instruct; both get the key ``coco:123456``. Other images are
known by their file name.
"""

from __future__ import annotations

import os
import re

_COCO_FILE_NAME = re.compile(r"^(?:COCO_(?:train|val)2014_)?(\d{12})\.jpg$")


def image_key(path: str | os.PathLike) -> str:
    """A key equal for two paths that name the same image."""
    name = os.path.basename(os.fspath(path))
    match = _COCO_FILE_NAME.match(name)
    return f"coco:{int(match.group(1))}" if match else name

"""Render the masks of ReasonSeg annotations, for inspection or for evaluation tools.

    python -m utils.render_reason_seg_masks --input_dir dataset/reason_seg/ReasonSeg/val \
        [--output_dir vis_output/val]

For every ``<name>.json`` in the input folder (with its image ``<name>.jpg`` beside it) this
writes, into ``<output_dir>/<name>/``:

* ``labeled_mask.png``: 8-bit, 0 = background, 1 = target, 255 = ignored by evaluation
  (the annotation's "ignore" polygons); "flag" polygons are dropped and polygons are painted
  largest first, exactly as training and validation read them (:mod:`utils.reason_seg`).
* ``target_mask.png``: 8-bit, 255 where the target is, else 0.
* ``ignore_mask.png``: 8-bit, 255 where evaluation ignores the pixel, else 0.
* ``overlay.jpg``: the image and, beside it, the image with the target tinted green and the
  ignored region tinted red (60 % colour, 40 % image).

The default output folder is ``vis_output/<input folder name>``. A file that cannot be rendered
is reported in one line and skipped; the exit status is then 1.

The output folder must be new, empty, or one this renderer wrote before (its ``.lisa_outputs``
lists the files), and apart from the input folder; otherwise it is refused in one line (exit
status 2). The pictures are rendered into a hidden folder beside it and moved into place at the
end; ``--overwrite`` writes beside files the renderer did not write, replacing only those with the
names it writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from utils.output_dir import OVERWRITE_HELP, OutputDirError, OutputFolder
from utils.reason_seg import (
    IGNORE_VALUE,
    TARGET_VALUE,
    BadAnnotationError,
    load_annotation,
    render_mask,
)
from utils.transforms import load_image

TARGET_COLOUR = np.array([0, 255, 0], dtype=np.float32)
IGNORE_COLOUR = np.array([255, 0, 0], dtype=np.float32)
TINT = 0.6  # share of the colour in a tinted pixel


def overlay(image: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """[H, 2W, 3] uint8: the image, then the image with target / ignore regions tinted."""
    tinted = image.astype(np.float32)
    for value, colour in ((TARGET_VALUE, TARGET_COLOUR), (IGNORE_VALUE, IGNORE_COLOUR)):
        region = labeled == value  # [H, W]
        tinted[region] = colour * TINT + tinted[region] * (1 - TINT)
    return np.concatenate([image, tinted.round().astype(np.uint8)], axis=1)


def render_one(json_path: Path, output_dir: Path) -> Path:
    """Write the four pictures of one annotation; returns their folder.

    Raises:
        ValueError: the image is absent or unreadable, or the annotation is malformed.
    """
    image_path = json_path.with_suffix(".jpg")
    image = load_image(image_path)  # ValueError names the file when absent or unreadable
    labeled = render_mask(load_annotation(json_path), image.shape[0], image.shape[1])
    folder = output_dir / json_path.stem
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labeled).save(folder / "labeled_mask.png")
    Image.fromarray(np.where(labeled == TARGET_VALUE, 255, 0).astype(np.uint8)).save(
        folder / "target_mask.png"
    )
    Image.fromarray(np.where(labeled == IGNORE_VALUE, 255, 0).astype(np.uint8)).save(
        folder / "ignore_mask.png"
    )
    Image.fromarray(overlay(image, labeled)).save(folder / "overlay.jpg", quality=95)
    return folder


def render_all(json_files: list[Path], output_dir: Path) -> int:
    """Render every annotation into ``output_dir``; returns how many were skipped."""
    failed = 0
    for json_path in json_files:
        try:
            render_one(json_path, output_dir)
        except (BadAnnotationError, ValueError) as error:
            failed += 1
            print(f"skipped {json_path.name}: {error}")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.render_reason_seg_masks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--input_dir", required=True, help="folder of ReasonSeg .jpg + .json")
    parser.add_argument("--output_dir", default=None, help="default: vis_output/<input name>")
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    args = parser.parse_args(argv)
    input_dir = Path(args.input_dir)
    if not input_dir.is_dir():
        print(f"--input_dir {input_dir} is not a folder.")
        return 1
    output_dir = Path(args.output_dir or Path("vis_output") / input_dir.resolve().name)
    json_files = sorted(input_dir.glob("*.json"))
    if not json_files:
        print(f"--input_dir {input_dir} holds no .json annotation.")
        return 1
    output = OutputFolder(
        output_dir, flag="--output_dir", inputs={"--input_dir": input_dir}, overwrite=args.overwrite
    )
    try:
        with output:  # claims the folder: refused before anything is rendered
            failed = render_all(json_files, output.staging)
            output.commit()
    except OutputDirError as error:
        print(f"render_reason_seg_masks: {error}", file=sys.stderr)
        return 2
    print(f"rendered {len(json_files) - failed} of {len(json_files)} annotations into {output_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

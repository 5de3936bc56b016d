"""eval_mask.py speed on a synthetic ReasonSeg-like split: 200 images of 1024x768.

Each image has a json with two target polygons and one ignore polygon (half short queries, half
sentences) and a prediction as a bool .npy; a second run reads float32 probability maps with
--threshold, a third 0/255 PNGs. Writing the files is not timed. Prints wall time per run.

    python benchmarks/bench_eval.py [--images 200] [--width 1024 --height 768]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import eval_mask  # noqa: E402


def polygon(rng: np.random.Generator, width: int, height: int, corners: int = 12) -> list:
    """A random star-shaped polygon inside the image, as labelme stores points ([x, y])."""
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    radius = rng.uniform(0.05, 0.2) * min(width, height)
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = radius * rng.uniform(0.6, 1.0, corners)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).tolist()


def write_split(root: Path, images: int, width: int, height: int) -> tuple[Path, dict[str, Path]]:
    """(ground-truth folder, {kind: prediction folder})."""
    rng = np.random.default_rng(0)
    gt = root / "gt"
    predictions = {kind: root / kind for kind in ("npy_bool", "npy_float", "png")}
    for folder in (gt, *predictions.values()):
        folder.mkdir()
    picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    for index in range(images):
        stem = f"image_{index:04d}"
        picture.save(gt / f"{stem}.jpg", quality=80)
        shapes = [{"label": "target", "points": polygon(rng, width, height)} for _ in range(2)]
        shapes.append({"label": "ignore", "points": polygon(rng, width, height)})
        annotation = {"text": [f"query {index}"], "is_sentence": bool(index % 2), "shapes": shapes}
        (gt / f"{stem}.json").write_text(json.dumps(annotation))
        scores = rng.random((height, width), dtype=np.float32)  # [H, W] in [0, 1)
        np.save(predictions["npy_bool"] / f"{stem}.npy", scores > 0.5)
        np.save(predictions["npy_float"] / f"{stem}.npy", scores)
        Image.fromarray(((scores > 0.5) * 255).astype(np.uint8)).save(
            predictions["png"] / f"{stem}.png"
        )
    return gt, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        gt, predictions = write_split(Path(scratch), args.images, args.width, args.height)
        print(f"{args.images} images of {args.width}x{args.height}, 3 polygons each")
        for kind, threshold in (("npy_bool", None), ("npy_float", 0.5), ("png", None)):
            start = time.perf_counter()
            report = eval_mask.evaluate(predictions[kind], gt, threshold=threshold, progress=False)
            seconds = time.perf_counter() - start
            print(
                f"{kind:<10} {seconds:6.2f} s  ({seconds / args.images * 1000:5.1f} ms/image)  "
                f"gIoU {report.overall.giou:.4f}"
            )


if __name__ == "__main__":
    main()

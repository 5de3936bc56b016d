"""Offline gIoU / cIoU of mask predictions, with the definitions of LISA's validate().

    python eval_mask.py --submission_dir=PRED_DIR --groundtruth_dir=GT_DIR \
        [--threshold=0.5] [--resize_to_gt] [--output_json=report.json]

Predictions (--submission_dir), one file per image named after the image's file stem:
  <image_id>.npy  [H, W], or [n, H, W] for n targets: bool, integers 0/1 or 0/255, or float
                  probabilities / logits with --threshold (a pixel is target when value > T)
  <image_id>.png  one single-channel mask: 0/1 or 0/255 (grey levels with --threshold)
Ground truth (--groundtruth_dir), either
  a ReasonSeg folder: <image_id>.jpg (or .jpeg/.png) + <image_id>.json with "target" and
      "ignore" polygons and "is_sentence" (gIoU/cIoU are also split by short query / long
      sentence), or
  rendered masks: <image_id>.png [H, W] or <image_id>.npy [H, W] / [n, H, W] with 0 background,
      1 target, 255 ignore.
A missing prediction counts as an empty mask (and is reported); so does a missing mask in a
stack with fewer masks than targets; prediction files without ground truth, and masks beyond the
number of targets, are reported and not scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from utils.metrics import IoUSummary, intersection_and_union, mask_iou, summarize_iou
from utils.npy_files import NpyFileError, read_npy
from utils.reason_seg import (
    IGNORE_VALUE,
    TARGET_VALUE,
    BadAnnotationError,
    load_annotation,
    render_mask,
)
from utils.regular_files import NotRegularFileError, check_regular_file

PREDICTION_SUFFIXES = (".npy", ".png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
BINARY_LEVELS = (1, 255)  # foreground value of a binary mask read without --threshold (0 = rest)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF rotations that swap width and height
LISTED = 10  # how many missing / extra names the console report lists


class EvaluationError(Exception):
    """A problem with the inputs; the message is one sentence naming the file."""


class UnreadableFileError(EvaluationError):
    """A file that cannot be opened or decoded."""


class UnusableGroundTruthError(Exception):
    """Ground truth of one image that cannot be read or drawn: the image is skipped and
    reported, as validate() skips a sample it cannot load."""


# --- ground truth ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruthItem:
    """Where one image's ground truth comes from (read lazily, one image at a time)."""

    image_id: str
    annotation: Path | None = None  # ReasonSeg json
    image: Path | None = None  # the image the json belongs to (for its size); None: not found
    mask: Path | None = None  # rendered label map (.png / .npy)


def _upright_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image as OpenCV reads it (EXIF rotation applied), without decoding it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise UnusableGroundTruthError(f"cannot read the image {path}: {error}") from None
    return height, width


def find_ground_truth(directory: Path) -> list[GroundTruthItem]:
    """ReasonSeg items when the folder holds json files, else rendered masks; sorted by id."""
    if not directory.is_dir():
        raise EvaluationError(f"--groundtruth_dir {directory} is not a directory")
    annotations = sorted(directory.glob("*.json"))
    if annotations:
        items = []
        for annotation in annotations:
            image = next(
                (p for s in IMAGE_SUFFIXES if (p := annotation.with_suffix(s)).is_file()), None
            )
            items.append(GroundTruthItem(annotation.stem, annotation=annotation, image=image))
        return items
    masks = sorted(p for p in directory.iterdir() if p.suffix in (".png", ".npy"))
    ids = [p.stem for p in masks]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise EvaluationError(
            f"{directory} holds both {duplicated[0]}.png and {duplicated[0]}.npy; keep one"
        )
    if not masks:
        raise EvaluationError(
            f"no ground truth in {directory}: expected <id>.json + <id>.jpg (ReasonSeg) or "
            "<id>.png / <id>.npy label maps"
        )
    return [GroundTruthItem(p.stem, mask=p) for p in masks]


def read_ground_truth(item: GroundTruthItem) -> tuple[np.ndarray, bool | None]:
    """-> ([m, H, W] uint8 labels 0/1/255, is_sentence or None).

    Raises:
        UnusableGroundTruthError: an unreadable file or a polygon that cannot be drawn.
        EvaluationError: label maps in another format (a systematic mistake, not one bad file).
    """
    if item.annotation is not None:
        if item.image is None:
            raise UnusableGroundTruthError(
                f"{item.annotation} has no image beside it ({item.image_id}.jpg) to take the "
                "mask size from"
            )
        try:
            annotation = load_annotation(item.annotation)
            height, width = _upright_size(item.image)
            return render_mask(annotation, height, width)[None], annotation.is_sentence
        except BadAnnotationError as error:
            raise UnusableGroundTruthError(str(error)) from None
    try:
        labels = _read_array(item.mask, "ground truth")
    except UnreadableFileError as error:
        raise UnusableGroundTruthError(str(error)) from None
    if labels.dtype.kind not in "biu":
        raise EvaluationError(
            f"ground truth {item.mask} must hold integer labels 0/1/255, got {labels.dtype}"
        )
    unexpected = ~np.isin(labels, (0, TARGET_VALUE, IGNORE_VALUE))
    if unexpected.any():
        raise EvaluationError(
            f"ground truth {item.mask} holds the value {labels[unexpected].flat[0]}; labels must "
            "be 0 (background), 1 (target) or 255 (ignore)"
        )
    return labels.astype(np.uint8), None


# --- predictions ----------------------------------------------------------------------------


def _read_array(path: Path, role: str) -> np.ndarray:
    """An .npy array or a single-channel PNG as [n, H, W] (a 2-D array gets n = 1).

    Only regular files are opened (a FIFO would block for ever); an .npy header is checked
    against the file's size before anything is allocated, and masks may have no more pixels
    than Pillow lets an image have.
    """
    try:
        if path.suffix == ".npy":
            array = read_npy(path)
        else:
            check_regular_file(path, f"{role} file")
            with Image.open(path) as image:
                image.load()
                if len(image.getbands()) != 1:
                    raise EvaluationError(
                        f"{role} {path} has {len(image.getbands())} channels "
                        f"({image.mode}); a mask PNG must be single-channel"
                    )
                array = np.asarray(image)
    except (NpyFileError, NotRegularFileError) as error:
        raise UnreadableFileError(f"cannot read {role} {path}: {error}") from None
    except Image.DecompressionBombError as error:
        raise UnreadableFileError(f"{role} {path} is too large to decode safely: {error}") from None
    except (OSError, ValueError, EOFError, UnidentifiedImageError, SyntaxError) as error:
        raise UnreadableFileError(f"cannot read {role} {path}: {error}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape[1:]:
        raise EvaluationError(
            f"{role} {path} has shape {array.shape}; expected [H, W] or [n, H, W]"
        )
    return array


def read_prediction(path: Path, threshold: float | None) -> np.ndarray:
    """A prediction file -> [n, H, W] bool (see the module docstring for the accepted forms)."""
    array = _read_array(path, "prediction")
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise EvaluationError(f"prediction {path} contains NaN")
    if array.dtype.kind not in "iuf":
        raise EvaluationError(
            f"prediction {path} has dtype {array.dtype}; expected bool or numbers"
        )
    if threshold is not None:
        return array > threshold
    is_zero = array == 0
    for level in BINARY_LEVELS:
        if (is_zero | (array == level)).all():
            return ~is_zero
    example = array[~is_zero & (array != 1)].flat[0]
    kind = "scores" if array.dtype.kind == "f" else "grey levels"
    raise EvaluationError(
        f"prediction {path} holds {kind} (e.g. {example}), not a binary mask; "
        "pass --threshold (0.5 for probabilities, 0 for logits)"
    )


def _fit_to(
    prediction: np.ndarray, height: int, width: int, path: Path, resize: bool
) -> np.ndarray:
    if prediction.shape[1:] == (height, width):
        return prediction
    if not resize:
        hint = (
            " (transposed: was the image read without its EXIF rotation?)"
            if prediction.shape[1:] == (width, height)
            else ""
        )
        raise EvaluationError(
            f"prediction {path} is {prediction.shape[2]}x{prediction.shape[1]} (WxH) but its "
            f"ground truth is {width}x{height}{hint}; pass --resize_to_gt to resize predictions"
        )
    return np.stack(
        [
            cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
            for mask in prediction
        ]
    ).astype(bool)


# --- scoring --------------------------------------------------------------------------------


@dataclass
class ImageScore:
    """One image's masks: per target, its intersection, union and IoU."""

    image_id: str
    prediction: str | None  # file name; None when missing (scored as empty)
    is_sentence: bool | None  # ReasonSeg query kind; None for label-map ground truth
    intersection: list[int] = field(default_factory=list)
    union: list[int] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    missing_masks: int = 0  # targets without a predicted mask (scored as empty)
    extra_masks: int = 0  # predicted masks beyond the number of targets (not scored)


def score_image(
    item: GroundTruthItem, prediction_path: Path | None, threshold: float | None, resize: bool
) -> ImageScore:
    targets, is_sentence = read_ground_truth(item)  # [m, H, W]
    num_targets, height, width = targets.shape
    score = ImageScore(
        item.image_id, prediction_path.name if prediction_path else None, is_sentence
    )
    if prediction_path is None:
        prediction = np.zeros_like(targets, dtype=bool)
    else:
        prediction = read_prediction(prediction_path, threshold)
        prediction = _fit_to(prediction, height, width, prediction_path, resize)
        score.extra_masks = max(0, prediction.shape[0] - num_targets)
        score.missing_masks = max(0, num_targets - prediction.shape[0])
        prediction = prediction[:num_targets]
        if score.missing_masks:
            empty = np.zeros((score.missing_masks, height, width), dtype=bool)
            prediction = np.concatenate([prediction, empty])
    intersection, union = intersection_and_union(prediction, targets)
    score.intersection = intersection.tolist()
    score.union = union.tolist()
    score.iou = mask_iou(intersection, union).tolist()
    return score


@dataclass
class Report:
    overall: IoUSummary
    splits: dict[str, IoUSummary]
    scores: list[ImageScore]
    missing_predictions: list[str]  # image ids
    extra_predictions: list[str]  # file names
    skipped: dict[str, str]  # image id -> why its ground truth could not be read or drawn


SPLITS = {"short_query": False, "long_sentence": True}


def _summary(scores: list[ImageScore]) -> IoUSummary:
    return summarize_iou(
        [i for s in scores for i in s.intersection], [u for s in scores for u in s.union]
    )


def evaluate(
    submission_dir: Path,
    groundtruth_dir: Path,
    threshold: float | None = None,
    resize_to_gt: bool = False,
    progress: bool | None = None,
) -> Report:
    """Score every ground-truth image; ``progress`` None shows a bar only on a terminal."""
    if not submission_dir.is_dir():
        raise EvaluationError(f"--submission_dir {submission_dir} is not a directory")
    if groundtruth_dir.is_dir() and submission_dir.samefile(groundtruth_dir):
        raise EvaluationError(
            f"--submission_dir and --groundtruth_dir are the same folder ({submission_dir}); "
            "predictions must be scored against ground truth kept in a folder of its own"
        )
    items = find_ground_truth(groundtruth_dir)
    predictions: dict[str, Path] = {}
    for path in sorted(submission_dir.iterdir()):
        # every non-folder entry is read, so a FIFO or a link loop is named, not skipped
        if path.suffix not in PREDICTION_SUFFIXES or path.is_dir():
            continue
        if path.stem in predictions:
            raise EvaluationError(
                f"{submission_dir} holds both {path.stem}.npy and {path.stem}.png; keep one"
            )
        predictions[path.stem] = path
    known = {item.image_id for item in items}
    scores, skipped = [], {}
    for item in tqdm(
        items, desc="eval", unit="image", disable=None if progress is None else not progress
    ):
        try:
            scores.append(
                score_image(item, predictions.get(item.image_id), threshold, resize_to_gt)
            )
        except UnusableGroundTruthError as error:
            skipped[item.image_id] = str(error)
            tqdm.write(f"skipped {item.image_id}: {error}", file=sys.stderr)
    if not scores:
        raise EvaluationError(f"no image of {groundtruth_dir} could be scored")
    splits = {}
    if all(s.is_sentence is not None for s in scores):
        for name, is_sentence in SPLITS.items():
            chosen = [s for s in scores if s.is_sentence == is_sentence]
            if chosen:
                splits[name] = _summary(chosen)
    return Report(
        overall=_summary(scores),
        splits=splits,
        scores=scores,
        missing_predictions=[s.image_id for s in scores if s.prediction is None],
        extra_predictions=[p.name for stem, p in predictions.items() if stem not in known],
        skipped=skipped,
    )


# --- output ---------------------------------------------------------------------------------


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f", ... ({len(names) - LISTED} more)" if len(names) > LISTED else "")


def print_report(report: Report) -> None:
    overall = report.overall
    print(
        f"gIoU {overall.giou:.4f}  cIoU {overall.ciou:.4f}  images {len(report.scores)}  masks {overall.num_masks}"
    )
    for name, summary in report.splits.items():
        label = name.replace("_", " ")
        print(
            f"  {label:<14} gIoU {summary.giou:.4f}  cIoU {summary.ciou:.4f}  masks {summary.num_masks}"
        )
    if report.missing_predictions:
        print(
            f"missing predictions (scored as empty masks): {len(report.missing_predictions)}: "
            f"{_listed(report.missing_predictions)}"
        )
    missing_masks = sum(s.missing_masks for s in report.scores)
    extra_masks = sum(s.extra_masks for s in report.scores)
    if missing_masks:
        print(f"targets without a predicted mask in their file (scored as empty): {missing_masks}")
    if extra_masks:
        print(f"predicted masks beyond the number of targets (not scored): {extra_masks}")
    if report.extra_predictions:
        print(
            f"extra predictions (no ground truth, not scored): {len(report.extra_predictions)}: "
            f"{_listed(report.extra_predictions)}"
        )
    if report.skipped:
        print(
            f"skipped images (unusable ground truth): {len(report.skipped)}: {_listed(list(report.skipped))}"
        )


def report_json(report: Report) -> dict:
    return {
        **asdict(report.overall),
        "num_images": len(report.scores),
        "splits": {name: asdict(summary) for name, summary in report.splits.items()},
        "missing_predictions": report.missing_predictions,
        "extra_predictions": report.extra_predictions,
        "missing_masks": sum(s.missing_masks for s in report.scores),
        "extra_masks": sum(s.extra_masks for s in report.scores),
        "skipped": report.skipped,
        "per_image": {
            s.image_id: {key: value for key, value in asdict(s).items() if key != "image_id"}
            for s in report.scores
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="gIoU / cIoU of mask predictions (LISA's validation definitions)",
        allow_abbrev=False,
    )
    parser.add_argument("--submission_dir", required=True, type=Path, help="prediction files")
    parser.add_argument(
        "--groundtruth_dir", required=True, type=Path, help="ReasonSeg folder or label maps"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="binarise scores: target where value > T (0.5 for probabilities, 0 for logits)",
    )
    parser.add_argument(
        "--resize_to_gt",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="resize predictions of another size to the ground truth (nearest neighbour)",
    )
    parser.add_argument("--output_json", type=Path, default=None, help="write the full report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = evaluate(
            args.submission_dir, args.groundtruth_dir, args.threshold, args.resize_to_gt
        )
    except EvaluationError as error:
        print(f"eval_mask.py: {error}", file=sys.stderr)
        return 1
    print_report(report)
    if args.output_json is not None:
        try:
            args.output_json.parent.mkdir(parents=True, exist_ok=True)
            args.output_json.write_text(json.dumps(report_json(report), indent=2) + "\n")
        except OSError as error:
            print(
                f"eval_mask.py: cannot write --output_json {args.output_json}: {error}",
                file=sys.stderr,
            )
            return 1
        print(f"report written to {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

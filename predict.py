"""Prediction files for a validation split, as eval_mask.py reads them.

    python predict.py --version=CKPT --vision-tower=CLIP --dataset_dir=./dataset \
        --val_dataset="ReasonSeg|val" --output_dir=preds
    python predict.py --version=CKPT --image_dir=FOLDER --output_dir=preds   # plain jpg + json folder
    python eval_mask.py --submission_dir=preds --groundtruth_dir=./dataset/reason_seg/ReasonSeg/val

Each image gets ``<output_dir>/<image_stem>.npy``: a bool ``[n, H, W]`` stack, one mask per
query asked about it. The masks are computed as LISA's validate() computes them (and as
``train_ds.py --eval_only`` does): the validation set's question with the answer "[SEG]." in one
forward pass, no generation. ``--val_dataset`` takes every name ValDataset takes (ReasonSeg and
the referring splits such as "refcocog|umd|val"); ``--save_groundtruth DIR`` also writes the
ground truth as ``<image_stem>.npy`` label maps (0 / 1 / 255) for eval_mask.py, which is how a
referring split is scored offline.

Each output folder must be new, empty, or one predict.py wrote before (its ``.lisa_outputs``
lists the files); it may not be, hold or lie inside an input, and the two outputs must be separate
folders. Files are written into a hidden folder beside each output and moved into place at the
end, so an interrupted run changes nothing; a re-run deletes only the files the earlier run wrote.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.bases.detect import is_lisa_vlm
from model.loading import load_lisa_vlm, load_pretrained_model
from model.segmenter_vlm import sam_input_side
from utils.collate import collate_fn, collate_with_format
from utils.console import quiet_libraries
from utils.conversation import CONV_TYPES
from utils.data import MissingSourceError, SampleBuilder, ValDataset, layout
from utils.devices import PRECISIONS, DeviceError, resolve_device
from utils.output_dir import OVERWRITE_HELP, OutputDirError, OutputFolder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LISA predictions for a validation split (eval_mask.py input)",
        allow_abbrev=False,
    )
    parser.add_argument("--version", required=True, help="checkpoint directory")
    parser.add_argument(
        "--vision-tower", default=None, help="CLIP directory (default: the config's)"
    )
    parser.add_argument("--dataset_dir", default="./dataset", type=Path)
    parser.add_argument("--val_dataset", default="ReasonSeg|val", help='e.g. "ReasonSeg|val"')
    parser.add_argument(
        "--image_dir",
        default=None,
        type=Path,
        help="a plain ReasonSeg folder (*.jpg + *.json) instead of --dataset_dir/--val_dataset",
    )
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument(
        "--save_groundtruth",
        default=None,
        type=Path,
        help="also write the ground truth here as <image_stem>.npy label maps (a folder apart "
        "from --output_dir)",
    )
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--precision", default="bf16", choices=list(PRECISIONS))
    parser.add_argument("--device", default=None, help="default: CUDA when present, else the CPU")
    parser.add_argument("--load_in_8bit", action="store_true", default=False)
    parser.add_argument("--load_in_4bit", action="store_true", default=False)
    parser.add_argument("--model_max_length", default=512, type=int)
    parser.add_argument("--conv_type", default="llava_v1", choices=list(CONV_TYPES))
    parser.add_argument("--use_mm_start_end", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--batch_size", default=1, type=int, help="images per forward pass")
    parser.add_argument(
        "--pack_conversations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the questions about one image as one LLM row, the prefix they share once "
        "(the same masks, less work)",
    )
    parser.add_argument("--workers", default=2, type=int, help="data loading processes")
    args = parser.parse_args(argv)
    if args.load_in_8bit and args.load_in_4bit:
        parser.error("choose one of --load_in_8bit and --load_in_4bit")
    if args.batch_size <= 0 or args.workers < 0:
        parser.error("--batch_size must be positive and --workers not negative")
    return args


def check_split_exists(args: argparse.Namespace) -> None:
    """Fail on a missing folder or file before the (slow) model load; ValDataset checks the rest."""
    if args.image_dir is not None:
        if not args.image_dir.is_dir():
            raise MissingSourceError(f"--image_dir {args.image_dir} is not a folder.")
        return
    parts = args.val_dataset.split("|")
    if len(parts) == 2:
        layout.require_dir(
            args.dataset_dir, f"{layout.REASON_SEG_ROOT}/{parts[0]}/{parts[1]}", args.val_dataset
        )
    elif len(parts) == 3:
        for relative in layout.refer_annotation_files(parts[0], parts[1]):
            layout.require_file(args.dataset_dir, relative, args.val_dataset)


def open_split(args: argparse.Namespace, builder: SampleBuilder, scratch: Path) -> ValDataset:
    """The validation set named by the flags; a plain --image_dir is read as a ReasonSeg split."""
    if args.image_dir is None:
        return ValDataset(args.dataset_dir, args.val_dataset, builder)
    # ValDataset reads <dataset_dir>/reason_seg/<name>/<split>; a link gives a plain folder
    # that layout, so it is read (questions, rendering, skips) exactly as a named split.
    linked = scratch / layout.REASON_SEG_ROOT / "ReasonSeg"
    linked.mkdir(parents=True)
    split = args.image_dir.resolve().name or "images"
    os.symlink(args.image_dir.resolve(), linked / split, target_is_directory=True)
    return ValDataset(scratch, f"ReasonSeg|{split}", builder)


def save_array(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary name, so an interrupted run leaves no truncated file."""
    partial_path = path.with_name(path.name + ".partial")
    with open(partial_path, "wb") as handle:
        np.save(handle, array)
    partial_path.replace(path)


def claim_outputs(args: argparse.Namespace) -> list[OutputFolder]:
    """The output folders, checked and staged before the model loads (predictions first).

    Raises:
        OutputDirError: an output that may not be written, or the same folder for both.
    """
    if args.save_groundtruth is not None:
        truth, predictions = args.save_groundtruth.resolve(), args.output_dir.resolve()
        if truth == predictions or truth in predictions.parents or predictions in truth.parents:
            raise OutputDirError(
                f"--save_groundtruth {args.save_groundtruth} and --output_dir {args.output_dir} "
                "are the same folder or one holds the other; ground truth and predictions need "
                "separate folders."
            )
    inputs = {"--version": args.version, "--vision-tower": args.vision_tower}
    if args.image_dir is not None:
        inputs["--image_dir"] = args.image_dir
    else:
        inputs["--dataset_dir"] = args.dataset_dir
    outputs = [
        OutputFolder(path, flag=flag, inputs=inputs, overwrite=args.overwrite)
        for flag, path in (
            ("--output_dir", args.output_dir),
            ("--save_groundtruth", args.save_groundtruth),
        )
        if path is not None
    ]
    try:
        for output in outputs:
            output.claim()
    except OutputDirError:
        for output in outputs:
            output.discard()
        raise
    return outputs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    try:
        resolve_device(args.device)  # a device this machine lacks: say so before anything
    except DeviceError as error:
        print(f"predict.py: --device {error}", file=sys.stderr)
        return 2
    try:
        check_split_exists(args)
    except MissingSourceError as error:
        print(f"predict.py: {error}", file=sys.stderr)
        return 1
    try:
        outputs = claim_outputs(args)
    except OutputDirError as error:
        print(f"predict.py: {error}", file=sys.stderr)
        return 2
    try:
        return write_predictions(args, outputs)
    except OutputDirError as error:
        print(f"predict.py: {error}", file=sys.stderr)
        return 2
    finally:
        for output in outputs:
            if not output.keep_staging:
                output.discard()  # after a failure: nothing half-written is left


def write_predictions(args: argparse.Namespace, outputs: list[OutputFolder]) -> int:
    """Load the model, predict into the staged outputs, and place them."""
    prediction_dir = outputs[0].staging
    truth_dir = outputs[1].staging if len(outputs) > 1 else None
    try:
        model, builder, collate = load_for_prediction(args)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as error:
        reason = " ".join(str(error).split())  # library messages may span several lines
        print(f"predict.py: cannot load --version={args.version}: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="lisa_predict_") as scratch:
        try:
            dataset = open_split(args, builder, Path(scratch))
        except MissingSourceError as error:
            print(f"predict.py: {error}", file=sys.stderr)
            return 1
        # skips found while listing the split; those met while reading happen in the workers
        startup_skips = sum(sum(c.values()) for c in dataset.skip_counts().values())
        loader = DataLoader(
            dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate
        )
        written = predict_batches(model, loader, prediction_dir, truth_dir)
    for folder in outputs:
        folder.commit()
    # an unreadable image is replaced by the next one, so it shows as a missing file
    skipped = startup_skips + len(dataset) - len(written)
    print(
        f"{len(written)} prediction files written to {args.output_dir} ({skipped} images skipped)"
    )
    print_scoring_command(args)
    return 0


def load_for_prediction(args: argparse.Namespace):
    """The model of --version, the sample builder and the collate function its base needs."""
    if is_lisa_vlm(args.version):
        base_format, model = load_lisa_vlm(
            args.version,
            precision=args.precision,
            device=args.device,
            load_in_8bit=args.load_in_8bit,
            load_in_4bit=args.load_in_4bit,
            model_max_length=args.model_max_length,
        )
        builder = SampleBuilder(base_format=base_format, image_size=sam_input_side(model))
        collate = partial(
            collate_with_format, base_format=base_format, model_max_length=args.model_max_length
        )
        return model, builder, collate
    tokenizer, model, preprocessor = load_pretrained_model(
        args.version,
        vision_tower=args.vision_tower,
        precision=args.precision,
        device=args.device,
        load_in_8bit=args.load_in_8bit,
        load_in_4bit=args.load_in_4bit,
        model_max_length=args.model_max_length,
    )
    model.pack_conversations = args.pack_conversations
    builder = SampleBuilder(
        clip_transform=preprocessor.clip,
        image_size=preprocessor.sam.image_size,
        conv_template=args.conv_type,
    )
    collate = partial(
        collate_fn,
        tokenizer=tokenizer,
        conv_type=args.conv_type,
        use_mm_start_end=args.use_mm_start_end,
        model_max_length=args.model_max_length,
        num_image_tokens=model.model.num_image_tokens,
    )
    return model, builder, collate


def predict_batches(model, loader: DataLoader, prediction_dir: Path, truth_dir: Path | None) -> set:
    """Write each image's predicted masks (and its ground truth when ``truth_dir``); returns
    the stems written."""
    device = next(model.parameters()).device
    written = set()
    for batch in tqdm(loader, desc="predict", unit="batch", disable=None):
        with torch.inference_mode():
            prediction = model.predict_masks(batch.to(device))
        for image_path, logits, truth in zip(
            batch.image_paths, prediction.pred_masks, batch.gt_masks, strict=True
        ):
            stem = Path(image_path).stem
            save_array(prediction_dir / f"{stem}.npy", (logits > 0).cpu().numpy())
            if truth_dir is not None:
                labels = truth.to(torch.uint8).numpy()  # [n, H, W] 0 / 1 / 255
                save_array(truth_dir / f"{stem}.npy", labels)
            written.add(stem)
    return written


def print_scoring_command(args: argparse.Namespace) -> None:
    """The eval_mask.py command that scores the predictions, when the ground truth is known."""
    groundtruth = args.save_groundtruth or args.image_dir
    if groundtruth is None and len(args.val_dataset.split("|")) == 2:
        groundtruth = args.dataset_dir / layout.REASON_SEG_ROOT / Path(*args.val_dataset.split("|"))
    if groundtruth is None:
        print("pass --save_groundtruth=DIR to score this split with eval_mask.py")
    else:
        print(
            f"score them with: python eval_mask.py --submission_dir={args.output_dir} "
            f"--groundtruth_dir={groundtruth}"
        )


if __name__ == "__main__":
    sys.exit(main())

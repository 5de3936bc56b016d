"""Command line: ``python -m tools.toy_dataset --dataset_dir ./dataset [--seed 0] ...``."""

from __future__ import annotations

import argparse
import sys

from tools.toy_dataset.generate import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_REFER,
    DEFAULT_NUM_SEM_SEG,
    DEFAULT_NUM_TEST,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    make_toy_dataset,
)
from tools.toy_dataset.output import ToyDatasetError
from tools.toy_dataset.queries import QUERY_KIND_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.toy_dataset",
        description=(
            "Write a small synthetic dataset of coloured shapes in every on-disk format LISA "
            "trains and validates on (ADE20K, COCO-Stuff, Mapillary, PACO-LVIS, PASCAL-Part, "
            "refCLEF/refCOCO/refCOCO+/refCOCOg/gRefCOCO, LLaVA-Instruct, ReasonSeg), in the tree "
            "of the original README. The same arguments give byte-identical files; re-running "
            "replaces an earlier toy tree (the files toy_dataset.json lists) and nothing else. "
            "Toy folders that hold files the generator did not write are refused, files beside "
            "them (a README) are left alone."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset_dir", required=True, help="folder to write the tree into")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into toy folders that hold files the generator did not write: those with "
        "the names it writes are replaced, the others are left as they are",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0 or more)")
    parser.add_argument(
        "--image_size", type=int, default=DEFAULT_IMAGE_SIZE, help="picture width in pixels"
    )
    parser.add_argument(
        "--num_train", type=int, default=DEFAULT_NUM_TRAIN, help="ReasonSeg train images"
    )
    parser.add_argument("--num_val", type=int, default=DEFAULT_NUM_VAL, help="ReasonSeg val images")
    parser.add_argument(
        "--num_test", type=int, default=DEFAULT_NUM_TEST, help="ReasonSeg test images"
    )
    parser.add_argument(
        "--num_refer",
        type=int,
        default=DEFAULT_NUM_REFER,
        help="images of the COCO-based referring datasets (shared), and of refCLEF",
    )
    parser.add_argument(
        "--num_sem_seg",
        type=int,
        default=DEFAULT_NUM_SEM_SEG,
        help="images of ADE20K, of COCO 2017 (COCO-Stuff, PACO-LVIS, LLaVA), of Mapillary and "
        "of PASCAL-Part, each",
    )
    parser.add_argument(
        "--query_kinds",
        default=",".join(QUERY_KIND_NAMES),
        help="comma-separated kinds of ReasonSeg query to write (fewer kinds, easier task)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = make_toy_dataset(
            args.dataset_dir,
            args.seed,
            image_size=args.image_size,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            num_refer=args.num_refer,
            num_sem_seg=args.num_sem_seg,
            query_kinds=[name.strip() for name in args.query_kinds.split(",") if name.strip()],
            overwrite=args.overwrite,
        )
    except ToyDatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"error: cannot write the toy dataset under {args.dataset_dir}: {error}",
            file=sys.stderr,
        )
        return 2
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

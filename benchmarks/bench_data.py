"""Samples per second of the default training mixture on a synthetic tree of small images.

Writes a temporary dataset tree in the real formats of every source (96-256 px images), builds
the default mixture (sem_seg||refer_seg||vqa||reason_seg at 9,3,3,1, SAM input 1024, CLIP 224)
and times it in one process, then through DataLoaders (batch 2) with 0 and ``--workers`` worker
processes. With ``--tokenizer`` (default: the reference tiny_lisa, when present) the loaders
also run the training collate_fn, as train_ds.py does. The original prepares about 62
samples/s in one process on a 2-core machine.

    .venv/bin/python benchmarks/bench_data.py [--samples 400] [--workers 2] [--images 32]
"""

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.utils.data

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.utils.data.fake_tree import write_tree  # noqa: E402
from utils.collate import collate_fn  # noqa: E402
from utils.data import DataConfig, HybridDataset, build_datasets  # noqa: E402
from utils.tokenization import load_tokenizer  # noqa: E402
from utils.transforms import ClipTransform  # noqa: E402

REFERENCE_TOKENIZER = (
    Path(os.environ.get("LISA_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))
    / "tiny_lisa"
)


def in_process(dataset: HybridDataset, samples: int) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second) of ``dataset[i]`` in this process.

    The CPU figure is what the process would reach alone on the machine; the wall-clock one
    also counts the time other processes took the cores.
    """
    for i in range(20):  # warm-up: page cache, lazy imports
        dataset[samples + i]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(samples):
        dataset[i]
    return samples / (time.perf_counter() - wall), samples / (time.process_time() - cpu)


def through_loader(dataset: HybridDataset, samples: int, workers: int, collate: Callable) -> float:
    """Samples/s a DataLoader (batch 2) delivers with ``workers`` worker processes."""
    subset = torch.utils.data.Subset(dataset, range(samples))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=2, num_workers=workers, collate_fn=collate
    )
    iterator = iter(loader)
    next(iterator)  # the workers have started and produced a first batch
    start = time.perf_counter()
    batches = sum(1 for _ in iterator)
    return 2 * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400, help="samples timed per setting")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--images", type=int, default=32, help="images written per source")
    parser.add_argument(
        "--tokenizer",
        default=str(REFERENCE_TOKENIZER),
        help="tokenizer directory for the training collate_fn ('' to keep samples as lists)",
    )
    args = parser.parse_args()
    if args.tokenizer and (Path(args.tokenizer) / "tokenizer.model").is_file():
        collate, collated = (
            partial(collate_fn, tokenizer=load_tokenizer(args.tokenizer)),
            "collate_fn",
        )
    else:
        collate, collated = list, "samples as a list"
    with tempfile.TemporaryDirectory() as root:
        write_tree(Path(root), count=args.images, seed=0, sizes=(96, 256))
        train_set, _ = build_datasets(
            DataConfig(dataset_dir=root),
            clip_transform=ClipTransform(),
            samples_per_epoch=2 * args.samples + 40,
            with_validation=False,
        )
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
        )
        print(f"load average before timing: {load}; sources (images):")
        print("  " + ", ".join(f"{k} {v}" for k, v in train_set.source_sizes().items()))
        wall, cpu = in_process(train_set, args.samples)
        print(f"one process            {wall:7.1f} samples/s ({cpu:.1f} per CPU second)")
        for workers in sorted({0, args.workers}):
            rate = through_loader(train_set, args.samples, workers, collate)
            print(f"DataLoader, {workers} workers  {rate:7.1f} samples/s (batch 2, {collated})")
        if train_set.skip_counts():
            print(f"skipped: {train_set.skip_counts()}")


if __name__ == "__main__":
    main()

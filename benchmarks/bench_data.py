"""Samples per second of the default training mixture on a synthetic tree of small images.

Writes a temporary dataset tree in the real formats of every source (96-256 px images), builds
the default mixture (sem_seg||refer_seg||vqa||reason_seg at 9,3,3,1, SAM input 1024, CLIP 224)
and times it three ways: ``dataset[i]`` in one process; DataLoaders (batch 2) with the training
collate_fn in the main process (0 workers) and with ``--workers`` worker processes. Each setting
runs for two forms of the SAM input, in alternating rounds so that both see the same machine load:

- uint8: what the data code hands over now, the decoded pixels (the model resizes, normalises
  and pads them on its device; that work is not timed here);
- float32: what it made before, in the data loader: the image resized with Pillow to 1024 on
  its longest side, normalised and zero-padded to 1024 x 1024 (12 MB).

Figures are samples per wall-clock second and per CPU second of the timed process (the second
depends less on what else runs on the machine; for workers only the wall clock is given).
``--profile`` adds where one process's time goes, stage by stage, in CPU milliseconds per sample.

    .venv/bin/python benchmarks/bench_data.py [--samples 200] [--rounds 2] [--workers 2] [--profile]
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial, wraps
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import utils.collate  # noqa: E402
import utils.data.sample_builder  # noqa: E402
from tests.utils.data.fake_tree import write_tree  # noqa: E402
from utils.collate import collate_fn  # noqa: E402
from utils.data import DataConfig, HybridDataset, build_datasets  # noqa: E402
from utils.sam_input import SAM_PIXEL_MEAN, SAM_PIXEL_STD, sam_encoder_input  # noqa: E402
from utils.tokenization import load_tokenizer  # noqa: E402
from utils.transforms import ClipTransform, SamTransform  # noqa: E402

REFERENCE_TOKENIZER = (
    Path(os.environ.get("LISA_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))
    / "tiny_lisa"
)
FORMS = ("uint8", "float32")
SAM_SIDE = 1024  # the default --image_size


class FloatSamInput(torch.utils.data.Dataset):
    """The mixture with each SAM input made as the data code made it before: resized with
    Pillow, normalised, zero-padded float32 [3, S, S]."""

    def __init__(self, dataset: HybridDataset, side: int) -> None:
        self.dataset = dataset
        self.resizer = SamTransform(side)
        self.mean = np.asarray(SAM_PIXEL_MEAN, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(SAM_PIXEL_STD, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = self.dataset[index]
        return dataclasses.replace(sample, image=self.former_sam_input(sample.image))

    def former_sam_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """[3, H, W] uint8 -> [3, S, S] float32, on this CPU, as the former SamTransform did."""
        image = pixels.permute(1, 2, 0).numpy()  # [H, W, 3], the decoded array itself
        height, width = self.resizer.resize_shape(image)
        if (height, width) != image.shape[:2]:
            resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
            image = np.asarray(resized)
        side = self.resizer.image_size
        out = np.zeros((3, side, side), dtype=np.float32)
        inside = out[:, :height, :width]
        inside[...] = image.transpose(2, 0, 1)
        inside -= self.mean
        inside /= self.std
        return torch.from_numpy(out)


def in_process(dataset, start: int, samples: int) -> tuple[float, float]:
    """(samples per wall-clock second, per CPU second) of ``dataset[i]`` in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(start, start + samples):
        dataset[i]
    return samples / (time.perf_counter() - wall), samples / (time.process_time() - cpu)


def through_loader(
    dataset, start: int, samples: int, workers: int, collate: Callable
) -> tuple[float, float]:
    """(samples per wall-clock second, per CPU second of this process) a DataLoader (batch 2)
    delivers with ``workers`` worker processes, timed from its first batch."""
    subset = torch.utils.data.Subset(dataset, range(start, start + samples + 2))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=2, num_workers=workers, collate_fn=collate
    )
    iterator = iter(loader)
    next(iterator)  # the workers have started and produced a first batch
    wall, cpu = time.perf_counter(), time.process_time()
    batches = sum(1 for _ in iterator)
    return 2 * batches / (time.perf_counter() - wall), 2 * batches / (time.process_time() - cpu)


def compare_forms(train_set: HybridDataset, args, collate: Callable) -> None:
    """Every setting for both forms of the SAM input, alternating, ``args.rounds`` times."""
    datasets = {"uint8": train_set, "float32": FloatSamInput(train_set, SAM_SIDE)}
    settings = {"one process": None, "DataLoader, 0 workers": 0}
    settings[f"DataLoader, {args.workers} workers"] = args.workers
    totals: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for round_index in range(args.rounds):
        start = 40 + round_index * args.samples  # new samples each round, the same for each form
        for name, workers in settings.items():
            for form in FORMS if round_index % 2 == 0 else FORMS[::-1]:  # neither always first
                if workers is None:
                    rates = in_process(datasets[form], start, args.samples)
                else:
                    rates = through_loader(datasets[form], start, args.samples, workers, collate)
                totals[name, form].append(rates)
    print(f"samples/s, mean of {args.rounds} rounds of {args.samples} samples (wall | CPU):")
    print(f"  {'':24s}" + "".join(f"{form + ' SAM input':>26s}" for form in FORMS))
    for name, workers in settings.items():
        cells = []
        for form in FORMS:
            wall = np.mean([w for w, _ in totals[name, form]])
            cpu = np.mean([c for _, c in totals[name, form]])
            cpu_text = "      -" if workers else f"{cpu:7.1f}"
            cells.append(f"{wall:15.1f} | {cpu_text}")
        uint8_wall = np.mean([w for w, _ in totals[name, "uint8"]])
        float_wall = np.mean([w for w, _ in totals[name, "float32"]])
        ratio = f"   uint8/float32 {uint8_wall / float_wall:.2f}x (wall)"
        print(f"  {name:24s}" + "".join(f"{cell:>26s}" for cell in cells) + ratio)


class StageTimes:
    """CPU seconds of this thread spent in named functions, by wrapping them where they are
    looked up (restored on exit)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def _timed(self, stage: str, function: Callable) -> Callable:
        @wraps(function)
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] += time.thread_time() - start

        return timed

    @contextmanager
    def wrapping(self, targets: dict[str, list[tuple[object, str]]]) -> Iterator[None]:
        """Time ``owner.name`` under its stage for each (owner, name) of ``targets``."""
        places = [(stage, owner, name) for stage, pairs in targets.items() for owner, name in pairs]
        originals = [getattr(owner, name) for _, owner, name in places]
        try:
            for (stage, owner, name), original in zip(places, originals, strict=True):
                setattr(owner, name, self._timed(stage, original))
            yield
        finally:
            for (_, owner, name), original in zip(places, originals, strict=True):
                setattr(owner, name, original)


# Functions timed by --profile, wrapped where the code looks them up.
ITEM_STAGES = {
    "image decode": [(utils.data.sample_builder, "load_image")],
    "SAM input (float32: resize, normalise, pad here)": [
        (SamTransform, "__call__"),
        (FloatSamInput, "former_sam_input"),
    ],
    "CLIP transform (resize, crop, normalise)": [(ClipTransform, "__call__")],
}
COLLATE_STAGES = {"tokenisation and label masking": [(utils.collate, "tokenise")]}


def stage_seconds(dataset, start: int, samples: int, collate: Callable) -> dict[str, float]:
    """CPU seconds per stage of ``dataset[i]`` for pairs of samples, then collate."""
    stages = StageTimes()
    item_cpu = collate_cpu = 0.0
    with stages.wrapping({**ITEM_STAGES, **COLLATE_STAGES}):
        for i in range(start, start + samples, 2):
            begin = time.thread_time()
            pair = [dataset[i], dataset[i + 1]]
            middle = time.thread_time()
            collate(pair)
            item_cpu += middle - begin
            collate_cpu += time.thread_time() - middle
    seconds = {stage: stages.seconds[stage] for stage in ITEM_STAGES}
    rest = item_cpu - sum(seconds.values())
    seconds["the rest of dataset[i]: sampling, annotations, masks"] = rest
    seconds.update({stage: stages.seconds[stage] for stage in COLLATE_STAGES})
    rest = collate_cpu - sum(stages.seconds[stage] for stage in COLLATE_STAGES)
    seconds["the rest of collate: stacking, padding"] = rest
    seconds["total: dataset[i] and collate"] = item_cpu + collate_cpu
    return seconds


def profile_stages(train_set: HybridDataset, start: int, samples: int, collate: Callable) -> None:
    """Where one process's time goes, stage by stage, for both forms of the SAM input."""
    forms = {"uint8": train_set, "float32": FloatSamInput(train_set, SAM_SIDE)}
    seconds = {
        form: stage_seconds(dataset, start, samples, collate) for form, dataset in forms.items()
    }
    print(f"where one process's time goes ({samples} samples; CPU ms per sample, share):")
    print(f"  {'':54s}" + "".join(f"{form + ' SAM input':>22s}" for form in forms))
    for stage in seconds["uint8"]:
        cells = []
        for form in forms:
            value, total = seconds[form][stage], seconds[form]["total: dataset[i] and collate"]
            cells.append(f"{1e3 * value / samples:8.2f}  {100 * value / total:5.1f} %")
        print(f"  {stage:54s}" + "".join(f"{cell:>22s}" for cell in cells))
    print(
        f"  the model's side of the uint8 form, on this CPU: {model_side_ms(train_set, start):.2f} ms"
    )


def model_side_ms(train_set: HybridDataset, start: int, images: int = 50) -> float:
    """CPU ms per image of sam_encoder_input (resize, normalise, pad) where the model runs on
    this CPU; on a GPU the same numbers come from tensor operations there."""
    samples = [train_set[i] for i in range(start, start + images)]
    begin = time.thread_time()
    for sample in samples:
        pixels = sample.image[None]
        sam_encoder_input(pixels, [sample.original_size], [sample.resize], SAM_SIDE)
    return 1e3 * (time.thread_time() - begin) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples timed per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--images", type=int, default=32, help="images written per source")
    parser.add_argument(
        "--profile", action="store_true", help="also print the time per stage of one process"
    )
    parser.add_argument(
        "--tokenizer",
        default=str(REFERENCE_TOKENIZER),
        help="tokenizer directory for the training collate_fn ('' to keep samples as lists)",
    )
    args = parser.parse_args()
    if args.samples < 2 or args.samples % 2 or args.rounds < 1 or args.workers < 1:
        parser.error("--samples must be even and at least 2, --rounds and --workers at least 1")
    has_tokenizer = args.tokenizer and (Path(args.tokenizer) / "tokenizer.model").is_file()
    if has_tokenizer:
        collate = partial(collate_fn, tokenizer=load_tokenizer(args.tokenizer))
    else:
        collate = list
        print(f"no tokenizer at {args.tokenizer!r}: the loaders return samples as lists")
    with tempfile.TemporaryDirectory() as root:
        write_tree(Path(root), count=args.images, seed=0, sizes=(96, 256))
        train_set, _ = build_datasets(
            DataConfig(dataset_dir=root, image_size=SAM_SIDE),
            clip_transform=ClipTransform(),
            samples_per_epoch=(args.rounds + 1) * args.samples + 80,
            with_validation=False,
        )
        for i in range(40):  # warm-up: page cache, lazy imports, the allocator's pools
            FloatSamInput(train_set, SAM_SIDE)[i] if i % 2 else train_set[i]
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
        )
        print(f"load average before timing: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(
            "sources (images): "
            + ", ".join(f"{k} {v}" for k, v in train_set.source_sizes().items())
        )
        compare_forms(train_set, args, collate)
        if args.profile:
            profile_stages(train_set, 40, args.samples, collate)
        print(f"load average after timing: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        if train_set.skip_counts():
            print(f"skipped: {train_set.skip_counts()}")


if __name__ == "__main__":
    main()

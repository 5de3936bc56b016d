"""Check a dataset folder against what the readers expect, before starting a run.

    python -m utils.check_dataset --dataset_dir ./dataset \
        [--dataset "sem_seg||refer_seg||vqa||reason_seg"] [--sem_seg_data ...] \
        [--refer_seg_data ...] [--vqa_data ...] [--reason_seg_data ...] \
        [--val_dataset "ReasonSeg|val"] [--explanatory 0.1] [--limit 100]

The flags have the names and defaults of train_ds.py. For each requested source it prints
whether it was found (or the path it expected), how many images it draws from, and the first
malformed file among the first ``--limit`` items, each read exactly as training reads it
(``--limit 0`` reads every item). The exit status is 1 when a requested source cannot be used
(absent, or none of its checked items usable), else 0.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from utils.data.bad_samples import BadSampleError, MissingSourceError, SkipReason
from utils.data.build import DataConfig, build_source, check_data_flags, requested_sources
from utils.data.sample_builder import SampleBuilder
from utils.data.val_dataset import ValDataset
from utils.transforms import ClipTransform


@dataclass
class SourceReport:
    name: str
    error: str | None = None  # why the source cannot be used at all
    error_kind: str = "MISSING"  # MISSING (files absent) or INVALID (a wrong name or flag)
    size: int = 0  # images (or conversations) it draws from
    checked: int = 0
    usable: int = 0
    first_malformed: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.checked == 0 or self.usable > 0)

    def lines(self) -> list[str]:
        if self.error is not None:
            reason = self.error.removeprefix(f"{self.name}: ")
            return [f"{self.error_kind:<8} {self.name:<22} {reason}"]
        status = "ok" if self.ok else "UNUSABLE"
        counts = f"{self.size:>8} images, {self.usable} of {self.checked} checked usable"
        lines = [f"{status:<8} {self.name:<22} {counts}"]
        if self.first_malformed:
            lines.append(f"{'':<8} {'':<22} first malformed: {self.first_malformed}")
        return lines


def _check_items(
    report: SourceReport,
    count: int,
    read: Callable[[int], object],
    startup: Sequence[BadSampleError],
    limit: int,
) -> None:
    """Read the first ``limit`` items (all when 0) and note the first malformed one."""
    report.size = count
    malformed = [e for e in startup if e.reason != SkipReason.NO_TARGET]
    first = malformed[0] if malformed else None
    report.checked = count if limit == 0 else min(limit, count)
    for index in range(report.checked):
        try:
            read(index)
            report.usable += 1
        except BadSampleError as error:
            if first is None and error.reason != SkipReason.NO_TARGET:
                first = error
    if first is not None:
        report.first_malformed = f"{first} ({first.reason.value})"


def _open(report: SourceReport, make: Callable[[], object]) -> object | None:
    """``make()``, or None with the reason noted in ``report``."""
    try:
        return make()
    except (MissingSourceError, ValueError) as error:
        report.error = str(error)
        report.error_kind = "MISSING" if isinstance(error, MissingSourceError) else "INVALID"
        return None


def check(config: DataConfig, limit: int) -> list[SourceReport]:
    """One report per requested training source and validation set."""
    # Reading is what is checked; tiny transforms keep it fast.
    builder = SampleBuilder(
        clip_transform=ClipTransform(shortest_edge=8, crop_size=(8, 8)),
        image_size=8,
        conv_template=config.conv_type,
    )
    reports = []
    for task, name in requested_sources(config):
        report = SourceReport(name)
        source = _open(report, lambda: build_source(task, name, config, builder))  # noqa: B023
        if source is not None:
            read = functools.partial(source.sample_at, rng=np.random.default_rng(0))
            _check_items(report, len(source), read, source.startup_skips, limit)
        reports.append(report)
    for name in [name.strip() for name in config.val_dataset.split("||") if name.strip()]:
        report = SourceReport(name)
        val = _open(report, lambda: ValDataset(config.dataset_dir, name, builder))  # noqa: B023
        if val is not None:
            _check_items(report, len(val), val.sample_at, val.startup_skips, limit)
        reports.append(report)
    return reports


def parse_args(argv: Sequence[str] | None = None) -> tuple[DataConfig, int]:
    """The data flags of train_ds.py (every one accepted, so a training command can be reused)."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.check_dataset", description=__doc__.split("\n\n")[0]
    )
    defaults = DataConfig()
    for field in fields(DataConfig):
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(
                f"--{field.name}", action=argparse.BooleanOptionalAction, default=default
            )
        else:
            parser.add_argument(f"--{field.name}", type=type(default), default=default)
    parser.add_argument(
        "--limit", type=int, default=100, help="items read per source (0: every item)"
    )
    args = vars(parser.parse_args(argv))
    limit = args.pop("limit")
    return DataConfig(**args), limit


def main(argv: Sequence[str] | None = None) -> int:
    config, limit = parse_args(argv)
    if limit < 0:
        print("--limit must be 0 (every item) or positive.")
        return 1
    try:
        check_data_flags(config)  # the checks train_ds.py makes before building anything
        reports = check(config, limit)
    except ValueError as error:  # malformed flags
        print(error)
        return 1
    for report in reports:
        print("\n".join(report.lines()))
    usable = sum(report.ok for report in reports)
    print(f"{usable} of {len(reports)} requested sources can be used (under {config.dataset_dir}).")
    return 0 if usable == len(reports) else 1


if __name__ == "__main__":
    sys.exit(main())

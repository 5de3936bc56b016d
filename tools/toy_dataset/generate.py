"""make_toy_dataset: the whole toy tree, every source in the format its original reader takes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.toy_dataset.output import MARKER_FILE, TOY_FOLDERS, DatasetWriter, ToyDatasetError
from tools.toy_dataset.queries import QUERY_KIND_NAMES, QueryKind, query_kinds_named
from tools.toy_dataset.write_coco import write_coco_sources
from tools.toy_dataset.write_reason_seg import (
    write_explanatory,
    write_reason_seg_split,
    write_reason_seg_targets,
)
from tools.toy_dataset.write_refer_seg import (
    MIN_REFER_IMAGES,
    write_coco_refer_datasets,
    write_refclef,
)
from tools.toy_dataset.write_sem_seg import write_ade20k, write_mapillary, write_pascal_part
from utils.output_dir import OutputDirError, OutputFolder

DEFAULT_IMAGE_SIZE = 128  # pixels on the long side; small, for CPU training
DEFAULT_NUM_TRAIN = 1000  # ReasonSeg train images
DEFAULT_NUM_VAL = 100  # ReasonSeg val images
DEFAULT_NUM_TEST = 100  # ReasonSeg test images
DEFAULT_NUM_REFER = 200  # COCO train2014 images of refCOCO/+/g and gRefCOCO; refCLEF images
DEFAULT_NUM_SEM_SEG = 200  # images of ADE20K, of COCO 2017 (COCO-Stuff, PACO-LVIS, LLaVA),
# of Mapillary and of PASCAL-Part, each

MIN_IMAGE_SIZE = 64


@dataclass(frozen=True)
class ToyDatasetSummary:
    """What :func:`make_toy_dataset` wrote."""

    dataset_dir: Path
    seed: int
    image_size: int
    counts: dict[str, int]  # per source: images (sem-seg, ReasonSeg), refs, or conversations
    removed_stale_files: int  # files an earlier run wrote and this one did not, deleted

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"Toy dataset (seed {self.seed}, {self.image_size} px) in {self.dataset_dir}:"]
        lines += [f"  {source:<24} {count:>6}" for source, count in self.counts.items()]
        if self.removed_stale_files:
            lines.append(f"  removed {self.removed_stale_files} files of an earlier run")
        return "\n".join(lines)


def coco_2017_ids(num_refer: int, num_sem_seg: int) -> range:
    """Ids of the COCO 2017 pictures: they start halfway through refCOCO's train2014 ids, so
    that, as in the real data, some refCOCO pictures (validation ones included) reappear in
    COCO-Stuff, PACO-LVIS and LLaVA under their 2017 names."""
    first = num_refer // 2 + 1
    return range(first, first + num_sem_seg)


def _check_arguments(seed: int, image_size: int, counts: dict[str, int]) -> None:
    if seed < 0:
        raise ToyDatasetError(f"--seed must be 0 or more, got {seed}.")
    if image_size < MIN_IMAGE_SIZE:
        raise ToyDatasetError(f"--image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}.")
    for flag, count in counts.items():
        least = MIN_REFER_IMAGES if flag == "num_refer" else 1
        if count < least:
            raise ToyDatasetError(f"--{flag} must be at least {least}, got {count}.")


def make_toy_dataset(
    dataset_dir: str | os.PathLike,
    seed: int = 0,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    num_test: int = DEFAULT_NUM_TEST,
    num_refer: int = DEFAULT_NUM_REFER,
    num_sem_seg: int = DEFAULT_NUM_SEM_SEG,
    query_kinds: Sequence[str] = QUERY_KIND_NAMES,
    overwrite: bool = False,
) -> ToyDatasetSummary:
    """Write the toy dataset under ``dataset_dir`` (see the package docstring for the tree).

    ``query_kinds`` limits the ReasonSeg queries to some kinds of ``queries.QUERY_KIND_NAMES``
    (all by default), e.g. to make the task easier. The same arguments always give
    byte-identical files. The tree is written into a private folder beside ``dataset_dir`` and
    moved into place at the end, so an interrupted run changes nothing. Re-running over an
    earlier toy tree replaces it; files the earlier run wrote (its marker lists them) and this
    one does not are deleted, and nothing else. ``overwrite`` writes into toy folders that hold
    files the generator did not write: those with the names it writes are replaced, the others
    stay.

    Raises:
        ToyDatasetError: an argument is out of range, or ``dataset_dir`` is a file or holds
            files in the toy folders that the generator did not write.
    """
    sizes = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "num_refer": num_refer,
        "num_sem_seg": num_sem_seg,
    }
    _check_arguments(seed, image_size, sizes)
    kinds = _query_kinds(query_kinds)
    root = Path(dataset_dir).resolve()
    output = _claim_output(dataset_dir, overwrite)
    marker = {
        "generator": "tools.toy_dataset",
        "seed": seed,
        "image_size": image_size,
        **sizes,
        "query_kinds": [kind.name for kind in kinds],
    }
    with output:
        counts = _write_sources(DatasetWriter(output.staging), seed, image_size, sizes, kinds)
        try:
            removed = output.commit({**marker, "complete": True, "counts": counts})
        except OutputDirError as error:
            raise ToyDatasetError(str(error)) from None
    return ToyDatasetSummary(root, seed, image_size, counts, removed)


def _query_kinds(names: Sequence[str]) -> tuple[QueryKind, ...]:
    """The query kinds --query_kinds names, at least one."""
    try:
        kinds = query_kinds_named(names)
    except ValueError as error:
        raise ToyDatasetError(f"--query_kinds: {error}.") from None
    if not kinds:
        raise ToyDatasetError("--query_kinds names no kind; expected at least one.")
    return kinds


def _claim_output(dataset_dir: str | os.PathLike, overwrite: bool) -> OutputFolder:
    """The toy folders of ``dataset_dir``, claimed (refused in one sentence when a user's)."""
    output = OutputFolder(
        dataset_dir,
        flag="--dataset_dir",
        overwrite=overwrite,
        scope=TOY_FOLDERS,
        manifest_name=MARKER_FILE,
    )
    try:
        output.claim()
    except OutputDirError as error:
        raise ToyDatasetError(str(error)) from None
    return output


def _write_sources(
    writer: DatasetWriter, seed: int, image_size: int, sizes: dict[str, int], kinds: Sequence
) -> dict[str, int]:
    """Every source of the tree; returns the count of each (see ToyDatasetSummary.counts)."""
    num_refer, num_sem_seg = sizes["num_refer"], sizes["num_sem_seg"]
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        count = sizes[f"num_{split}"]
        items = write_reason_seg_split(writer, seed, image_size, split, count, kinds)
        counts[f"ReasonSeg|{split}"] = len(items)
        if split == "train":
            counts["ReasonSeg explanatory"] = write_explanatory(writer, items)
            counts["reason_seg_targets"] = write_reason_seg_targets(writer, items)
    counts |= write_coco_refer_datasets(writer, seed, image_size, range(1, num_refer + 1))
    counts |= write_refclef(writer, seed, image_size, num_refer)
    counts["ade20k"] = write_ade20k(writer, seed, image_size, num_sem_seg)
    counts |= write_coco_sources(writer, seed, image_size, coco_2017_ids(num_refer, num_sem_seg))
    counts["mapillary"] = write_mapillary(writer, seed, image_size, num_sem_seg)
    counts["pascal_part"] = write_pascal_part(writer, seed, image_size, num_sem_seg)
    return counts

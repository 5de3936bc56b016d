"""Building the training mixture and the validation sets from the data settings.

train_ds.py calls :func:`build_datasets` with the :class:`DataConfig` of its flags (names and
defaults of the original's, see utils.train_config).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from utils.conversation import CONV_TYPES
from utils.data.bad_samples import MissingSourceError
from utils.data.hybrid_dataset import HybridDataset, SourceGroup
from utils.data.label_map_sources import LABEL_MAP_SOURCES
from utils.data.layout import REFER_TRAIN_SPLIT_BY
from utils.data.part_sources import PART_SOURCES
from utils.data.questions import parse_answer_templates
from utils.data.reason_seg_source import NO_EXPLANATION, reason_seg_source
from utils.data.refer_seg_source import refer_seg_source
from utils.data.sample_builder import SampleBuilder
from utils.data.source import TrainingSource
from utils.data.val_dataset import ValDataset
from utils.data.vqa_source import vqa_source
from utils.errors import UsageError
from utils.transforms import ClipTransform

if TYPE_CHECKING:
    from model.bases import BaseFormat

TASKS = ("sem_seg", "refer_seg", "vqa", "reason_seg")
SEM_SEG_SOURCES = (*LABEL_MAP_SOURCES, *PART_SOURCES)


@dataclass
class DataConfig:
    """The data flags of train_ds.py (names and defaults of the original)."""

    dataset_dir: str = "./dataset"  # root of the tree described in dataset/README.md
    dataset: str = "sem_seg||refer_seg||vqa||reason_seg"  # tasks of the training mixture
    sample_rates: str = "9,3,3,1"  # relative weight of each task, in the order of --dataset
    sem_seg_data: str = "ade20k||cocostuff||pascal_part||paco_lvis||mapillary"
    refer_seg_data: str = "refclef||refcoco||refcoco+||refcocog"  # grefcoco may be added
    vqa_data: str = "llava_instruct_150k"  # llava_dataset/<name>.json
    reason_seg_data: str = "ReasonSeg|train"  # NAME|SPLIT[_SPLIT...]
    val_dataset: str = "ReasonSeg|val"  # one name, or several joined by '||'
    num_classes_per_sample: int = 3  # most questions (and masks) per training sample
    explanatory: float = 0.1  # probability of text-only explained answers; -1 disables
    exclude_val: bool = False  # leave the validation images out of every training source
    image_size: int = 1024  # SAM input side
    conv_type: str = "llava_v1"  # conversation template
    answer_templates: str = ""  # '||'-joined answers of segmentation questions; "": the original's
    seed: int = 0  # base of the training draws


class DataFlagError(UsageError):
    """A data flag of train_ds.py / check_dataset names something unknown or is malformed."""


def _names(flag: str, value: str) -> list[str]:
    names = [name.strip() for name in value.split("||") if name.strip()]
    if not names:
        raise DataFlagError(f"--{flag} is empty.")
    return names


def _check_known(flag: str, value: str, known: Collection[str]) -> None:
    for name in _names(flag, value):
        if name not in known:
            raise DataFlagError(
                f"--{flag}: unknown entry {name!r}; expected some of {'||'.join(known)}."
            )


def parse_sample_rates(value: str, tasks: int) -> list[float]:
    """The weights of ``--sample_rates``: one finite number >= 0 per task, not all 0."""
    try:
        rates = [float(rate) for rate in str(value).split(",")]
    except ValueError:
        raise DataFlagError(f"--sample_rates {value!r} is not comma-separated numbers.") from None
    if len(rates) != tasks:
        raise DataFlagError(
            f"--sample_rates {value!r} has {len(rates)} values for the {tasks} tasks of --dataset."
        )
    if not all(math.isfinite(rate) and rate >= 0 for rate in rates) or sum(rates) <= 0:
        raise DataFlagError(
            f"--sample_rates {value!r} must be finite numbers >= 0, at least one of them > 0."
        )
    return rates


def _check_val_names(value: str) -> None:
    for name in _names("val_dataset", value):
        parts = name.split("|")
        if len(parts) not in (2, 3) or not all(part.strip() for part in parts):
            raise DataFlagError(
                f"--val_dataset {name!r} is neither NAME|SPLIT (ReasonSeg|val) nor "
                "DATASET|SPLIT_BY|SPLIT (e.g. refcoco|unc|val)."
            )


def check_data_flags(config: DataConfig, *, training: bool = True) -> None:
    """Every data flag, without reading the data: names known, rates usable, sizes positive.

    Raises:
        DataFlagError: one sentence naming the flag and what it expects.
    """
    if not Path(config.dataset_dir).is_dir():
        raise DataFlagError(f"--dataset_dir {config.dataset_dir} is not a folder.")
    if config.conv_type not in CONV_TYPES:
        raise DataFlagError(f"--conv_type must be one of {', '.join(CONV_TYPES)}.")
    if config.image_size <= 0:
        raise DataFlagError(f"--image_size must be positive, got {config.image_size}.")
    _check_val_names(config.val_dataset)
    if not training:
        return
    _check_known("dataset", config.dataset, TASKS)
    tasks = _names("dataset", config.dataset)
    parse_sample_rates(config.sample_rates, len(tasks))
    if "sem_seg" in tasks:
        _check_known("sem_seg_data", config.sem_seg_data, SEM_SEG_SOURCES)
    if "refer_seg" in tasks:
        _check_known("refer_seg_data", config.refer_seg_data, tuple(REFER_TRAIN_SPLIT_BY))
    name, _, splits = config.reason_seg_data.partition("|")
    if "reason_seg" in tasks and (not name.strip() or not splits.strip()):
        raise DataFlagError(
            f"--reason_seg_data {config.reason_seg_data!r} is not of the form NAME|SPLIT[_SPLIT...]."
        )
    if "vqa" in tasks and not config.vqa_data.strip():
        raise DataFlagError("--vqa_data is empty (the name of llava_dataset/<name>.json).")
    if config.num_classes_per_sample <= 0:
        raise DataFlagError(
            f"--num_classes_per_sample must be positive, got {config.num_classes_per_sample}."
        )
    explanatory = config.explanatory
    if explanatory != NO_EXPLANATION and not 0.0 <= explanatory <= 1.0:
        raise DataFlagError(f"--explanatory must be -1 or within [0, 1], got {explanatory}.")


def requested_sources(config: DataConfig) -> list[tuple[str, str]]:
    """(task, source name) of every source the flags ask for, in flag order."""
    requested = []
    for task in _names("dataset", config.dataset):
        if task == "sem_seg":
            names = _names("sem_seg_data", config.sem_seg_data)
        elif task == "refer_seg":
            names = _names("refer_seg_data", config.refer_seg_data)
        elif task == "vqa":
            names = [config.vqa_data]
        elif task == "reason_seg":
            names = [config.reason_seg_data]
        else:
            raise ValueError(
                f"unknown --dataset entry {task!r}; expected some of {'||'.join(TASKS)}."
            )
        requested.extend((task, name) for name in names)
    return requested


def build_source(
    task: str,
    name: str,
    config: DataConfig,
    builder: SampleBuilder,
    exclude_images: Collection[str] = frozenset(),
) -> TrainingSource:
    """One training source, e.g. ("sem_seg", "ade20k") or ("refer_seg", "refcocog").

    Raises:
        MissingSourceError: its files are absent (the message names the expected path).
        ValueError: an unknown name.
    """
    dataset_dir = Path(config.dataset_dir)
    per_sample = config.num_classes_per_sample
    if task == "sem_seg":
        make = LABEL_MAP_SOURCES.get(name) or PART_SOURCES.get(name)
        if make is None:
            raise ValueError(
                f"unknown --sem_seg_data entry {name!r}; expected some of "
                f"{'||'.join(SEM_SEG_SOURCES)}."
            )
        return make(dataset_dir, builder, per_sample, exclude_images)
    if task == "refer_seg":
        return refer_seg_source(dataset_dir, name, builder, per_sample, exclude_images)
    if task == "vqa":
        return vqa_source(dataset_dir, name, builder, exclude_images)
    if task == "reason_seg":
        return reason_seg_source(
            dataset_dir, name, builder, per_sample, config.explanatory, exclude_images
        )
    raise ValueError(f"unknown --dataset entry {task!r}; expected some of {'||'.join(TASKS)}.")


def build_train_dataset(
    config: DataConfig,
    builder: SampleBuilder,
    *,
    samples_per_epoch: int,
    exclude_images: Collection[str] = frozenset(),
) -> HybridDataset:
    """The training mixture of ``config.dataset`` weighted by ``config.sample_rates``.

    Args:
        exclude_images: image keys (:func:`utils.data.image_keys.image_key`) left out of every
            source.

    Raises:
        MissingSourceError: a requested source is absent (the message names the expected path).
        ValueError: malformed flags.
    """
    tasks = _names("dataset", config.dataset)
    rates = parse_sample_rates(config.sample_rates, len(tasks))
    if not Path(config.dataset_dir).is_dir():
        raise MissingSourceError(f"--dataset_dir {config.dataset_dir} is not a folder.")
    sources: dict[str, list[TrainingSource]] = {task: [] for task in tasks}
    for task, name in requested_sources(config):
        sources[task].append(build_source(task, name, config, builder, exclude_images))
    groups = [
        SourceGroup(task, sources[task], rate) for task, rate in zip(tasks, rates, strict=True)
    ]
    return HybridDataset(groups, samples_per_epoch=samples_per_epoch, seed=config.seed)


def build_val_datasets(config: DataConfig, builder: SampleBuilder) -> list[ValDataset]:
    """One :class:`ValDataset` per name in ``config.val_dataset``."""
    return [
        ValDataset(config.dataset_dir, name, builder)
        for name in _names("val_dataset", config.val_dataset)
    ]


def build_datasets(
    config: DataConfig,
    *,
    clip_transform: ClipTransform | None = None,
    samples_per_epoch: int,
    with_validation: bool = True,
    base_format: BaseFormat | None = None,
) -> tuple[HybridDataset, list[ValDataset]]:
    """What train_ds.py needs: the training mixture and the validation sets.

    Args:
        config: the data settings.
        clip_transform: ``ClipTransform.from_pretrained(<vision tower directory>)`` (the
            original LLaVA layout, conversations in ``config.conv_type``).
        base_format: instead of ``clip_transform``: the base's format
            (``model.bases.load.load_base_format``), whose image inputs and chat template the
            samples get.
        samples_per_epoch: batch size x gradient accumulation x steps per epoch x world size.
        with_validation: False for ``--no_eval`` (the validation sets are still read when
            ``--exclude_val`` needs their images, but not returned).

    Returns:
        (training mixture, validation sets in the order of ``--val_dataset``).
    """
    builder = SampleBuilder(
        clip_transform=clip_transform,
        image_size=config.image_size,
        conv_template=config.conv_type,
        answers=parse_answer_templates(config.answer_templates),
        base_format=base_format,
    )
    val_sets = build_val_datasets(config, builder) if with_validation or config.exclude_val else []
    excluded = set().union(*(v.image_keys() for v in val_sets)) if config.exclude_val else set()
    train_set = build_train_dataset(
        config, builder, samples_per_epoch=samples_per_epoch, exclude_images=excluded
    )
    return train_set, val_sets if with_validation else []

"""The training mixture: sources grouped by task, groups drawn by ``--sample_rates``.

Item ``idx`` depends only on (seed, idx): a resumed run, any number of DataLoader workers and
any order of access see the same samples. Any non-negative ``idx`` is valid, beyond ``len()``
too: train_ds.py reads ever-growing global indices, so every epoch sees new draws. A bad sample
is counted, logged once, and replaced by another draw from the same task group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.utils.data

from utils.data.bad_samples import BadSampleError, SkipCounter
from utils.data.sample import Sample
from utils.data.source import TrainingSource


@dataclass
class SourceGroup:
    """One task of the mixture (``sem_seg``, ``refer_seg``, ``vqa``, ``reason_seg``)."""

    name: str
    sources: list[TrainingSource]  # drawn with equal probability, as the original does
    rate: float  # relative weight of the group (need not sum to 1 over groups)


class HybridDataset(torch.utils.data.Dataset):
    """``samples_per_epoch`` training samples drawn from the source groups.

    Args:
        groups: the tasks, with their sources and rates.
        samples_per_epoch: the dataset's length (the original: batch size x gradient
            accumulation steps x steps per epoch x world size).
        seed: base of every random draw.
        max_attempts: consecutive bad samples tolerated for one item before giving up.
    """

    def __init__(
        self,
        groups: Sequence[SourceGroup],
        *,
        samples_per_epoch: int,
        seed: int = 0,
        max_attempts: int = 100,
    ) -> None:
        if not groups or any(not group.sources for group in groups):
            raise ValueError("the training mixture needs at least one source in every group.")
        rates = np.asarray([group.rate for group in groups], dtype=np.float64)
        if (rates < 0).any() or rates.sum() <= 0:
            raise ValueError(f"sample rates must be non-negative and not all zero, got {rates}.")
        if samples_per_epoch <= 0:
            raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}.")
        self.groups = list(groups)
        self.probabilities = rates / rates.sum()
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.max_attempts = max_attempts
        self.skips = SkipCounter([s.name for g in self.groups for s in g.sources])
        for group in self.groups:
            for source in group.sources:
                for error in source.startup_skips:
                    self.skips.record(source.name, error)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, idx: int) -> Sample:
        """One training sample (``inference`` False)."""
        rng = np.random.default_rng([self.seed, idx])
        group = self.groups[int(rng.choice(len(self.groups), p=self.probabilities))]
        for attempt in range(self.max_attempts):
            rng = np.random.default_rng([self.seed, idx, attempt])
            source = group.sources[int(rng.integers(len(group.sources)))]
            try:
                return source.sample(rng)
            except BadSampleError as error:
                self.skips.record(source.name, error)
        raise RuntimeError(
            f"{self.max_attempts} samples in a row from {group.name} were unusable (see the "
            "warnings above); run `python -m utils.check_dataset` on the dataset folder."
        )

    def source_sizes(self) -> dict[str, int]:
        """{source name: images (or conversations) it draws from}."""
        return {s.name: len(s) for g in self.groups for s in g.sources}

    def skip_counts(self) -> dict[str, dict[str, int]]:
        """{source: {reason: count}} of the samples skipped so far, DataLoader workers included."""
        return self.skips.counts()

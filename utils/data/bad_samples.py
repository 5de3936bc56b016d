"""Bad training data: the error a reader raises for one unusable sample, and the skip counter.

A reader raises :class:`BadSampleError` (with a :class:`SkipReason`) when one sample cannot be
used; the dataset counts it under its source and reason, logs one warning line (once per bad
file and process, not again each time the file is drawn), and draws another sample. A source
that is missing altogether raises :class:`MissingSourceError` when the dataset is built, before
training starts; malformed flags (unknown names) raise ValueError.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum

import torch
import torch.utils.data

logger = logging.getLogger(__name__)


class SkipReason(str, Enum):
    """Why a sample was skipped (the keys of the counts)."""

    MISSING_FILE = "missing_file"  # an image, label map or annotation named but absent
    UNREADABLE_IMAGE = "unreadable_image"  # not an image, truncated, or corrupt
    BAD_ANNOTATION = "bad_annotation"  # undecodable json, missing keys, bad label map or RLE
    DEGENERATE_POLYGON = "degenerate_polygon"  # fewer than 3 points, or outside the image
    NO_TARGET = "no_target"  # nothing to ask about (no labelled class, no annotation)


class BadSampleError(Exception):
    """One sample cannot be used; the message names the file and the reason."""

    def __init__(self, reason: SkipReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MissingSourceError(ValueError):
    """A requested data source is absent or unusable as a whole (one sentence, with the path)."""


class SkipCounter:
    """Counts of skipped samples per source and reason, shared with DataLoader worker processes.

    Each process (the main one, each worker) adds to its own row of a shared-memory tensor, so
    the counts read in the main process include the workers' skips and no increment is lost.
    """

    def __init__(self, sources: Sequence[str], max_workers: int = 64) -> None:
        """
        Args:
            sources: names of the sources that may skip samples (fixed for the counter's life).
            max_workers: DataLoader workers with their own row; more share rows modulo this.
        """
        self.sources = tuple(sources)
        self.reasons = tuple(SkipReason)
        self._rows = max_workers + 1
        # [process, source, reason]; row 0 is the main process, row k the worker with id k-1.
        self._counts = torch.zeros(
            self._rows, len(self.sources), len(self.reasons), dtype=torch.int64
        ).share_memory_()
        self._warned: set[str] = set()  # per process: a bad file drawn again is not re-logged

    def record(self, source: str, error: BadSampleError) -> None:
        """Count a skipped sample; log one warning line the first time this process sees it."""
        message = f"skipped a {source} sample ({error.reason.value}): {error}"
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)
        worker = torch.utils.data.get_worker_info()
        row = 0 if worker is None else 1 + worker.id % (self._rows - 1)
        self._counts[row, self.sources.index(source), self.reasons.index(error.reason)] += 1

    def counts(self) -> dict[str, dict[str, int]]:
        """{source: {reason: count}} over all processes, only the non-zero entries."""
        totals = self._counts.sum(dim=0)  # [source, reason]
        result: dict[str, dict[str, int]] = {}
        for i, source in enumerate(self.sources):
            for j, reason in enumerate(self.reasons):
                if int(totals[i, j]):
                    result.setdefault(source, {})[reason.value] = int(totals[i, j])
        return result

    def total(self) -> int:
        """All skipped samples."""
        return int(self._counts.sum())

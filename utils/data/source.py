"""What the training mixture asks of every data source."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from utils.collate import Sample


class TrainingSource(Protocol):
    """A source of training samples: ade20k, refcoco, llava_instruct_150k, ReasonSeg|train ..."""

    name: str  # as written in the command-line flags; keys the skip counts

    def __len__(self) -> int:
        """Number of images (or conversations) the source draws from."""
        ...

    def sample(self, rng: np.random.Generator) -> Sample:
        """One random training sample, all randomness from ``rng``.

        Raises:
            BadSampleError: the drawn item cannot be used (the caller counts it and redraws).
        """
        ...

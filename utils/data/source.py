"""What the training mixture asks of every data source."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from utils.data.bad_samples import BadSampleError
from utils.data.sample import Sample


class TrainingSource(ABC):
    """A source of training samples: ade20k, refcoco, llava_instruct_150k, ReasonSeg|train ...

    Subclasses set ``name`` (as written in the command-line flags; it keys the skip counts).
    """

    name: str
    startup_skips: Sequence[BadSampleError] = ()  # files left out while indexing (never drawn)

    @abstractmethod
    def __len__(self) -> int:
        """Number of images (or conversations) the source draws from."""

    @abstractmethod
    def sample_at(self, index: int, rng: np.random.Generator) -> Sample:
        """The training sample of item ``index``; the other draws (classes, templates) use ``rng``.

        Raises:
            BadSampleError: the item cannot be used (the caller counts it and draws again).
        """

    def sample(self, rng: np.random.Generator) -> Sample:
        """A sample of a uniformly drawn item."""
        return self.sample_at(int(rng.integers(len(self))), rng)

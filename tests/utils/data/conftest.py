from pathlib import Path

import numpy as np
import pytest

from tests.utils.data.fake_tree import write_tree
from utils.data.sample_builder import SampleBuilder
from utils.transforms import ClipTransform


@pytest.fixture(scope="session")
def clip_transform() -> ClipTransform:
    return ClipTransform(shortest_edge=32, crop_size=(32, 32))


@pytest.fixture(scope="session")
def builder(clip_transform) -> SampleBuilder:
    """Small SAM input (128) to keep tests fast; the transforms are tested elsewhere."""
    return SampleBuilder(clip_transform=clip_transform, image_size=128, conv_template="llava_v1")


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """A read-only tree with every source (tests that damage files write their own)."""
    return write_tree(tmp_path_factory.mktemp("dataset"), count=4, seed=0, sizes=(40, 72))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

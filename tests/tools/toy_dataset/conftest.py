"""A small toy tree, written once per test session."""

from pathlib import Path

import pytest

from tools.toy_dataset import make_toy_dataset

TOY_SIZES = {
    "image_size": 96,
    "num_train": 40,
    "num_val": 10,
    "num_test": 6,
    "num_refer": 20,
    "num_sem_seg": 8,
}
TOY_SEED = 0


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "dataset"
    make_toy_dataset(root, TOY_SEED, **TOY_SIZES)
    return root

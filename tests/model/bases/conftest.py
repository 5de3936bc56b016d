"""Tiny random bases in their hub layouts, written once per session, and their formats."""

from pathlib import Path

import numpy as np
import pytest

from model.bases.load import load_base_format
from tools.tiny_vlm_bases import build_tiny_llava_hf, build_tiny_qwen2_5_vl

MAX_LENGTH = 512


@pytest.fixture(scope="session")
def llava_hf_dir(tmp_path_factory) -> Path:
    return build_tiny_llava_hf(tmp_path_factory.mktemp("bases") / "llava_hf", seed=0)


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("bases") / "qwen2_5_vl", seed=0)


@pytest.fixture(scope="session", params=["llava_hf", "qwen2_5_vl"])
def base_dir(request) -> Path:
    """Each transformers base in turn."""
    return request.getfixturevalue("llava_hf_dir" if request.param == "llava_hf" else "qwen_dir")


@pytest.fixture(scope="session")
def base_format(base_dir):
    return load_base_format(base_dir, model_max_length=MAX_LENGTH)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)

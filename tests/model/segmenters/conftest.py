"""Tiny segmenter checkpoints on disk: SAM 2 directories written by tools.tiny_sam2 (the video
layout the published checkpoints have, and a plain image model) and an official SAM file."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.segment_anything import build_sam_tiny
from tools.tiny_sam2 import write_tiny_sam2

SAM_IMAGE_SIZE = 64  # the tiny official SAM's input side


@pytest.fixture(scope="session")
def tiny_sam2_dir(tmp_path_factory) -> Path:
    """A sam2_video checkpoint, as facebook/sam2.1-hiera-large is published."""
    return write_tiny_sam2(tmp_path_factory.mktemp("sam2") / "sam2.1-tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_sam2_image_dir(tmp_path_factory) -> Path:
    """A plain sam2 (image model) checkpoint."""
    return write_tiny_sam2(tmp_path_factory.mktemp("sam2") / "sam2-image", video=False, seed=1)


def random_tiny_sam_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny official-layout SAM with every tensor random (the builder zeroes some)."""
    torch.manual_seed(seed)
    state_dict = build_sam_tiny(image_size=SAM_IMAGE_SIZE).state_dict()
    return {name: torch.randn_like(tensor) * 0.1 for name, tensor in state_dict.items()}


@pytest.fixture(scope="session")
def tiny_sam_file(tmp_path_factory) -> Path:
    """An official-layout SAM checkpoint: a plain state dict saved with torch.save."""
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(random_tiny_sam_state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_sam_safetensors(tmp_path_factory) -> Path:
    """The same layout as a .safetensors file."""
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.safetensors"
    save_file(random_tiny_sam_state_dict(seed=1), path)
    return path

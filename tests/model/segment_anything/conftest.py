"""Fixtures for the SAM tests: the reference tiny SAM and its recorded inputs/outputs, and a helper
that fills a module with non-trivial random values (the builders zero pos_embed and rel_pos)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model.segment_anything import Sam, build_sam_tiny

LISA_SAM_PREFIX = "model.visual_model."


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every floating tensor of the state dict with N(0, 1) / sqrt(fan_in) values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if not tensor.is_floating_point():
                continue
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return module


@pytest.fixture(scope="session")
def tiny_sam_state_dict(tiny_lisa_dir: Path) -> dict[str, torch.Tensor]:
    """The SAM tensors of the reference tiny LISA checkpoint, LISA prefix removed."""
    state_dict = torch.load(
        tiny_lisa_dir / "pytorch_model.bin", map_location="cpu", weights_only=True
    )
    return {
        k[len(LISA_SAM_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(LISA_SAM_PREFIX)
    }


@pytest.fixture(scope="session")
def tiny_sam(tiny_sam_state_dict: dict[str, torch.Tensor]) -> Sam:
    """The tiny SAM of the reference checkpoint, fp32, eval mode."""
    sam = build_sam_tiny()
    sam.load_state_dict(tiny_sam_state_dict, strict=True)
    return sam


@pytest.fixture(scope="session")
def sam_parts(tiny_cases_dir: Path) -> dict[str, np.ndarray]:
    """Outputs of the original SAM modules on img1 (reference README C.7)."""
    with np.load(tiny_cases_dir / "sam_parts_img1.npz") as data:
        return dict(data)


@pytest.fixture(scope="session")
def preprocess_img1(tiny_cases_dir: Path) -> dict[str, np.ndarray]:
    """img1 as preprocessed by the original code (reference README C.3)."""
    with np.load(tiny_cases_dir / "preprocess_img1.npz") as data:
        return dict(data)


@pytest.fixture(scope="session")
def text_embeds(sam_parts: dict[str, np.ndarray]) -> torch.Tensor:
    """[2, 1, 256] text prompts of the reference; re-derived from the seed if not stored."""
    if "text_embeds" in sam_parts:
        return torch.from_numpy(sam_parts["text_embeds"])
    return torch.randn(2, 1, 256, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="session")
def image_embeddings(tiny_sam: Sam, preprocess_img1: dict[str, np.ndarray]) -> torch.Tensor:
    """Our tiny image encoder on the reference `sam_input` -> [1, 256, 64, 64]."""
    with torch.inference_mode():
        return tiny_sam.image_encoder(torch.from_numpy(preprocess_img1["sam_input"]))


@pytest.fixture
def randomize():
    """`randomize_(module, seed=0)`: fill a module with random values (see above)."""
    return randomize_

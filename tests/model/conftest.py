"""A tiny random LISA, saved as a real checkpoint directory."""

import pytest
import torch

from model.LISA import LISAForCausalLM

from .tiny import tiny_config


@pytest.fixture(scope="session")
def tiny_random_lisa_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = LISAForCausalLM(tiny_config())
    # post_init leaves SAM's and CLIP's own initialisation; make norms and biases non-trivial too
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    path = tmp_path_factory.mktemp("tiny_random_lisa")
    model.save_pretrained(path)
    return path

"""Device names checked against this machine, and the precisions every --precision offers."""

import pytest
import torch

from utils.devices import PRECISIONS, DeviceError, resolve_device, resolve_dtype


def test_the_precisions_are_the_three_of_the_original():
    assert list(PRECISIONS) == ["fp32", "bf16", "fp16"]
    assert PRECISIONS["bf16"] == torch.bfloat16 and PRECISIONS["fp16"] == torch.float16


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default of a machine without CUDA")
def test_no_device_means_the_cpu_without_cuda_whatever_the_local_rank():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(None, local_rank=3) == torch.device("cpu")


def test_the_local_rank_names_the_cuda_device_and_is_checked(monkeypatch):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a machine with CUDA
    with pytest.raises(DeviceError, match=f"'cuda:{count}'"):
        resolve_device(None, local_rank=count)
    if count:
        assert resolve_device(None, local_rank=count - 1) == torch.device("cuda", count - 1)
        assert resolve_device(None) == torch.device("cuda")


@pytest.mark.parametrize("name", ["gpu", "meta", "cuda:x"])
def test_what_is_no_device_here_is_one_sentence(name):
    with pytest.raises(DeviceError, match=f"'{name}'"):
        resolve_device(name)


def test_half_precision_runs_in_fp32_on_a_cpu():
    cpu = torch.device("cpu")
    assert (
        resolve_dtype("bf16", cpu) == torch.float32 and resolve_dtype("fp32", cpu) == torch.float32
    )
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16, fp16"):
        resolve_dtype("int8", cpu)

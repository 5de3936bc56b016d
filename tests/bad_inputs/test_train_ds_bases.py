"""train_ds.py with a transformers base (Qwen2.5-VL) and a wrong segmenter or base: one sentence
naming the flag, exit status 2, no traceback, nothing trained, no process group joined, and the
user's files untouched."""

import json
import os

import pytest
import torch

import train_ds
from tests.bad_inputs.broken_files import snapshot
from tests.toy_runs import SMALL_TOY
from tools.tiny_sam2 import write_tiny_sam2
from tools.tiny_vlm_bases import build_tiny_qwen2_5_vl
from tools.toy_dataset import make_toy_dataset

TRAINED_MARK = "trainable parameters"  # logged once the model is built


@pytest.fixture(autouse=True)
def own_process_group():
    """train_ds.run in this process starts a world of one (environment variables and a process
    group on a port); both go afterwards, so that later runs in other processes are not told
    to join it."""
    environment = dict(os.environ)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(environment)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_bases")
    make_toy_dataset(root / "dataset", **SMALL_TOY)
    build_tiny_qwen2_5_vl(root / "qwen")
    write_tiny_sam2(root / "sam2")
    (root / "empty").mkdir()
    unknown = root / "unknown_base"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root


def args(root, *extra: str) -> list[str]:
    return [
        f"--dataset_dir={root / 'dataset'}",
        f"--log_base_dir={root / 'runs'}",
        "--precision=fp32",
        "--workers=0",
        "--out_dim=32",
        *extra,
    ]


CASES = {
    "no segmenter for a base": (["--version={root}/qwen"], "--vision_pretrained"),
    "an empty folder as segmenter": (
        ["--version={root}/qwen", "--vision_pretrained={root}/empty"],
        "holds no segmenter",
    ),
    "a base as segmenter": (
        ["--version={root}/qwen", "--vision_pretrained={root}/qwen"],
        "holds no segmenter",
    ),
    "SAM asked of a SAM 2 folder": (
        ["--version={root}/qwen", "--vision_pretrained={root}/sam2", "--segmenter=sam"],
        "--segmenter",
    ),
    "prompt width of another segmenter": (
        ["--version={root}/qwen", "--vision_pretrained={root}/sam2", "--out_dim=256"],
        "--out_dim 256",
    ),
    "an unknown base": (
        ["--version={root}/unknown_base", "--vision_pretrained={root}/sam2"],
        "model_type 'bert'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_base_or_segmenter_is_one_sentence(workspace, case, capsys):
    extra, expected = CASES[case]
    before = snapshot(workspace)
    flags = [flag.format(root=workspace) for flag in extra]
    assert train_ds.run(args(workspace, *flags)) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("train_ds.py:")]
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert TRAINED_MARK not in out + err
    assert not torch.distributed.is_initialized(), "refused only after joining the processes"
    after = snapshot(workspace)
    assert {k: v for k, v in after.items() if "/runs" not in str(k)} == {
        k: v for k, v in before.items() if "/runs" not in str(k)
    }

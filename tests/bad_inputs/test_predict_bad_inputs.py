"""predict.py on broken checkpoints, devices this machine lacks, and a split with broken
annotations or images: one line and a non-zero exit for the checkpoint and the flag (nothing
written), a skipped and counted image for a bad file of the split (the others predicted)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import predict

from .broken_files import (
    BAD_ANNOTATIONS,
    BROKEN_CHECKPOINTS,
    SOME_BAD_ANNOTATIONS,
    broken_checkpoint,
    fifo,
    link_loop,
    one_line,
    png_bomb,
    snapshot,
)

pytestmark = pytest.mark.reference
CHECKPOINT_CASES = (
    "SAM tensor missing",
    "unexpected tensor",
    "SAM tensor of another shape",
    "config.json wrong type",
    "torch file truncated",
    "index names a missing shard",
)


def write_split(folder: Path, tiny_cases_dir: Path) -> Path:
    """A ReasonSeg split with one good image (the reference's img1, 320x240)."""
    folder.mkdir(parents=True)
    shutil.copy(tiny_cases_dir / "img1.png", folder / "good.jpg")  # decoded by content
    circle = [[90 + 50 * np.cos(a), 120 + 50 * np.sin(a)] for a in np.linspace(0, 6.2, 32)]
    annotation = {
        "text": ["the red circle"],
        "is_sentence": False,
        "shapes": [{"label": "target", "points": [[float(x), float(y)] for x, y in circle]}],
    }
    (folder / "good.json").write_text(json.dumps(annotation))
    return folder


def run(capsys, version: Path, clip: Path, *argv) -> tuple[int, str, str]:
    code = predict.main(
        ["--version", str(version), "--vision-tower", str(clip), "--precision", "fp32"]
        + ["--workers", "0", *map(str, argv)]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", CHECKPOINT_CASES)
def test_a_broken_checkpoint_is_one_line_and_writes_nothing(
    tiny_lisa_dir, tiny_cases_dir, tmp_path, capsys, name
):
    directory, clip = broken_checkpoint(tiny_lisa_dir, tmp_path / "checkpoints", name)
    _, pieces, file_name = BROKEN_CHECKPOINTS[name]
    split = write_split(tmp_path / "split", tiny_cases_dir)
    before = {**snapshot(directory), **snapshot(split)}
    code, out, err = run(
        capsys, directory, clip, "--image_dir", split, "--output_dir", tmp_path / "pred"
    )
    assert code == 1 and out == ""
    one_line(err, f"predict.py: cannot load --version={directory}", str(directory / file_name))
    one_line(err, *pieces)
    assert not (tmp_path / "pred").exists()
    assert {**snapshot(directory), **snapshot(split)} == before


def _missing_devices() -> list[str]:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["gpu", f"cuda:{count + 6}", "meta"] + (["cuda"] if count == 0 else [])


@pytest.mark.parametrize("device", _missing_devices())
def test_a_device_this_machine_lacks_is_one_line(tiny_lisa_dir, tmp_path, capsys, device):
    code, out, err = run(
        capsys, tiny_lisa_dir, tiny_lisa_dir / "clip", "--device", device,
        "--image_dir", tmp_path, "--output_dir", tmp_path / "pred",
    )  # fmt: skip
    assert code == 2 and out == ""
    one_line(err, f"predict.py: --device '{device}'")
    assert not (tmp_path / "pred").exists()


def _bad_image(writer):
    def write(folder: Path) -> None:
        writer(folder / "bad.jpg")
        shutil.copy(folder / "good.json", folder / "bad.json")

    return write


# name -> (writes the broken pair into the split, a piece of the warning naming it)
SPLIT_CASES = {
    **{
        f"annotation {name}": (
            lambda folder, text=BAD_ANNOTATIONS[name][0]: (
                shutil.copy(folder / "good.jpg", folder / "bad.jpg"),
                (folder / "bad.json").write_text(text),
            ),
            BAD_ANNOTATIONS[name][1],
        )
        for name in SOME_BAD_ANNOTATIONS
    },
    "annotation a FIFO": (
        lambda folder: (
            shutil.copy(folder / "good.jpg", folder / "bad.jpg"),
            fifo(folder / "bad.json"),
        ),
        "bad.json' does not exist",
    ),
    "image a FIFO": (_bad_image(fifo), "bad.jpg' of bad.json does not exist"),
    "image a link loop": (_bad_image(link_loop), "bad.jpg' of bad.json does not exist"),
    "image a PNG bomb": (_bad_image(png_bomb), "too large to decode safely"),
}


@pytest.mark.parametrize("name", list(SPLIT_CASES))
def test_a_bad_file_of_the_split_is_skipped_and_counted(
    tiny_lisa_dir, tiny_cases_dir, tmp_path, capsys, caplog, name
):
    split = write_split(tmp_path / "split", tiny_cases_dir)
    write, piece = SPLIT_CASES[name]
    write(split)
    before = snapshot(split)
    code, out, err = run(
        capsys, tiny_lisa_dir, tiny_lisa_dir / "clip",
        "--image_dir", split, "--output_dir", tmp_path / "pred",
    )  # fmt: skip
    assert code == 0, err
    assert "1 prediction files written" in out and "(1 images skipped)" in out
    assert "Traceback" not in err
    warnings = [record.getMessage() for record in caplog.records if "bad." in record.getMessage()]
    one_line("\n".join(warnings), "skipped a ReasonSeg", piece)
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.npy")) == ["good.npy"]
    assert snapshot(split) == before


@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantized_loading_on_this_device_predicts_or_says_why(
    tiny_lisa_dir, tiny_cases_dir, tmp_path, capsys, flag
):
    """bitsandbytes has a CPU backend: the quantized model predicts; where a build cannot, the
    failure is one line."""
    split = write_split(tmp_path / "split", tiny_cases_dir)
    code, out, err = run(
        capsys, tiny_lisa_dir, tiny_lisa_dir / "clip", flag,
        "--image_dir", split, "--output_dir", tmp_path / "pred",
    )  # fmt: skip
    assert "Traceback" not in err
    if code == 0:
        assert "1 prediction files written" in out
        assert np.load(tmp_path / "pred" / "good.npy").shape == (1, 240, 320)
    else:
        one_line(err, "predict.py: cannot load")

"""predict.py and its output folders: --save_groundtruth equal to, inside or around --output_dir,
a folder of the user's, a file, an input or a folder inside an input are refused in one line (exit
status 2) before the model loads, with every file byte-identical; with the tiny reference model,
new folders get the files, a re-run replaces its own files only and --overwrite writes beside the
user's."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import predict
from tests.bad_inputs.user_files import (
    UserFiles,
    assert_one_line,
    assert_process_refuses,
    forbid_model_load,
    hidden_leftovers,
    read_only,
)
from utils.output_dir import MANIFEST_NAME

SQUARE = [[40, 60], [200, 60], [200, 200], [40, 200]]


@pytest.fixture
def place(tmp_path):
    """A dataset with a ReasonSeg val split, a plain image folder, a checkpoint folder, and the
    user's own files."""
    split = tmp_path / "dataset" / "reason_seg" / "ReasonSeg" / "val"
    images = tmp_path / "images"
    for folder in (split, images):
        folder.mkdir(parents=True)
        (folder / "img1.jpg").write_bytes(b"not read before the outputs are checked")
        annotation = {"text": ["the square"], "is_sentence": False, "shapes": []}
        (folder / "img1.json").write_text(json.dumps(annotation))
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    user = UserFiles()
    for folder in ("dataset", "images", "checkpoint"):
        user.keep(tmp_path / folder)
    user.add(tmp_path / "mine" / "notes.txt")
    user.add(tmp_path / "a_file")
    return tmp_path, user


def model_and_data(root: Path, use_image_dir: bool) -> list[str]:
    data = ["--image_dir", str(root / "images")] if use_image_dir else []
    return ["--version", str(root / "checkpoint"), "--dataset_dir", str(root / "dataset"), *data]


# name: (--output_dir, --save_groundtruth or None, --image_dir used, what the one line says);
# "{r}" is the test's folder
REFUSALS = {
    "the same folder for both": ("{r}/out", "{r}/out", False, "need separate folders"),
    "truth inside the predictions": ("{r}/out", "{r}/out/gt", False, "one holds the other"),
    "predictions inside the truth": ("{r}/gt/out", "{r}/gt", True, "one holds the other"),
    "a folder of the user's": ("{r}/mine", None, False, "--output_dir {r}/mine holds 1 file(s)"),
    "truth into a folder of the user's": ("{r}/out", "{r}/mine", False, "--save_groundtruth"),
    "a file": ("{r}/a_file", None, False, "is a file; expected a folder"),
    "the image folder": ("{r}/images", None, True, "is the --image_dir input itself"),
    "truth into the image folder": ("{r}/out", "{r}/images", True, "--image_dir input itself"),
    "inside the dataset": ("{r}/dataset/preds", None, False, "lies inside the --dataset_dir"),
    "around the dataset": ("{r}", None, False, "contains the --version input"),
    "inside the checkpoint": ("{r}/checkpoint/preds", None, True, "lies inside the --version"),
    "under a file": ("{r}/a_file/preds", None, False, "a_file is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_output_is_one_line_before_the_model_loads(place, case, capsys, monkeypatch):
    forbid_model_load(monkeypatch, predict, "load_pretrained_model")
    root, user = place
    output, truth, use_image_dir, expected = REFUSALS[case]
    argv = [*model_and_data(root, use_image_dir), "--output_dir", output.format(r=root)]
    if truth is not None:
        argv += ["--save_groundtruth", truth.format(r=root)]
    before = sorted(p.name for p in root.iterdir())
    assert predict.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, "predict.py: ", expected.format(r=root))
    user.assert_untouched()
    assert sorted(p.name for p in root.iterdir()) == before  # nothing created, nothing staged


def test_the_script_exits_2_with_one_line(place):
    root, user = place
    command = ["predict.py", *model_and_data(root, True)]
    command += ["--output_dir", str(root / "out"), "--save_groundtruth", str(root / "out")]
    assert_process_refuses(command, "predict.py:", "separate folders")
    user.assert_untouched()


@pytest.mark.reference
def test_outputs_are_written_replaced_and_kept_apart(tiny_lisa_dir, tiny_cases_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("img1", "img3"):
        shutil.copy(tiny_cases_dir / f"{name}.png", images / f"{name}.jpg")
        shape = {"label": "target", "points": SQUARE}
        annotation = {"text": ["the square"], "is_sentence": False, "shapes": [shape]}
        (images / f"{name}.json").write_text(json.dumps(annotation))
    model = ["--version", str(tiny_lisa_dir), "--vision-tower", str(tiny_lisa_dir / "clip")]
    preds, truth = tmp_path / "preds", tmp_path / "truth"
    argv = [*model, "--precision", "fp32", "--workers", "0", "--image_dir", str(images)]
    argv += ["--output_dir", str(preds), "--save_groundtruth", str(truth)]

    def files(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_NAME)

    assert predict.main(argv) == 0
    assert files(preds) == files(truth) == ["img1.npy", "img3.npy"]
    first = np.load(preds / "img1.npy")
    assert not np.array_equal(first, np.load(truth / "img1.npy").astype(bool))
    # a re-run replaces its own files; one whose image is gone now is deleted
    (images / "img3.jpg").unlink()
    (images / "img3.json").unlink()
    assert predict.main(argv) == 0
    assert files(preds) == files(truth) == ["img1.npy"]
    np.testing.assert_array_equal(np.load(preds / "img1.npy"), first)
    # --overwrite: into folders that hold the user's files, which stay
    user = UserFiles()
    user.add(preds / "notes.txt")
    user.add(truth / "img9.npy")
    assert predict.main(argv) == 2  # refused without it
    assert predict.main([*argv, "--overwrite"]) == 0
    user.assert_untouched()
    assert files(preds) == ["img1.npy", "notes.txt"]
    assert hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("flag", ["--output_dir", "--save_groundtruth"])
def test_an_unwritable_place_is_one_line(place, flag, capsys):
    root, user = place
    argv = [*model_and_data(root, True), "--output_dir", str(root / "preds")]
    argv += ["--save_groundtruth", str(root / "truth")]
    with read_only(root / "locked") as locked:
        argv[argv.index(flag) + 1] = str(locked / "out")
        assert predict.main(argv) == 2
        assert sorted(locked.iterdir()) == []
    assert_one_line(capsys.readouterr().err, f"predict.py: {flag}", "cannot be written")
    user.assert_untouched()
    assert not (root / "preds").exists() and hidden_leftovers(root) == []

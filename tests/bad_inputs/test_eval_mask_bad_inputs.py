"""eval_mask.py on broken ground truth and predictions: an unusable ground-truth file is skipped and
reported (one line each), an unusable prediction or a wrong folder stops with one line and exit
status 1; nothing hangs (FIFOs), nothing allocates what a header claims, and no file changes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eval_mask

from .broken_files import BAD_ANNOTATIONS, fifo, link_loop, one_line, png_bomb, snapshot

REPO = Path(__file__).resolve().parents[2]
MASK = np.zeros((6, 8), dtype=bool)  # the good image's prediction: the square's pixels
MASK[1:5, 1:7] = True


def forged_npy(path: Path, shape: tuple[int, ...], descr: str = "|b1", data: bytes = b"") -> Path:
    """An .npy file whose header claims ``shape`` whatever data follows."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": descr, "fortran_order": False, "shape": shape}
        )
        handle.write(data)
    return path


def npz_named_npy(path: Path) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, mask=MASK)
    return path


def truncated_npy(path: Path) -> Path:
    np.save(path, np.ones((40, 60), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:300])
    return path


def object_npy(path: Path) -> Path:
    return forged_npy(path, (2,), descr="|O", data=b"\0" * 16)


# name -> (writes a broken array file at the path, a piece of the reason)
BROKEN_ARRAYS = {
    "FIFO": (fifo, "FIFO"),
    "link loop": (link_loop, "loop of symbolic links"),
    "npz named npy": (npz_named_npy, ".npz archive"),
    "header claims a huge mask": (lambda p: forged_npy(p, (100_000, 100_000)), "pixels"),
    "header claims a huge stack": (lambda p: forged_npy(p, (10**9, 6, 8)), "truncated"),
    "truncated": (truncated_npy, "truncated"),
    "object dtype": (object_npy, "expected bool or numbers"),
    "not an array": (lambda p: p.write_text("mask") and p, "not an .npy array"),
}
BROKEN_PNGS = {
    "PNG bomb": (png_bomb, "too large to decode safely"),
    "PNG FIFO": (fifo, "FIFO"),
}


def write_reason_seg(folder: Path, stem: str, text: str | None = None) -> None:
    """<stem>.jpg (8x6) and <stem>.json: a good annotation, or the json text given."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (90, 90, 90)).save(folder / f"{stem}.jpg")
    good = {"text": ["the square"], "is_sentence": False, "shapes": []}
    good["shapes"] = [{"label": "target", "points": [[1, 1], [6, 1], [6, 4], [1, 4]]}]
    (folder / f"{stem}.json").write_text(text if text is not None else json.dumps(good))


def run(argv: list, timeout: float = 120) -> subprocess.CompletedProcess:
    """eval_mask.py as a process: a FIFO that blocked it would end in a timeout, not a hang."""
    return subprocess.run(
        [sys.executable, "eval_mask.py", *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_process(capsys, argv: list) -> tuple[int, str, str]:
    code = eval_mask.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_reason_seg(gt, "good")
    pred.mkdir()
    np.save(pred / "good.npy", MASK)
    return gt, pred


def assert_scored_good_and_skipped(code, out, err, bad: str, piece: str) -> None:
    assert code == 0, err
    assert out.startswith("gIoU 1.0000  cIoU 1.0000  images 1")
    assert f"skipped images (unusable ground truth): 1: {bad}" in out
    line = one_line(err, f"skipped {bad}:", piece)
    assert "Traceback" not in out + line


@pytest.mark.parametrize("name", list(BAD_ANNOTATIONS))
def test_a_bad_annotation_is_skipped_and_reported(folders, capsys, name):
    gt, pred = folders
    text, piece = BAD_ANNOTATIONS[name]
    write_reason_seg(gt, "bad", text)
    before = snapshot(gt.parent)
    code, out, err = run_in_process(capsys, ["--submission_dir", pred, "--groundtruth_dir", gt])
    assert_scored_good_and_skipped(code, out, err, "bad", piece)
    assert snapshot(gt.parent) == before


def test_a_fifo_annotation_is_skipped_not_waited_for(folders):
    gt, pred = folders
    fifo(gt / "pipe.json")
    Image.new("RGB", (8, 6)).save(gt / "pipe.jpg")
    completed = run(["--submission_dir", pred, "--groundtruth_dir", gt])
    assert_scored_good_and_skipped(
        completed.returncode, completed.stdout, completed.stderr, "pipe", "FIFO"
    )


@pytest.mark.parametrize("name", [*BROKEN_ARRAYS, *BROKEN_PNGS])
def test_a_broken_label_map_is_skipped_and_reported(tmp_path, name):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    np.save(gt / "good.npy", MASK.astype(np.uint8)[None])
    np.save(pred / "good.npy", MASK)
    write, piece = {**BROKEN_ARRAYS, **BROKEN_PNGS}[name]
    write(gt / ("bad.png" if name in BROKEN_PNGS else "bad.npy"))
    before = snapshot(tmp_path)
    completed = run(["--submission_dir", pred, "--groundtruth_dir", gt])
    assert_scored_good_and_skipped(
        completed.returncode, completed.stdout, completed.stderr, "bad", piece
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", [*BROKEN_ARRAYS, *BROKEN_PNGS])
def test_a_broken_prediction_stops_with_one_line(folders, name):
    gt, pred = folders
    write_reason_seg(gt, "other")
    write, piece = {**BROKEN_ARRAYS, **BROKEN_PNGS}[name]
    bad = write(pred / ("other.png" if name in BROKEN_PNGS else "other.npy"))
    before = snapshot(gt.parent)
    completed = run(["--submission_dir", pred, "--groundtruth_dir", gt])
    assert completed.returncode == 1
    assert completed.stdout == ""
    one_line(completed.stderr, "eval_mask.py:", str(bad), piece)
    assert snapshot(gt.parent) == before


@pytest.mark.parametrize("spelling", ["same path", "through a link", "with a trailing dot"])
def test_the_same_folder_on_both_sides_is_refused(folders, capsys, spelling):
    gt, pred = folders
    np.save(gt / "good.npy", MASK)  # predictions in the ground-truth folder: would score 1.0
    other = {
        "same path": gt,
        "through a link": gt.parent / "link",
        "with a trailing dot": gt / ".",
    }[spelling]
    if spelling == "through a link":
        other.symlink_to(gt, target_is_directory=True)
    before = snapshot(gt)
    code, out, err = run_in_process(capsys, ["--submission_dir", other, "--groundtruth_dir", gt])
    assert code == 1 and out == ""
    one_line(err, "eval_mask.py:", "are the same folder")
    assert snapshot(gt) == before

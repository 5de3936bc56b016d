"""The mask renderer (python -m utils.render_reason_seg_masks) on broken annotations and images:
each is skipped in one line naming the file and why, the good ones are rendered, the exit status
is 1, nothing blocks on a FIFO, and the input folder is unchanged."""

import json
import signal
from pathlib import Path

import pytest
from PIL import Image

from utils import render_reason_seg_masks

from .broken_files import BAD_ANNOTATIONS, annotation, fifo, link_loop, one_line, png_bomb, snapshot


def truncated_jpg(path: Path) -> Path:
    Image.new("RGB", (80, 60), (10, 200, 30)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:200])
    return path


def _with_image(folder: Path, stem: str) -> None:
    Image.new("RGB", (8, 6), (90, 90, 90)).save(folder / f"{stem}.jpg")


# name -> (writes the broken "bad" pair, a piece of the reason)
CASES = {
    **{
        f"annotation {name}": (
            lambda folder, text=text: (
                _with_image(folder, "bad"),
                (folder / "bad.json").write_text(text),
            ),
            piece,
        )
        for name, (text, piece) in BAD_ANNOTATIONS.items()
    },
    "annotation a FIFO": (
        lambda folder: (_with_image(folder, "bad"), fifo(folder / "bad.json")),
        "is a FIFO (named pipe), not a regular file",
    ),
    "annotation a link loop": (
        lambda folder: (_with_image(folder, "bad"), link_loop(folder / "bad.json")),
        "is a loop of symbolic links",
    ),
    "image a FIFO": (
        lambda folder: (fifo(folder / "bad.jpg"), _good_json(folder, "bad")),
        "is a FIFO (named pipe), not a regular file",
    ),
    "image a link loop": (
        lambda folder: (link_loop(folder / "bad.jpg"), _good_json(folder, "bad")),
        "is a loop of symbolic links",
    ),
    "image a PNG bomb": (
        lambda folder: (png_bomb(folder / "bad.jpg"), _good_json(folder, "bad")),
        "too large to decode safely",
    ),
    "image truncated": (
        lambda folder: (truncated_jpg(folder / "bad.jpg"), _good_json(folder, "bad")),
        "Cannot read image",
    ),
    "image missing": (lambda folder: _good_json(folder, "bad"), "does not exist"),
}


def _good_json(folder: Path, stem: str) -> None:
    (folder / f"{stem}.json").write_text(json.dumps(annotation()))


def _no_hang(signum, frame):
    raise AssertionError("the renderer blocked (opened a FIFO?)")


@pytest.mark.parametrize("name", list(CASES))
def test_a_broken_pair_is_skipped_in_one_line(tmp_path, capsys, name):
    source = tmp_path / "val"
    source.mkdir()
    _with_image(source, "good")
    _good_json(source, "good")
    write, piece = CASES[name]
    write(source)
    before = snapshot(source)
    output = tmp_path / "rendered"
    previous = signal.signal(signal.SIGALRM, _no_hang)
    signal.alarm(60)
    try:
        code = render_reason_seg_masks.main(
            ["--input_dir", str(source), "--output_dir", str(output)]
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    assert code == 1
    skipped = [line for line in captured.out.splitlines() if line.startswith("skipped")]
    one_line("\n".join(skipped), "skipped bad.json:", piece)
    assert f"rendered 1 of 2 annotations into {output}" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert (output / "good" / "labeled_mask.png").is_file() and not (output / "bad").exists()
    assert snapshot(source) == before

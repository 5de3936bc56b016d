"""python -m utils.render_reason_seg_masks and its --output_dir: a user's folder, a file, the input
folder or a folder inside or around it are refused in one line (exit status 2) with every file
byte-identical; a re-run replaces its own pictures only; --overwrite writes beside the user's
files."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bad_inputs.user_files import (
    UserFiles,
    assert_one_line,
    assert_process_refuses,
    hidden_leftovers,
    read_only,
)
from tests.utils.data.fake_tree import Box, reason_seg_annotation, write_image
from utils.output_dir import MANIFEST_NAME
from utils.render_reason_seg_masks import main

PICTURES = {"labeled_mask.png", "target_mask.png", "ignore_mask.png", "overlay.jpg"}


def annotated(folder: Path, name: str) -> None:
    box = Box(2, 3, 10, 20)
    write_image(folder / f"{name}.jpg", 24, 32, [box], np.random.default_rng(0))
    annotation = reason_seg_annotation(["cup"], False, [box], [])
    (folder / f"{name}.json").write_text(json.dumps(annotation))


@pytest.fixture
def split(tmp_path) -> Path:
    folder = tmp_path / "val"
    annotated(folder, "a")
    annotated(folder, "b")
    return folder


def render(split: Path, output: Path | None, *extra: str) -> int:
    where = [] if output is None else ["--output_dir", str(output)]
    return main(["--input_dir", str(split), *where, *extra])


# name: (--output_dir from the split folder and a place of the user's; what the one line says)
REFUSALS = {
    "a folder of the user's": (lambda s, p: p / "mine", "1 file(s) this tool did not write"),
    "a file": (lambda s, p: p / "a_file", "is a file; expected a folder"),
    "the input folder": (lambda s, p: s, "is the --input_dir input itself"),
    "inside the input": (lambda s, p: s / "rendered", "lies inside the --input_dir input"),
    "around the input": (lambda s, p: s.parent, "contains the --input_dir input"),
    "under a file": (lambda s, p: p / "a_file" / "out", "a_file is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_output_is_one_line_and_touches_nothing(split, tmp_path, case, capsys):
    user = UserFiles()
    user.keep(split)
    place = tmp_path / "place"
    user.add(place / "mine" / "notes.txt")
    user.add(place / "a_file")
    output, expected = REFUSALS[case]
    before = sorted(p.name for p in place.iterdir()), sorted(p.name for p in split.iterdir())
    assert render(split, output(split, place)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, "render_reason_seg_masks: --output_dir", expected)
    user.assert_untouched()
    assert (sorted(p.name for p in place.iterdir()), sorted(p.name for p in split.iterdir())) == (
        before
    )


def test_the_module_exits_2_with_one_line(split):
    command = ["-m", "utils.render_reason_seg_masks", "--input_dir", str(split)]
    command += ["--output_dir", str(split / "out")]
    assert_process_refuses(command, "render_reason_seg_masks:", "--input_dir")


def test_a_rerun_replaces_only_its_own_pictures(split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert render(split, None) == 0  # the default vis_output/<input name>
    output = tmp_path / "vis_output" / "val"
    assert {p.name for p in (output / "b").iterdir()} == PICTURES
    (split / "b.json").unlink()
    assert render(split, None) == 0
    assert sorted(p.name for p in output.iterdir()) == [MANIFEST_NAME, "a"]  # b's are gone
    assert hidden_leftovers(output.parent) == []


def test_overwrite_writes_beside_the_users_files(split, tmp_path):
    user = UserFiles()
    output = tmp_path / "out"
    user.add(output / "notes.txt")
    user.add(output / "a" / "my_drawing.png")
    assert render(split, output, "--overwrite") == 0
    user.assert_untouched()
    assert {p.name for p in (output / "a").iterdir()} == PICTURES | {"my_drawing.png"}
    assert {p.name for p in (output / "b").iterdir()} == PICTURES


def test_an_unwritable_place_is_one_line(split, tmp_path, capsys):
    with read_only(tmp_path / "locked") as locked:
        assert render(split, locked / "out") == 2
        assert sorted(locked.iterdir()) == []
    assert_one_line(capsys.readouterr().err, "--output_dir", "cannot be written")

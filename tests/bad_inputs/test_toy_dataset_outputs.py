"""python -m tools.toy_dataset and a --dataset_dir that holds the user's data: a file, real data or
a user's file added to the toy folders is refused in one line (exit status 2) and stays
byte-identical; a re-run deletes only the files its marker lists (never through a crafted entry);
--overwrite writes the toy tree beside the user's files."""

import hashlib
import json
from pathlib import Path

import pytest

from tests.bad_inputs.user_files import (
    UserFiles,
    assert_one_line,
    assert_process_refuses,
    hidden_leftovers,
    read_only,
)
from tools.toy_dataset.__main__ import main
from tools.toy_dataset.output import MARKER_FILE

SIZES = [
    "--image_size=64",
    "--num_train=3",
    "--num_val=2",
    "--num_test=1",
    "--num_refer=5",
    "--num_sem_seg=2",
]
TRAIN = "reason_seg/ReasonSeg/train"


def toy(dataset_dir: Path, *extra: str) -> int:
    return main(["--dataset_dir", str(dataset_dir), *SIZES, *extra])


def digests(root: Path, skip: set[str] = frozenset()) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)) not in skip
    }


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """The toy tree these sizes give in an empty folder."""
    root = tmp_path_factory.mktemp("fresh") / "dataset"
    assert toy(root) == 0
    return root


def plant_real_data(dataset: Path, user: UserFiles) -> None:
    user.add(dataset / "ade20k" / "images" / "training" / "ADE_train_00099999.jpg")


def plant_after_a_toy_run(dataset: Path, user: UserFiles) -> None:
    assert toy(dataset) == 0
    user.add(dataset / TRAIN / "my_annotation.json", b'{"text": ["mine"]}')


def plant_old_marker(dataset: Path, user: UserFiles) -> None:
    """A tree of a generator version whose marker listed no files: nothing counts as ours."""
    assert toy(dataset) == 0
    marker = json.loads((dataset / MARKER_FILE).read_text())
    del marker["files"]
    (dataset / MARKER_FILE).write_text(json.dumps(marker))
    user.keep(dataset / "reason_seg")


def plant_link(dataset: Path, user: UserFiles) -> None:
    elsewhere = user.add(dataset.parent / "elsewhere" / "images" / "COCO_train2014_1.jpg")
    (dataset / "refer_seg").mkdir(parents=True)
    (dataset / "refer_seg" / "images").symlink_to(elsewhere.parent, target_is_directory=True)


# name: (how the user's data got there, what --dataset_dir is, what the one line says)
REFUSALS = {
    "a file": (lambda d, u: u.add(d), "is a file; expected a folder"),
    "under a file": (lambda d, u: u.add(d.parent / "a_file"), "a_file is a file, not a folder"),
    "real data in a toy folder": (plant_real_data, "ADE_train_00099999.jpg"),
    "a user's file after a toy run": (plant_after_a_toy_run, "my_annotation.json"),
    "an old marker without its file list": (plant_old_marker, "--overwrite"),
    "a link to the user's images": (plant_link, "refer_seg/images"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_folder_with_the_users_data_is_refused(tmp_path, case, capsys):
    plant, expected = REFUSALS[case]
    user = UserFiles()
    dataset = tmp_path / "dataset"
    plant(dataset, user)
    if case == "under a file":
        dataset = tmp_path / "a_file" / "dataset"
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert toy(dataset) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, "error: --dataset_dir", expected)
    user.assert_untouched()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging folder left


def test_the_module_exits_2_with_one_line(tmp_path):
    user = UserFiles()
    plant_real_data(tmp_path / "dataset", user)
    command = ["-m", "tools.toy_dataset", "--dataset_dir", str(tmp_path / "dataset")]
    result = assert_process_refuses(command, "error:", "ade20k", "--overwrite")
    assert result.stdout == ""
    user.assert_untouched()


def test_a_rerun_replaces_its_own_tree_and_keeps_files_beside_it(tmp_path, fresh):
    user = UserFiles()
    dataset = tmp_path / "dataset"
    readme = user.add(dataset / "README.md")
    user.add(dataset / "my_source" / "data.json")
    assert toy(dataset, "--num_train=5") == 0
    assert toy(dataset) == 0  # smaller: the two extra training images of ours go
    assert digests(dataset, {"README.md", "my_source/data.json"}) == digests(fresh)
    user.assert_untouched()
    assert readme.is_file() and hidden_leftovers(tmp_path) == []


def test_crafted_marker_entries_never_delete_outside_the_toy_folders(tmp_path, fresh):
    user = UserFiles()
    dataset = tmp_path / "dataset"
    assert toy(dataset) == 0
    victims = [
        user.add(tmp_path / "victim.txt"),
        user.add(dataset / "README.md"),
        user.add(tmp_path / "absolute.txt"),
    ]
    marker = json.loads((dataset / MARKER_FILE).read_text())
    marker["files"] += [
        "../victim.txt",
        "README.md",
        str(victims[2]),
        "reason_seg/../../victim.txt",
    ]
    (dataset / MARKER_FILE).write_text(json.dumps(marker))
    assert toy(dataset) == 0
    user.assert_untouched()
    assert digests(dataset, {"README.md"}) == digests(fresh)
    # an entry reached through a link the user made (allowed in with --overwrite)
    outside = user.add(tmp_path / "outside" / "secret.txt")
    (dataset / TRAIN / "link").symlink_to(outside.parent, target_is_directory=True)
    marker = json.loads((dataset / MARKER_FILE).read_text())
    marker["files"].append(f"{TRAIN}/link/secret.txt")
    (dataset / MARKER_FILE).write_text(json.dumps(marker))
    assert toy(dataset, "--overwrite") == 0
    user.assert_untouched()


def test_overwrite_writes_beside_the_users_files(tmp_path, fresh):
    user = UserFiles()
    dataset = tmp_path / "dataset"
    plant_real_data(dataset, user)
    user.add(dataset / TRAIN / "my_annotation.json", b'{"text": ["mine"]}')
    same_name = dataset / TRAIN / "train_000001.json"
    same_name.parent.mkdir(parents=True, exist_ok=True)
    same_name.write_text("the user's, under a name the generator writes")
    assert toy(dataset, "--overwrite") == 0
    user.assert_untouched()
    theirs = {"ade20k/images/training/ADE_train_00099999.jpg", f"{TRAIN}/my_annotation.json"}
    ours = digests(dataset, theirs)
    # the marker lists this run's files only; the file of the same name is the toy one now
    assert ours == digests(fresh)
    # a later run without --overwrite still refuses: the user's files are still there
    assert toy(dataset) == 2
    user.assert_untouched()


def test_an_empty_folder_is_used(tmp_path, fresh):
    (tmp_path / "dataset").mkdir()
    assert toy(tmp_path / "dataset") == 0
    assert digests(tmp_path / "dataset") == digests(fresh)


def test_an_unwritable_place_is_one_line(tmp_path, capsys):
    with read_only(tmp_path / "locked") as locked:
        assert toy(locked / "dataset") == 2
        assert sorted(locked.iterdir()) == []
    assert_one_line(capsys.readouterr().err, "error: --dataset_dir", "cannot be written")

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.tools.toy_dataset.conftest import TOY_SEED, TOY_SIZES
from tools.toy_dataset import ToyDatasetError, make_toy_dataset
from tools.toy_dataset import generate as generate_module
from tools.toy_dataset.__main__ import main
from tools.toy_dataset.output import MARKER_FILE

TINY = {
    "image_size": 64,
    "num_train": 4,
    "num_val": 2,
    "num_test": 1,
    "num_refer": 5,
    "num_sem_seg": 2,
}


def file_digests(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_the_same_seed_gives_byte_identical_files(toy_dir, tmp_path):
    make_toy_dataset(tmp_path / "again", TOY_SEED, **TOY_SIZES)
    assert file_digests(tmp_path / "again") == file_digests(toy_dir)


def test_another_process_gives_the_same_bytes(tmp_path):
    """No dependence on string hashing (set order) or other per-process state."""
    make_toy_dataset(tmp_path / "here", **TINY)
    sizes = [f"--{name}={value}" for name, value in TINY.items()]
    command = [sys.executable, "-m", "tools.toy_dataset", "--dataset_dir", str(tmp_path / "there")]
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(command + sizes, check=True, cwd=REPO_ROOT, env=environment, capture_output=True)
    assert file_digests(tmp_path / "there") == file_digests(tmp_path / "here")


def test_another_seed_gives_other_pictures_and_queries(toy_dir, tmp_path):
    make_toy_dataset(tmp_path / "other", TOY_SEED + 1, **TOY_SIZES)
    ours, theirs = file_digests(toy_dir), file_digests(tmp_path / "other")
    assert ours.keys() == theirs.keys()  # same layout
    pictures = [name for name in ours if name.endswith(".jpg")]
    assert all(ours[name] != theirs[name] for name in pictures)
    queries = [name for name in ours if name.startswith("reason_seg") and name.endswith(".json")]
    assert sum(ours[name] != theirs[name] for name in queries) > 0.9 * len(queries)


def test_the_marker_records_the_parameters_and_counts(toy_dir):
    marker = json.loads((toy_dir / MARKER_FILE).read_text())
    assert marker["complete"] is True
    assert marker["seed"] == TOY_SEED and marker["num_train"] == TOY_SIZES["num_train"]
    assert marker["counts"]["ReasonSeg|train"] == TOY_SIZES["num_train"]
    assert marker["counts"]["ade20k"] == TOY_SIZES["num_sem_seg"]
    listed = set(marker["files"])
    assert listed == set(file_digests(toy_dir)) - {MARKER_FILE}


def test_a_smaller_rerun_removes_the_files_it_no_longer_writes(tmp_path):
    make_toy_dataset(tmp_path / "shrunk", **{**TINY, "num_train": 6})
    summary = make_toy_dataset(tmp_path / "shrunk", **TINY)
    make_toy_dataset(tmp_path / "fresh", **TINY)
    assert summary.removed_stale_files > 0
    assert file_digests(tmp_path / "shrunk") == file_digests(tmp_path / "fresh")


def test_an_interrupted_run_changes_nothing(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    make_toy_dataset(tmp_path / "dataset", **TINY)
    before = file_digests(tmp_path / "dataset")
    monkeypatch.setattr(generate_module, "write_mapillary", interrupt)
    for folder in ("dataset", "new"):
        with pytest.raises(KeyboardInterrupt):
            make_toy_dataset(tmp_path / folder, **{**TINY, "num_train": 6})
    assert file_digests(tmp_path / "dataset") == before
    assert not (tmp_path / "new").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dataset"]  # no staging left
    monkeypatch.undo()

    make_toy_dataset(tmp_path / "new", **TINY)
    assert file_digests(tmp_path / "new") == before


def test_a_folder_with_other_data_is_left_alone(tmp_path):
    real = tmp_path / "dataset" / "ade20k" / "images" / "training" / "ADE_train_00000001.jpg"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"a real picture")
    with pytest.raises(ToyDatasetError, match="ade20k"):
        make_toy_dataset(tmp_path / "dataset", **TINY)
    assert real.read_bytes() == b"a real picture"
    assert not (tmp_path / "dataset" / MARKER_FILE).exists()


def test_files_beside_the_toy_folders_survive(tmp_path):
    readme = tmp_path / "dataset" / "README.md"
    readme.parent.mkdir()
    readme.write_text("the expected tree")
    make_toy_dataset(tmp_path / "dataset", **TINY)
    make_toy_dataset(tmp_path / "dataset", **TINY)
    assert readme.read_text() == "the expected tree"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_size": 32}, "--image_size"),
        ({"num_refer": 2}, "--num_refer"),
        ({"num_val": 0}, "--num_val"),
        ({"query_kinds": ["largest", "tallest"]}, "--query_kinds: unknown query kind.s. tallest"),
        ({"query_kinds": []}, "--query_kinds names no kind"),
    ],
)
def test_out_of_range_arguments_are_refused(tmp_path, change, message):
    with pytest.raises(ToyDatasetError, match=message):
        make_toy_dataset(tmp_path / "dataset", **{**TINY, **change})
    assert not (tmp_path / "dataset").exists()


def test_command_line_writes_the_tree_and_reports_counts(tmp_path, capsys):
    sizes = [f"--{name}={value}" for name, value in TINY.items()]
    assert main(["--dataset_dir", str(tmp_path / "dataset"), "--seed", "3", *sizes]) == 0
    output = capsys.readouterr().out
    assert "ReasonSeg|train" in output and "refcocog|umd" in output
    assert (tmp_path / "dataset" / "reason_seg" / "ReasonSeg" / "val" / "val_000001.jpg").is_file()


def test_command_line_errors_are_one_sentence(tmp_path, capsys):
    assert main(["--dataset_dir", str(tmp_path / "dataset"), "--image_size", "8"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --image_size") and error.count("\n") == 1


def test_command_line_help_lists_the_sizes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--dataset_dir", "--seed", "--image_size", "--num_train", "--num_sem_seg"):
        assert flag in help_text


def test_query_kinds_limit_the_reason_seg_queries(tmp_path):
    make_toy_dataset(tmp_path / "dataset", **{**TINY, "num_train": 12}, query_kinds=["largest"])
    train = tmp_path / "dataset" / "reason_seg" / "ReasonSeg" / "train"
    texts = [json.loads(path.read_text())["text"] for path in sorted(train.glob("*.json"))]
    assert len(texts) == 12
    assert all(
        text in {"largest shape", "biggest object"} or "big" in text or "most space" in text
        for image_texts in texts
        for text in image_texts
    )
    marker = json.loads((tmp_path / "dataset" / MARKER_FILE).read_text())
    assert marker["query_kinds"] == ["largest"]

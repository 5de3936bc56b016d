"""train_ds.py and its run folder <log_base_dir>/<exp_name>: a folder of the user's, a file, an
input or a folder inside an input is refused in one line (exit status 2) before anything is built,
with every file byte-identical; an earlier run's folder (lisa_run.json, or only a run's names) is
continued, and --overwrite lets a run write its own files beside the user's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import train_ds
from tests.bad_inputs.user_files import (
    UserFiles,
    assert_one_line,
    assert_process_refuses,
    read_only,
    tool_lines,
)
from tests.toy_runs import base_flags, make_toy_inputs
from tools.tiny_configs import SCRIPTS_BASE
from utils.output_dir import OutputDirError
from utils.run_dir import RUN_MARKER, create_run_dir

REPO = Path(__file__).resolve().parents[2]
BUILT_MARK = "trainable parameters"  # logged once the model is built


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_outputs")
    dataset, base = make_toy_inputs(root, SCRIPTS_BASE)
    return root, dataset, base


def train_args(workspace, log_base_dir: Path, exp_name: str, *extra: str) -> list[str]:
    _, dataset, base = workspace
    return [
        *base_flags(base),
        f"--dataset_dir={dataset}",
        f"--log_base_dir={log_base_dir}",
        f"--exp_name={exp_name}",
        "--image_size=64",
        "--out_dim=32",
        "--precision=fp32",
        "--workers=0",
        "--lora_r=0",
        "--trainable=heads",
        "--dataset=reason_seg",
        "--sample_rates=1",
        "--no-gradient_checkpointing",
        *extra,
    ]


@pytest.fixture
def user(workspace, tmp_path):
    """The inputs, and a runs folder whose 'mine' run folder holds a user's file."""
    root, dataset, base = workspace
    files = UserFiles()
    files.keep(dataset)
    files.keep(root / "base")
    files.add(tmp_path / "runs" / "mine" / "notes.txt")
    files.add(tmp_path / "runs" / "old_run" / "notes.txt")
    files.add(tmp_path / "a_file")
    return files


def legacy_run(folder: Path, user: UserFiles) -> None:
    """What a run wrote before runs carried a marker."""
    user.add(folder / "ckpt_latest" / "latest", b"global_step2")
    user.add(folder / "best.json", b'{"giou": 0.5}')
    user.add(folder / "events.out.tfevents.1.host", b"\x00")


# name: (--log_base_dir, --exp_name, what the one line says); "{r}": test folder, "{w}": inputs
REFUSALS = {
    "a folder of the user's": ("{r}/runs", "mine", "1 file(s) that no training run wrote"),
    "the runs folder itself": ("{r}/runs", "", "(e.g. mine)"),
    "a file": ("{r}", "a_file", "is a file; expected a folder"),
    "under a file": ("{r}/a_file", "run", "a_file is a file, not a folder"),
    "the dataset": ("{w}", "dataset", "is the --dataset_dir input itself"),
    "inside the dataset": ("{w}/dataset", "run", "lies inside the --dataset_dir input"),
    "inside the base": ("{w}/base/llava", "run", "lies inside the --version input"),
    "the CLIP folder": ("{w}/base", "clip", "is the --vision-tower input itself"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_run_folder_is_one_line_before_anything_is_built(
    workspace, user, tmp_path, case, capsys
):
    base_dir, exp_name, expected = REFUSALS[case]
    base_dir = base_dir.format(r=tmp_path, w=workspace[0])
    before = sorted(p.name for p in tmp_path.iterdir())
    assert train_ds.run(train_args(workspace, Path(base_dir), exp_name)) == 2
    out, err = capsys.readouterr()
    assert BUILT_MARK not in out + err
    assert_one_line(tool_lines(err, "train_ds.py:"), "the run folder", expected)
    assert "Traceback" not in out + err
    user.assert_untouched()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob(RUN_MARKER)) and not list(workspace[0].rglob(RUN_MARKER))


def test_the_script_exits_2_with_one_line(workspace, user, tmp_path):
    command = ["train_ds.py", *train_args(workspace, tmp_path / "runs", "mine")]
    result = assert_process_refuses(command, "train_ds.py:", "notes.txt", "--overwrite")
    assert BUILT_MARK not in result.stdout + result.stderr
    user.assert_untouched()


def claimed(workspace, log_base_dir: Path, exp_name: str, *extra: str) -> Path:
    """What main() does with the run folder before anything is built, on the main process."""
    run_dir = train_ds.run_folder(
        train_ds.parse_args(train_args(workspace, log_base_dir, exp_name, *extra))
    )
    create_run_dir(run_dir)
    return run_dir


def test_an_earlier_runs_folder_is_continued(workspace, user, tmp_path):
    legacy = tmp_path / "runs" / "legacy"
    legacy_run(legacy, user)
    assert claimed(workspace, tmp_path / "runs", "legacy") == legacy
    assert (legacy / RUN_MARKER).is_file()
    marker = (legacy / RUN_MARKER).read_bytes()
    # marked: the user's notes beside it, and the weights zero_to_fp32.py wrote there as --weight
    user.add(legacy / "notes.txt")
    user.add(legacy / "pytorch_model.bin")
    claimed(workspace, tmp_path / "runs", "legacy", f"--weight={legacy / 'pytorch_model.bin'}")
    assert (legacy / RUN_MARKER).read_bytes() == marker  # not rewritten
    user.assert_untouched()


def test_overwrite_uses_a_folder_of_the_users(workspace, user, tmp_path):
    run_dir = claimed(workspace, tmp_path / "runs", "mine", "--overwrite")
    assert (run_dir / RUN_MARKER).is_file()
    user.assert_untouched()
    claimed(workspace, tmp_path / "runs", "mine")  # from now on it is a run's folder
    user.assert_untouched()


def test_an_unwritable_place_is_one_sentence(workspace, tmp_path):
    """Checked on every rank before anything is built where permissions tell (not under root),
    and by the main process when it creates the folder."""
    with read_only(tmp_path / "locked") as locked, pytest.raises(OutputDirError) as refusal:
        claimed(workspace, locked, "run")
    assert sorted((tmp_path / "locked").iterdir()) == []
    assert_one_line(str(refusal.value), "the run folder", "cannot be")


@pytest.mark.slow
def test_a_run_beside_the_users_files_trains_and_continues(workspace, user, tmp_path):
    """A whole run (one process, plain python) in a folder of the user's, then the same command
    again: it continues the run it finds there instead of refusing or starting over."""
    argv = train_args(
        workspace, tmp_path / "runs", "mine", "--epochs=1", "--steps_per_epoch=1", "--no_eval"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "train_ds.py", *argv]
    first = subprocess.run(
        [*command, "--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=600, env=env
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "mine"
    assert (run_dir / "ckpt_latest" / "latest").is_file() and (run_dir / RUN_MARKER).is_file()
    user.assert_untouched()
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    user.assert_untouched()

"""train_ds.py on hostile, half-written and foreign checkpoints, kills while saving, a full disk.

Every case runs the real script in a real process with the real DeepSpeed engine (one CPU
process, tiny base, toy data) on checkpoints that a real run wrote, then:
* a crafted pickle in a --resume folder or in runs/<exp>/ckpt_latest never runs (its marker file
  is not created) and the run stops with one sentence naming the file, no traceback;
* a half-written checkpoint is passed over for the last complete one, or the run stops with one
  sentence; a checkpoint of a run with other settings is refused (or, for schedule flags, named);
* a SIGKILL while the best checkpoint is promoted is repaired by the next start (ckpt_model/ and
  best.json exist and match ckpt_latest);
* a full disk while saving removes the partial ckpt_latest.tmp, says so in one line and leaves the
  previous checkpoint whole.

Faults are produced in the child process by a Python audit hook (FAULT_RUNNER below): a real
SIGKILL at a chosen rename or hard link, and an OSError(ENOSPC) at a chosen write. A real full
disk (a small tmpfs) is used too where this machine lets the test mount one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bad_inputs.broken_files import RunsCode, snapshot
from tests.toy_runs import base_flags, make_toy_inputs
from tools.tiny_configs import CHECKPOINTS_BASE
from utils.checkpointing import (
    BEST,
    BEST_METRICS,
    LATEST,
    checkpoint_problem,
    finish_interrupted_saves,
    latest_tag,
    read_record,
    settings_differences,
)
from utils.deepspeed_safe_loading import load_weights_only
from utils.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
SCHEDULE = ["--epochs", "1", "--steps_per_epoch", "2", "--save_steps", "1"]

# Runs train_ds.py as `python train_ds.py ...` would, with one fault armed by its first argument.
FAULT_RUNNER = """
import errno, os, runpy, signal, sys
from pathlib import Path

fault = sys.argv.pop(1)
writes_of_latest = 0

def hook(event, args):
    global writes_of_latest
    if fault == "kill_at_swap" and event == "os.rename":
        source = Path(str(args[0]))
        # the second promotion: ckpt_model.old holds the first one, ckpt_model is gone
        if source.name == "ckpt_model.tmp" and source.with_name("ckpt_model.old").exists():
            os.kill(os.getpid(), signal.SIGKILL)
    if fault == "kill_during_copy" and event == "os.link":
        # the second promotion, in the middle of linking the step's state files
        staged = Path(str(args[1])).parent.parent
        if staged.name == "ckpt_model.tmp" and staged.with_name("ckpt_model").exists():
            os.kill(os.getpid(), signal.SIGKILL)
    if fault == "enospc_second_save" and event == "open" and isinstance(args[0], str):
        path = Path(args[0])
        if path.name == "latest" and path.parent.name == "ckpt_latest.tmp" and "w" in args[1]:
            writes_of_latest += 1
            if writes_of_latest == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), args[0])

sys.addaudithook(hook)
sys.path.insert(0, os.getcwd())
sys.argv[0] = "train_ds.py"
runpy.run_path("train_ds.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_checkpoints")
    dataset, base = make_toy_inputs(
        root, CHECKPOINTS_BASE, "Please segment the red circle. Sure, it is the shape."
    )
    (root / "fault_runner.py").write_text(FAULT_RUNNER)
    return root, dataset, base


def flags(workspace, exp_name: str, *extra: str, log_base: Path | None = None) -> list[str]:
    root, dataset, base = workspace
    return [
        *base_flags(base),
        f"--dataset_dir={dataset}",
        f"--log_base_dir={log_base or root / 'runs'}",
        f"--exp_name={exp_name}",
        "--image_size=64",
        "--out_dim=32",
        "--batch_size=1",
        "--grad_accumulation_steps=1",
        "--workers=0",
        "--lora_r=4",
        "--sample_rates=2,1,1,2",
        "--precision=fp32",
        *extra,
    ]


def train(workspace, args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """One real process of train_ds.py (a world of one), optionally under FAULT_RUNNER."""
    root = workspace[0]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    script = [str(root / "fault_runner.py"), fault] if fault else ["train_ds.py"]
    return subprocess.run(
        [sys.executable, *script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one sentence of a failed run: exactly one 'train_ds.py:' line, no traceback, and no
    advice to turn the unpickling protection off."""
    output = output_of(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("train_ds.py: ")]
    assert result.returncode != 0, output[-3000:]
    assert len(lines) == 1, output[-3000:]
    assert "Traceback" not in output and "weights_only" not in output, output[-3000:]
    return lines[0]


def copy_run(source: Path, destination: Path) -> Path:
    """A copy with files of its own (the run's ckpt_model shares its files with ckpt_latest)."""
    shutil.copytree(source, destination)
    return destination


def step_files(checkpoint: Path) -> list[Path]:
    return sorted((checkpoint / latest_tag(checkpoint)).glob("*.pt"))


def plant_pickle(state_file: Path, marker: Path) -> None:
    """Rewrite a real checkpoint file with one more entry whose unpickling creates ``marker``,
    and check that full unpickling of exactly these bytes would run it."""
    state = load_weights_only(state_file, map_location="cpu")
    state["note"] = RunsCode(marker)
    state_file.unlink()  # a file of its own (not a hard link shared with another checkpoint)
    torch.save(state, state_file)
    probe = state_file.with_name("probe.bin")
    shutil.copyfile(state_file, probe)
    torch.load(probe, weights_only=False)  # the payload is live: this is what resuming must avoid
    assert marker.exists()
    marker.unlink()
    probe.unlink()


@pytest.fixture(scope="module")
def trained_run(workspace):
    """Two steps, a checkpoint after each, validation at the end (ckpt_model is step 2)."""
    result = train(workspace, flags(workspace, "source", *SCHEDULE))
    assert result.returncode == 0, output_of(result)[-4000:]
    return workspace[0] / "runs" / "source", output_of(result)


# ------------------------------------------------------------------------------------------------
# The normal run


@pytest.mark.slow
def test_each_checkpoint_written_is_one_line_with_its_record(trained_run):
    run_dir, output = trained_run
    lines = [line for line in output.splitlines() if line.startswith("checkpoint written: ")]
    assert lines == [
        f"checkpoint written: {run_dir / LATEST} (step 1)",
        f"checkpoint written: {run_dir / LATEST} (step 2)",
        f"checkpoint written: {run_dir / BEST} (step 2)",
    ]
    record = read_record(run_dir / LATEST)
    assert record["global_step"] == 2
    assert record["best_metrics"] == json.loads((run_dir / BEST_METRICS).read_text())
    settings = record["settings"]
    assert settings["world_size"] == 1 and settings["lora_r"] == 4 and settings["zero_stage"] == 2
    trained = [name for name, (_, is_trained) in settings["parameters"].items() if is_trained]
    assert any("lora_A" in name for name in trained) and any(
        "mask_decoder" in name for name in trained
    )
    assert (
        checkpoint_problem(run_dir / LATEST) is None and checkpoint_problem(run_dir / BEST) is None
    )


# ------------------------------------------------------------------------------------------------
# No code from a pickle


@pytest.mark.slow
@pytest.mark.parametrize(
    "planted", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"]
)
def test_crafted_pickle_in_a_resume_folder_never_runs(workspace, trained_run, planted, tmp_path):
    run_dir, _ = trained_run
    folder = copy_run(run_dir / LATEST, tmp_path / "downloaded_checkpoint")
    marker = tmp_path / "code_ran"
    state_file = folder / latest_tag(folder) / planted
    plant_pickle(state_file, marker)
    before = snapshot(folder)

    result = train(workspace, flags(workspace, "hostile", "--resume", str(folder), *SCHEDULE))
    line = error_line(result)
    assert str(state_file) in line and "could run code" in line
    assert not marker.exists()
    assert snapshot(folder) == before


@pytest.mark.slow
def test_crafted_pickle_in_the_run_folder_never_runs_on_auto_resume(
    workspace, trained_run, tmp_path
):
    run_dir, _ = trained_run
    runs = tmp_path / "runs"
    own = copy_run(run_dir, runs / "hostile_auto")
    marker = tmp_path / "code_ran"
    state_file = (
        own / LATEST / latest_tag(own / LATEST) / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    )
    plant_pickle(state_file, marker)
    before = snapshot(own)

    result = train(workspace, flags(workspace, "hostile_auto", *SCHEDULE, log_base=runs))
    line = error_line(result)
    assert str(state_file) in line and "could run code" in line
    assert not marker.exists()
    assert snapshot(own) == before  # no other checkpoint is tried, nothing is repaired or removed


@pytest.mark.slow
def test_zero_to_fp32_refuses_a_crafted_pickle(trained_run, tmp_path):
    run_dir, _ = trained_run
    folder = copy_run(run_dir / BEST, tmp_path / "ckpt_model")
    marker = tmp_path / "code_ran"
    state_file = folder / latest_tag(folder) / "mp_rank_00_model_states.pt"
    plant_pickle(state_file, marker)
    result = subprocess.run(
        [sys.executable, "zero_to_fp32.py", ".", "../pytorch_model.bin"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("zero_to_fp32.py: ")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "could run code" in lines[0] and "Traceback" not in result.stderr
    assert "weights_only" not in result.stderr
    assert not marker.exists() and not (tmp_path / "pytorch_model.bin").exists()


# ------------------------------------------------------------------------------------------------
# Half-written and foreign checkpoints


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()  # a file of its own: ckpt_model shares its files with ckpt_latest
    path.write_bytes(data[: len(data) // 2])


def latest_names_a_missing_step(folder: Path) -> str:
    (folder / "latest").write_text("global_step9")
    return "names global_step9"


def optimizer_state_truncated(folder: Path) -> str:
    truncate(step_files(folder)[-1])
    return "is truncated or damaged"


def model_states_missing(folder: Path) -> str:
    (folder / latest_tag(folder) / "mp_rank_00_model_states.pt").unlink()
    return "has no model states file"


def no_latest_file(folder: Path) -> str:
    (folder / "latest").unlink()
    return "has no 'latest' file"


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    [latest_names_a_missing_step, optimizer_state_truncated, model_states_missing, no_latest_file],
)
def test_half_written_resume_folder_is_one_sentence(workspace, trained_run, damage, tmp_path):
    run_dir, _ = trained_run
    folder = copy_run(run_dir / LATEST, tmp_path / "ckpt")
    expected = damage(folder)
    before = snapshot(folder)
    result = train(workspace, flags(workspace, "half", "--resume", str(folder), *SCHEDULE))
    line = error_line(result)
    assert line.startswith("train_ds.py: --resume: ") and expected in line, line
    assert "trainable parameters" not in output_of(result)  # stopped before the model was built
    assert snapshot(folder) == before


@pytest.mark.slow
def test_auto_resume_passes_over_a_half_written_checkpoint(workspace, trained_run, tmp_path):
    """ckpt_latest damaged: the run resumes from ckpt_model, says so, and writes a whole
    ckpt_latest again."""
    run_dir, _ = trained_run
    runs = tmp_path / "runs"
    own = copy_run(run_dir, runs / "fallback")
    truncate(step_files(own / LATEST)[0])
    result = train(
        workspace,
        flags(workspace, "fallback", "--epochs", "2", "--steps_per_epoch", "2", log_base=runs),
    )
    output = output_of(result)
    assert result.returncode == 0, output[-4000:]
    skipped = [line for line in output.splitlines() if line.startswith("not resuming from")]
    assert len(skipped) == 1 and str(own / LATEST) in skipped[0] and "truncated" in skipped[0]
    assert f"resumed from {own / BEST} at step 2" in output
    assert latest_tag(own / LATEST) == "global_step4" and checkpoint_problem(own / LATEST) is None


@pytest.mark.slow
def test_auto_resume_with_no_complete_checkpoint_stops(workspace, trained_run, tmp_path):
    run_dir, _ = trained_run
    runs = tmp_path / "runs"
    own = copy_run(run_dir, runs / "broken")
    for name in (LATEST, BEST):
        (own / name / "latest").write_text("global_step7")
    before = snapshot(own)
    result = train(workspace, flags(workspace, "broken", *SCHEDULE, log_base=runs))
    line = error_line(result)
    assert "holds no complete checkpoint" in line and "--no-auto_resume" in line
    assert "trainable parameters" not in output_of(result)  # stopped before the model was built
    assert snapshot(own) == before  # nothing of the run is replaced


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--lora_r=8"], "--lora_r 4 there, 8 here"),
        (["--trainable=heads"], "--trainable lisa there, heads here"),
    ],
)
def test_resume_with_other_model_flags_is_refused(workspace, trained_run, extra, expected):
    run_dir, _ = trained_run
    result = train(
        workspace, flags(workspace, "other", "--resume", str(run_dir / LATEST), *SCHEDULE, *extra)
    )
    line = error_line(result)
    assert str(run_dir / LATEST) in line and expected in line, line
    assert "resumed from" not in output_of(result)


@pytest.mark.slow
def test_resume_with_another_learning_rate_says_so(workspace, trained_run, tmp_path):
    run_dir, _ = trained_run
    folder = copy_run(run_dir / LATEST, tmp_path / "ckpt")
    result = train(
        workspace, flags(workspace, "lr", "--resume", str(folder), *SCHEDULE, "--lr=0.001")
    )
    output = output_of(result)
    assert result.returncode == 0, output[-4000:]
    warnings = [line for line in output.splitlines() if line.startswith(f"resuming {folder} with")]
    assert len(warnings) == 1 and "--lr 0.0003 there, 0.001 here" in warnings[0]


def test_settings_that_decide_the_tensors_must_match():
    saved = {
        "world_size": 2,
        "zero_stage": 2,
        "lora_r": 4,
        "lr": 3e-4,
        "parameters": {"a": [[2, 3], True], "b": [[4], False]},
    }
    same = json.loads(json.dumps(saved))
    assert settings_differences(saved, same) == ("", "")
    assert settings_differences(saved, {**same, "world_size": 1})[0] == "world size 2 there, 1 here"
    assert settings_differences(saved, {**same, "lr": 1e-3}) == (
        "",
        "--lr 0.0003 there, 0.001 here",
    )
    grown = {**same, "parameters": {"a": [[2, 5], True], "b": [[4], False]}}
    assert settings_differences(saved, grown)[0] == "a has shape [2, 3] there, [2, 5] here"
    frozen = {**same, "parameters": {"a": [[2, 3], False], "b": [[4], False]}}
    assert settings_differences(saved, frozen)[0] == "a is trained there, frozen here"
    renamed = {**same, "parameters": {"a": [[2, 3], True], "c": [[4], False]}}
    assert (
        "1 parameters only there and 1 only here (e.g. b, c)"
        in settings_differences(saved, renamed)[0]
    )


# ------------------------------------------------------------------------------------------------
# Kills while the best checkpoint is promoted


def contents(folder: Path) -> dict[Path, bytes]:
    """:func:`snapshot` of ``folder`` by path inside it, to compare two folders."""
    return {path.relative_to(folder): data for path, data in snapshot(folder).items()}


def assert_promotion_complete(run_dir: Path) -> None:
    latest, best = run_dir / LATEST, run_dir / BEST
    assert checkpoint_problem(best) is None
    assert latest_tag(best) == latest_tag(latest)
    assert json.loads((run_dir / BEST_METRICS).read_text()) == read_record(latest)["best_metrics"]
    assert contents(best) == contents(latest)
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith((".tmp", ".old", ".partial"))]


def kill_before_promotion(run_dir: Path) -> None:
    """ckpt_latest written as the best, the promotion not begun (ckpt_model one step older)."""
    (run_dir / BEST / "global_step2").rename(run_dir / BEST / "global_step1")
    (run_dir / BEST / "latest").write_text("global_step1")
    (run_dir / BEST_METRICS).write_text(json.dumps({"epoch": -1}))


def kill_during_copy(run_dir: Path) -> None:
    """ckpt_model.tmp half made, ckpt_model (the previous best) still in place."""
    kill_before_promotion(run_dir)
    staged = run_dir / (BEST + ".tmp")
    (staged / "global_step2").mkdir(parents=True)
    os.link(
        step_files(run_dir / LATEST)[0],
        staged / "global_step2" / step_files(run_dir / LATEST)[0].name,
    )


def kill_between_renames(run_dir: Path) -> None:
    """ckpt_model moved to ckpt_model.old, ckpt_model.tmp not yet renamed, best.json missing."""
    kill_before_promotion(run_dir)
    shutil.copytree(run_dir / LATEST, run_dir / (BEST + ".tmp"))
    (run_dir / BEST).rename(run_dir / (BEST + ".old"))
    (run_dir / BEST_METRICS).unlink()


def kill_before_best_json(run_dir: Path) -> None:
    """The first promotion: ckpt_model.tmp complete, nothing renamed yet, no best.json."""
    (run_dir / BEST).rename(run_dir / (BEST + ".tmp"))
    (run_dir / BEST_METRICS).unlink()


def kill_while_swapping_latest(run_dir: Path) -> None:
    """ckpt_latest moved to ckpt_latest.old, the new one still ckpt_latest.tmp: rolled back."""
    kill_before_promotion(run_dir)
    (run_dir / LATEST).rename(run_dir / (LATEST + ".old"))
    shutil.copytree(run_dir / (LATEST + ".old"), run_dir / (LATEST + ".tmp"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "interruption",
    [
        kill_before_promotion,
        kill_during_copy,
        kill_between_renames,
        kill_before_best_json,
        kill_while_swapping_latest,
    ],
)
def test_start_up_completes_an_interrupted_promotion(trained_run, interruption, tmp_path):
    """The on-disk state each kill point leaves, built from a real run; repaired in-process."""
    run_dir, _ = trained_run
    own = copy_run(run_dir, tmp_path / "run")
    interruption(own)
    notes = finish_interrupted_saves(own)
    assert notes and all(str(own) in note for note in notes)
    assert_promotion_complete(own)
    assert finish_interrupted_saves(own) == []  # nothing left to do


@pytest.mark.slow
def test_resumed_run_finishes_an_interrupted_promotion(workspace, trained_run, tmp_path):
    """The issue's case: ckpt_model.tmp left, ckpt_model gone, best.json missing; the same
    command ends with ckpt_model/ and best.json."""
    run_dir, _ = trained_run
    runs = tmp_path / "runs"
    own = copy_run(run_dir, runs / "repaired")
    kill_between_renames(own)
    result = train(workspace, flags(workspace, "repaired", *SCHEDULE, log_base=runs))
    output = output_of(result)
    assert result.returncode == 0, output[-4000:]
    assert f"completed the interrupted promotion of {own / LATEST}" in output
    assert_promotion_complete(own)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill_at_swap", "kill_during_copy"])
def test_sigkill_while_promoting_then_the_same_command(workspace, fault, tmp_path):
    """A real SIGKILL at the promotion moment of the second epoch (--no_eval promotes every
    epoch), then the same command: it ends with rc 0, ckpt_model/ of the last step, best.json."""
    runs = tmp_path / "runs"
    args = flags(
        workspace, "killed", "--epochs", "2", "--steps_per_epoch", "1", "--no_eval", log_base=runs
    )
    killed = train(workspace, args, fault=fault)
    assert killed.returncode == -signal.SIGKILL, output_of(killed)[-4000:]
    run_dir = runs / "killed"
    assert (run_dir / (BEST + ".tmp")).is_dir() and latest_tag(run_dir / LATEST) == "global_step2"
    if fault == "kill_at_swap":  # the state of the issue: ckpt_model gone, best.json stale
        assert not (run_dir / BEST).exists() and (run_dir / (BEST + ".old")).is_dir()
    else:
        assert latest_tag(run_dir / BEST) == "global_step1"

    result = train(workspace, args)
    output = output_of(result)
    assert result.returncode == 0, output[-4000:]
    assert "completed the interrupted promotion" in output
    assert latest_tag(run_dir / BEST) == "global_step2"
    assert json.loads((run_dir / BEST_METRICS).read_text()) == {"epoch": 1}
    assert_promotion_complete(run_dir)


# ------------------------------------------------------------------------------------------------
# A full disk while saving


def assert_previous_checkpoint_whole(run_dir: Path, line: str) -> None:
    assert "no space left" in line and "ckpt_latest.tmp was removed" in line, line
    assert f"{run_dir / LATEST} (step 1) is intact" in line, line
    assert not (run_dir / (LATEST + ".tmp")).exists()
    assert latest_tag(run_dir / LATEST) == "global_step1"
    assert checkpoint_problem(run_dir / LATEST) is None
    assert read_record(run_dir / LATEST)["global_step"] == 1
    for path in step_files(run_dir / LATEST):
        assert load_weights_only(path, map_location="cpu")


@pytest.mark.slow
def test_no_space_at_a_write_keeps_the_previous_checkpoint(workspace, tmp_path):
    """OSError(ENOSPC) at the second checkpoint's write of 'latest' (after its tensors)."""
    runs = tmp_path / "runs"
    result = train(
        workspace, flags(workspace, "full", *SCHEDULE, log_base=runs), fault="enospc_second_save"
    )
    assert_previous_checkpoint_whole(runs / "full", error_line(result))


@pytest.fixture
def small_disk(trained_run, tmp_path):
    """A tmpfs with room for one checkpoint of this run and not two (skipped where mounting is
    not allowed, e.g. without root)."""
    run_dir, _ = trained_run
    one = sum(p.stat().st_size for p in (run_dir / LATEST).rglob("*") if p.is_file())
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    size_kib = (one * 3 // 2 + 512 * 1024) // 1024
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_keeps_the_previous_checkpoint(workspace, small_disk):
    result = train(workspace, flags(workspace, "full", *SCHEDULE, "--no_eval", log_base=small_disk))
    assert_previous_checkpoint_whole(small_disk / "full", error_line(result))

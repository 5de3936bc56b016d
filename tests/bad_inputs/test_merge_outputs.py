"""merge_lora_weights_and_save_hf_model.py and what --save_path names: a user's folder, a file, an
input, a folder inside or around an input are refused in one line (exit status 2) before the model
is built, and every file of the user's stays byte-identical; a new, empty or earlier merge's folder
gets the merged model, and --overwrite writes beside the user's files without deleting any."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import merge_lora_weights_and_save_hf_model as merge
from model.builder import LoraSettings, apply_lora
from tests.bad_inputs.user_files import (
    UserFiles,
    assert_one_line,
    assert_process_refuses,
    hidden_leftovers,
    read_only,
)
from tests.toy_runs import CORPUS, base_flags, lisa_of_base
from tools.tiny_base import build_tiny_base
from tools.tiny_configs import SCRIPTS_BASE
from utils.output_dir import MANIFEST_NAME

MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny base and a LoRA training result of it (the zero_to_fp32.py output's layout)."""
    root = tmp_path_factory.mktemp("merge_outputs")
    base = build_tiny_base(root / "base", [CORPUS], SCRIPTS_BASE)
    torch.manual_seed(0)
    model = apply_lora(lisa_of_base(base, out_dim=32)[0], LoraSettings(r=4))
    run = root / "runs" / "lisa"
    run.mkdir(parents=True)
    torch.save(model.state_dict(), run / "pytorch_model.bin")
    return root, base, run / "pytorch_model.bin"


def merge_args(workspace, save_path, *extra) -> list[str]:
    _, base, weight = workspace
    return [
        *base_flags(base),
        f"--weight={weight}",
        f"--save_path={save_path}",
        "--lora_r=4",
        "--out_dim=32",
        "--precision=fp32",
        *extra,
    ]


@pytest.fixture
def user(workspace):
    """The user's files, the inputs among them."""
    root, base, weight = workspace
    files = UserFiles()
    files.keep(root / "base")
    files.keep(weight)
    return files


# name: (where --save_path points, given root/base/weight/place; what the one line says)
REFUSALS = {
    "a folder of the user's": (
        lambda r, b, w, p: p / "LISA-7B",
        "2 file(s) this tool did not write",
    ),
    "a file": (lambda r, b, w, p: p / "a_file", "is a file; expected a folder"),
    "the --version folder": (lambda r, b, w, p: b["version"], "is the --version input itself"),
    "inside --version": (lambda r, b, w, p: b["version"] / "merged", "lies inside the --version"),
    "the --weight file": (lambda r, b, w, p: w, "is a file; expected a folder"),
    "the folder of --weight": (lambda r, b, w, p: w.parent, "contains the --weight input"),
    "the CLIP folder": (lambda r, b, w, p: b["vision_tower"], "is the --vision-tower input"),
    "above every input": (lambda r, b, w, p: r, "contains the --version input"),
    "under a file": (lambda r, b, w, p: p / "a_file" / "out", "a_file is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_save_path_is_one_line_and_touches_nothing(
    workspace, user, tmp_path, case, capsys
):
    root, base, weight = workspace
    place = tmp_path / "place"
    user.add(place / "LISA-7B" / "notes.txt")
    user.add(place / "LISA-7B" / "config.json", b'{"the user": "config"}')
    user.add(place / "a_file")
    before = sorted(p.name for p in place.iterdir())
    save_path, expected = REFUSALS[case]
    code = merge.main(merge_args(workspace, save_path(root, base, weight, place)))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert_one_line(err, "merge: --save_path", expected)
    user.assert_untouched()
    assert sorted(p.name for p in place.iterdir()) == before  # nothing staged or left beside
    assert hidden_leftovers(base["version"].parent) == []


def test_the_script_exits_2_with_one_line(workspace, user, tmp_path):
    target = user.add(tmp_path / "out" / "mine.txt").parent
    command = ["merge_lora_weights_and_save_hf_model.py", *merge_args(workspace, target)]
    assert_process_refuses(command, "merge:", "--save_path", "mine.txt", "--overwrite")
    user.assert_untouched()


def merged_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_new_folder_and_a_rerun_get_the_merged_model(workspace, user, tmp_path, capsys):
    output = tmp_path / "LISA-7B"
    # folders of the user's that the old script deleted: its temporary and previous names
    user.add(tmp_path / "LISA-7B.tmp" / "keep.bin")
    user.add(tmp_path / "LISA-7B.old" / "keep.bin")
    assert merge.main(merge_args(workspace, output)) == 0
    assert merged_files(output) >= MODEL_FILES
    first = load_file(output / "model.safetensors")
    listed = set(json.loads((output / MANIFEST_NAME).read_text())["files"])
    assert listed == merged_files(output) - {MANIFEST_NAME}
    # a re-run replaces its own output; a file of ours the new run does not write goes
    stale = output / "model-00002-of-00002.safetensors"
    stale.write_bytes(b"x")
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    manifest["files"].append(stale.name)
    (output / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert merge.main(merge_args(workspace, output)) == 0
    assert not stale.exists() and merged_files(output) >= MODEL_FILES
    second = load_file(output / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert "saved" in capsys.readouterr().out
    user.assert_untouched()
    assert hidden_leftovers(tmp_path) == []


def test_an_empty_folder_is_used(workspace, tmp_path):
    output = tmp_path / "empty"
    output.mkdir()
    assert merge.main(merge_args(workspace, output)) == 0
    assert merged_files(output) >= MODEL_FILES


def test_overwrite_writes_beside_the_users_files(workspace, user, tmp_path):
    output = tmp_path / "mine"
    notes = user.add(output / "notes.txt")
    user.add(output / "sub" / "data.bin", b"\x00\x01")
    theirs = output / "config.json"
    theirs.write_text('{"the user": "config"}')
    assert merge.main(merge_args(workspace, output, "--overwrite")) == 0
    assert merged_files(output) >= MODEL_FILES
    assert json.loads(theirs.read_text())["model_type"]  # a file of the same name is replaced
    user.assert_untouched()
    # the manifest lists only what the merge wrote: a later re-run never deletes the user's files
    listed = set(json.loads((output / MANIFEST_NAME).read_text())["files"])
    assert notes.name not in listed and "sub/data.bin" not in listed
    assert merge.main(merge_args(workspace, output)) == 2  # other files: still refused alone
    user.assert_untouched()


def test_an_unwritable_place_is_one_line(workspace, user, tmp_path, capsys):
    with read_only(tmp_path / "locked") as locked:
        assert merge.main(merge_args(workspace, locked / "LISA-7B")) == 2
        assert sorted(locked.iterdir()) == []
    assert_one_line(capsys.readouterr().err, "merge: --save_path", "cannot be written")
    user.assert_untouched()

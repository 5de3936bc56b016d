"""train_ds.py on wrong flags and input files: one sentence naming the flag or file, exit status 2,
no traceback, nothing built, and the user's files untouched.

Most cases stop in the flag checks and run in-process (``train_ds.run``); the ones that need the
data or the launcher run as a real process.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_ds
from tests.bad_inputs.broken_files import RunsCode, snapshot
from tests.toy_runs import base_flags, make_toy_inputs
from tools.tiny_configs import FLAGS_BASE

REPO = Path(__file__).resolve().parents[2]
BUILT_MARK = "trainable parameters"  # logged once the model is built


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_flags")
    dataset, base = make_toy_inputs(root, FLAGS_BASE)
    files = root / "files"
    files.mkdir()
    (files / "bad.json").write_text("{ not json")
    (files / "list.json").write_text("[1, 2]")
    (files / "batch.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 7}))
    (files / "stage.json").write_text(json.dumps({"zero_optimization": {"stage": 9}}))
    torch.save(torch.zeros(3), files / "bare_tensor.bin")
    (files / "evil.bin").write_bytes(pickle.dumps(RunsCode(root / "pwned")))
    (files / "text.bin").write_text("hello")
    (files / "a_file").write_text("user data")
    return root, dataset, base, files


def valid_args(workspace) -> list[str]:
    root, dataset, base, _ = workspace
    return [
        *base_flags(base),
        f"--dataset_dir={dataset}",
        f"--log_base_dir={root / 'runs'}",
        "--image_size=64",
        "--out_dim=32",
        "--precision=fp32",
        "--workers=0",
    ]


# (extra flags, text the one-line message must contain); "{files}"/"{root}" are filled in.
FLAG_CASES = {
    "dataset_dir missing": (["--dataset_dir={root}/nowhere"], "--dataset_dir"),
    "dataset_dir a file": (["--dataset_dir={files}/a_file"], "is not a folder"),
    "unknown dataset": (
        ["--dataset=sem_seg||segm", "--sample_rates=1,1"],
        "--dataset: unknown entry 'segm'",
    ),
    "unknown sem_seg source": (
        ["--sem_seg_data=ade20k||ade21k"],
        "--sem_seg_data: unknown entry 'ade21k'",
    ),
    "unknown refer source": (
        ["--refer_seg_data=refcoco||refkoko"],
        "--refer_seg_data: unknown entry",
    ),
    "rates not numbers": (["--sample_rates=9,3,x,1"], "not comma-separated numbers"),
    "rates count": (["--sample_rates=9,3"], "has 2 values for the 4 tasks"),
    "rates negative": (["--sample_rates=9,-3,3,1"], "--sample_rates"),
    "rates nan": (["--sample_rates=9,nan,3,1"], "finite numbers"),
    "rates all zero": (["--sample_rates=0,0,0,0"], "at least one of them > 0"),
    "batch size 0": (["--batch_size=0"], "--batch_size must be positive"),
    "steps negative": (["--steps_per_epoch=-1"], "--steps_per_epoch must be positive"),
    "epochs 0": (["--epochs=0"], "--epochs must be positive"),
    "grad accumulation 0": (["--grad_accumulation_steps=0"], "--grad_accumulation_steps"),
    "val batch 0": (["--val_batch_size=0"], "--val_batch_size"),
    "print_freq 0": (["--print_freq=0"], "--print_freq must be positive"),
    "save_steps negative": (["--save_steps=-5"], "--save_steps must be 0 or more"),
    "workers negative": (["--workers=-1"], "--workers must be 0 or more"),
    "model_max_length 0": (["--model_max_length=0"], "--model_max_length"),
    "image_size 0": (["--image_size=0"], "--image_size must be positive"),
    "lr nan": (["--lr=nan"], "--lr must be a finite number"),
    "lr negative": (["--lr=-0.1"], "--lr must be a finite number >= 0"),
    "lr inf": (["--lr=inf"], "--lr"),
    "bce weight nan": (["--bce_loss_weight=nan"], "--bce_loss_weight"),
    "beta1 above 1": (["--beta1=1.5"], "--beta1 must be within [0, 1)"),
    "lora dropout 1": (["--lora_dropout=1.0"], "--lora_dropout"),
    "lora alpha 0": (["--lora_alpha=0"], "--lora_alpha must be positive"),
    "no lora targets": (["--lora_target_modules=,"], "--lora_target_modules is empty"),
    "classes per sample 0": (["--num_classes_per_sample=0"], "--num_classes_per_sample"),
    "explanatory 2": (["--explanatory=2"], "--explanatory must be -1 or within [0, 1]"),
    "reason_seg without split": (["--reason_seg_data=ReasonSeg"], "NAME|SPLIT"),
    "val without split": (["--val_dataset=ReasonSeg"], "--val_dataset 'ReasonSeg' is neither"),
    "val with empty part": (["--val_dataset=refcoco||unc|"], "--val_dataset"),
    "empty dataset list": (["--dataset=||", "--sample_rates=1"], "--dataset is empty"),
    "answer without SEG": (["--answer_templates=Sure."], "[SEG]"),
    "eval_only and no_eval": (["--eval_only", "--no_eval"], "exclude each other"),
    "4-bit training": (["--load_in_4bit"], "--load_in_8bit / --load_in_4bit are for inference"),
    "version missing": (["--version={root}/no_base"], "--version"),
    "version without config": (["--version={files}"], "has no config.json"),
    "sam not a file": (["--vision_pretrained={root}/no_sam.pth"], "--vision_pretrained"),
    "weight missing": (["--weight={root}/no_weight.bin"], "--weight"),
    "weight bare tensor": (["--weight={files}/bare_tensor.bin"], "not a state dict"),
    "weight pickle of an object": (["--weight={files}/evil.bin"], "is not a torch checkpoint"),
    "weight text": (["--weight={files}/text.bin"], "is not a torch checkpoint"),
    "deepspeed json malformed": (["--deepspeed_config={files}/bad.json"], "is not valid json"),
    "deepspeed json a list": (["--deepspeed_config={files}/list.json"], "not an object"),
    "deepspeed json missing": (["--deepspeed_config={root}/none.json"], "--deepspeed_config"),
    "deepspeed batch disagrees": (["--deepspeed_config={files}/batch.json"], "--batch_size is 2"),
    "deepspeed zero stage": (["--deepspeed_config={files}/stage.json"], "zero_optimization.stage"),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_flag_mistake_is_one_sentence_before_anything_is_built(workspace, case, capsys):
    root, dataset, _, files = workspace
    extra, expected = FLAG_CASES[case]
    extra = [flag.format(root=root, files=files) for flag in extra]
    before = snapshot(files), snapshot(dataset)
    assert train_ds.run([*valid_args(workspace), "--batch_size=2", *extra]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("train_ds.py:")]
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert "Traceback" not in out + err and BUILT_MARK not in out + err
    assert "weights_only" not in err
    assert (snapshot(files), snapshot(dataset)) == before
    assert not (root / "pwned").exists()  # the pickle's code never ran


def run_script(args: list[str], launcher: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if launcher:
        deepspeed = str(Path(sys.executable).with_name("deepspeed"))
        command = [deepspeed, "--num_gpus", "1", "--master_port", "29731", "train_ds.py", *args]
    else:
        command = [sys.executable, "train_ds.py", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("missing source", ["--reason_seg_data=Nothing|train"], "Nothing"),
        ("missing val set", ["--val_dataset=ReasonSeg|testB"], "testB"),
        ("flag through the launcher", ["--lr=nan"], "--lr must be a finite number"),
    ],
)
def test_data_mistake_stops_before_the_model_in_a_real_process(workspace, case, extra, expected):
    result = run_script([*valid_args(workspace), *extra], launcher=case.endswith("launcher"))
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "train_ds.py: " in line]
    assert result.returncode != 0
    assert len(lines) == 1 and expected in lines[0], output
    assert "Traceback" not in output and BUILT_MARK not in output

"""train_ds.py end to end with the real `deepspeed` launcher on CPU: tiny base, toy data.

Covers: training with validation and checkpoints, TensorBoard scalars, the original README's
zero_to_fp32 command, the LoRA merge (merged outputs equal the trained weights'), --eval_only on the
merged model, the quick start's second stage (--weight, --trainable heads, --answer_templates), a
2-process run, and a run killed with SIGKILL that resumes to the same result.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.builder import LoraSettings, apply_lora
from model.checkpoint_files import load_state_dict_file
from model.loading import load_pretrained_model
from tests.toy_runs import base_flags, lisa_of_base, make_toy_inputs
from tools.tiny_base import TinyBaseSizes
from utils.conversation import build_chat_prompt
from utils.distributed import free_port
from utils.tokenization import tokenizer_image_token
from utils.transforms import load_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED = str(Path(sys.executable).with_name("deepspeed"))
SIZES = TinyBaseSizes(
    vocab_size=600,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    sam_image_size=128,
    sam_embed_dim=32,
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_ds")
    dataset, base = make_toy_inputs(
        root,
        SIZES,
        "Please segment the red circle. Sure, it is the shape.",
        num_train=24,
        num_val=6,
        num_test=2,
        num_refer=12,
        num_sem_seg=12,
    )
    return root, dataset, base


def common_args(workspace, exp_name: str, version: Path | None = None) -> list[str]:
    """The flags of a run on the toy data (from ``version`` when given, else the base)."""
    root, dataset, base = workspace
    return [
        *base_flags(base, version),
        "--dataset_dir",
        str(dataset),
        "--image_size",
        "128",
        "--batch_size",
        "2",
        "--grad_accumulation_steps",
        "1",
        "--workers",
        "0",
        "--log_base_dir",
        str(root / "runs"),
        "--exp_name",
        exp_name,
        "--lora_r",
        "4",
        "--model_max_length",
        "320",
        "--sample_rates",
        "2,1,1,2",
        "--print_freq",
        "1",
    ]


def launcher(*extra: str) -> list[str]:
    return [
        DEEPSPEED,
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *extra,
        "train_ds.py",
    ]


def run(command: list[str], cwd: Path = REPO, timeout: int = 600) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def run_failing(command: list[str]) -> str:
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def latest_tag(checkpoint: Path) -> str | None:
    marker = checkpoint / "latest"
    return marker.read_text().strip() if marker.is_file() else None


@pytest.fixture(scope="module")
def trained_run(workspace):
    """Two epochs of two steps in one process, at the default precision (bf16 falls back to fp32)."""
    output = run(
        launcher() + common_args(workspace, "main") + ["--epochs", "2", "--steps_per_epoch", "2"]
    )
    return workspace[0] / "runs" / "main", output


def test_training_validates_and_checkpoints(trained_run):
    run_dir, output = trained_run
    assert "bf16 requested on a CPU: running in fp32" in output
    assert output.count("giou: ") == 2 and "on 1 process(es)" in output
    assert latest_tag(run_dir / "ckpt_latest") == "global_step4"
    assert latest_tag(run_dir / "ckpt_model") in ("global_step2", "global_step4")
    best = json.loads((run_dir / "best.json").read_text())
    assert set(best) == {"epoch", "giou", "ciou"} and 0.0 <= best["giou"] <= 1.0
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob("*.old"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/ce_loss",
        "train/mask_bce_loss",
        "train/mask_dice_loss",
        "train/mask_loss",
        "train/lr",
        "metrics/total_secs_per_batch",
        "metrics/data_secs_per_batch",
        "val/giou",
        "val/ciou",
        "val/prompt_cosine",
        "data/skipped_samples",
    }
    assert expected <= tags
    assert len(events.Scalars("train/loss")) == 4 and len(events.Scalars("val/giou")) == 2
    assert all(-1.0 <= event.value <= 1.0 for event in events.Scalars("val/prompt_cosine"))


def merge_lora(base: dict[str, Path], weights: Path, merged: Path) -> str:
    """The merge script on a LoRA (r 4) run's consolidated weights; its output."""
    return run(
        [
            sys.executable,
            "merge_lora_weights_and_save_hf_model.py",
            *base_flags(base),
            f"--weight={weights}",
            f"--save_path={merged}",
            "--lora_r=4",
            "--precision=fp32",
        ]
    )


def assert_merged_answers_as_trained(merged: Path, base, weights: Path, dataset: Path) -> None:
    """The merged directory gives the logits and the answer the trained (unmerged) weights give."""
    tokenizer, merged_model, processor = load_pretrained_model(merged, device="cpu")
    trained = apply_lora(lisa_of_base(base)[0], LoraSettings(r=4))
    trained.load_state_dict(load_state_dict_file(weights))
    trained.eval()
    image_path = sorted((dataset / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))[0]
    image = processor(load_image(image_path))
    prompt = build_chat_prompt("Can you segment the largest shape in this image?", "llava_v1", True)
    ids = torch.tensor([tokenizer_image_token(prompt, tokenizer)])
    args = (image.images_clip, image.images, ids, [image.resize], [image.original_size])
    inputs = dict(
        images=image.images,
        images_clip=image.images_clip,
        input_ids=ids,
        resize_list=[image.resize],
        label_list=[torch.zeros(image.original_size)],
        inference=True,
        output_logits=True,
    )
    with torch.no_grad():
        merged_out, trained_out = merged_model(**inputs), trained(**inputs)
    torch.testing.assert_close(merged_out.logits, trained_out.logits, atol=1e-4, rtol=1e-4)
    merged_ids, _ = merged_model.evaluate(*args, max_new_tokens=8)
    trained_ids, _ = trained.get_base_model().evaluate(*args, max_new_tokens=8)
    assert merged_ids.tolist() == trained_ids.tolist()


def test_conversion_merge_and_eval_only(trained_run, workspace):
    run_dir, _ = trained_run
    root, dataset, base = workspace
    # the original README's command, unchanged
    run(
        [sys.executable, "zero_to_fp32.py", ".", "../pytorch_model.bin"], cwd=run_dir / "ckpt_model"
    )
    weights = run_dir / "pytorch_model.bin"
    assert weights.is_file()

    merged = root / "merged"
    output = merge_lora(base, weights, merged)
    assert "vision tower not included" in output
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.model").is_file()
    assert_merged_answers_as_trained(merged, base, weights, dataset)

    # validation alone, of the merged model, reproduces the best epoch's score
    output = run(
        launcher()
        + [f"--version={merged}", f"--vision-tower={base['vision_tower']}"]
        + [f"--dataset_dir={dataset}", "--image_size=128", "--workers=0", "--lora_r=0"]
        + [f"--log_base_dir={root / 'runs'}", "--exp_name=eval", "--eval_only"]
    )
    best = json.loads((run_dir / "best.json").read_text())
    giou = float(output.split("giou: ")[1].split(",")[0])
    assert giou == pytest.approx(best["giou"], abs=1e-3)

    # training goes on from the finished LISA model (the original failed there)
    continued = common_args(workspace, "continued", version=merged)
    run(launcher() + continued + ["--epochs", "1", "--steps_per_epoch", "1", "--no_eval"])
    assert latest_tag(root / "runs" / "continued" / "ckpt_latest") == "global_step1"


def test_heads_stage_trains_only_the_heads_from_a_given_start(workspace):
    """The quick start's second stage: --weight sets every weight (here: the base's, shifted),
    --trainable heads changes lm_head, text_hidden_fcs and the mask decoder and nothing else,
    and --answer_templates is checked before anything is built. (The first optimizer step runs
    at learning rate 0, the start of the warm-up: three steps.)"""
    root, _, base = workspace
    model, _ = lisa_of_base(base)
    generator = torch.Generator().manual_seed(0)
    start = {
        name: tensor + 0.01 * torch.randn(tensor.shape, generator=generator)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in model.state_dict().items()
    }
    torch.save(start, root / "start.bin")
    args = common_args(workspace, "heads")
    args[args.index("--lora_r") + 1] = "0"
    bad = run_failing(
        launcher() + args + ["--weight", str(root / "start.bin"), "--answer_templates", "Done."]
    )
    assert "--answer_templates: 'Done.' must hold [SEG] exactly once" in bad
    run(
        launcher()
        + args
        + ["--weight", str(root / "start.bin"), "--trainable", "heads"]
        + ["--answer_templates", "[SEG].", "--epochs", "1", "--steps_per_epoch", "3", "--no_eval"]
    )
    run_dir = root / "runs" / "heads"
    run([sys.executable, "zero_to_fp32.py", ".", "../out.bin"], cwd=run_dir / "ckpt_model")
    trained = load_state_dict_file(run_dir / "out.bin")
    heads = ("lm_head", "mask_decoder", "text_hidden_fcs")
    changed = {name for name, tensor in trained.items() if not torch.equal(tensor, start[name])}
    assert changed and all(any(part in name for part in heads) for name in changed)
    for part in heads:
        assert any(part in name for name in changed), part
    for part in ("embed_tokens", "layers.0.self_attn", "vision_tower", "image_encoder"):
        assert any(part in name for name in trained), part


def test_two_processes_with_zero3(workspace):
    run_dir = workspace[0] / "runs" / "two"
    output = run(
        launcher("--num_gpus", "2")
        + common_args(workspace, "two")
        + ["--epochs", "1", "--steps_per_epoch", "2", "--zero_stage", "3"]
    )
    assert "on 2 process(es)" in output and output.count("giou: ") == 1
    step_dir = run_dir / "ckpt_latest" / "global_step2"
    assert len(list(step_dir.glob("zero_pp_rank_*_optim_states.pt"))) == 2  # one shard per rank
    consolidated = final_weights(run_dir)
    assert any("lora_A" in name for name in consolidated)
    assert all(torch.isfinite(tensor).all() for tensor in consolidated.values())


def test_two_processes_zero2_with_images_without_seg(workspace):
    """Batches of one image: a rank whose image has no [SEG] (a VQA sample) still runs the same
    backward as the others (ZeRO-2 reduces every trainable gradient on every rank)."""
    output = run(
        launcher("--num_gpus", "2")
        + common_args(workspace, "two_zero2")
        + [
            "--epochs",
            "1",
            "--steps_per_epoch",
            "4",
            "--batch_size",
            "1",
            "--sample_rates",
            "1,1,4,1",
        ]
        + ["--no_eval"]
    )
    assert "on 2 process(es)" in output
    consolidated = final_weights(workspace[0] / "runs" / "two_zero2")
    assert all(torch.isfinite(tensor).all() for tensor in consolidated.values())


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "ckpt_latest"))


def test_killed_run_resumes_to_the_same_result(workspace):
    runs = workspace[0] / "runs"
    schedule = ["--epochs", "2", "--steps_per_epoch", "3", "--save_steps", "1", "--no_eval"]
    run(launcher() + common_args(workspace, "straight") + schedule)

    command = launcher() + common_args(workspace, "killed") + schedule
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = runs / "killed" / "ckpt_latest"
    deadline = time.time() + 400
    while (
        latest_tag(checkpoint) not in ("global_step2", "global_step3", "global_step4")
        and time.time() < deadline
    ):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = latest_tag(checkpoint)
    assert killed_at is not None and killed_at != "global_step6"

    output = run(command)
    assert f"resumed from {checkpoint}" in output or "resumed from" in output
    assert latest_tag(checkpoint) == "global_step6"
    straight, resumed = final_weights(runs / "straight"), final_weights(runs / "killed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-5, rtol=1e-5, msg=name)
    assert np.isfinite([v.abs().sum().item() for v in resumed.values()]).all()

"""LISA on transformers bases through the scripts, end to end on CPU: Qwen2.5-VL with SAM 2 and
LLaVA (Hugging Face layout) with the official SAM, both tiny and random, on the toy data.

For each pair: train_ds.py under the real `deepspeed` launcher (LoRA, validation; ZeRO-3 for the
LLaVA pair), the original README's zero_to_fp32 command, the merge (config.json records the base
and the segmenter; LisaSegmenter.from_pretrained loads the directory with no extra flag),
chat.py's one-shot mode and its JSON, predict.py and eval_mask.py, and `--eval_only --weight`
reproducing the run's validation. Then one question to app.py serving the Qwen2.5-VL model.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client
from transformers import AutoTokenizer

import eval_mask
import predict
from model.segmenter import LisaSegmenter
from model.segmenter_vlm import LisaVlmSegmenter
from tests.app_server import start_app, stop_app
from tests.test_app import ask
from tests.test_train_ds import latest_tag, launcher, run
from tests.toy_runs import SMALL_TOY
from tools.tiny_base import write_sam
from tools.tiny_configs import SCRIPTS_BASE
from tools.tiny_sam2 import write_tiny_sam2
from tools.tiny_vlm_bases import build_tiny_llava_hf, build_tiny_qwen2_5_vl
from tools.toy_dataset import make_toy_dataset
from utils.tokenization import decode_answer
from utils.transforms import load_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What the tiny tokenizers learn besides their chat templates' words.
CORPUS = ["Please segment the red circle in this image.", "Sure, it is [SEG]."]
PROMPT = "Please segment the red circle in this image."
MAX_NEW_TOKENS = 8
STEPS = 3


@dataclass(frozen=True)
class Pair:
    """A base with a segmenter, and the ZeRO stage its run trains with."""

    base: str  # "qwen2_5_vl" | "llava_hf"
    segmenter: str  # "sam2" | "sam"
    zero_stage: int

    @property
    def name(self) -> str:
        return f"{self.base}-{self.segmenter}"


PAIRS = [Pair("qwen2_5_vl", "sam2", zero_stage=2), Pair("llava_hf", "sam", zero_stage=3)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """The toy dataset (4 val images), both tiny bases, a tiny SAM 2 directory and a tiny
    official SAM file, all 64 px with 32-wide decoders (--image_size 64 --out_dim 32)."""
    root = tmp_path_factory.mktemp("train_ds_vlm")
    make_toy_dataset(root / "dataset", **{**SMALL_TOY, "num_train": 8, "num_val": 4})
    torch.manual_seed(0)
    write_sam(root / "sam_tiny.pth", SCRIPTS_BASE)
    return {
        "root": root,
        "dataset": root / "dataset",
        "qwen2_5_vl": build_tiny_qwen2_5_vl(root / "qwen2_5_vl", corpus=CORPUS),
        "llava_hf": build_tiny_llava_hf(root / "llava_hf", corpus=CORPUS),
        "sam2": write_tiny_sam2(root / "sam2", image_size=64),
        "sam": root / "sam_tiny.pth",
    }


def model_flags(workspace, pair: Pair) -> list[str]:
    """The flags that name the base and the segmenter, as for training and the merge."""
    return [
        f"--version={workspace[pair.base]}",
        f"--vision_pretrained={workspace[pair.segmenter]}",
        "--out_dim=32",
        "--lora_r=4",
        "--precision=fp32",
    ]


def last_giou(output: str) -> float:
    return float(output.rsplit("giou: ", 1)[1].split(",")[0])


@dataclass
class Finished:
    """A pair's training run, consolidated and merged."""

    pair: Pair
    run_dir: Path
    output: str  # train_ds.py's
    weights: Path  # zero_to_fp32.py's output
    merged: Path  # the merge's output directory
    merge_output: str


@pytest.fixture(scope="module", params=PAIRS, ids=lambda pair: pair.name)
def finished(request, workspace) -> Finished:
    pair: Pair = request.param
    root = workspace["root"]
    output = run(
        launcher()
        + model_flags(workspace, pair)
        + [f"--dataset_dir={workspace['dataset']}", "--image_size=64", "--workers=0"]
        + ["--batch_size=2", "--grad_accumulation_steps=1", "--model_max_length=512"]
        + ["--sample_rates=2,1,1,2", "--epochs=1", f"--steps_per_epoch={STEPS}"]
        + [f"--zero_stage={pair.zero_stage}", "--print_freq=1"]
        + [f"--log_base_dir={root / 'runs'}", f"--exp_name={pair.name}"]
    )
    run_dir = root / "runs" / pair.name
    # the original README's command, unchanged
    run([sys.executable, "zero_to_fp32.py", ".", "../pytorch_model.bin"], run_dir / "ckpt_model")
    weights = run_dir / "pytorch_model.bin"
    merged = root / f"{pair.name}-merged"
    merge_output = run(
        [sys.executable, "merge_lora_weights_and_save_hf_model.py"]
        + model_flags(workspace, pair)
        + [f"--weight={weights}", f"--save_path={merged}"]
    )
    return Finished(pair, run_dir, output, weights, merged, merge_output)


def test_training_validates_and_checkpoints_at_its_zero_stage(finished):
    output, run_dir = finished.output, finished.run_dir
    assert output.count("giou: ") == 1 and "on 1 process(es)" in output
    assert output.count("| loss ") == STEPS
    for folder in ("ckpt_latest", "ckpt_model"):
        assert latest_tag(run_dir / folder) == f"global_step{STEPS}"
    record = json.loads((run_dir / "ckpt_model" / "lisa_checkpoint.json").read_text())
    assert record["settings"]["zero_stage"] == finished.pair.zero_stage
    best = json.loads((run_dir / "best.json").read_text())
    assert best["giou"] == pytest.approx(last_giou(output), abs=1e-4)
    assert finished.weights.is_file()


def test_the_merged_directory_records_its_base_and_segmenter(finished):
    pair, merged = finished.pair, finished.merged
    assert f"base {pair.base}, segmenter {pair.segmenter}" in finished.merge_output
    config = json.loads((merged / "config.json").read_text())
    assert config["model_type"] == "lisa_vlm"
    assert config["base_kind"] == pair.base and config["segmenter_kind"] == pair.segmenter
    assert config["base_config"]["model_type"] == pair.base.replace("_hf", "")
    assert (merged / "model.safetensors").is_file()
    assert (merged / "tokenizer_config.json").is_file()
    assert (merged / "preprocessor_config.json").is_file()
    segmenter = LisaSegmenter.from_pretrained(merged, precision="fp32")  # no other flag
    assert isinstance(segmenter, LisaVlmSegmenter)
    assert segmenter.base_format.kind == pair.base


def val_images(workspace) -> list[Path]:
    return sorted((workspace["dataset"] / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))


def test_chat_one_shot_answers_as_the_python_api(finished, workspace, tmp_path):
    image = val_images(workspace)[0]
    result_file, vis = tmp_path / "chat.json", tmp_path / "vis"
    output = run(
        [sys.executable, "chat.py", f"--version={finished.merged}", "--precision=fp32"]
        + [f"--max_new_tokens={MAX_NEW_TOKENS}", f"--prompt={PROMPT}", f"--image={image}"]
        + [f"--vis_save_path={vis}", f"--output_json={result_file}"]
    )
    segmenter = LisaSegmenter.from_pretrained(
        finished.merged, precision="fp32", max_new_tokens=MAX_NEW_TOKENS
    )
    expected = segmenter(load_image(image), PROMPT)
    result = json.loads(result_file.read_text())
    assert result["prompt"] == PROMPT and Path(result["image"]) == image
    assert result["answer"] == expected.text and "text_output: " in output
    # the base's own special tokens (image, chat turns) never show in the answer
    added = segmenter.tokenizer.added_tokens_decoder.values()
    assert not [token for token in added if token.special and token.content in result["answer"]]
    assert len(result["masks"]) == len(expected.masks) == expected.text.count("[SEG]")
    for entry, mask in zip(result["masks"], expected.masks, strict=True):
        assert entry["area"] == int(mask.sum()) and Path(entry["mask_path"]).is_file()


@pytest.mark.parametrize("finished", PAIRS[:1], indirect=True, ids=lambda pair: pair.name)
def test_answers_leave_out_the_base_special_tokens(finished):
    """Qwen's image and turn tokens are added special tokens that its tokenizer config need
    not list; an answer that says them shows neither them nor their ids' text."""
    tokenizer = AutoTokenizer.from_pretrained(finished.merged)
    ids = tokenizer.encode("Sure, it is [SEG].<|image_pad|><|vision_end|><|im_end|>")
    assert decode_answer(ids, tokenizer, clean=True) == "Sure, it is [SEG]."


def test_predictions_score_as_the_validation(finished, workspace, tmp_path, capsys):
    predictions = tmp_path / "predictions"
    split = workspace["dataset"] / "reason_seg" / "ReasonSeg" / "val"
    code = predict.main(
        [f"--version={finished.merged}", f"--dataset_dir={workspace['dataset']}"]
        + ["--val_dataset=ReasonSeg|val", f"--output_dir={predictions}"]
        + ["--precision=fp32", "--workers=0"]
    )
    assert code == 0
    images = val_images(workspace)
    for image in images:
        masks = np.load(predictions / f"{image.stem}.npy")
        height, width = np.asarray(load_image(image)).shape[:2]
        assert masks.dtype == np.bool_ and masks.shape[1:] == (height, width)
    report_file = tmp_path / "report.json"
    capsys.readouterr()
    code = eval_mask.main(
        [f"--submission_dir={predictions}", f"--groundtruth_dir={split}"]
        + [f"--output_json={report_file}"]
    )
    assert code == 0 and "gIoU " in capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert len(report["per_image"]) == len(images)
    assert report["giou"] == pytest.approx(last_giou(finished.output), abs=1e-3)
    assert report["ciou"] == pytest.approx(
        float(finished.output.rsplit("ciou: ", 1)[1].split()[0]), abs=1e-3
    )


def test_eval_only_with_the_weights_repeats_the_validation(finished, workspace):
    output = run(
        launcher()
        + model_flags(workspace, finished.pair)
        + [f"--dataset_dir={workspace['dataset']}", "--image_size=64", "--workers=0"]
        + [f"--weight={finished.weights}", "--eval_only", "--model_max_length=512"]
        + [f"--log_base_dir={workspace['root'] / 'runs'}", f"--exp_name={finished.pair.name}-eval"]
    )
    assert output.count("giou: ") == 1
    assert last_giou(output) == pytest.approx(last_giou(finished.output), abs=1e-4)


@pytest.mark.parametrize("finished", PAIRS[:1], indirect=True, ids=lambda pair: pair.name)
def test_the_web_demo_answers_as_the_python_api(finished, workspace, tmp_path):
    server = start_app(
        [f"--version={finished.merged}", "--precision=fp32"]
        + [f"--max_new_tokens={MAX_NEW_TOKENS}"],
        tmp_path / "server.log",
    )
    try:
        client = Client(server.url, verbose=False, download_files=str(tmp_path / "downloads"))
        image = val_images(workspace)[1]
        reply = ask(client, image, PROMPT)
    finally:
        stop_app(server)
    expected = LisaSegmenter.from_pretrained(
        finished.merged, precision="fp32", max_new_tokens=MAX_NEW_TOKENS
    )(load_image(image), PROMPT)
    assert reply.answer_text == expected.text
    assert len(reply.masks) == len(expected.masks)
    assert reply.document["answer"] == expected.text

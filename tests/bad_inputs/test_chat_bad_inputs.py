"""chat.py on broken checkpoints, devices that do not exist, quantization on a CPU, and image
paths that are no regular file: one line naming the file or flag, no traceback, a non-zero exit
(or, in the interactive loop, the next question), and the user's files unchanged."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import chat
from tests.test_chat import Terminal

from .broken_files import (
    BROKEN_CHECKPOINTS,
    broken_checkpoint,
    fifo,
    link_loop,
    one_line,
    png_bomb,
    snapshot,
)

pytestmark = pytest.mark.reference
REPO = Path(__file__).resolve().parents[2]
RED_CIRCLE = "Can you segment the red circle in this image?"
# one of each kind: missing, wrong shape, a base, corrupt config / weights / tokenizer, a pickle
CHECKPOINT_CASES = (
    "LLM tensor missing",
    "LLM tensor of another shape",
    "LLaVA base (no SAM, no [SEG] head)",
    "config.json not json",
    "safetensors truncated",
    "weights a pickle that runs code",
    "tokenizer.model garbage",
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("chat_checkpoints")


def run_chat(argv: list, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "chat.py"), "--precision", "fp32", *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # chat.py as a process
@pytest.mark.parametrize("name", CHECKPOINT_CASES)
def test_a_broken_checkpoint_ends_chat_with_one_line(
    tiny_lisa_dir, tiny_cases_dir, checkpoints, tmp_path, name
):
    directory, clip = broken_checkpoint(tiny_lisa_dir, checkpoints, name)
    _, pieces, file_name = BROKEN_CHECKPOINTS[name]
    vis = tmp_path / "vis"
    vis.mkdir()
    (vis / "earlier_mask_0.jpg").write_bytes(b"the user's picture")
    before = {**snapshot(directory), **snapshot(vis)}
    completed = run_chat(
        ["--version", directory, "--vision-tower", clip, "--vis_save_path", vis]
        + ["--prompt", RED_CIRCLE, "--image", tiny_cases_dir / "img1.png"]
    )
    assert completed.returncode == 1 and completed.stdout == ""
    one_line(
        completed.stderr, f"chat.py: cannot load --version={directory}", str(directory / file_name)
    )
    one_line(completed.stderr, *pieces)
    assert {**snapshot(directory), **snapshot(vis)} == before
    assert not (checkpoints / "code_ran").exists()


def _device_cases() -> dict[str, str]:
    """--device value -> a piece of its message, for the devices this machine lacks."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cases = {
        "gpu": "'gpu' is not a device name; expected cpu, cuda or cuda:N",
        "cuda:-1": "is not a device name",
        "meta": "'meta' is not a device this program can run on here",
        "mps": "'mps' is not a device this program can run on here",
        f"cuda:{count + 6}": "CUDA device",
    }
    if count == 0:
        cases["cuda"] = "names a CUDA device, but torch"
    return cases


@pytest.mark.parametrize("device", list(_device_cases()))
def test_a_device_this_machine_lacks_is_one_line(tiny_lisa_dir, tmp_path, capsys, device):
    """Refused before the model loads: the one-shot image need not even exist."""
    with pytest.raises(SystemExit) as raised:
        chat.main(
            ["--version", str(tiny_lisa_dir), "--device", device, "--precision", "fp32"]
            + ["--prompt", "hi", "--image", str(tmp_path / "later.png")]
            + ["--vis_save_path", str(tmp_path / "vis")]
        )
    message = str(raised.value.code)
    one_line(message, f"chat.py: --device '{device}'", _device_cases()[device])
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow  # chat.py as a process
@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantized_loading_on_this_device_answers_or_says_why(
    tiny_lisa_dir, tiny_cases_dir, tmp_path, flag
):
    """bitsandbytes has a CPU backend: the quantized model answers; where a build cannot, the
    failure is one line naming bitsandbytes and the device."""
    completed = run_chat(
        ["--version", tiny_lisa_dir, "--vision-tower", tiny_lisa_dir / "clip", flag]
        + ["--prompt", RED_CIRCLE, "--image", tiny_cases_dir / "img1.png"]
        + ["--max_new_tokens", "8", "--vis_save_path", tmp_path / "vis"]
    )
    assert "Traceback" not in completed.stderr
    if completed.returncode == 0:
        assert "text_output: " in completed.stdout
    else:
        one_line(completed.stderr, "loading failed with bitsandbytes")


@pytest.mark.slow  # chat.py as a process
def test_bad_image_paths_leave_the_interactive_chat_running(
    tiny_lisa_dir, tiny_cases_dir, tmp_path
):
    images = tmp_path / "images"
    images.mkdir()
    os.symlink("nowhere.png", images / "dangling.png")
    # typed path -> a piece of the one line that answers it
    cases = {
        str(link_loop(images / "loop.png")): "is a loop of symbolic links",
        str(fifo(images / "pipe.png")): "is a FIFO (named pipe), not a regular file",
        str(images / "dangling.png"): "does not exist",
        "~no_such_user_here/cat.png": "does not exist",
        str(png_bomb(images / "bomb.png")): "too large to decode safely",
        "/dev/null": "is a character device, not a regular file",
        str(images): "is a directory, not an image file",
    }
    terminal = Terminal(
        ["chat.py", "--version", str(tiny_lisa_dir), "--vision-tower", str(tiny_lisa_dir / "clip")]
        + ["--precision", "fp32", "--max_new_tokens", "8", "--vis_save_path", str(tmp_path / "v")],
        REPO,
    )
    terminal.read_until(chat.PROMPT_QUESTION)
    for path, piece in cases.items():
        one_line(terminal.ask("What is in it?", path), piece)
    # the chat goes on: a good image is answered
    reply = terminal.ask(RED_CIRCLE, str(tiny_cases_dir / "img1.png"))
    assert "text_output: " in reply
    terminal.send("\x04")
    assert terminal.exit_code() == 0
    assert "Traceback" not in terminal.transcript

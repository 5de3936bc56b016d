"""A real app.py server for the web demo's tests, and a tiny model for it to serve."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.toy_runs import lisa_of_base
from utils.distributed import free_port

REPO = Path(__file__).resolve().parents[1]
# Words the tiny tokenizer is trained on (it falls back to bytes for everything else).
CORPUS = "Please segment the red circle in this image. Sure, it is [SEG]. What is in this image?"


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_app(args: list[str], log: Path, timeout: float = 300) -> Server:
    """``python app.py ARGS --port P``; returns once the page is served (fails with its log)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "app.py", *args, "--port", str(port)],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(process, url, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py ended with code {process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    stop_app(server)
    pytest.fail(f"app.py served no page within {timeout} s:\n{server.output()}")


def stop_app(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def say_seg_always(model) -> None:
    """Rig a tiny LISA so that greedy decoding says [SEG] at every step.

    Dimension 0 of the residual stream is held at a positive constant (every embedding and the
    projector's bias write it; no attention or MLP output touches it); the final norm keeps only
    that dimension and only [SEG]'s row of lm_head reads it, so [SEG] has the one positive logit.
    The other dimensions still differ by position, so each [SEG] prompts SAM differently.
    """
    llm = model.model
    with torch.no_grad():
        llm.embed_tokens.weight[:, 0] = 10.0
        llm.mm_projector.weight[0] = 0.0
        llm.mm_projector.bias[0] = 10.0
        for layer in llm.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        llm.norm.weight.zero_()
        llm.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[model.config.seg_token_idx, 0] = 1.0


def build_seg_model(root: Path) -> Path:
    """A tiny LISA directory (tokenizer with byte fallback, CLIP, SAM) that answers [SEG]s."""
    from tools.tiny_base import TinyBaseSizes, build_tiny_base

    sizes = TinyBaseSizes(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        clip_image_size=32,
        clip_hidden_size=32,
        sam_image_size=128,
        sam_patch_size=16,
        sam_embed_dim=32,
        sam_prompt_embed_dim=64,
        sam_decoder_mlp_dim=128,
        sam_iou_head_hidden_dim=64,
    )
    base = build_tiny_base(root / "base", [CORPUS], sizes)
    model, tokenizer = lisa_of_base(base, out_dim=sizes.sam_prompt_embed_dim)
    say_seg_always(model)
    model.config.vision_tower = str(base["vision_tower"])
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"

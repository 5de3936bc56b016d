"""Training speed and peak memory of the tiny configuration on this machine (CPU, fp32).

Builds the default tiny base and a small toy dataset in a temporary folder, then, each in its own
process (so that peak memory is its own): DeepSpeed ZeRO-2 training steps with the original
recipe (LoRA r=8 on q_proj/v_proj + lm_head, embeddings, mask decoder, text_hidden_fcs) and with
every parameter trained (--trainable all, no LoRA). Prints steps/s, seconds per step and peak
resident memory. It only prints figures.

    python benchmarks/bench_train.py [--steps 10] [--batch_size 2] [--image_size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPES = {
    "lora (original recipe)": ["--trainable", "lisa", "--lora_r", "8"],
    "all parameters, no LoRA": ["--trainable", "all", "--lora_r", "0"],
}


def child(argv: list[str], steps: int) -> dict:
    """Run `steps` timed optimizer steps (after 2 warm-up steps) with train_ds.py's own pieces."""
    import torch

    import train_ds
    from model.builder import unwrap_lisa
    from utils.distributed import init_distributed

    config = train_ds.parse_args(argv)
    info = init_distributed()
    torch.manual_seed(0)
    model, tokenizer = train_ds.build_model(config, torch.float32)
    loader = training_loader(config, unwrap_lisa(model), tokenizer)
    parameters = [p for p in model.parameters() if p.requires_grad]
    engine = deepspeed_engine(model, parameters, config.batch_size)
    engine.train()
    batches = iter(loader)

    def step() -> None:
        output = engine(next(batches).to(info.device, torch.float32))
        engine.backward(output.loss)
        engine.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    trainable = sum(p.numel() for p in parameters)
    return {
        "seconds_per_step": seconds,
        "steps_per_second": 1 / seconds,
        "peak_rss_mib": peak_mib,
        "trainable": trainable,
    }


def training_loader(config, lisa, tokenizer):
    """train_ds.py's training mixture in one process, without validation sets."""
    from torch.utils.data import DataLoader

    import train_ds
    from utils.collate import collate_fn
    from utils.data import build_datasets

    train_set, _ = build_datasets(
        config.data_config(),
        clip_transform=train_ds.clip_transform_for(config, lisa.config.vision_tower_path),
        samples_per_epoch=10_000,
        with_validation=False,
    )
    return DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=train_ds.MicroBatchSampler(0, 0, 1, config.batch_size),
        num_workers=0,
        collate_fn=partial(
            collate_fn, tokenizer=tokenizer, num_image_tokens=lisa.model.num_image_tokens
        ),
    )


def deepspeed_engine(model, parameters, batch_size: int):
    """A ZeRO-2 fp32 engine around ``model`` with AdamW (lr 3e-4) on ``parameters``."""
    import deepspeed
    import torch

    from utils.deepspeed_config import build_deepspeed_config

    ds_config = build_deepspeed_config(
        micro_batch_size=batch_size,
        grad_accumulation_steps=1,
        lr=3e-4,
        betas=(0.9, 0.95),
        total_steps=1000,
        precision="fp32",
        with_optimizer=False,
    )
    optimizer = torch.optim.AdamW(parameters, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=parameters, optimizer=optimizer, config=ds_config
    )
    return engine


def child_flags(work: Path, args: argparse.Namespace) -> list[str]:
    """train_ds.py's flags for a child: the tiny base and toy data in ``work``."""
    return [
        f"--version={work / 'base' / 'llava'}",
        f"--vision-tower={work / 'base' / 'clip'}",
        f"--vision_pretrained={work / 'base' / 'sam_tiny.pth'}",
        f"--dataset_dir={work / 'dataset'}",
        f"--image_size={args.image_size}",
        f"--batch_size={args.batch_size}",
        "--precision=fp32",
        *RECIPES[args.child],
    ]


def run_recipe(recipe: str, work: Path, args: argparse.Namespace) -> None:
    """One recipe's child process; prints its figures (or its error output)."""
    command = [sys.executable, __file__, "--child", recipe, f"--workdir={work}"]
    command += [f"--steps={args.steps}", f"--batch_size={args.batch_size}"]
    command += [f"--image_size={args.image_size}"]
    world = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    env = {**os.environ, **world, "MASTER_PORT": str(29600 + len(recipe))}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        print(f"{recipe}: failed\n{result.stderr[-3000:]}")
        return
    figures = json.loads(lines[-1])
    print(
        f"{recipe:28s} {figures['steps_per_second']:.2f} steps/s ({figures['seconds_per_step']:.3f} s/step), "
        f"peak RSS {figures['peak_rss_mib']:.0f} MiB, {figures['trainable']:,} trainable values"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument(
        "--image_size", type=int, default=256, help="SAM input side (the tiny SAM's)"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(child_flags(Path(args.workdir), args), args.steps)))
        return

    from tools.tiny_base import build_tiny_base
    from tools.toy_dataset import make_toy_dataset

    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        make_toy_dataset(
            work / "dataset",
            seed=0,
            num_train=60,
            num_val=4,
            num_test=2,
            num_refer=30,
            num_sem_seg=30,
        )
        build_tiny_base(work / "base", ["Please segment the red circle. Sure, it is the shape."])
        print(
            f"tiny base (tools/tiny_base.py defaults), toy data, SAM {args.image_size} px, batch {args.batch_size}, "
            f"fp32, ZeRO-2, {os.cpu_count()} CPUs, torch threads default"
        )
        for recipe in RECIPES:
            run_recipe(recipe, work, args)


if __name__ == "__main__":
    main()

"""Forward time of SAM's image encoder (random weights, fp32, inference mode).

Prints the ViT-B encoder at 1024 px and the tiny reference encoder; CUDA when available.

    .venv/bin/python benchmarks/bench_sam.py [--runs 3]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.segment_anything import build_sam_tiny, build_sam_vit_b  # noqa: E402


def time_encoder(name: str, sam: torch.nn.Module, device: torch.device, runs: int) -> None:
    """Print the mean and best forward time of `sam.image_encoder` on one random image."""
    encoder = sam.image_encoder.to(device)
    image = torch.randn(1, 3, encoder.img_size, encoder.img_size, device=device)

    def forward() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        encoder(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    with torch.inference_mode():
        forward()  # warm-up
        times = [forward() for _ in range(runs)]
    print(
        f"{name:<28} {device.type:<5} mean {sum(times) / runs * 1000:9.1f} ms"
        f"   best {min(times) * 1000:9.1f} ms   ({runs} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, fp32")
    torch.manual_seed(0)
    time_encoder("vit_b image encoder 1024px", build_sam_vit_b(), device, args.runs)
    time_encoder("tiny image encoder 1024px", build_sam_tiny(), device, args.runs)


if __name__ == "__main__":
    main()

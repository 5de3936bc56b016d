"""Forward time of SAM's image encoder (random weights, fp32, inference mode).

Prints the ViT-B encoder at 1024 px and the tiny reference encoder; CUDA when available.
``--method`` forces an attention implementation (see `rel_pos_attention`; default: by device),
``--backward`` times forward + backward with gradients for every encoder parameter instead.

    .venv/bin/python benchmarks/bench_sam.py [--runs 5] [--models tiny] [--method fold]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.segment_anything import build_sam_tiny, build_sam_vit_b  # noqa: E402
from model.segment_anything.image_encoder import Attention  # noqa: E402

BUILDERS = {"vit_b": build_sam_vit_b, "tiny": build_sam_tiny}


def time_encoder(
    name: str,
    sam: torch.nn.Module,
    device: torch.device,
    runs: int,
    method: str | None,
    backward: bool,
) -> None:
    """Print the median and best time of `sam.image_encoder` on one random image."""
    encoder = sam.image_encoder.to(device)
    for module in encoder.modules():
        if isinstance(module, Attention):
            module.method = method
    image = torch.randn(1, 3, encoder.img_size, encoder.img_size, device=device)

    def run() -> None:
        if backward:
            encoder.zero_grad(set_to_none=True)
            encoder(image).square().mean().backward()
        else:
            with torch.inference_mode():
                encoder(image)

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    timed()  # warm-up
    times = [timed() for _ in range(runs)]
    mode = "fwd+bwd" if backward else "forward"
    print(
        f"{name:<28} {device.type:<5} {mode} {method or 'auto':<7} "
        f"median {statistics.median(times) * 1000:9.1f} ms   best {min(times) * 1000:9.1f} ms"
        f"   ({runs} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--models", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument(
        "--method", choices=["chunked", "fold"], default=None, help="attention implementation"
    )
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, fp32")
    for model in args.models:
        torch.manual_seed(0)
        sam = BUILDERS[model]()
        time_encoder(
            f"{model} image encoder {sam.image_encoder.img_size}px",
            sam,
            device,
            args.runs,
            args.method,
            args.backward,
        )


if __name__ == "__main__":
    main()

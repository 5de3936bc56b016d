"""Write the inputs of a from-scratch LISA run on a Qwen2.5-VL base with SAM 2, at toy size.

    OUTPUT/
      qwen2_5_vl/   --version: a random Qwen2.5-VL whose tokenizer learnt the corpus
      sam2/         --vision_pretrained: a random SAM 2 in the published layout

The base is wider and deeper than the test default (128 x 4 layers, as the quick start's
LLaMA), so that it can learn the toy task on a CPU in minutes; SAM 2 takes --image_size pixels
(256: a 16 x 16 image embedding).

    python -m tools.tiny_qwen_sam2 --output_dir D --corpus corpus.txt [--image_size 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.tiny_sam2 import write_tiny_sam2
from tools.tiny_vlm_bases import TinyQwen25VlSizes, build_tiny_qwen2_5_vl
from utils.errors import UsageError

# The quick start's LLaMA sizes (128 wide, 4 layers); the vision tower stays the test's.
LEARNING_SIZES = TinyQwen25VlSizes(
    bpe_vocab_size=1024,
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    mrope_section=[4, 6, 6],  # sums to head_dim / 2 = 128 / 4 / 2
)


def write_inputs(output_dir: Path, corpus: list[str], image_size: int, seed: int) -> dict:
    """``output_dir/qwen2_5_vl`` and ``output_dir/sam2``; returns {flag: path}.

    Raises:
        UsageError: ``output_dir`` exists and holds files (nothing is written then).
    """
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UsageError(f"--output_dir {output_dir} exists and is not an empty folder")
    base = build_tiny_qwen2_5_vl(
        output_dir / "qwen2_5_vl", sizes=LEARNING_SIZES, corpus=corpus, seed=seed
    )
    sam2 = write_tiny_sam2(output_dir / "sam2", image_size=image_size, seed=seed)
    return {"version": base, "vision_pretrained": sam2}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.tiny_qwen_sam2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output_dir", required=True, type=Path, help="a new or empty folder")
    parser.add_argument(
        "--corpus", required=True, type=Path, help="text the tokenizer learns, one line each"
    )
    parser.add_argument(
        "--image_size", type=int, default=256, help="SAM 2 input side, a multiple of 32"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    if args.image_size <= 0 or args.image_size % 32 != 0:
        parser.error(f"--image_size {args.image_size}: expected a positive multiple of 32")
    corpus = args.corpus.read_text(encoding="utf-8").splitlines()
    try:
        paths = write_inputs(args.output_dir, corpus, args.image_size, args.seed)
    except UsageError as error:
        parser.error(str(error))
    for flag, path in paths.items():
        print(f"--{flag}={path}")


if __name__ == "__main__":
    main()

"""Chat speed through the same path chat.py uses (LisaSegmenter), fp32 on the CPU by default.

Prints, for the reference case (img1, "Can you segment the red circle in this image?"):
  - first-token latency: a whole turn with max_new_tokens=1 (image read and transforms, CLIP,
    the prompt's forward pass, one token);
  - decoding speed: tokens/s after the first token, from a turn of --max_new_tokens tokens
    (mask decoding left out);
  - the mask decoding of that turn (SAM encoder once, decoder for every [SEG]) and the whole turn;
  - a follow-up turn (the first turn's history and a new question): its first-token latency and
    its text, continuing the kept conversation about the image (the segmenter's prefix cache)
    and computing the whole conversation (a segmenter without one), the two alternating.
Best of --repeats runs after one warm-up turn (the least disturbed by other work on the machine);
the load average is printed before and after.

    python benchmarks/bench_chat.py [--version DIR --vision-tower DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.prompt_prefix import image_key  # noqa: E402
from model.segmenter import LisaSegmenter  # noqa: E402
from utils.constants import IMAGE_TOKEN_INDEX  # noqa: E402

REFERENCE = Path(
    os.environ.get(
        "LISA_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"
    )
)
PROMPT = "Can you segment the red circle in this image?"
FOLLOW_UP = "And where is the orange circle, next to it?"


class MaskTimer:
    """Wraps the model's decode_masks to time the SAM part of a turn separately."""

    def __init__(self, segmenter: LisaSegmenter) -> None:
        self.seconds = 0.0
        self._decode = segmenter.model.decode_masks
        segmenter.model.decode_masks = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        masks = self._decode(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return masks


def timed_turn(
    segmenter: LisaSegmenter,
    image: Path,
    max_new_tokens: int,
    mask_timer: MaskTimer,
    prompt: str = PROMPT,
    history: list | None = None,
) -> tuple[float, float, int, int]:
    """(seconds, of which mask decoding, tokens generated, masks) of one turn."""
    synchronize = torch.cuda.synchronize if segmenter.device.type == "cuda" else lambda: None
    synchronize()
    mask_timer.seconds = 0.0
    start = time.perf_counter()
    result = segmenter(image, prompt, history=history, max_new_tokens=max_new_tokens)
    synchronize()
    return time.perf_counter() - start, mask_timer.seconds, result.num_tokens, len(result.masks)


def _expanded_ids(segmenter: LisaSegmenter, history: list) -> list[int]:
    """The follow-up prompt's ids with the image sentinel expanded to its feature positions."""
    ids = segmenter.prompt_ids(FOLLOW_UP, history)
    at = ids.index(IMAGE_TOKEN_INDEX)
    return ids[:at] + [IMAGE_TOKEN_INDEX] * segmenter.model.model.num_image_tokens + ids[at + 1 :]


def follow_up_turns(segmenter: LisaSegmenter, args, mask_timer: MaskTimer) -> None:
    """The follow-up turn continuing the kept first turn, and computed whole, alternating."""
    whole = LisaSegmenter(
        segmenter.tokenizer,
        segmenter.model,
        segmenter.preprocessor,
        max_new_tokens=segmenter.max_new_tokens,
        prefix_cache_size=0,
    )
    segmenter.prefix_cache.clear()
    first = segmenter(args.image, PROMPT, max_new_tokens=args.max_new_tokens)
    key = image_key(segmenter.read_image(args.image))
    kept = segmenter.prefix_cache.get(key)  # the first turn's conversation
    follow_up_tokens = len(segmenter.prompt_ids(FOLLOW_UP, first.history)) - 1
    follow_up_tokens += segmenter.model.model.num_image_tokens
    print(
        f"follow-up turn: {follow_up_tokens} positions (image features included), of which "
        f"{kept.common_length(torch.tensor(_expanded_ids(segmenter, first.history)))} kept "
        "from the first turn"
    )
    for new_tokens, title in ((1, "first-token latency"), (args.max_new_tokens, "text")):
        times: dict[str, list[float]] = {"kept conversation": [], "whole": []}
        for _ in range(args.repeats):
            for name, asked in (("kept conversation", segmenter), ("whole", whole)):
                segmenter.prefix_cache.put(key, kept)
                seconds, masks, _, _ = timed_turn(
                    asked, args.image, new_tokens, mask_timer, FOLLOW_UP, first.history
                )
                times[name].append(seconds - masks)
        for name, values in times.items():
            print(f"  {title:20s} {name:18s} {min(values) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=Path, default=REFERENCE / "tiny_lisa")
    parser.add_argument("--vision-tower", default=None, help="default: <version>/clip if present")
    parser.add_argument("--image", type=Path, default=REFERENCE / "tiny_cases" / "img1.png")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tower = args.vision_tower
    if tower is None and (args.version / "clip").is_dir():
        tower = str(args.version / "clip")
    segmenter = LisaSegmenter.from_pretrained(
        args.version, precision=args.precision, device=args.device, vision_tower=tower
    )
    prompt_tokens = len(segmenter.prompt_ids(PROMPT))
    image_tokens = segmenter.model.model.num_image_tokens
    print(
        f"device {segmenter.device}, threads {torch.get_num_threads()}, {args.version.name}, "
        f"prompt {prompt_tokens} tokens + {image_tokens} image features"
    )
    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    mask_timer = MaskTimer(segmenter)
    timed_turn(segmenter, args.image, args.max_new_tokens, mask_timer)  # warm-up

    first = [timed_turn(segmenter, args.image, 1, mask_timer) for _ in range(args.repeats)]
    turns = [
        timed_turn(segmenter, args.image, args.max_new_tokens, mask_timer)
        for _ in range(args.repeats)
    ]
    first_latency = min(t - m for t, m, _, _ in first)
    text_time = min(t - m for t, m, _, _ in turns)
    mask_time = min(m for _, m, _, _ in turns)
    tokens, masks = turns[0][2], turns[0][3]
    print(f"first-token latency   {first_latency * 1000:8.1f} ms")
    if tokens > 1:
        rate = (tokens - 1) / max(text_time - first_latency, 1e-9)
        print(f"decoding speed        {rate:8.1f} tokens/s (after the first of {tokens} tokens)")
    print(f"masks                 {mask_time * 1000:8.1f} ms for {masks} masks (SAM)")
    print(f"full turn             {(text_time + mask_time) * 1000:8.1f} ms")
    follow_up_turns(segmenter, args, mask_timer)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

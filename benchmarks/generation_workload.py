"""bench_model.py's "generation" workload: greedy decoding speed and prompt prefix reuse.

At the small configuration of bench_model.py (LLaMA 512 x 8 layers, 256 image tokens), fp32:

- 128 new tokens after the evaluate_plain prompt (one image, one prompt), tokens/s of the whole
  ``generate`` call; with ``--compile_decoding`` the compiled decoding step alternates with the
  eager one (its compilation, timed apart, comes first), and with torch using several threads,
  the same call on one thread (a one-token step is mostly memory-bound matrix-vector products;
  on a CPU that other processes keep busy, each step's parallel regions wait for a thread the
  system has not scheduled). Beside it the floor of one-token steps
  on this machine: the time to read every weight of the LLM once (the matrix-vector products of
  one step alone, nothing else).
- Prefix reuse: three prompts about one image (the same prompt with three different questions)
  with their shared prefix run once against every prompt whole; and a follow-up turn (the first
  turn, its answer and a new question) continuing the kept conversation against computing it
  whole. Each: seconds of ``generate`` with 16 new tokens and with 1 (the first-token latency),
  SAM's decoding of the answers' masks left out (the same in both), and positions through the
  LLM.

Variants alternate within one run; the load average is printed before and after (other work on
the machine slows every variant, not one).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from model.LISA import LISAForCausalLM
from utils.batch import LisaBatch
from utils.constants import IMAGE_TOKEN_INDEX

QUESTION_LENGTHS = (20, 14, 26)  # the three questions about one image, in tokens
FOLLOW_UP_LENGTH = 20  # the new question of the follow-up turn


def run_generation(
    build_model: Callable[[torch.device], LISAForCausalLM],
    prompt: LisaBatch,
    repeats: int,
    device: torch.device,
    *,
    new_tokens: int = 128,
    compile_decoding: bool = False,
) -> None:
    print(f"load average before: {_load()}")
    model = build_model(device).eval()
    model.config.eos_token_id = None  # every answer runs its full length
    _decoding_speed(model, prompt, repeats, device, new_tokens, compile_decoding)
    _weight_read_floor(model, repeats, device)
    _shared_prefix(model, prompt, repeats, device)
    _follow_up(model, prompt, repeats, device)
    print(f"load average after: {_load()}")


def _decoding_speed(model, prompt, repeats, device, new_tokens, compile_decoding) -> None:
    def answer(compiled: bool) -> torch.Tensor:
        return model.generate(
            prompt, max_new_tokens=new_tokens, compile_decoding=compiled
        ).output_ids

    def generate(compiled: bool, threads: int | None = None) -> Callable[[], None]:
        def run() -> None:
            torch_threads = torch.get_num_threads()
            torch.set_num_threads(threads or torch_threads)
            try:
                assert answer(compiled).shape[1] == prompt.input_ids.shape[1] + new_tokens
            finally:
                torch.set_num_threads(torch_threads)

        return run

    threads = torch.get_num_threads()
    variants = {f"eager steps, {threads} thread{'s' if threads > 1 else ''}": generate(False)}
    if torch.get_num_threads() > 1 and device.type == "cpu":
        variants["eager steps, 1 thread"] = generate(False, threads=1)
        torch_threads = torch.get_num_threads()
        several = answer(False)
        torch.set_num_threads(1)
        try:
            print(f"  one thread gives the same ids: {torch.equal(answer(False), several)}")
        finally:
            torch.set_num_threads(torch_threads)
    if compile_decoding:
        start = time.perf_counter()
        compiled_ids = answer(True)
        print(f"  compiling the decoding step (first call): {time.perf_counter() - start:.1f} s")
        print(
            f"  compiled steps give the eager steps' ids: {torch.equal(compiled_ids, answer(False))}"
        )
        variants["compiled steps"] = generate(True)
    seconds = _alternating(variants, repeats, device)
    for name, times in seconds.items():
        rates = sorted(new_tokens / t for t in times)
        print(
            f"generation ({name}): {new_tokens} tokens, median {statistics.median(rates):.1f} "
            f"tokens/s (runs {rates[0]:.1f} .. {rates[-1]:.1f})"
        )


def _weight_read_floor(model, repeats, device) -> None:
    """Every matrix of the LLM and its head applied once to one vector: what a one-token step
    cannot go below (the weights stream from memory once per step)."""
    weights = [m.weight for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    weights.append(model.lm_head.weight)
    vectors = [torch.randn(1, w.shape[1], device=device, dtype=w.dtype) for w in weights]

    def products() -> None:
        for vector, weight in zip(vectors, weights, strict=True):
            F.linear(vector, weight)

    with torch.no_grad():
        seconds = statistics.median(
            _alternating({"floor": products}, repeats * 10, device)["floor"]
        )
    megabytes = sum(w.numel() * w.element_size() for w in weights) / 1e6
    print(
        f"  floor of a one-token step: reading the {megabytes:.0f} MB of LLM weights once takes "
        f"{seconds * 1000:.2f} ms ({megabytes / 1000 / seconds:.0f} GB/s): at most "
        f"{1 / seconds:.0f} tokens/s for one token per step"
    )


def _shared_prefix(model, prompt, repeats, device) -> None:
    """Three prompts about one image: the shared prefix once against every prompt whole."""
    rows = [_with_question(prompt, length, seed) for seed, length in enumerate(QUESTION_LENGTHS)]
    batch = _batch_of(prompt, rows, device)
    _compare(
        "three prompts about one image",
        model,
        batch,
        {"prefix once": {"share_prefix": True}, "each whole": {"share_prefix": False}},
        repeats,
        device,
    )


def _follow_up(model, prompt, repeats, device) -> None:
    """A second turn: the first turn's prompt, its answer and a new question."""
    first = model.generate(prompt, max_new_tokens=16, keep_prefixes=True)
    conversation = first.output_ids[0].tolist()
    question = torch.randint(
        3, 500, (FOLLOW_UP_LENGTH,), generator=torch.Generator().manual_seed(9)
    )
    batch = _batch_of(prompt, [conversation + question.tolist()], device)
    _compare(
        "follow-up turn",
        model,
        batch,
        {
            "kept conversation": {"cached_prefixes": first.prefixes},
            "whole": {"share_prefix": False},
        },
        repeats,
        device,
    )


def _compare(title, model, batch, variants: dict[str, dict], repeats, device) -> None:
    positions = {name: _positions(model, batch, options) for name, options in variants.items()}
    results = {
        name: model.generate(batch, max_new_tokens=16, **options)
        for name, options in variants.items()
    }
    first = next(iter(results.values()))
    same = all(torch.equal(r.output_ids, first.output_ids) for r in results.values())
    masks = sum(m.shape[0] for m in first.pred_masks)
    print(f"{title} ({batch.num_conversations} rows, {masks} masks), the same ids: {same}")
    for new_tokens in (16, 1):
        runs = {
            name: _generate_call(model, batch, new_tokens, options)
            for name, options in variants.items()
        }
        seconds = _alternating(runs, repeats, device)
        for name, times in seconds.items():
            print(
                f"  {name:18s} {new_tokens:2d} new tokens: median {statistics.median(times):.3f} s"
                f" (runs {min(times):.3f} .. {max(times):.3f}); {positions[name]} positions "
                "through the LLM before the first new token"
            )


def _generate_call(model, batch, new_tokens, options) -> Callable[[], float]:
    """One generate call; returns the seconds its mask decoding took (SAM), to leave out."""

    def run() -> float:
        mask_seconds = 0.0
        decode_masks = model.decode_masks

        def timed_decode_masks(*args, **kwargs):
            nonlocal mask_seconds
            start = time.perf_counter()
            masks = decode_masks(*args, **kwargs)
            mask_seconds += time.perf_counter() - start
            return masks

        model.decode_masks = timed_decode_masks
        try:
            model.generate(batch, max_new_tokens=new_tokens, **options)
        finally:
            del model.decode_masks  # the class's method again
        return mask_seconds

    return run


def _positions(model, batch, options) -> int:
    """Positions the LLM computes for ``batch`` until the first new token."""
    shapes = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(kwargs["inputs_embeds"].shape[:2]),
        with_kwargs=True,
    )
    try:
        model.generate(batch, max_new_tokens=1, **options)
    finally:
        hook.remove()
    return sum(rows * length for rows, length in shapes)


def _with_question(prompt: LisaBatch, length: int, seed: int) -> list[int]:
    """The prompt up to its image end token, then ``length`` question tokens of its own."""
    ids = prompt.input_ids[0, prompt.attention_mask[0]].tolist()
    image_end = ids.index(IMAGE_TOKEN_INDEX) + 2
    generator = torch.Generator().manual_seed(seed)
    return ids[:image_end] + torch.randint(3, 500, (length,), generator=generator).tolist()


def _batch_of(prompt: LisaBatch, rows: list[list[int]], device) -> LisaBatch:
    """``rows`` about the prompt's one image, right-padded."""
    length = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return LisaBatch(
        images=prompt.images,
        images_clip=prompt.images_clip,
        input_ids=ids,
        attention_mask=mask,
        offset=[0, len(rows)],
        resize_sizes=prompt.resize_sizes,
        original_sizes=prompt.original_sizes,
    ).to(device)


def _alternating(variants: dict[str, Callable[[], float | None]], repeats: int, device) -> dict:
    """Seconds of each variant, ``repeats`` runs each, the variants taking turns (after one
    warm-up run each); a run may return seconds of its own to leave out."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            synchronize()
            start = time.perf_counter()
            left_out = run() or 0.0
            synchronize()
            seconds[name].append(time.perf_counter() - start - left_out)
    return seconds


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())

"""bench_model's step breakdown (benchmarks/step_breakdown.py) puts each operator of a profiled
training step, forward and backward, in the part of the model that ran it; the packed layout's
bookkeeping is a part of its own. Only which parts get time is checked, never how much."""

import torch

from benchmarks.step_breakdown import ATTENTION_KERNEL, breakdown_lines, profile_step
from model.builder import set_trainable

from .test_packing import random_batch, tiny_model


def breakdown(packed: bool) -> dict[str, list[float]]:
    model = tiny_model()
    set_trainable(model, "lisa")  # CLIP and SAM's image encoder frozen
    model.pack_conversations = packed
    batch = random_batch(21, (3, 2))

    def step():
        model.zero_grad(set_to_none=True)
        model(batch).loss.backward()

    times = profile_step(step, model, torch.device("cpu"))
    # the scopes are gone afterwards: no hook, no shadowing attribute
    assert not model.model.layers[0].mlp._forward_hooks
    assert "prepare_multimodal_inputs" not in vars(model)
    return times


def test_each_part_gets_its_forward_and_backward_time():
    times = breakdown(packed=True)
    forward = {part for part, (f, _) in times.items() if f > 0}
    backward = {part for part, (_, b) in times.items() if b > 0}
    trained = {"LLM MLP", "LLM attention projections (q, k, v, o; LoRA)", ATTENTION_KERNEL}
    trained |= {"LLM attention: rotary, reshapes, eager scores", "lm_head + CE"}
    trained |= {"SAM prompt encoder + mask decoder", "packing bookkeeping"}
    assert trained <= forward and trained <= backward
    assert {"CLIP tower", "SAM image encoder"} <= forward
    assert times["CLIP tower"][1] == times["SAM image encoder"][1] == 0  # frozen: no backward
    lines = breakdown_lines(times, "packed")
    assert len(lines) == len(times) + 3 and "packing bookkeeping" in "\n".join(lines)


def test_the_unpacked_step_has_no_packing_bookkeeping():
    assert "packing bookkeeping" not in breakdown(packed=False)

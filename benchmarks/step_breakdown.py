"""Where a LISA training step's time goes: forward and backward time per part of the model.

One step runs under torch.profiler. Each part of the model (CLIP, the LLM's attention, MLP and
norms, lm_head and the loss, SAM's encoder and decoder, the packing bookkeeping ...) runs inside a
named profiler scope, opened by forward hooks on its modules. A forward operator's own time goes
to the innermost part around it; a backward operator's time goes to the part whose forward
operator created its autograd node (the profiler's sequence numbers link the two). Gradient
accumulation into parameters has no forward operator and is its own line. With gradient
checkpointing, a decoder layer's recomputed forward counts as backward time of the part whose
backward asks for it first (the layer's MLP, the last to run forward). The times
are the operators' own CPU times under the profiler (on CUDA, their kernels' GPU times), so
their sum exceeds an unprofiled step's time by the profiler's overhead; read the shares.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

SCOPE = "part:"  # prefix of the profiler scopes this module opens
# Scopes the model's own code opens, and the part each belongs to.
MODEL_SCOPES = {
    "lisa::pack_conversations": "packing bookkeeping",
    "lisa::unpack_hidden": "packing bookkeeping",
}
ATTENTION_KERNEL = "LLM attention kernel (SDPA)"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
LOSS_OPS = ("cross_entropy", "log_softmax", "nll_loss")
ACCUMULATION = "backward: gradient accumulation into parameters"
UNSCOPED = "other (mask losses, SAM input, glue)"


def model_parts(lisa) -> dict[str, list[torch.nn.Module]]:
    """The modules of each part of a LISA model (the unwrapped LISAForCausalLM)."""
    core = lisa.model
    layers = list(core.layers)
    sam = core.visual_model
    return {
        "CLIP tower": [core.vision_tower],
        "projector": [core.mm_projector],
        "LLM embedding": [core.embed_tokens],
        "LLM setup (mask, rotary tables)": [core],
        "LLM layers: residual adds": layers,
        "LLM norms": [core.norm]
        + [m for layer in layers for m in (layer.input_layernorm, layer.post_attention_layernorm)],
        # with LoRA adapters each projection is PEFT's wrapper: the adapter counts with it
        "LLM attention projections (q, k, v, o; LoRA)": [
            getattr(layer.self_attn, name) for layer in layers for name in PROJECTIONS
        ],
        "LLM attention: rotary, reshapes, eager scores": [layer.self_attn for layer in layers],
        "LLM MLP": [layer.mlp for layer in layers],
        "lm_head + CE": [lisa.lm_head],
        "[SEG] projection": [core.text_hidden_fcs],
        "SAM image encoder": [sam.image_encoder],
        "SAM prompt encoder + mask decoder": [sam.prompt_encoder, sam.mask_decoder],
    }


@contextmanager
def scoped_methods(methods: dict[str, list[tuple[object, str]]]) -> Iterator[None]:
    """Each (object, method name) runs inside a profiler scope named after its part, through an
    instance attribute that shadows the method until the end."""
    for name, pairs in methods.items():
        for owner, attribute in pairs:
            setattr(owner, attribute, record_function(SCOPE + name)(getattr(owner, attribute)))
    try:
        yield
    finally:
        for pairs in methods.values():
            for owner, attribute in pairs:
                delattr(owner, attribute)


def model_methods(lisa) -> dict[str, list[tuple[object, str]]]:
    """Methods that are parts of their own (not modules)."""
    return {
        "image token expansion": [(lisa, "prepare_multimodal_inputs")],
        "SAM mask upscaling": [(lisa.model.visual_model, "postprocess_masks")],
    }


@contextmanager
def scoped_parts(parts: dict[str, list[torch.nn.Module]]) -> Iterator[None]:
    """Forward hooks that open a profiler scope named after each module's part."""
    handles, open_scopes = [], []

    def enter(name: str) -> Callable:
        def hook(module, args):
            scope = record_function(SCOPE + name)
            scope.__enter__()
            open_scopes.append(scope)

        return hook

    def leave(module, args, output):
        open_scopes.pop().__exit__(None, None, None)

    for name, modules in parts.items():
        for module in modules:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _part_of(event) -> str | None:
    """The innermost part scope around a forward operator event."""
    parent = event
    while parent is not None:
        if parent.name.startswith(SCOPE):
            return parent.name[len(SCOPE) :]
        if parent.name in MODEL_SCOPES:
            return MODEL_SCOPES[parent.name]
        parent = parent.cpu_parent
    return None


def _backward_root(event):
    """The autograd engine's node event an operator runs under, or None in the forward."""
    parent = event
    while parent is not None:
        if parent.name.startswith("autograd::engine::evaluate_function"):
            return parent
        parent = parent.cpu_parent
    return None


def _forward_label(event) -> str:
    part = _part_of(event)
    name = event.name
    if part is not None and part.startswith("LLM") and "scaled_dot_product" in name:
        return ATTENTION_KERNEL
    if any(op in name for op in LOSS_OPS) and part in (None, "lm_head + CE"):
        return "lm_head + CE"
    return part if part is not None else UNSCOPED


def attribute_times(events, on_device: bool = False) -> dict[str, list[float]]:
    """{part: [forward ms, backward ms]} from a profile's events: operators' own CPU times, or
    with ``on_device`` the times of the GPU kernels they launched."""
    creators = {}  # autograd sequence number -> label of the forward operator that made the node
    times = collections.defaultdict(lambda: [0.0, 0.0])
    for event in sorted(events, key=lambda e: e.time_range.start):
        if event.name.startswith(SCOPE) or event.name in MODEL_SCOPES:
            continue
        own = event.self_device_time_total if on_device else event.self_cpu_time_total
        root = _backward_root(event)
        if root is None:
            label = _forward_label(event)
            if event.sequence_nr >= 0 and event.sequence_nr not in creators:
                creators[event.sequence_nr] = label
            times[label][0] += own / 1e3
        else:
            label = creators.get(root.sequence_nr, ACCUMULATION)
            times[label][1] += own / 1e3
    return dict(times)


def profile_step(step: Callable[[], None], lisa, device: torch.device) -> dict[str, list[float]]:
    """{part: [forward ms, backward ms]} of one call of ``step`` (a forward and backward of
    ``lisa``, the unwrapped LISAForCausalLM, or of its wrapper); GPU kernel times on CUDA."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with (
        scoped_parts(model_parts(lisa)),
        scoped_methods(model_methods(lisa)),
        profile(activities=activities) as profiler,
    ):
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return attribute_times(profiler.events(), on_device=device.type == "cuda")


def breakdown_lines(times: dict[str, list[float]], title: str) -> list[str]:
    """The table: one line per part, largest first, with its share of the total."""
    total = sum(f + b for f, b in times.values())
    lines = [f"  {title}: {total:.0f} ms of operator time under the profiler"]
    lines.append(f"    {'part':<48} {'forward':>9} {'backward':>9} {'share':>6}")
    for name, (forward, backward) in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        share = 100 * (forward + backward) / total
        lines.append(f"    {name:<48} {forward:>7.1f}ms {backward:>7.1f}ms {share:>5.1f}%")
    forward = sum(f for f, _ in times.values())
    lines.append(f"    {'all':<48} {forward:>7.1f}ms {total - forward:>7.1f}ms")
    return lines

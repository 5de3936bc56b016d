"""bench_model.py's "default mixture" workload: packed against unpacked conversations.

The batch has the shapes of the original's default training: 2 images with 3 conversations
each (``--num_classes_per_sample 3`` on a semantic or referring segmentation sample), 256 image
tokens, the llava_v1 system prompt, questions and answers of the real templates
(utils.data.questions), tokenised by the reference checkpoint's LLaMA tokenizer. The model is the
small configuration of bench_model.py (LLaMA 512 x 8 layers) with the original's LoRA recipe,
trained with gradient checkpointing as train_ds.py (and the original) trains, and without.
The four steps alternate in one run; the load average is printed before and after.
``--breakdown`` profiles one step of each and prints its time per part of the model.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.step_breakdown import breakdown_lines, profile_step
from model.builder import LoraSettings, apply_lora, set_trainable, unwrap_lisa
from model.LISA import LISAForCausalLM, conversation_image_index
from model.packing import conversation_groups, pack_conversations, shared_prefix_lengths
from utils.batch import LisaBatch
from utils.collate import pad, tokenise
from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.conversation import build_conversation, wrap_image_token
from utils.data.questions import ANSWER_LIST, SHORT_QUESTION_LIST
from utils.tokenization import add_lisa_tokens, load_tokenizer

CLASS_NAMES = (("person", "dining table", "potted plant"), ("car", "traffic light", "sky"))
LLAMA_7B = {"hidden": 4096, "layers": 32, "intermediate": 11008, "vocab": 32003}


def mixture_batch(tokenizer_dir: Path, device) -> tuple[LisaBatch, int]:
    """The batch (ids in the tokenizer's vocabulary) and the [SEG] id."""
    tokenizer = load_tokenizer(tokenizer_dir)
    seg_id = add_lisa_tokens(tokenizer)
    rng = np.random.default_rng(0)
    conversations, offset = [], [0]
    for names in CLASS_NAMES:
        for name in names:  # one conversation per sampled class, as the original's readers
            question = str(rng.choice(SHORT_QUESTION_LIST)).format(class_name=name)
            assert question.startswith(DEFAULT_IMAGE_TOKEN)
            text = build_conversation([(question, str(rng.choice(ANSWER_LIST)))], "llava_v1")
            conversations.append(wrap_image_token(text, True))
        offset.append(len(conversations))
    ids, labels = tokenise(conversations, tokenizer, "llava_v1")
    input_ids, targets, attention = pad(ids, labels, tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(0)
    masks = [(torch.rand(3, 240, 320, generator=generator) > 0.5).float() for _ in range(2)]
    batch = LisaBatch(
        images=torch.randint(0, 256, (2, 3, 1024, 1024), dtype=torch.uint8, generator=generator),
        images_clip=torch.randn(2, 3, 64, 64, generator=generator),
        input_ids=input_ids,
        attention_mask=attention,
        offset=torch.tensor(offset),
        resize_sizes=[(768, 1024)] * 2,
        original_sizes=[(240, 320)] * 2,
        labels=targets,
        gt_masks=masks,
    )
    return batch.to(device), seg_id


def llm_token_counts(model: LISAForCausalLM, batch: LisaBatch) -> dict[str, int]:
    """Real tokens and computed positions (padding included) of both layouts."""
    with torch.no_grad():
        features = model.model.get_image_features(batch.images_clip)
        image_index = conversation_image_index(
            batch.offset, batch.num_conversations, batch.num_images, features.device
        )
        inputs = model.prepare_multimodal_inputs(
            batch.input_ids, features, image_index, batch.attention_mask
        )
        packed = pack_conversations(
            inputs.expanded_ids, inputs.inputs_embeds, inputs.attention_mask, image_index, "sdpa"
        )
    return {
        "unpacked": int(inputs.attention_mask.sum()),
        "unpacked_positions": inputs.attention_mask.numel(),
        "packed": packed.num_tokens,
        "packed_positions": packed.position_ids.numel(),
        "supervised": int((inputs.labels != -100).sum()) if inputs.labels is not None else 0,
        "lengths": inputs.attention_mask.sum(1).tolist(),
        "prefix": shared_prefix_lengths(
            inputs.expanded_ids, inputs.attention_mask, conversation_groups(image_index)
        ),
    }


def step_memory(model, batch: LisaBatch, device) -> int:
    """Bytes: the CUDA peak of a step, or on a CPU the tensors autograd saves for backward."""
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        model(batch).loss.backward()
        return torch.cuda.max_memory_allocated()
    saved = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = model(batch).loss
    loss.backward()
    return sum(saved.values())


def paper_figures(counts: dict[str, int], num_image_tokens: int) -> list[str]:
    """Tokens and FLOPs per step of the same batch at LLaMA-7B shapes (576 image tokens too)."""
    d, layers, inter = LLAMA_7B["hidden"], LLAMA_7B["layers"], LLAMA_7B["intermediate"]
    per_token_linear = 2 * layers * (4 * d * d + 3 * d * inter)  # forward multiply-adds x 2
    lines = []
    for tokens_per_image in (num_image_tokens, 576):
        grow = tokens_per_image - num_image_tokens
        lengths = [n + grow for n in counts["lengths"]]
        prefixes = [p + grow for p in counts["prefix"]]
        unpacked = sum(lengths)
        own = sum(lengths) - 3 * sum(prefixes)  # 3 conversations per image
        packed = sum(prefixes) + own

        def attention(total_positions: list[int]) -> int:  # scores and values, causal
            return 2 * 2 * layers * d * sum(n * (n + 1) // 2 for n in total_positions)

        flops_unpacked = unpacked * per_token_linear + attention(lengths)
        # packed: the prefix's causal attention once, each conversation's own tokens see the
        # prefix and themselves: the unpacked attention minus the prefix's repeats
        repeated = attention([p for p in prefixes for _ in range(2)])
        flops_packed = packed * per_token_linear + attention(lengths) - repeated
        lines.append(
            f"  LLaMA-7B, {tokens_per_image} image tokens, on paper: {unpacked} -> {packed} "
            f"tokens per step ({unpacked / packed:.2f}x); LLM forward "
            f"{flops_unpacked / 1e12:.2f} -> {flops_packed / 1e12:.2f} TFLOP, forward+backward "
            f"(x3) {3 * flops_unpacked / 1e12:.2f} -> {3 * flops_packed / 1e12:.2f} TFLOP "
            f"({flops_unpacked / flops_packed:.2f}x)"
        )
    return lines


# Each training setting the step is timed in: gradient checkpointing on (train_ds.py's default,
# and what the original's training always did) and off.
CHECKPOINTING = (
    (True, "gradient checkpointing on (train_ds.py's default; the original's training)"),
    (False, "gradient checkpointing off"),
)
LAYOUTS = ((False, "unpacked"), (True, "packed"))


def set_variant(lisa, checkpointing: bool, packed: bool) -> None:
    """The layout of the next step, and whether its decoder layers recompute activations (the
    checkpoint function was installed once by activation_checkpointing_enable)."""
    lisa.pack_conversations = packed
    for layer in lisa.model.layers:
        layer.gradient_checkpointing = checkpointing


def interleaved_step_times(step, lisa, repeats: int, device) -> dict[tuple, list[float]]:
    """{(checkpointing, packed): [seconds per step]}: the four variants alternate, after one
    warm-up step each."""
    variants = [(c, p) for c, _ in CHECKPOINTING for p, _ in LAYOUTS]
    times = {variant: [] for variant in variants}
    for repeat in range(repeats + 1):
        for variant in variants:
            set_variant(lisa, *variant)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat > 0:
                times[variant].append(time.perf_counter() - start)
    return times


def print_step_times(times: dict[tuple, list[float]], memory: dict[tuple, int], device) -> None:
    kind = "peak CUDA memory" if device.type == "cuda" else "tensors saved for backward"
    for checkpointing, setting in CHECKPOINTING:
        print(f"  step (forward+backward), {setting}:")
        for packed, name in LAYOUTS:
            seconds = times[checkpointing, packed]
            print(
                f"    {name}: median {statistics.median(seconds):.3f} s of "
                f"{[round(t, 3) for t in seconds]}; {kind} "
                f"{memory[checkpointing, packed] / 2**20:.1f} MiB"
            )
        ratio = statistics.median(times[checkpointing, False]) / statistics.median(
            times[checkpointing, True]
        )
        print(f"    packed step {ratio:.2f}x faster than unpacked")


def print_breakdowns(step, lisa, device) -> None:
    """Each variant's step, profiled once, by part (benchmarks/step_breakdown.py)."""
    for checkpointing, setting in CHECKPOINTING:
        for packed, name in LAYOUTS:
            set_variant(lisa, checkpointing, packed)
            print(f"  load average: {os.getloadavg()}")
            times = profile_step(step, lisa, device)
            title = f"where the {name} step goes, {setting}"
            for line in breakdown_lines(times, title):
                print(line)


def run_default_mixture(
    build_model, tokenizer_dir: Path, repeats: int, device, *, breakdown: bool = False
) -> None:
    """Print tokens through the LLM, step time and memory, packed vs unpacked with gradient
    checkpointing on and off, interleaved; with ``breakdown``, also where each step goes."""
    if not (tokenizer_dir / "tokenizer.model").is_file():
        print(f"default mixture: needs the reference tokenizer ({tokenizer_dir}/tokenizer.model)")
        return
    model = build_model(device)
    batch, seg_id = mixture_batch(tokenizer_dir, device)
    model.resize_token_embeddings(LLAMA_7B["vocab"])  # the LLaMA tokenizer's ids and LISA's
    model.config.seg_token_idx = seg_id
    model.activation_checkpointing_enable(  # as train_ds.py does; set_variant turns it on/off
        activation_checkpointing_kwargs={"use_reentrant": False}
    )
    lora_model = apply_lora(model, LoraSettings())  # the original's recipe
    set_trainable(lora_model, "lisa")
    lora_model.train()
    lisa = unwrap_lisa(lora_model)
    counts = llm_token_counts(lisa, batch)
    print(
        f"default mixture: 2 images x 3 conversations, {lisa.model.num_image_tokens} image "
        f"tokens, llava_v1, LLaMA 512 x 8, LoRA recipe; shared prefix per image "
        f"{counts['prefix']} tokens, conversations {counts['lengths']} tokens"
    )
    print(
        f"  tokens through the LLM: unpacked {counts['unpacked']} ({counts['unpacked_positions']} "
        f"positions with padding), packed {counts['packed']} ({counts['packed_positions']})"
    )

    def step():
        lora_model.zero_grad(set_to_none=True)
        lora_model(batch).loss.backward()

    print(f"  load average before: {os.getloadavg()}")
    times = interleaved_step_times(step, lisa, repeats, device)
    print(f"  load average after: {os.getloadavg()}")
    memory = {}
    for variant in times:
        set_variant(lisa, *variant)
        memory[variant] = step_memory(lora_model, batch, device)
    print_step_times(times, memory, device)
    for line in paper_figures(counts, lisa.model.num_image_tokens):
        print(line)
    if breakdown:
        print_breakdowns(step, lisa, device)
    set_variant(lisa, True, True)

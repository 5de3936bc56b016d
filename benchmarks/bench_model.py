"""Speed of the model core on CPU (or the GPU when one is present), fp32.

Sizes: the LLaMA of a small LISA (hidden 512, 8 layers, 8 heads, intermediate 1376), the tiny CLIP
and tiny SAM of the reference checkpoint (SAM input 1024 px), random weights. Prints:
  - generation: tokens/s for 128 new tokens after the evaluate_plain prompt (one image);
  - training step: forward + backward of the train_forward batch (2 images, 3 conversations,
    4 [SEG]), with every parameter trainable and with the original recipe's trainable set;
  - SAM ViT-B image encoder at 1024 px.
With --workload generation: decoding speed (and its floor on this machine) and prompt prefix
reuse (see benchmarks/generation_workload.py).
With --workload default_mixture: packed against unpacked conversations on a batch of the
original's default training shapes (see benchmarks/default_mixture.py); --breakdown adds where
each layout's step goes (benchmarks/step_breakdown.py).
The reference fixtures give the exact inputs when LISA_REFERENCE_DIR (default
../shared/reference) is present; otherwise inputs of the same shapes are generated.

    python benchmarks/bench_model.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.default_mixture import run_default_mixture  # noqa: E402
from benchmarks.generation_workload import run_generation  # noqa: E402
from model.builder import LoraSettings, apply_lora, set_trainable, unwrap_lisa  # noqa: E402
from model.LISA import LISAForCausalLM, conversation_image_index  # noqa: E402
from model.segment_anything import SAM_TINY, build_sam_vit_b  # noqa: E402
from tools.tiny_configs import tiny_clip_config, tiny_lisa_config  # noqa: E402
from utils.batch import LisaBatch  # noqa: E402
from utils.constants import IMAGE_TOKEN_INDEX  # noqa: E402

REFERENCE = Path(
    os.environ.get(
        "LISA_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"
    )
)
CASES = REFERENCE / "tiny_cases"
SEG_ID, IM_START, IM_END, VOCAB = 512, 513, 514, 515


def build_model(device: torch.device) -> LISAForCausalLM:
    config = tiny_lisa_config(  # the LLaMA of a small LISA, CLIP at 64 px, SAM at 1024 px
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        vision_config=tiny_clip_config(image_size=64, patch_size=4).to_dict(),
        seg_token_idx=SEG_ID,
        sam_config=dataclasses.asdict(SAM_TINY),
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:  # a real checkpoint, loaded the real way
        LISAForCausalLM(config).save_pretrained(directory)
        model = LISAForCausalLM.from_pretrained(directory)
    return model.to(device)


def synthetic_prompt(length: int, generator: torch.Generator) -> list[int]:
    ids = torch.randint(3, 500, (length - 3,), generator=generator).tolist()
    return [1, *ids[:94], IM_START, IMAGE_TOKEN_INDEX, IM_END, *ids[94:]]


def training_batch(device: torch.device) -> tuple[LisaBatch, str]:
    generator = torch.Generator().manual_seed(0)
    if (CASES / "train_forward.npz").is_file():
        arrays = np.load(CASES / "train_forward.npz")
        input_ids, labels = (
            torch.from_numpy(arrays["input_ids"]),
            torch.from_numpy(arrays["labels"]),
        )
        attention, offset = (
            torch.from_numpy(arrays["attention_masks"]),
            torch.from_numpy(arrays["offset"]),
        )
        images_clip = torch.from_numpy(arrays["images_clip"])
        masks = [torch.from_numpy(arrays[f"gt_masks_{i}"]).float() for i in range(2)]
        images = torch.cat(
            [
                torch.from_numpy(np.load(CASES / f"preprocess_img{i}.npz")["sam_input"])
                for i in (1, 2)
            ]
        )
        source = "reference train_forward batch"
    else:
        lengths, segs = (125, 162, 144), (1, 2, 1)
        input_ids = torch.zeros(3, 162, dtype=torch.long)
        for row, (length, count) in enumerate(zip(lengths, segs, strict=True)):
            prompt = synthetic_prompt(length, generator)
            for k in range(count):
                prompt[-3 - 20 * k] = SEG_ID
            input_ids[row, :length] = torch.tensor(prompt)
        attention = input_ids != 0
        labels = input_ids.masked_fill(~attention, -100)
        labels[:, :100] = -100
        offset = torch.tensor([0, 2, 3])
        images_clip = torch.randn(2, 3, 64, 64, generator=generator)
        images = torch.randn(2, 3, 1024, 1024, generator=generator)
        masks = [
            (torch.rand(3, 240, 320, generator=generator) > 0.5).float(),
            (torch.rand(1, 167, 250, generator=generator) > 0.5).float(),
        ]
        source = "synthetic batch of the reference shapes"
    batch = LisaBatch(
        images=images,
        images_clip=images_clip,
        input_ids=input_ids,
        attention_mask=attention,
        offset=offset,
        resize_sizes=[(768, 1024), (684, 1024)],
        original_sizes=[m.shape[1:] for m in masks],
        labels=labels,
        gt_masks=masks,
    )
    moved = batch.to(device)
    return moved, source


def generation_inputs(device: torch.device) -> LisaBatch:
    generator = torch.Generator().manual_seed(1)
    if (CASES / "evaluate_plain.npz").is_file():
        input_ids = torch.from_numpy(np.load(CASES / "evaluate_plain.npz")["input_ids"])
        pre = np.load(CASES / "preprocess_img1.npz")
        images_clip, images = (
            torch.from_numpy(pre["images_clip"]),
            torch.from_numpy(pre["sam_input"]),
        )
    else:
        input_ids = torch.tensor([synthetic_prompt(119, generator)])
        images_clip = torch.randn(1, 3, 64, 64, generator=generator)
        images = torch.randn(1, 3, 1024, 1024, generator=generator)
    prompt = LisaBatch(
        images=images,
        images_clip=images_clip,
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids, dtype=torch.bool),
        offset=[0, 1],
        resize_sizes=[(768, 1024)],
        original_sizes=[(240, 320)],
    )
    return prompt.to(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step(model, batch: LisaBatch):
    """One forward+backward of ``model`` (LISA or its PEFT wrapper) on ``batch``, for timed()."""

    def step():
        model.zero_grad(set_to_none=True)
        model(batch).loss.backward()

    return step


def print_breakdown(model: LISAForCausalLM, batch: LisaBatch, repeats: int, device) -> None:
    """Where the LoRA-recipe step goes: the LLM alone, SAM's image encoder alone, and the
    fp32 matmul throughput of this machine (the floor for the LLM's share)."""
    features = model.model.get_image_features(batch.images_clip).detach()
    conversation_to_image = conversation_image_index(
        batch.offset, batch.num_conversations, features.shape[0], device
    )
    prepared = model.prepare_multimodal_inputs(
        batch.input_ids, features, conversation_to_image, batch.attention_mask, None
    )
    embeddings = prepared.inputs_embeds.detach().requires_grad_(True)

    def llm_step():
        model.zero_grad(set_to_none=True)
        hidden = model.model(inputs_embeds=embeddings, use_cache=False).last_hidden_state
        hidden.sum().backward()

    tokens = embeddings.shape[0] * embeddings.shape[1]
    print(
        f"  of which the LLM forward+backward alone ({tokens} positions): "
        f"{timed(llm_step, repeats, device):.3f} s"
    )
    with torch.no_grad():
        encoder = model.model.visual_model.image_encoder
        seconds = timed(lambda: encoder(batch.images), repeats, device)
    print(f"  of which SAM's image encoder (frozen, {batch.num_images} images): {seconds:.3f} s")
    left = torch.randn(2048, 2048, device=device)
    right = torch.randn(2048, 2048, device=device)
    seconds = timed(lambda: left @ right, repeats, device)
    print(f"  fp32 matmul throughput here: {2 * 2048**3 / seconds / 1e9:.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--workload",
        choices=("core", "default_mixture", "generation"),
        default="core",
        help="core: generation, training step and SAM below; default_mixture: packed vs "
        "unpacked conversations on a batch of the original's default training shapes; "
        "generation: decoding speed and prompt prefix reuse, variants alternating",
    )
    parser.add_argument(
        "--compile_decoding",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="with --workload generation: also time decoding steps compiled by torch.compile "
        "(compiling first takes a while)",
    )
    parser.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="with --workload default_mixture: also profile one step of each layout and print "
        "its time per part (CLIP, LLM attention, MLP, lm_head + CE, SAM, packing, backward)",
    )
    args = parser.parse_args()
    if args.breakdown and args.workload != "default_mixture":
        parser.error("--breakdown applies to --workload default_mixture")
    if args.compile_decoding and args.workload != "generation":
        parser.error("--compile_decoding applies to --workload generation")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be 1 or more, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}, fp32")
    if args.workload == "default_mixture":
        run_default_mixture(
            build_model, REFERENCE / "tiny_lisa", args.repeats, device, breakdown=args.breakdown
        )
        return
    if args.workload == "generation":
        run_generation(
            build_model,
            generation_inputs(device),
            args.repeats,
            device,
            new_tokens=args.new_tokens,
            compile_decoding=args.compile_decoding,
        )
        return
    model = build_model(device)
    model.config.eos_token_id = None  # generate exactly --new_tokens tokens

    prompt = generation_inputs(device)

    def generate():
        output_ids = model.generate(prompt, max_new_tokens=args.new_tokens).output_ids
        assert output_ids.shape[1] == prompt.input_ids.shape[1] + args.new_tokens

    seconds = timed(generate, args.repeats, device)
    print(
        f"generation: {args.new_tokens} tokens in {seconds:.3f} s = {args.new_tokens / seconds:.1f} tokens/s"
    )

    batch, source = training_batch(device)
    model.train()
    seconds = timed(training_step(model, batch), args.repeats, device)
    print(f"training forward+backward ({source}), all parameters trainable: {seconds:.3f} s")
    set_trainable(model, "lisa")  # the original's set; no adapters yet
    seconds = timed(training_step(model, batch), args.repeats, device)
    print(f"training forward+backward, original trainable set (LLM layers frozen): {seconds:.3f} s")

    # The original's training recipe: LoRA r=8 on q_proj/v_proj plus lm_head, embed_tokens, the
    # SAM mask decoder and text_hidden_fcs.
    lora_model = apply_lora(model, LoraSettings())
    set_trainable(lora_model, "lisa")
    lora_model.train()
    seconds = timed(training_step(lora_model, batch), args.repeats, device)
    print(
        f"training forward+backward, original recipe (LoRA r=8 q_proj,v_proj + lm_head, "
        f"embed_tokens, mask decoder, text_hidden_fcs): {seconds:.3f} s"
    )
    model = unwrap_lisa(lora_model)
    print_breakdown(model, batch, args.repeats, device)

    model.eval()
    sam_b = build_sam_vit_b().to(device).eval()
    image = torch.randn(1, 3, 1024, 1024, device=device)
    with torch.inference_mode():
        seconds = timed(lambda: sam_b.image_encoder(image), max(1, args.repeats - 1), device)
    print(f"SAM ViT-B image encoder, 1024 px, batch 1: {seconds:.3f} s")


if __name__ == "__main__":
    main()

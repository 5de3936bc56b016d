"""Tiny bases and segmenters on disk, and LISA built on each combination as train_ds.py builds
it (model.builder.build_model_for_training), for the tests of model.lisa_vlm."""

from pathlib import Path

import numpy as np
import pytest
import torch

from model.builder import ModelSettings, build_model_for_training
from model.segment_anything import build_sam_tiny
from model.segmenters import segmenter_ops
from model.segmenters.load import load_segmenter
from tools.tiny_sam2 import write_tiny_sam2
from tools.tiny_vlm_bases import build_tiny_llava_hf, build_tiny_qwen2_5_vl
from utils.collate import collate_with_format
from utils.data.sample_builder import SampleBuilder

MAX_LENGTH = 512
# (base, segmenter): the two of the README's table, and the other two pairings
COMBINATIONS = [
    ("llava_hf", "sam"),
    ("qwen2_5_vl", "sam2"),
    ("llava_hf", "sam2"),
    ("qwen2_5_vl", "sam"),
]


@pytest.fixture(scope="session")
def vlm_inputs(tmp_path_factory) -> dict[str, Path]:
    """The tiny base directories, a SAM 2 directory and an official SAM file."""
    root = tmp_path_factory.mktemp("vlm")
    torch.manual_seed(0)
    sam_file = root / "sam_tiny.pth"
    state = build_sam_tiny(image_size=64).state_dict()
    torch.save({k: torch.randn_like(v) * 0.1 for k, v in state.items()}, sam_file)
    return {
        "llava_hf": build_tiny_llava_hf(root / "llava_hf", seed=0),
        "qwen2_5_vl": build_tiny_qwen2_5_vl(root / "qwen2_5_vl", seed=0),
        "sam2": write_tiny_sam2(root / "sam2", seed=0),
        "sam": sam_file,
    }


def settings_for(inputs: dict[str, Path], base: str, segmenter: str, **extra) -> ModelSettings:
    module = load_segmenter(inputs[segmenter])
    ops = segmenter_ops(module)
    return ModelSettings(
        version=str(inputs[base]),
        vision_pretrained=str(inputs[segmenter]),
        out_dim=ops.prompt_width(module),
        image_size=ops.input_size(module),
        **extra,
    )


def build(inputs: dict[str, Path], base: str, segmenter: str):
    """(model, tokenizer, base format) as train_ds.py builds them, in fp32."""
    torch.manual_seed(0)
    settings = settings_for(inputs, base, segmenter)
    return build_model_for_training(settings, torch.float32, model_max_length=MAX_LENGTH)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def toy_batch(base_format, model, conversations_per_image=(1, 2), seed: int = 0):
    """A training batch: images of different sizes, 1-2 conversations each, one [SEG] per
    answer and a random mask for each."""
    module = model.visual_model
    builder = SampleBuilder(
        base_format=base_format, image_size=segmenter_ops(module).input_size(module)
    )
    rng = np.random.default_rng(seed)
    samples = []
    for i, count in enumerate(conversations_per_image):
        image = random_image(40 + 8 * i, 56 - 4 * i, seed + i)
        conversations = [
            builder.conversation([(f"<image>\nWhere is thing {k}?", f"It is [SEG] {k}.")])
            for k in range(count)
        ]
        masks = rng.random((count, *image.shape[:2])) > 0.5
        samples.append(
            builder.build(
                image_path=f"image{i}.png", image=image, conversations=conversations, masks=masks
            )
        )
    return collate_with_format(samples, base_format, model_max_length=MAX_LENGTH)

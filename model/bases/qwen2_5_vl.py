"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``) as a :class:`model.bases.BaseFormat`.

What ``Qwen2_5_VLProcessor`` does for one image and a text (its video half needs torchvision
and is not used): the image through transformers' Qwen2-VL image processor (PIL path: resized
so that both sides are multiples of patch x merge and the pixel count lies within the
directory's min/max pixels, then cut into flattened patches: ``pixel_values`` [t*h*w, 3*2*p*p]
and ``image_grid_thw`` [1, 3]); ``<image>`` becomes ``<|vision_start|>`` +
``<|image_pad|>`` x (t*h*w / merge^2) + ``<|vision_end|>``; the ChatML template with its
default system prompt; answers closed by ``<|im_end|>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor

from model.bases.templated_format import (
    TemplatedFormat,
    base_config_of,
    load_base_tokenizer,
    probed_chat_template,
    read_processor_files,
)
from utils.errors import UsageError

PROCESSOR_FILES = ("preprocessor_config.json",)
QwenVision = dict[str, torch.Tensor]


class Qwen25VlFormat(TemplatedFormat):
    """The qwen2_5_vl base (see the module docstring).

    Args:
        image_processor: transformers' Qwen2-VL image processor (PIL backend).
        vision_start_id, vision_end_id: the ids around the image tokens.
        others: see :class:`model.bases.templated_format.TemplatedFormat`.
    """

    kind = "qwen2_5_vl"

    def __init__(self, *, image_processor, vision_start_id: int, vision_end_id: int, **common):
        super().__init__(**common)
        self.image_processor = image_processor
        self.merge_size = int(image_processor.merge_size)
        self.image_placeholder = (
            self.token_text(vision_start_id, "vision_start_token_id")
            + self.token_text(self.image_token_id, "image_token_id")
            + self.token_text(vision_end_id, "vision_end_token_id")
        )

    @classmethod
    def from_directory(cls, directory: str | Path, *, model_max_length: int) -> Qwen25VlFormat:
        """From a Qwen2_5_VLForConditionalGeneration directory or a LISA checkpoint of one.

        Raises:
            UsageError: a file the base needs is missing or unreadable.
        """
        directory = Path(directory)
        config = base_config_of(directory)
        ids = [config.get(name) for name in _TOKEN_ID_FIELDS]
        if None in ids:
            raise UsageError(
                f"{directory / 'config.json'}: a Qwen2.5-VL config needs "
                f"{', '.join(_TOKEN_ID_FIELDS)}"
            )
        tokenizer = load_base_tokenizer(directory, model_max_length)
        files = read_processor_files(directory, PROCESSOR_FILES)
        if "preprocessor_config.json" not in files:
            raise UsageError(f"{directory / 'preprocessor_config.json'} does not exist")
        image_token_id, vision_start_id, vision_end_id = ids
        return cls(
            tokenizer=tokenizer,
            chat_template=probed_chat_template(directory, tokenizer),
            image_token_id=image_token_id,
            processor_files=files,
            image_processor=AutoImageProcessor.from_pretrained(str(directory), backend="pil"),
            vision_start_id=vision_start_id,
            vision_end_id=vision_end_id,
        )

    def image_inputs(self, image: np.ndarray) -> QwenVision:
        """RGB uint8 [H, W, 3] -> {"pixel_values": [t*h*w, 3*2*p*p] float32,
        "image_grid_thw": [1, 3] long}."""
        output = self.image_processor(images=[Image.fromarray(image)], return_tensors="pt")
        return {
            "pixel_values": output["pixel_values"],
            "image_grid_thw": output["image_grid_thw"].long(),
        }

    def num_image_tokens(self, vision: QwenVision) -> int:
        return int(vision["image_grid_thw"][0].prod()) // self.merge_size**2

    def collate_vision(self, inputs: Sequence[QwenVision]) -> QwenVision:
        """B images -> {"pixel_values": [sum of patches, D], "image_grid_thw": [B, 3]}."""
        return {
            "pixel_values": torch.cat([item["pixel_values"] for item in inputs], dim=0),
            "image_grid_thw": torch.cat([item["image_grid_thw"] for item in inputs], dim=0),
        }

    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, L] int: 1 on image tokens, 0 elsewhere; the model's 3-D (mrope) positions need
        it (without it, Qwen2.5-VL falls back to 1-D positions)."""
        return (input_ids == self.image_token_id).int()

    def forward_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: QwenVision
    ) -> dict[str, torch.Tensor]:
        """The keyword arguments of ``Qwen2_5_VLForConditionalGeneration.forward`` when row i
        is about image i (LISA's several conversations per image repeat the grids per row)."""
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
            "mm_token_type_ids": self.mm_token_type_ids(input_ids),
        }


_TOKEN_ID_FIELDS = ("image_token_id", "vision_start_token_id", "vision_end_token_id")

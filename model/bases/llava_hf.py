"""LLaVA in the Hugging Face layout (``LlavaForConditionalGeneration``: llava-hf/llava-1.5-7b-hf
and its family) as a :class:`model.bases.BaseFormat`.

What ``LlavaProcessor`` does, in the project's pieces: the image through the directory's
CLIPImageProcessor (the PIL path, :class:`utils.transforms.ClipTransform`; another image
processor type goes through transformers' own PIL implementation), the conversation in the
directory's chat template ("USER: <image>\\n... ASSISTANT: ..." for llava-1.5-hf), and
``<image>`` repeated once per image feature the model scatters: (side / patch)^2 (576 at
336 px, patch 14), plus one with ``vision_feature_select_strategy`` "full" (CLS kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor

from model.bases import VisionInput
from model.bases.templated_format import (
    TemplatedFormat,
    base_config_of,
    load_base_tokenizer,
    probed_chat_template,
    read_processor_files,
)
from utils.errors import UsageError
from utils.transforms import ClipTransform

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_CLIP_PROCESSOR_TYPES = ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil")


class PilImageProcessor:
    """A transformers image processor (PIL backend) for one RGB uint8 image -> [3, h, w]."""

    def __init__(self, directory: Path) -> None:
        self.processor = AutoImageProcessor.from_pretrained(str(directory), backend="pil")

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        pixels = self.processor(images=[Image.fromarray(image)], return_tensors="pt")
        return pixels["pixel_values"][0]


class LlavaHfFormat(TemplatedFormat):
    """The llava_hf base (see the module docstring).

    Args:
        patch_size: the vision tower's patch side (``vision_config.patch_size``).
        keep_cls: ``vision_feature_select_strategy`` is "full" (the CLS feature is scattered
            too); "default" drops it.
        image_transform: RGB uint8 [H, W, 3] -> [3, s, s] float32.
        others: see :class:`model.bases.templated_format.TemplatedFormat`.
    """

    kind = "llava_hf"

    def __init__(self, *, patch_size: int, keep_cls: bool, image_transform, **common) -> None:
        super().__init__(**common)
        self.patch_size = int(patch_size)
        self.keep_cls = keep_cls
        self.image_transform = image_transform
        self.image_placeholder = self.token_text(self.image_token_id, "image_token_id")

    @classmethod
    def from_directory(cls, directory: str | Path, *, model_max_length: int) -> LlavaHfFormat:
        """From a LlavaForConditionalGeneration directory or a LISA checkpoint of one.

        Raises:
            UsageError: a file the base needs is missing or unreadable.
        """
        directory = Path(directory)
        config = base_config_of(directory)
        vision = config.get("vision_config") or {}
        strategy = config.get("vision_feature_select_strategy", "default")
        image_token_id = config.get("image_token_id", config.get("image_token_index"))
        if image_token_id is None or "patch_size" not in vision:
            raise UsageError(
                f"{directory / 'config.json'}: a LLaVA (Hugging Face layout) config needs "
                "image_token_id (or image_token_index) and vision_config.patch_size"
            )
        tokenizer = load_base_tokenizer(directory, model_max_length)
        files = read_processor_files(directory, PROCESSOR_FILES)
        if "preprocessor_config.json" not in files:
            raise UsageError(f"{directory / 'preprocessor_config.json'} does not exist")
        return cls(
            tokenizer=tokenizer,
            chat_template=probed_chat_template(directory, tokenizer),
            image_token_id=image_token_id,
            processor_files=files,
            patch_size=vision["patch_size"],
            keep_cls=strategy == "full",
            image_transform=_image_transform(directory, files["preprocessor_config.json"]),
        )

    def image_inputs(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 [H, W, 3] -> [3, s, s] float32 pixel values."""
        return self.image_transform(image)

    def num_image_tokens(self, vision: VisionInput) -> int:
        height, width = vision.shape[-2:]
        grid = (height // self.patch_size) * (width // self.patch_size)
        return grid + (1 if self.keep_cls else 0)

    def collate_vision(self, inputs: Sequence[VisionInput]) -> torch.Tensor:
        """B images' [3, s, s] -> ``pixel_values`` [B, 3, s, s]."""
        return torch.stack(list(inputs), dim=0)

    def forward_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: VisionInput
    ) -> dict[str, torch.Tensor]:
        """The keyword arguments of ``LlavaForConditionalGeneration.forward`` for a batch."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": vision}


def _image_transform(directory: Path, config: dict):
    """The project's CLIP transform for a CLIPImageProcessor config, transformers' PIL
    processor for another type."""
    if config.get("image_processor_type", "CLIPImageProcessor") in _CLIP_PROCESSOR_TYPES:
        return ClipTransform.from_pretrained(directory)
    return PilImageProcessor(directory)

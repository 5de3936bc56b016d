"""The Python API for a LISA checkpoint on a transformers base (LLaVA in the Hugging Face layout,
Qwen2.5-VL): what :class:`model.segmenter.LisaSegmenter` does, with the base's own chat template,
image processing and tokeniser (its :class:`model.bases.BaseFormat`).

``LisaSegmenter.from_pretrained`` returns this class for such a checkpoint, so chat.py, app.py
and Python callers need no extra flag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from model.lisa_vlm import LisaVlm
from model.segmenter import (
    History,
    InputError,
    LisaSegmenter,
    PromptTooLongError,
    _checked_history,
    _checked_prompt,
    _Image,
    refuse_placeholders,
)
from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.transforms import PreparedImage, SamTransform

# SAM's input side for the uint8 pixels the data path hands over (SAM 2 resizes by itself).
SAM_INPUT_SIDE = 1024


class LisaVlmSegmenter(LisaSegmenter):
    """:class:`LisaSegmenter` over a :class:`model.lisa_vlm.LisaVlm` and its base format.

    A prompt is tokenised with the image as one token; each request's image then expands it to
    the image's own tokens (Qwen2.5-VL's count depends on the image's size)."""

    def __init__(self, base_format, model: LisaVlm, *, max_new_tokens: int = 512) -> None:
        super().__init__(
            base_format.tokenizer,
            model,
            preprocessor=None,
            max_new_tokens=max_new_tokens,
            share_prefix=False,
            prefix_cache_size=0,
        )
        self.base_format = base_format
        self.conv_type = base_format.kind
        self.use_mm_start_end = False
        self.seg_token_id = base_format.seg_token_id
        self.sam_transform = SamTransform(sam_input_side(model))
        self._visions: dict[int, object] = {}  # image inputs of this call's images, by id

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        precision: str = "bf16",
        device: str | torch.device | None = None,
        load_in_8bit: bool = False,
        load_in_4bit: bool = False,
        model_max_length: int = 512,
        max_new_tokens: int = 512,
    ) -> LisaVlmSegmenter:
        """The segmenter of a LISA checkpoint on a transformers base (see
        :func:`model.loading.load_lisa_vlm`)."""
        from model.loading import load_lisa_vlm

        base_format, model = load_lisa_vlm(
            path,
            precision=precision,
            device=device,
            load_in_8bit=load_in_8bit,
            load_in_4bit=load_in_4bit,
            model_max_length=model_max_length,
        )
        return cls(base_format, model, max_new_tokens=max_new_tokens)

    # --- prompts -------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str, history: History | None = None) -> list[int]:
        """Token ids of the chat prompt with the image as one token, checked against
        ``model_max_length`` (the image's own tokens are counted once the image is known)."""
        prompt = _checked_prompt(prompt)
        turns = _checked_history(history)
        refuse_placeholders([*turns, (prompt, "")])
        # the image goes in front of the first user message, as the training data has it
        placed = [
            (DEFAULT_IMAGE_TOKEN + "\n" + q if i == 0 else q, a) for i, (q, a) in enumerate(turns)
        ]
        question = prompt if placed else DEFAULT_IMAGE_TOKEN + "\n" + prompt
        text = self.base_format.generation_prompt(placed, question)
        text = text.replace(DEFAULT_IMAGE_TOKEN, self.base_format.image_placeholder)
        ids = list(self.tokenizer(text).input_ids)
        if len(ids) > self.model_max_length:
            raise PromptTooLongError(len(ids), self.model_max_length)
        return ids

    # --- images --------------------------------------------------------------------------------

    def _checked(self, image: _Image) -> _Image:
        height, width = image.pixels.shape[:2]
        if min(height, width) < 2:
            raise InputError(f"{image.name} is {width}x{height} pixels: too small to segment.")
        return image

    def _vision(self, image: _Image):
        if id(image) not in self._visions:
            pixels = self._checked(image).pixels
            self._visions[id(image)] = self.base_format.image_inputs(pixels)
        return self._visions[id(image)]

    def _prepare(self, images: Sequence[_Image]) -> tuple[PreparedImage, ...]:
        prepared = []
        for image in images:
            sam_input, resize = self.sam_transform(image.pixels)
            prepared.append(
                PreparedImage(
                    images_clip=self._vision(image),
                    images=sam_input.unsqueeze(0),
                    resize=resize,
                    original_size=(image.pixels.shape[0], image.pixels.shape[1]),
                )
            )
        return tuple(prepared)

    def _vision_batch(self, prepared: Sequence[PreparedImage]):
        return self.base_format.collate_vision([p.images_clip for p in prepared])

    # --- asking --------------------------------------------------------------------------------

    def _generate(
        self, images: Sequence[_Image], rows: Sequence[list[int]], max_new_tokens: int
    ) -> list[tuple[torch.Tensor, list[np.ndarray]]]:
        """Each prompt's image token expanded for its image, then :class:`LisaSegmenter`'s
        batch generation."""
        self._visions = {}
        try:
            expanded = []
            for image, row in zip(images, rows, strict=True):
                ids = self.base_format.expand_image(row, self._vision(image))
                if len(ids) > self.model_max_length:
                    raise PromptTooLongError(len(ids), self.model_max_length)
                expanded.append(ids)
            return super()._generate(images, expanded, max_new_tokens)
        finally:
            self._visions = {}

    def _answer_length(self, new_ids: torch.Tensor) -> int:
        """Tokens of one answer: up to its first end-of-turn token (the base's own)."""
        ends = torch.isin(
            new_ids, torch.tensor(self.model.end_of_answer_ids(), device=new_ids.device)
        )
        where = ends.nonzero()
        return int(where[0]) + 1 if len(where) else len(new_ids)


def sam_input_side(model: LisaVlm) -> int:
    """The side the data path resizes for: the official SAM's input (SAM 2 resizes by itself)."""
    from model.segmenters import segmenter_ops

    ops = segmenter_ops(model.visual_model)
    return ops.input_size(model.visual_model) if ops.kind == "sam" else SAM_INPUT_SIDE

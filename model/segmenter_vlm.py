"""The Python API for a LISA checkpoint on a transformers base (LLaVA in the Hugging Face layout,
Qwen2.5-VL): what :class:`model.segmenter.LisaSegmenter` does, with the base's own chat template,
image processing and tokeniser (its :class:`model.bases.BaseFormat`).

``LisaSegmenter.from_pretrained`` returns this class for such a checkpoint, so chat.py, app.py
and Python callers need no extra flag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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
)
from utils.batch import LisaBatch
from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.sam_input import stack_sam_pixels
from utils.transforms import PreparedImage, SamTransform


class LisaVlmSegmenter(LisaSegmenter):
    """:class:`LisaSegmenter` over a :class:`model.lisa_vlm.LisaVlm` and its base format."""

    def __init__(self, base_format, model: LisaVlm, *, max_new_tokens: int = 512) -> None:
        self.base_format = base_format
        self.tokenizer = base_format.tokenizer
        self.model = model
        self.sam_transform = SamTransform(1024)
        self.conv_type = base_format.kind
        self.use_mm_start_end = False
        self.max_new_tokens = max_new_tokens
        self.seg_token_id = base_format.seg_token_id

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

    def _prompt_text(self, prompt: str, history: History | None) -> tuple[str, list]:
        prompt = _checked_prompt(prompt)
        turns = _checked_history(history)
        for user_text, _ in [*turns, (prompt, "")]:
            if DEFAULT_IMAGE_TOKEN in user_text:
                raise InputError(
                    f"The prompt contains {DEFAULT_IMAGE_TOKEN}: leave it out, the image is put "
                    "in front of the first message by itself."
                )
        # the image goes in front of the first user message, as the training data has it
        placed = [
            (DEFAULT_IMAGE_TOKEN + "\n" + q if i == 0 else q, a) for i, (q, a) in enumerate(turns)
        ]
        question = prompt if placed else DEFAULT_IMAGE_TOKEN + "\n" + prompt
        return self.base_format.generation_prompt(placed, question), turns

    def prompt_ids(self, prompt: str, history: History | None = None, vision=None) -> list[int]:
        """Token ids of the chat prompt, checked against ``model_max_length``.

        With ``vision`` (the image's base inputs) the image's own tokens are counted; without
        it (a check before the image is known), the text alone is.
        """
        text, _ = self._prompt_text(prompt, history)
        if vision is None:
            text = text.replace(DEFAULT_IMAGE_TOKEN, "")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids, _ = self.base_format.tokenise(text, vision, with_labels=False)
        if len(ids) > self.model_max_length:
            raise PromptTooLongError(len(ids), self.model_max_length)
        return list(ids)

    # --- images --------------------------------------------------------------------------------

    def _checked(self, image: _Image) -> _Image:
        height, width = image.pixels.shape[:2]
        if min(height, width) < 2:
            raise InputError(f"{image.name} is {width}x{height} pixels: too small to segment.")
        return image

    def _prepare(self, images: Sequence[_Image]) -> tuple[PreparedImage, ...]:
        prepared = []
        for image in images:
            pixels = self._checked(image).pixels
            sam_input, resize = self.sam_transform(pixels)
            prepared.append(
                PreparedImage(
                    images_clip=self.base_format.image_inputs(pixels),
                    images=sam_input.unsqueeze(0),
                    resize=resize,
                    original_size=(pixels.shape[0], pixels.shape[1]),
                )
            )
        return tuple(prepared)

    def _batch(self, prepared: Sequence[PreparedImage], rows: Sequence[list[int]]) -> LisaBatch:
        length = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        batch = LisaBatch(
            images=stack_sam_pixels([p.images[0] for p in prepared]),
            images_clip=self.base_format.collate_vision([p.images_clip for p in prepared]),
            input_ids=ids,
            attention_mask=mask,
            offset=torch.arange(len(rows) + 1),
            resize_sizes=[p.resize for p in prepared],
            original_sizes=[p.original_size for p in prepared],
        )
        return batch.to(self.device, self.model.dtype)

    def _request_rows(self, prepared, prompts, histories) -> list[list[int]]:
        return [
            self.prompt_ids(prompt, history, image.images_clip)
            for image, prompt, history in zip(prepared, prompts, histories, strict=True)
        ]

    def _eos_ids(self) -> list[int] | None:
        return None  # the base's generation config names its end-of-turn token(s)

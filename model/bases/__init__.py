"""Multimodal bases LISA can start from, and what the rest of the code asks of a base.

Three layouts of a ``--version`` directory are told apart by their own ``config.json``:

- ``"llava"``: the original LLaVA layout (liuhaotian/LLaVA-*, released LISA checkpoints):
  ``model_type`` "llava" with ``mm_vision_tower``; served by ``model.LISA.LISAForCausalLM``.
- ``"llava_hf"``: transformers' ``LlavaForConditionalGeneration`` (llava-hf/llava-1.5-7b-hf and
  its family): ``model_type`` "llava" with a ``text_config``.
- ``"qwen2_5_vl"``: transformers' ``Qwen2_5_VLForConditionalGeneration`` (dynamic resolution).

The data readers, the collate function and the segmenter never ask which base they feed: they
call a :class:`BaseFormat` (chat template, image inputs, tokenisation with labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from model.bases.detect import BASE_KINDS, base_kind_of

# One image's inputs to a base's vision encoder: a [3, h, w] float tensor (the CLIP input of
# the original layout and of llava_hf) or a dict of tensors (Qwen2.5-VL: "pixel_values"
# [patches, C*t*p*p] and "image_grid_thw" [1, 3]).
VisionInput = torch.Tensor | dict[str, torch.Tensor]


class BaseFormat(Protocol):
    """What the data path and the segmenter ask of a multimodal base.

    A conversation is plain text in the base's chat template in which the user's first message
    holds ``<image>`` (``utils.constants.DEFAULT_IMAGE_TOKEN``) once, where the image goes, as
    the readers write it; :meth:`tokenise` turns that placeholder into the base's own image
    tokens.
    """

    kind: str  # one of BASE_KINDS
    tokenizer: object  # the base's tokenizer, [SEG] added

    @property
    def seg_token_id(self) -> int: ...

    def conversation(self, turns: Sequence[tuple[str, str]]) -> str:
        """The whole conversation text: each (user message, answer) in order."""
        ...

    def generation_prompt(self, history: Sequence[tuple[str, str]], question: str) -> str:
        """The prompt text of one more turn, ending where the assistant's answer begins."""
        ...

    def image_inputs(self, image: np.ndarray) -> VisionInput:
        """One RGB uint8 [H, W, 3] image -> the vision encoder's input (CPU tensors)."""
        ...

    def tokenise(
        self, conversation: str, vision: VisionInput, *, with_labels: bool = True
    ) -> tuple[list[int], torch.Tensor | None]:
        """Ids of a conversation (the image's tokens in place of ``<image>``) and, when
        ``with_labels``, its labels [L]: the answers and each answer's closing token supervised,
        IGNORE_INDEX elsewhere."""
        ...

    def collate_vision(self, inputs: Sequence[VisionInput]) -> VisionInput:
        """The vision inputs of B images as one batch (what the model's forward reads)."""
        ...


__all__ = ["BASE_KINDS", "BaseFormat", "VisionInput", "base_kind_of"]

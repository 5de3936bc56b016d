"""The one path from an image file, questions and masks to a :class:`utils.data.sample.Sample`.

Every reader (training sources and validation sets) goes through :class:`SampleBuilder`: it reads
the image robustly, applies the SAM transform and the base's image preprocessing, and writes the
conversations with the template it was given (never a module-level default), or with the chat
template of the base format it was given (:class:`model.bases.BaseFormat`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from utils.conversation import Conversation, get_conv_template
from utils.data.bad_samples import BadSampleError, SkipReason
from utils.data.questions import ANSWER_LIST
from utils.data.sample import Sample
from utils.transforms import ClipTransform, SamTransform, load_image

if TYPE_CHECKING:
    from model.bases import BaseFormat, VisionInput


class SampleBuilder:
    """Image transforms plus conversation template, shared by all datasets.

    Give either ``clip_transform`` (with ``conv_template``: the original LLaVA layout) or
    ``base_format`` (any base: its image inputs and chat template; ``conv_template`` unused).

    Args:
        clip_transform: CLIP preprocessing of the vision tower
            (``ClipTransform.from_pretrained(vision_tower_dir)``).
        image_size: side of SAM's square input (``--image_size``, 1024 for SAM).
        conv_template: a template name (``llava_v1``, ``llava_llama_2``) or a
            :class:`Conversation`; its messages are ignored.
        answers: the answer templates of segmentation questions (each holds one ``[SEG]``);
            the original's five by default.
        base_format: the multimodal base's format (``model.bases.load.load_base_format``).
    """

    def __init__(
        self,
        *,
        clip_transform: ClipTransform | None = None,
        image_size: int = 1024,
        conv_template: str | Conversation = "llava_v1",
        answers: Sequence[str] = ANSWER_LIST,
        base_format: BaseFormat | None = None,
    ) -> None:
        if (clip_transform is None) == (base_format is None):
            raise ValueError("SampleBuilder takes either clip_transform or base_format.")
        self.answers = tuple(answers)
        self.clip = clip_transform
        self.base_format = base_format
        self.sam = SamTransform(image_size)
        template = (
            get_conv_template(conv_template) if isinstance(conv_template, str) else conv_template
        )
        self.template = dataclasses.replace(template, messages=[])

    def conversation(self, turns: Sequence[tuple[str, str]]) -> str:
        """One conversation: each (user message, answer) appended in order, then the prompt."""
        if self.base_format is not None:
            return self.base_format.conversation(turns)
        conv = dataclasses.replace(self.template, messages=[])
        for question, answer in turns:
            conv.append_message(conv.roles[0], question)
            conv.append_message(conv.roles[1], answer)
        return conv.get_prompt()

    def vision_inputs(self, image: np.ndarray) -> VisionInput:
        """The base's vision encoder input of one RGB uint8 [H, W, 3] image."""
        if self.base_format is not None:
            return self.base_format.image_inputs(image)
        return self.clip(image)

    @staticmethod
    def read_image(path: str | os.PathLike) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``; raises :class:`BadSampleError` when absent or unreadable."""
        if not Path(path).is_file():
            raise BadSampleError(SkipReason.MISSING_FILE, f"image {str(path)!r} does not exist")
        try:
            return load_image(path)
        except ValueError as error:
            raise BadSampleError(SkipReason.UNREADABLE_IMAGE, str(error)) from error

    def build(
        self,
        *,
        image_path: str | os.PathLike,
        image: np.ndarray,
        conversations: list[str],
        masks: np.ndarray,
        label: np.ndarray | None = None,
        questions: list[str] | None = None,
        sampled_classes: list[str] | None = None,
        inference: bool = False,
    ) -> Sample:
        """Transform the image and package everything.

        Args:
            image: RGB uint8 ``[H, W, 3]``.
            conversations: full conversations, each with one ``<image>``.
            masks: ``[n, H, W]`` (bool or integer), one per ``[SEG]`` in order; ``n`` may be 0.
            label: ``[H, W]`` uint8 class map with 255 = ignore (becomes int64); when None, a
                float32 map of 255 (only its shape is used downstream).

        Returns:
            A :class:`Sample` whose masks are float32 ``[n, H, W]``.
        """
        # numpy, not small torch ops: those wait on the intra-op thread pool of a busy CPU.
        height, width = image.shape[:2]
        if masks.ndim != 3 or masks.shape[1:] != (height, width):
            raise ValueError(
                f"{image_path}: masks of shape {masks.shape} do not match the "
                f"{height}x{width} image."
            )
        if label is None:
            label_map = np.full((height, width), 255, dtype=np.float32)
        else:
            label_map = label.astype(np.int64)
        sam_input, resize = self.sam(image)
        return Sample(
            image_path=str(image_path),
            image=sam_input,
            image_clip=self.vision_inputs(image),
            conversations=conversations,
            masks=torch.from_numpy(masks.astype(np.float32)),
            label=torch.from_numpy(label_map),
            resize=resize,
            questions=questions,
            sampled_classes=sampled_classes,
            inference=inference,
        )

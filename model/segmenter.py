"""The Python API: load a LISA checkpoint once, then ask questions about images.

    from model.segmenter import LisaSegmenter

    segmenter = LisaSegmenter.from_pretrained("./LISA-7B-v1", precision="bf16")
    result = segmenter("dog.jpg", "Where is the dog's tail? Please output segmentation mask.")
    result.text    # the answer, e.g. "Sure, [SEG]."
    result.masks   # one bool [H, W] array per [SEG], at the image's original size
    more = segmenter("dog.jpg", "And its nose?", history=result.history)  # multi-turn
    both = segmenter([("a.jpg", "Segment the car."), ("b.jpg", "Segment the cat.")])  # one batch

chat.py goes through this class, so the terminal and Python share one preprocessing and
decoding path (``load_pretrained_model``, ``ImagePreprocessor``,
``build_chat_prompt``, ``tokenizer_image_token``, ``LISAForCausalLM.generate``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from model.bases.detect import is_lisa_vlm
from model.LISA import LISAForCausalLM
from model.loading import load_pretrained_model
from model.prompt_prefix import ImageKey, PrefixCache, image_key
from utils.batch import LisaBatch
from utils.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    SEG_TOKEN,
)
from utils.conversation import build_chat_prompt
from utils.sam_input import stack_sam_pixels
from utils.tokenization import LegacyLlamaTokenizer, decode_answer, tokenizer_image_token
from utils.transforms import (
    ImagePreprocessor,
    PreparedImage,
    load_image,
    longest_side_shape,
    pil_to_rgb,
)

logger = logging.getLogger(__name__)
ImageInput = str | os.PathLike | Image.Image | np.ndarray
History = Sequence[tuple[str, str]]  # earlier (user text, answer) turns about the same image
_PLACEHOLDERS = (DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN)


class InputError(ValueError):
    """A caller's mistake in an image or a prompt; the message is one sentence naming it."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a prompt that is not a str, a history that is not a list
    of (user text, answer) pairs); the message is one sentence naming it."""


class PromptTooLongError(InputError):
    """The prompt (with its history) has more tokens than the tokenizer's model_max_length."""

    def __init__(self, num_tokens: int, limit: int) -> None:
        super().__init__(
            f"The prompt is {num_tokens} tokens long (conversation history included), "
            f"more than model_max_length = {limit} allows."
        )
        self.num_tokens = num_tokens
        self.limit = limit


@dataclass
class SegmentationResult:
    """The answer to one prompt about one image."""

    text: str  # the answer: no special tokens, no image placeholder ([SEG] kept where it was said)
    masks: list[np.ndarray]  # one bool [H, W] per [SEG] of this answer, at the original size
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier turns + this one
    num_tokens: int = 0  # tokens generated, EOS included (== max_new_tokens: the answer was cut)


@dataclass
class _Image:
    """An input image read as RGB, with a name for messages."""

    pixels: np.ndarray  # [H, W, 3] uint8 RGB, upright
    name: str  # how messages name it: "Image 'cat.png'", "The image array"


def read_image(image: ImageInput) -> np.ndarray:
    """Any accepted image input -> upright RGB uint8 ``[H, W, 3]``.

    Accepts a file path, a PIL image (any mode; EXIF orientation applied) or a numpy uint8 array
    in RGB order: ``[H, W]`` grey, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` (alpha dropped).

    Raises:
        InputError: a missing path, a directory, an unreadable, truncated or oversized image
            file, or an array of another shape or dtype.
    """
    return _read(image).pixels


def _read(image: ImageInput) -> _Image:
    if isinstance(image, str | os.PathLike):
        if not os.fspath(image):
            raise InputError("The image path is empty.")
        path = Path(image)
        try:  # load_image checks that the path is a regular file (not a FIFO, nor a link loop)
            return _Image(load_image(path), f"Image {str(path)!r}")
        except ValueError as error:
            raise InputError(str(error)) from error
    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise InputError(f"The PIL image is {image.width}x{image.height} pixels: empty.")
        try:
            return _Image(pil_to_rgb(ImageOps.exif_transpose(image)), "The PIL image")
        except (OSError, ValueError) as error:
            raise InputError(f"Cannot convert the PIL image to RGB: {error}.") from error
    if isinstance(image, np.ndarray):
        return _Image(_array_to_rgb(image), "The image array")
    raise InputTypeError(
        f"An image must be a path, a PIL image or a numpy array, got {type(image).__name__}."
    )


def _warn_unread_layout_arguments(
    path, vision_tower, image_size, conv_type: str, use_mm_start_end: bool | None
) -> None:
    """One warning naming the original-layout arguments a LISA on another base does not read."""
    unread = {
        "vision_tower": vision_tower is not None,
        "image_size": image_size is not None,
        "conv_type": conv_type != "llava_v1",
        "use_mm_start_end": use_mm_start_end is False,
    }
    if any(unread.values()):
        logger.warning(
            "%s is LISA on a transformers base: its own chat template and image processing are "
            "used, %s not read",
            path,
            ", ".join(name for name, given in unread.items() if given),
        )


def refuse_placeholders(turns: Sequence[tuple[str, str]]) -> None:
    """InputError when a user message holds an image placeholder (the image is placed by the
    prompt builder, in front of the first message)."""
    for user_text, _ in turns:
        for placeholder in _PLACEHOLDERS:
            if placeholder in user_text:
                raise InputError(
                    f"The prompt contains {placeholder}: leave it out, the image is put in "
                    "front of the first message by itself."
                )


def _checked_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        raise InputTypeError(f"The prompt must be a str, got {type(prompt).__name__}.")
    if not prompt.strip():
        raise InputError("The prompt is empty.")
    return prompt


def _checked_history(history: object) -> list[tuple[str, str]]:
    """``history`` as a list of (user text, answer) str pairs; None is no history."""
    if history is None:
        return []
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise InputTypeError(
            f"history must be a list of (user text, answer) pairs, got {type(history).__name__}."
        )
    turns = []
    for index, turn in enumerate(history):
        if isinstance(turn, str | bytes) or not isinstance(turn, Sequence) or len(turn) != 2:
            raise InputTypeError(
                f"history[{index}] must be a (user text, answer) pair, got {turn!r:.60}."
            )
        if not all(isinstance(text, str) for text in turn):
            kinds = ", ".join(type(text).__name__ for text in turn)
            raise InputTypeError(f"history[{index}] must hold two str, got ({kinds}).")
        turns.append((turn[0], turn[1]))
    return turns


def _checked_max_new_tokens(max_new_tokens: object) -> None:
    if max_new_tokens is None:
        return
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise InputTypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}.")
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be 0 or more, got {max_new_tokens}.")


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(f"An image array must be uint8 (0-255 RGB), got {array.dtype}.")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise InputError(
            f"An image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {array.shape}."
        )
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


class LisaSegmenter:
    """A loaded LISA model with its tokenizer, templates and image transforms.

    Args:
        tokenizer, model, preprocessor: as :func:`model.loading.load_pretrained_model` returns
            them.
        conv_type: conversation template, "llava_v1" or "llava_llama_2".
        use_mm_start_end: wrap the image in <im_start>/<im_end>; default: as the checkpoint
            was trained (config ``mm_use_im_start_end``).
        max_new_tokens: default answer length limit.
        share_prefix: prompts of one batch about the same image run their common beginning
            (system prompt, image, ...) through the language model once.
        prefix_cache_size: how many images' last conversations to keep the keys and values
            of, so that a follow-up (the conversation re-sent with a new question) computes
            only its new tokens; 0 keeps none. Each entry holds the conversation's keys and
            values (per token: 2 x layers x hidden size numbers).
    """

    def __init__(
        self,
        tokenizer: LegacyLlamaTokenizer,
        model: LISAForCausalLM,
        preprocessor: ImagePreprocessor,
        *,
        conv_type: str = "llava_v1",
        use_mm_start_end: bool | None = None,
        max_new_tokens: int = 512,
        share_prefix: bool = True,
        prefix_cache_size: int = 1,
    ) -> None:
        if prefix_cache_size < 0:
            raise ValueError(f"prefix_cache_size must be 0 or more, got {prefix_cache_size}.")
        self.tokenizer = tokenizer
        self.model = model
        self.preprocessor = preprocessor
        self.conv_type = conv_type
        if use_mm_start_end is None:
            use_mm_start_end = bool(getattr(model.config, "mm_use_im_start_end", True))
        self.use_mm_start_end = use_mm_start_end
        self.max_new_tokens = max_new_tokens
        self.seg_token_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self.share_prefix = share_prefix
        self.prefix_cache = PrefixCache(prefix_cache_size)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        precision: str = "bf16",
        device: str | torch.device | None = None,
        vision_tower: str | None = None,
        load_in_8bit: bool = False,
        load_in_4bit: bool = False,
        model_max_length: int = 512,
        image_size: int | None = None,
        conv_type: str = "llava_v1",
        use_mm_start_end: bool | None = None,
        max_new_tokens: int = 512,
        share_prefix: bool = True,
        prefix_cache_size: int = 1,
    ) -> LisaSegmenter:
        """Load a checkpoint directory (see :func:`model.loading.load_pretrained_model`).

        ``precision`` "bf16"/"fp16" run in fp32 on a CPU (one log line says so); ``device``
        defaults to CUDA when present; ``image_size`` (SAM input side) defaults to the size the
        checkpoint's SAM was built for and must equal it when given.

        A checkpoint on a transformers base (LLaVA in the Hugging Face layout, Qwen2.5-VL;
        config.json's model_type "lisa_vlm") gives a :class:`model.segmenter_vlm.LisaVlmSegmenter`:
        its base's chat template and image processing replace ``conv_type``,
        ``use_mm_start_end``, ``vision_tower`` and ``image_size``.
        """
        if is_lisa_vlm(path):
            _warn_unread_layout_arguments(
                path, vision_tower, image_size, conv_type, use_mm_start_end
            )
            from model.segmenter_vlm import LisaVlmSegmenter

            return LisaVlmSegmenter.load(
                path,
                precision=precision,
                device=device,
                load_in_8bit=load_in_8bit,
                load_in_4bit=load_in_4bit,
                model_max_length=model_max_length,
                max_new_tokens=max_new_tokens,
            )
        tokenizer, model, preprocessor = load_pretrained_model(
            path,
            vision_tower=vision_tower,
            precision=precision,
            device=device,
            load_in_8bit=load_in_8bit,
            load_in_4bit=load_in_4bit,
            model_max_length=model_max_length,
            image_size=image_size,
        )
        sam_size = model.model.visual_model.image_size
        if image_size is not None and image_size != sam_size:
            raise ValueError(
                f"image_size {image_size} does not match the {sam_size}-pixel input the "
                f"checkpoint's SAM was built for."
            )
        return cls(
            tokenizer,
            model,
            preprocessor,
            conv_type=conv_type,
            use_mm_start_end=use_mm_start_end,
            max_new_tokens=max_new_tokens,
            share_prefix=share_prefix,
            prefix_cache_size=prefix_cache_size,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def model_max_length(self) -> int:
        return self.tokenizer.model_max_length

    # --- prompts -------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str, history: History | None = None) -> list[int]:
        """Token ids of the chat prompt (image sentinel included), checked.

        Raises:
            InputTypeError: a prompt that is not a str, a history that is not a list of
                (user text, answer) str pairs.
            InputError: an empty prompt, an image placeholder typed into the text.
            PromptTooLongError: more tokens than ``model_max_length``.
        """
        prompt = _checked_prompt(prompt)
        history = _checked_history(history)
        refuse_placeholders([*history, (prompt, "")])
        text = build_chat_prompt(prompt, self.conv_type, self.use_mm_start_end, history)
        ids = tokenizer_image_token(text, self.tokenizer)
        if len(ids) > self.model_max_length:
            raise PromptTooLongError(len(ids), self.model_max_length)
        return ids

    # --- images --------------------------------------------------------------------------------

    def read_image(self, image: ImageInput) -> np.ndarray:
        """:func:`read_image`, plus the checks this model's preprocessing needs.

        Returns the upright RGB uint8 [H, W, 3] pixels, which can be passed back as the image.
        """
        return self._checked(_read(image)).pixels

    def _checked(self, image: _Image) -> _Image:
        sam_side = self.preprocessor.sam.image_size
        height, width = image.pixels.shape[:2]
        if 0 in longest_side_shape(height, width, sam_side):
            raise InputError(
                f"{image.name} is {width}x{height} pixels: too narrow to scale to "
                f"{sam_side} pixels on its long side."
            )
        return image

    def _prepare(self, images: Sequence[_Image]) -> tuple[PreparedImage, ...]:
        return tuple(self.preprocessor(self._checked(image).pixels) for image in images)

    def _batch(
        self,
        prepared: Sequence[PreparedImage],
        rows: Sequence[list[int]],
        offset: Sequence[int] | None = None,
    ) -> LisaBatch:
        """The rows about the images (image i: rows ``offset[i]:offset[i + 1]``; default one
        each), ids right-padded, on the model's device."""
        length = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        batch = LisaBatch(
            images=stack_sam_pixels([p.images[0] for p in prepared]),
            images_clip=self._vision_batch(prepared),
            input_ids=ids,
            attention_mask=mask,
            offset=torch.arange(len(rows) + 1) if offset is None else torch.tensor(offset),
            resize_sizes=[p.resize for p in prepared],
            original_sizes=[p.original_size for p in prepared],
        )
        return batch.to(self.device)

    def _vision_batch(self, prepared: Sequence[PreparedImage]) -> torch.Tensor:
        """The vision encoder's inputs of the prepared images, as one batch."""
        return torch.cat([p.images_clip for p in prepared])

    # --- asking --------------------------------------------------------------------------------

    def __call__(
        self,
        image: ImageInput | Sequence[tuple],
        prompt: str | None = None,
        *,
        history: History | None = None,
        max_new_tokens: int | None = None,
    ) -> SegmentationResult | list[SegmentationResult]:
        """``segmenter(image, prompt, history=...)`` -> one result;
        ``segmenter([(image, prompt), (image, prompt, history), ...])`` -> a list (one batch)."""
        if prompt is None and isinstance(image, list | tuple):
            if history is not None:
                raise ValueError("in a batch, give each request's history inside its tuple")
            return self.segment_batch(image, max_new_tokens=max_new_tokens)
        return self.segment(image, prompt, history=history, max_new_tokens=max_new_tokens)

    def segment(
        self,
        image: ImageInput,
        prompt: str,
        *,
        history: History | None = None,
        max_new_tokens: int | None = None,
    ) -> SegmentationResult:
        """Answer ``prompt`` about ``image`` (continuing ``history``) and decode its masks."""
        return self.segment_batch([(image, prompt, history)], max_new_tokens=max_new_tokens)[0]

    def segment_fitting(
        self,
        image: ImageInput,
        prompt: str,
        *,
        history: History | None = None,
        max_new_tokens: int | None = None,
    ) -> tuple[SegmentationResult, int]:
        """:meth:`segment`, first dropping the oldest turns of ``history`` until the
        conversation fits in ``model_max_length`` tokens (what a chat does to go on).

        Returns the result (its ``history`` holds the kept turns and this one) and the number
        of turns dropped. Raises PromptTooLongError when the prompt is too long even alone.
        """
        turns = _checked_history(history)
        self.prompt_ids(prompt)  # too long alone: say so before dropping anything
        dropped = 0
        while turns:
            try:
                self.prompt_ids(prompt, turns)
                break
            except PromptTooLongError:
                turns.pop(0)
                dropped += 1
        result = self.segment(image, prompt, history=turns, max_new_tokens=max_new_tokens)
        return result, dropped

    def _answer_length(self, new_ids: torch.Tensor) -> int:
        """Tokens of one row's answer: up to its first EOS; a row without EOS ran every step."""
        ends = (new_ids == self.tokenizer.eos_token_id).nonzero()
        return int(ends[0]) + 1 if len(ends) else len(new_ids)

    def segment_batch(
        self, requests: Sequence[tuple], *, max_new_tokens: int | None = None
    ) -> list[SegmentationResult]:
        """Answer several (image, prompt) or (image, prompt, history) requests in one batch.

        Generation is greedy with a key/value cache; each answer stops at EOS or after
        ``max_new_tokens``. Masks are those of the [SEG]s in the new answer only (a [SEG] in
        the history was answered in its own turn).
        """
        if isinstance(requests, str | bytes) or not isinstance(requests, Sequence):
            raise InputTypeError(
                "requests must be a list of (image, prompt) or (image, prompt, history) tuples, "
                f"got {type(requests).__name__}."
            )
        _checked_max_new_tokens(max_new_tokens)
        if not requests:
            return []
        images, prompts, histories = [], [], []
        for request in requests:
            if not isinstance(request, tuple | list) or len(request) not in (2, 3):
                raise InputTypeError(
                    "each request must be (image, prompt) or (image, prompt, history)"
                )
            images.append(_read(request[0]))
            prompts.append(_checked_prompt(request[1]))
            histories.append(_checked_history(request[2]) if len(request) == 3 else [])
        rows = [self.prompt_ids(p, h) for p, h in zip(prompts, histories, strict=True)]
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        answers = self._generate(images, rows, limit)
        results = []
        for i, (new_ids, masks) in enumerate(answers):
            text = decode_answer(new_ids, self.tokenizer, clean=True)
            results.append(
                SegmentationResult(
                    text=text,
                    masks=masks,
                    history=[*histories[i], (prompts[i], text)],
                    num_tokens=self._answer_length(new_ids),
                )
            )
        return results

    def _generate(
        self, images: Sequence[_Image], rows: Sequence[list[int]], max_new_tokens: int
    ) -> list[tuple[torch.Tensor, list[np.ndarray]]]:
        """Greedy answers to ``rows`` (prompt j about image j) in one batch in which the prompts
        about the same picture share one image: per prompt, its new ids and the masks of the
        [SEG]s of its answer (not those of its history, answered in their own turns)."""
        keys = [image_key(image.pixels) for image in images]
        distinct = list(dict.fromkeys(keys))  # the pictures, in the order they first come
        order = sorted(range(len(rows)), key=lambda j: distinct.index(keys[j]))
        first_of = {key: keys.index(key) for key in distinct}
        offset = [0]
        for key in distinct:
            offset.append(offset[-1] + keys.count(key))
        batch = self._batch(
            self._prepare([images[first_of[key]] for key in distinct]),
            [rows[j] for j in order],
            offset,
        )
        with torch.inference_mode():
            generation = self.model.generate(
                batch,
                max_new_tokens=max_new_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                **self._prefix_arguments(distinct),
            )
        if generation.prefixes is not None:
            for key, prefix in zip(distinct, generation.prefixes, strict=True):
                self.prefix_cache.put(key, prefix)
        # an image's masks come in the order of its prompts, as many as each answer has [SEG]s
        answers: list = [None] * len(rows)
        taken = [0] * len(distinct)
        for position, j in enumerate(order):
            new_ids = generation.output_ids[position, len(rows[j]) :]
            image = distinct.index(keys[j])
            count = int((new_ids == self.seg_token_id).sum())
            masks = generation.pred_masks[image][taken[image] : taken[image] + count]
            taken[image] += count
            answers[j] = (new_ids, [(m > 0).cpu().numpy() for m in masks])
        return answers

    def _prefix_arguments(self, keys: Sequence[ImageKey]) -> dict:
        """generate()'s prefix reuse arguments for a batch of the images ``keys`` (none for a
        model that does not take them)."""
        if not isinstance(self.model, LISAForCausalLM):
            return {}
        keep = self.prefix_cache.size > 0
        return {
            "share_prefix": self.share_prefix,
            "cached_prefixes": [self.prefix_cache.get(key) for key in keys] if keep else None,
            "keep_prefixes": keep,
        }

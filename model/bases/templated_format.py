"""What the transformers bases (LLaVA in the Hugging Face layout, Qwen2.5-VL) share: a tokenizer
and a chat template read from the base directory, and tokenisation that expands the image's
placeholder to the number of image tokens the base's model expects, with labels on the answers.

A base directory and a finished LISA checkpoint of that base hold the same tokenizer,
processor and chat template files, so both load the same way (:func:`base_config_of` reads the
base's own config from either).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from model.bases import VisionInput
from model.bases.chat_template import ChatTemplate, Turn, read_chat_template
from model.bases.detect import LISA_VLM_MODEL_TYPE, read_config_json, read_json_object
from utils.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, SEG_TOKEN
from utils.errors import UsageError

# One of these holds a tokenizer's vocabulary (a transformers tokenizer, sentencepiece, BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def base_config_of(directory: str | Path) -> dict:
    """The base model's own config.json fields: the file itself for a base directory, its
    ``base_config`` for a LISA checkpoint on that base."""
    config = read_config_json(directory)
    if config.get("model_type") != LISA_VLM_MODEL_TYPE:
        return config
    base = config.get("base_config")
    if not isinstance(base, dict):
        raise UsageError(f"{Path(directory) / 'config.json'} has no base_config object")
    return base


def read_json_file(path: Path) -> dict:
    """A JSON object from ``path``; UsageError naming the file otherwise."""
    return read_json_object(path, "the base directory needs its processor files")


def load_base_tokenizer(directory: str | Path, model_max_length: int) -> PreTrainedTokenizerBase:
    """The base's tokenizer with ``[SEG]`` added (``add_tokens``, not special; kept once when the
    directory already has it) and a pad token (unk, else EOS) when it has none.

    Raises:
        UsageError: unreadable tokenizer files.
        ValueError: ``[SEG]`` does not encode to one id.
    """
    if not any((Path(directory) / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(
            f"cannot read the tokenizer files in {directory}: none of {', '.join(TOKENIZER_FILES)}"
        )
    import model.lisa_vlm  # noqa: F401  (registers a LISA checkpoint's config with AutoConfig)

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), model_max_length=model_max_length)
    except (OSError, ValueError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())[:200]
        raise UsageError(f"cannot read the tokenizer files in {directory}: {reason}") from None
    tokenizer.add_tokens(SEG_TOKEN)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    seg_ids = tokenizer(SEG_TOKEN, add_special_tokens=False).input_ids
    if len(seg_ids) != 1:
        raise ValueError(f"{SEG_TOKEN} does not encode to a single id ({seg_ids}).")
    return tokenizer


def supervised_labels(
    ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """[L] labels: the id where the token's characters overlap an answer span, else
    IGNORE_INDEX (tokens of no characters, such as BOS, are never supervised)."""
    labels = torch.full((len(ids),), IGNORE_INDEX, dtype=torch.long)  # [L]
    span_index = 0
    for position, (start, end) in enumerate(offsets):
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if span_index == len(spans):
            break
        if end > start and start < spans[span_index][1] and end > spans[span_index][0]:
            labels[position] = ids[position]
    return labels


class TemplatedFormat:
    """A :class:`model.bases.BaseFormat` over a transformers tokenizer and chat template.

    Subclasses say what one image is: its placeholder text (:attr:`image_placeholder`, one
    ``image_token_id`` inside), how many image tokens it expands to
    (:meth:`num_image_tokens`), and its vision inputs (:meth:`image_inputs`,
    :meth:`collate_vision`).

    Args:
        tokenizer: from :func:`load_base_tokenizer`.
        chat_template: the base's template, probed.
        image_token_id: the id repeated once per image token (the model's ``image_token_id``).
        processor_files: the JSON processor files of the base directory by name, written again
            by ``model.bases.load.save_base_files``.
    """

    kind = ""
    image_placeholder = DEFAULT_IMAGE_TOKEN  # the base's text for one image, before expansion

    def __init__(
        self,
        *,
        tokenizer: PreTrainedTokenizerBase,
        chat_template: ChatTemplate,
        image_token_id: int,
        processor_files: dict[str, dict],
    ) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token_id = int(image_token_id)
        self.processor_files = processor_files

    @property
    def seg_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)

    @property
    def image_block_ids(self) -> frozenset[int]:
        """Ids of the image's block in ``input_ids`` (the image tokens and their markers): a
        truncation must keep all of them."""
        ids = self.tokenizer(self.image_placeholder, add_special_tokens=False).input_ids
        return frozenset(ids)

    def conversation(self, turns: Sequence[Turn]) -> str:
        return self.chat_template.render(turns)

    def generation_prompt(self, history: Sequence[Turn], question: str) -> str:
        return self.chat_template.generation_prompt(history, question)

    def token_text(self, token_id: int, field: str) -> str:
        """The token of ``token_id`` (the config's ``field``); UsageError when the tokenizer
        has none."""
        token = self.tokenizer.convert_ids_to_tokens(int(token_id))
        if token is None:
            raise UsageError(
                f"config.json's {field} {token_id} is no token of the base's tokenizer "
                f"({len(self.tokenizer)} tokens)"
            )
        return token

    def num_image_tokens(self, vision: VisionInput) -> int:
        raise NotImplementedError

    def image_inputs(self, image) -> VisionInput:
        raise NotImplementedError

    def collate_vision(self, inputs: Sequence[VisionInput]) -> VisionInput:
        raise NotImplementedError

    def tokenise(
        self, conversation: str, vision: VisionInput, *, with_labels: bool = True
    ) -> tuple[list[int], torch.Tensor | None]:
        """Ids of ``conversation`` with the image's tokens expanded in place of ``<image>``,
        and its labels [L] when ``with_labels`` (answers and their closers supervised).

        Raises:
            ValueError: the conversation holds ``<image>`` other than once.
        """
        count = conversation.count(DEFAULT_IMAGE_TOKEN)
        if count != 1:
            raise ValueError(
                f"a conversation must hold {DEFAULT_IMAGE_TOKEN} exactly once, found {count}: "
                f"{conversation[:80]!r}"
            )
        text = conversation.replace(DEFAULT_IMAGE_TOKEN, self.image_placeholder)
        encoding = self.tokenizer(text, return_offsets_mapping=with_labels)
        ids = list(encoding.input_ids)
        labels = None
        if with_labels:
            spans = self.chat_template.answer_spans(text)
            labels = supervised_labels(ids, encoding.offset_mapping, spans)
        return self._expand_image(ids, labels, self.num_image_tokens(vision))

    def expand_image(self, ids: Sequence[int], vision: VisionInput) -> list[int]:
        """Ids holding the image token once (a prompt tokenised before its image was known)
        with the image's tokens expanded for ``vision``."""
        return self._expand_image(list(ids), None, self.num_image_tokens(vision))[0]

    def _expand_image(
        self, ids: list[int], labels: torch.Tensor | None, count: int
    ) -> tuple[list[int], torch.Tensor | None]:
        """The one image token repeated ``count`` times (never supervised)."""
        where = [i for i, token in enumerate(ids) if token == self.image_token_id]
        if len(where) != 1:
            raise ValueError(
                f"the conversation holds the image token {self.image_token_id} {len(where)} "
                "times; expected once (in place of <image>)"
            )
        at = where[0]
        ids = ids[:at] + [self.image_token_id] * count + ids[at + 1 :]
        if labels is not None:
            ignored = torch.full((count,), IGNORE_INDEX, dtype=torch.long)
            labels = torch.cat([labels[:at], ignored, labels[at + 1 :]])
        return ids, labels


def probed_chat_template(directory: Path, tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    """The directory's chat template, probed for its answers' opener and closer."""
    return ChatTemplate.probe(read_chat_template(directory, tokenizer), tokenizer, str(directory))


def read_processor_files(directory: Path, names: Sequence[str]) -> dict[str, dict]:
    """The JSON files among ``names`` that ``directory`` holds, parsed."""
    return {
        name: read_json_file(directory / name) for name in names if (directory / name).is_file()
    }

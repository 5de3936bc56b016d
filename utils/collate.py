"""Batch collation shared by training and validation: dataset items (:class:`Sample`) to the
:class:`utils.batch.LisaBatch` the model reads.

``collate_fn`` gives the ids and labels of LISA's ``utils/dataset.py:collate_fn``, in steps:
wrap the image token, tokenise (ids and instruction-masked labels), truncate (training only),
pad. Three fixes over the original: the attention mask comes from the true sequence lengths (a
genuine ``<unk>`` in a text is the pad id, but neither masked out nor miscounted), truncation
drops the ground-truth masks whose ``[SEG]`` was cut, and malformed conversations raise a clear
error.

``collate_with_format`` batches for any base through its :class:`model.bases.BaseFormat`: the
original layout exactly as ``collate_fn``; the transformers bases with their own image tokens
already expanded in the ids, training rows cut to the LLM's context but never inside the
image's tokens.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from utils.batch import LisaBatch
from utils.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX, SEG_TOKEN
from utils.conversation import get_conv_template, wrap_image_token
from utils.data.sample import Sample
from utils.sam_input import stack_sam_pixels
from utils.tokenization import tokenizer_image_token

if TYPE_CHECKING:
    from model.bases import BaseFormat

__all__ = ["Sample", "collate_fn", "collate_with_format", "mask_instruction_labels"]


def mask_instruction_labels(
    conversation: str,
    input_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    conv_type: str = "llava_v1",
) -> torch.Tensor:
    """Labels of one conversation: only the answers and each round's closing ``</s>`` supervised.

    The conversation is split into rounds at ``sep2`` (``</s>``) and each round at the answer
    separator (``" ASSISTANT: "`` / ``"[/INST] "``); the instruction (minus the BOS and the lone
    ``▁`` its trailing space produces) is set to ``IGNORE_INDEX``, as LISA/LLaVA train it.

    Args:
        conversation: the text that produced ``input_ids`` (image tokens already wrapped).
        input_ids: its ids from :func:`tokenizer_image_token`, ``[L]``.

    Returns:
        ``[L]`` long tensor of labels.
    """
    conv = get_conv_template(conv_type)
    separator = conv.answer_separator
    labels = torch.tensor(list(input_ids), dtype=torch.long)  # [L]
    labels[:1] = IGNORE_INDEX  # BOS
    cursor = 1
    for round_text in conversation.split(conv.sep2):
        if round_text == "":
            break
        parts = round_text.split(separator)
        if len(parts) != 2:
            raise ValueError(
                f"conversation round {round_text!r} does not split into one instruction and one "
                f"answer at {separator!r} ({conv_type})."
            )
        round_len = len(tokenizer_image_token(round_text, tokenizer))
        # -2: the round's own BOS and the "▁" of the separator's trailing space.
        instruction_len = len(tokenizer_image_token(parts[0] + separator, tokenizer)) - 2
        labels[cursor : cursor + instruction_len] = IGNORE_INDEX
        cursor += round_len  # the round's BOS stands for the "</s>" that closes it
    labels[cursor:] = IGNORE_INDEX
    if cursor != len(labels):
        raise ValueError(
            f"label masking counted {cursor} tokens but the conversation has {len(labels)} "
            f"(its rounds tokenize differently alone than in context): {conversation!r}."
        )
    return labels


def _as_sample(item: Sample | Sequence[Any]) -> Sample:
    return item if isinstance(item, Sample) else Sample(*item)


def collate_fn(
    samples: Sequence[Sample],
    tokenizer: PreTrainedTokenizerBase,
    conv_type: str = "llava_v1",
    use_mm_start_end: bool = True,
    model_max_length: int = 512,
    num_image_tokens: int = 256,
) -> LisaBatch:
    """Batch B images with N conversations in total.

    Args:
        samples: B :class:`Sample` (or the original 10-tuples), all training items or all
            validation items.
        tokenizer: from :func:`utils.tokenization.load_tokenizer`, LISA tokens added.
        conv_type: template the conversations were written with.
        use_mm_start_end: wrap ``<image>`` in ``<im_start>``/``<im_end>``.
        model_max_length: the LLM's context; training sequences are cut to
            ``model_max_length - (num_image_tokens - 1)`` ids (the image expands to
            ``num_image_tokens`` positions). Validation items are never cut.
        num_image_tokens: CLIP patch features per image (256 for ViT-L/14 at 224).

    Returns:
        A :class:`LisaBatch`: ids right-padded with the pad id, labels with the instructions
        ignored, the ground-truth masks (float) left once truncation cut a [SEG], sizes, and the
        image paths, questions, sampled classes and conversations (image token wrapped).
    """
    batch, inference = _checked_samples(samples, tokenizer)
    conversations, offset = _wrapped_conversations(batch, use_mm_start_end)
    ids, labels = tokenise(conversations, tokenizer, conv_type)
    gt_masks = [sample.masks.float() for sample in batch]
    if not inference:
        limit = model_max_length - (num_image_tokens - 1)
        if limit <= 0:
            raise ValueError(
                f"model_max_length {model_max_length} leaves no room for {num_image_tokens} "
                "image tokens."
            )
        ids, labels, gt_masks = truncate(batch, offset, ids, labels, gt_masks, limit, tokenizer)
    input_ids, targets, attention_mask = pad(ids, labels, tokenizer.pad_token_id)
    images_clip = torch.stack([sample.image_clip for sample in batch], dim=0)
    return _lisa_batch(
        batch, offset, conversations, images_clip, input_ids, targets, attention_mask, gt_masks
    )


def collate_with_format(
    samples: Sequence[Sample], base_format: BaseFormat, model_max_length: int = 512
) -> LisaBatch:
    """Batch B images with N conversations in total for any base.

    The original LLaVA layout (``base_format.kind == "llava"``) gives exactly
    :func:`collate_fn` with the format's tokenizer and settings. The transformers bases give ids
    from ``base_format.tokenise`` (image tokens expanded: real vocabulary ids, no sentinel),
    labels on the answers and their closing tokens, training rows cut to
    ``model_max_length`` ids (validation rows never), and ``images_clip`` from
    ``base_format.collate_vision``.

    Args:
        samples: B :class:`Sample` made by a ``SampleBuilder`` with the same ``base_format``.
        base_format: the base's :class:`model.bases.BaseFormat` (its ``image_block_ids`` are
            the ids a cut must keep).
        model_max_length: the LLM's context.

    Raises:
        ValueError: malformed samples, or a training row whose cut would remove image tokens.
    """
    if base_format.kind == "llava":
        return collate_fn(
            samples,
            base_format.tokenizer,
            conv_type=base_format.conv_type,
            use_mm_start_end=base_format.use_mm_start_end,
            model_max_length=model_max_length,
            num_image_tokens=base_format.num_image_tokens,
        )
    batch, inference = _checked_samples(samples, base_format.tokenizer)
    conversations, offset = _wrapped_conversations(batch, use_mm_start_end=False)
    ids, labels = _tokenise_with_format(batch, offset, conversations, base_format)
    gt_masks = [sample.masks.float() for sample in batch]
    if not inference:
        ids, labels, gt_masks = truncate_rows(
            batch,
            offset,
            ids,
            labels,
            gt_masks,
            model_max_length,
            base_format.seg_token_id,
            base_format.image_block_ids,
        )
    input_ids, targets, attention_mask = pad(ids, labels, base_format.tokenizer.pad_token_id)
    images_clip = base_format.collate_vision([sample.image_clip for sample in batch])
    return _lisa_batch(
        batch, offset, conversations, images_clip, input_ids, targets, attention_mask, gt_masks
    )


def _tokenise_with_format(
    batch: Sequence[Sample],
    offset: Sequence[int],
    conversations: Sequence[str],
    base_format: BaseFormat,
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Ids and labels of every conversation, each with its own image's tokens."""
    ids, labels = [], []
    for i, sample in enumerate(batch):
        for text in conversations[offset[i] : offset[i + 1]]:
            row, row_labels = base_format.tokenise(text, sample.image_clip, with_labels=True)
            ids.append(row)
            labels.append(row_labels)
    return ids, labels


def _lisa_batch(
    batch: Sequence[Sample],
    offset: Sequence[int],
    conversations: list[str],
    images_clip: torch.Tensor | dict[str, torch.Tensor],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor,
    gt_masks: list[torch.Tensor],
) -> LisaBatch:
    return LisaBatch(
        images=stack_sam_pixels([sample.image for sample in batch]),
        images_clip=images_clip,
        input_ids=input_ids,
        attention_mask=attention_mask,
        offset=torch.tensor(offset, dtype=torch.long),
        resize_sizes=[sample.resize for sample in batch],
        original_sizes=[sample.original_size for sample in batch],
        labels=labels,
        gt_masks=gt_masks,
        image_paths=[sample.image_path for sample in batch],
        questions=[sample.questions for sample in batch],
        sampled_classes=[sample.sampled_classes for sample in batch],
        conversations=conversations,
    )


def _checked_samples(
    samples: Sequence[Sample | Sequence[Any]], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Sample], bool]:
    """The samples as :class:`Sample`, and whether they are validation items."""
    if not samples:
        raise ValueError("collate_fn got an empty batch.")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with load_tokenizer (pad = unk).")
    batch = [_as_sample(item) for item in samples]
    inference = bool(batch[0].inference)
    if any(bool(s.inference) != inference for s in batch):
        raise ValueError("collate_fn got a batch that mixes training and inference samples.")
    return batch, inference


def _wrapped_conversations(
    batch: Sequence[Sample], use_mm_start_end: bool
) -> tuple[list[str], list[int]]:
    """All conversations in order, image token wrapped, and the [B + 1] cumulative counts."""
    offset = [0]
    conversations: list[str] = []
    for sample in batch:
        if not sample.conversations:
            raise ValueError(f"sample {sample.image_path!r} has no conversation.")
        for text in sample.conversations:
            if text.count(DEFAULT_IMAGE_TOKEN) != 1:
                raise ValueError(
                    f"a conversation of {sample.image_path!r} must contain exactly one "
                    f"{DEFAULT_IMAGE_TOKEN}, found {text.count(DEFAULT_IMAGE_TOKEN)}."
                )
            conversations.append(wrap_image_token(text, use_mm_start_end))
        offset.append(len(conversations))
    return conversations, offset


def tokenise(
    conversations: Sequence[str], tokenizer: PreTrainedTokenizerBase, conv_type: str
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Ids of each conversation (image sentinel inside) and its labels (instructions ignored)."""
    ids = [tokenizer_image_token(text, tokenizer) for text in conversations]
    labels = [
        mask_instruction_labels(text, row, tokenizer, conv_type)
        for text, row in zip(conversations, ids, strict=True)
    ]
    return ids, labels


def truncate(
    batch: Sequence[Sample],
    offset: Sequence[int],
    ids: list[list[int]],
    labels: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    limit: int,
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[list[list[int]], list[torch.Tensor], list[torch.Tensor]]:
    """Every sequence cut to ``limit`` ids, and the masks whose [SEG] survived the cut."""
    if all(len(row) <= limit for row in ids):
        return ids, labels, gt_masks
    seg_id = _seg_id(tokenizer)
    return truncate_rows(
        batch, offset, ids, labels, gt_masks, limit, seg_id, frozenset({IMAGE_TOKEN_INDEX})
    )


def truncate_rows(
    batch: Sequence[Sample],
    offset: Sequence[int],
    ids: list[list[int]],
    labels: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    limit: int,
    seg_id: int | None,
    image_ids: Collection[int],
) -> tuple[list[list[int]], list[torch.Tensor], list[torch.Tensor]]:
    """Every sequence cut to ``limit`` ids, and the masks whose [SEG] (``seg_id``; None: no
    [SEG] in the vocabulary) survived the cut.

    Raises:
        ValueError: the cut would remove any of a row's image ids (``image_ids``).
    """
    if all(len(row) <= limit for row in ids):
        return ids, labels, gt_masks
    gt_masks = _drop_cut_masks(batch, offset, ids, limit, gt_masks, seg_id, image_ids)
    return [row[:limit] for row in ids], [row[:limit] for row in labels], gt_masks


def pad(
    ids: Sequence[Sequence[int]], labels: Sequence[torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` [N, L] (pad id), ``labels`` [N, L] (IGNORE_INDEX) and the
    attention mask [N, L] (True on each row's real tokens, from its length)."""
    lengths = torch.tensor([len(row) for row in ids])  # [N]
    width = int(lengths.max())
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)  # [N, L]
    targets = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)  # [N, L]
    for row, (seq, lab) in enumerate(zip(ids, labels, strict=True)):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        targets[row, : len(seq)] = lab
    attention_mask = torch.arange(width)[None, :] < lengths[:, None]  # [N, L] bool
    return input_ids, targets, attention_mask


def _seg_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id of [SEG], None when the vocabulary has none."""
    seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    return None if seg_id is None or seg_id == tokenizer.unk_token_id else seg_id


def _drop_cut_masks(
    batch: Sequence[Sample],
    offset: Sequence[int],
    ids: Sequence[Sequence[int]],
    limit: int,
    masks_list: list[torch.Tensor],
    seg_id: int | None,
    image_ids: Collection[int],
) -> list[torch.Tensor]:
    """Masks left once every sequence is cut to ``limit`` ids: those whose [SEG] survived.

    Image i's masks follow the [SEG]s of its conversations in order, so each conversation owns a
    contiguous run of masks, of which the first "kept [SEG]s" remain.
    """
    kept_masks = []
    for i, sample in enumerate(batch):
        keep: list[int] = []
        start = 0
        for row in range(offset[i], offset[i + 1]):
            if any(token in image_ids for token in ids[row][limit:]):
                raise ValueError(
                    f"truncating a conversation of {sample.image_path!r} to {limit} tokens removes "
                    "its image (or some of its image tokens); raise model_max_length."
                )
            total = sum(1 for t in ids[row] if t == seg_id) if seg_id is not None else 0
            kept = sum(1 for t in ids[row][:limit] if t == seg_id) if seg_id is not None else 0
            keep.extend(range(start, start + kept))
            start += total
        masks = masks_list[i]
        if len(keep) < start:
            if start != masks.shape[0]:
                raise ValueError(
                    f"{sample.image_path!r} has {masks.shape[0]} masks but {start} {SEG_TOKEN} "
                    "tokens, so the masks of the [SEG]s cut by truncation cannot be found."
                )
            masks = masks[torch.tensor(keep, dtype=torch.long)]
        kept_masks.append(masks)
    return kept_masks

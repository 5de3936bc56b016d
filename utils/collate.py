"""One dataset item (:class:`Sample`) and the batch collation shared by training and validation.

``collate_fn`` reproduces the batch of LISA's ``utils/dataset.py:collate_fn`` (same keys, ids and
labels), with three fixes: the attention mask comes from the true sequence lengths (a genuine
``<unk>`` in a text is the pad id, but neither masked out nor miscounted), truncation drops the
ground-truth masks whose ``[SEG]`` was cut, and malformed conversations raise a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from utils.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX, SEG_TOKEN
from utils.conversation import get_conv_template, wrap_image_token
from utils.tokenization import tokenizer_image_token


@dataclass
class Sample:
    """Everything a dataset returns for one image (the original's 10-tuple, in the same order)."""

    image_path: str
    image: torch.Tensor  # [3, S, S] float32 SAM input (normalised, padded)
    image_clip: torch.Tensor  # [3, h, w] float32 CLIP input
    conversations: list[str]  # full conversations about this image, each with one "<image>"
    masks: torch.Tensor  # [n, H, W] ground truth, one per [SEG] over all conversations, in order
    label: torch.Tensor  # [H, W] ignore map at the original size (only its shape is used)
    resize: tuple[int, int]  # (h', w') of the image inside the padded SAM input
    questions: Any = None  # the questions asked (list[str]; kept for evaluation/logging)
    sampled_classes: Any = None  # class names / expressions behind the questions
    inference: bool = False  # validation item: no truncation


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
) -> dict[str, Any]:
    """Batch B images with N conversations in total.

    Args:
        samples: B :class:`Sample` (or the original 10-tuples).
        tokenizer: from :func:`utils.tokenization.load_tokenizer`, LISA tokens added.
        conv_type: template the conversations were written with.
        use_mm_start_end: wrap ``<image>`` in ``<im_start>``/``<im_end>``.
        model_max_length: the LLM's context; training sequences are cut to
            ``model_max_length - (num_image_tokens - 1)`` ids (the image expands to
            ``num_image_tokens`` positions).
        num_image_tokens: CLIP patch features per image (256 for ViT-L/14 at 224).

    Returns:
        ``image_paths`` list[B]; ``images`` [B,3,S,S]; ``images_clip`` [B,3,h,w] (one per image);
        ``input_ids`` [N,L] long (right-padded with the pad id, image sentinel -200);
        ``labels`` [N,L] long (-100 = ignored); ``attention_masks`` [N,L] bool;
        ``masks_list`` list[B] of [n_i,H_i,W_i] float; ``label_list`` list[B]; ``resize_list``;
        ``offset`` [B+1] long (conversations of image i are offset[i]:offset[i+1]);
        ``questions_list``; ``sampled_classes_list``; ``inference`` bool; ``conversation_list``.
    """
    if not samples:
        raise ValueError("collate_fn got an empty batch.")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with load_tokenizer (pad = unk).")
    batch = [_as_sample(item) for item in samples]
    inference = bool(batch[0].inference)
    if any(bool(s.inference) != inference for s in batch):
        raise ValueError("collate_fn got a batch that mixes training and inference samples.")

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

    ids = [tokenizer_image_token(text, tokenizer) for text in conversations]
    labels = [
        mask_instruction_labels(t, i, tokenizer, conv_type)
        for t, i in zip(conversations, ids, strict=True)
    ]
    masks_list = [sample.masks.float() for sample in batch]

    if not inference:
        limit = model_max_length - (num_image_tokens - 1)
        if limit <= 0:
            raise ValueError(
                f"model_max_length {model_max_length} leaves no room for {num_image_tokens} image tokens."
            )
        if any(len(seq) > limit for seq in ids):
            masks_list = _drop_cut_masks(batch, offset, ids, limit, masks_list, tokenizer)
            ids = [seq[:limit] for seq in ids]
            labels = [seq[:limit] for seq in labels]

    lengths = torch.tensor([len(seq) for seq in ids])  # [N]
    width = int(lengths.max())
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)  # [N, L]
    targets = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)  # [N, L]
    for row, (seq, lab) in enumerate(zip(ids, labels, strict=True)):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        targets[row, : len(seq)] = lab
    attention_masks = torch.arange(width)[None, :] < lengths[:, None]  # [N, L] bool

    return {
        "image_paths": [sample.image_path for sample in batch],
        "images": torch.stack([sample.image for sample in batch], dim=0),
        "images_clip": torch.stack([sample.image_clip for sample in batch], dim=0),
        "input_ids": input_ids,
        "labels": targets,
        "attention_masks": attention_masks,
        "masks_list": masks_list,
        "label_list": [sample.label for sample in batch],
        "resize_list": [sample.resize for sample in batch],
        "offset": torch.tensor(offset, dtype=torch.long),
        "questions_list": [sample.questions for sample in batch],
        "sampled_classes_list": [sample.sampled_classes for sample in batch],
        "inference": inference,
        "conversation_list": conversations,
    }


def _drop_cut_masks(
    batch: Sequence[Sample],
    offset: Sequence[int],
    ids: Sequence[Sequence[int]],
    limit: int,
    masks_list: list[torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
) -> list[torch.Tensor]:
    """Masks left once every sequence is cut to ``limit`` ids: those whose [SEG] survived.

    Image i's masks follow the [SEG]s of its conversations in order, so each conversation owns a
    contiguous run of masks, of which the first "kept [SEG]s" remain.
    """
    seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    if seg_id is None or seg_id == tokenizer.unk_token_id:
        seg_id = None  # no [SEG] in this vocabulary: nothing can be cut
    kept_masks = []
    for i, sample in enumerate(batch):
        keep: list[int] = []
        start = 0
        for row in range(offset[i], offset[i + 1]):
            if IMAGE_TOKEN_INDEX not in ids[row][:limit]:
                raise ValueError(
                    f"truncating a conversation of {sample.image_path!r} to {limit} tokens removes "
                    "its image; raise model_max_length."
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

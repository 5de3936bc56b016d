"""collate_with_format: rows through the base's format, padded; training rows cut to the context
but never inside the image's tokens, the masks of cut [SEG]s dropped; the original layout
exactly as collate_fn."""

import dataclasses

import numpy as np
import pytest
import torch

from model.bases.load import load_base_format
from tools.tiny_base import TinyBaseSizes, build_tiny_base
from utils.collate import collate_fn, collate_with_format
from utils.constants import IGNORE_INDEX
from utils.data.sample_builder import SampleBuilder

from .conftest import random_image

SAM_SIDE = 64


def make_sample(builder, turns_per_conversation, masks, seed, inference=False, size=(48, 64)):
    image = random_image(*size, seed=seed)
    conversations = [builder.conversation(turns) for turns in turns_per_conversation]
    return builder.build(
        image_path=f"image_{seed}.png",
        image=image,
        conversations=conversations,
        masks=masks,
        inference=inference,
    )


def random_masks(count: int, size=(48, 64), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (count, *size), dtype=np.uint8)


@pytest.fixture(scope="module")
def builder(base_format):
    return SampleBuilder(base_format=base_format, image_size=SAM_SIDE)


def two_samples(builder):
    first = make_sample(builder, [[("<image>\nWhat is red?", "It is [SEG].")]], random_masks(1), 1)
    second = make_sample(
        builder,
        [
            [("<image>\nSegment the circle.", "Sure, [SEG].")],
            [("<image>\nAnd the squares?", "Here: [SEG] and [SEG].")],
        ],
        random_masks(3, size=(80, 40), seed=2),
        2,
        size=(80, 40),
    )
    return [first, second]


def test_rows_are_the_formats_ids_right_padded(base_format, builder):
    samples = two_samples(builder)
    batch = collate_with_format(samples, base_format, model_max_length=512)
    rows = [
        base_format.tokenise(text, sample.image_clip)
        for sample in samples
        for text in sample.conversations
    ]
    assert batch.offset.tolist() == [0, 1, 3]
    assert batch.input_ids.shape == (3, max(len(ids) for ids, _ in rows))
    for row, (ids, labels) in enumerate(rows):
        assert batch.input_ids[row, : len(ids)].tolist() == ids
        assert torch.equal(batch.labels[row, : len(ids)], labels)
        assert (batch.input_ids[row, len(ids) :] == base_format.tokenizer.pad_token_id).all()
        assert (batch.labels[row, len(ids) :] == IGNORE_INDEX).all()
        assert batch.attention_mask[row].sum() == len(ids)
    assert [m.shape[0] for m in batch.gt_masks] == [1, 3]
    vision = base_format.collate_vision([s.image_clip for s in samples])
    if base_format.kind == "llava_hf":
        assert torch.equal(batch.images_clip, vision)
    else:
        assert isinstance(samples[0].image_clip, dict)
        assert all(torch.equal(batch.images_clip[k], vision[k]) for k in vision)
        assert batch.images_clip["image_grid_thw"].shape == (2, 3)
    assert batch.images.dtype == torch.uint8 and batch.num_images == 2


def test_truncation_drops_the_masks_of_cut_segs(base_format, builder):
    samples = two_samples(builder)
    ids, _ = base_format.tokenise(samples[1].conversations[1], samples[1].image_clip)
    segs = [i for i, token in enumerate(ids) if token == base_format.seg_token_id]
    limit = segs[1]  # keeps the row's first [SEG], cuts its second
    batch = collate_with_format(samples, base_format, model_max_length=limit)
    assert batch.input_ids.shape[1] == limit
    kept = batch.gt_masks[1]
    assert kept.shape[0] == 2  # the other conversation's mask and this row's first
    assert torch.equal(kept, samples[1].masks[:2].float())
    assert torch.equal(batch.gt_masks[0], samples[0].masks.float())


def test_a_cut_inside_the_image_tokens_is_refused(base_format, builder):
    samples = two_samples(builder)
    ids, _ = base_format.tokenise(samples[0].conversations[0], samples[0].image_clip)
    first_image = ids.index(base_format.image_token_id)
    with pytest.raises(ValueError, match="removes its image"):
        collate_with_format(samples, base_format, model_max_length=first_image + 1)


def test_validation_rows_are_not_cut(base_format, builder):
    samples = [dataclasses.replace(sample, inference=True) for sample in two_samples(builder)]
    batch = collate_with_format(samples, base_format, model_max_length=8)
    longest = max(
        len(base_format.tokenise(t, s.image_clip, with_labels=False)[0])
        for s in samples
        for t in s.conversations
    )
    assert batch.input_ids.shape[1] == longest > 8
    assert [m.shape[0] for m in batch.gt_masks] == [1, 3]


@pytest.fixture(scope="module")
def original_base(tmp_path_factory):
    sizes = TinyBaseSizes(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        clip_image_size=32, sam_image_size=64, sam_patch_size=8, sam_embed_dim=16,
        sam_prompt_embed_dim=32, sam_decoder_mlp_dim=64, sam_iou_head_hidden_dim=16,
    )  # fmt: skip
    return build_tiny_base(tmp_path_factory.mktemp("original"), sizes=sizes)


@pytest.mark.parametrize("cut", [False, True])
def test_the_original_layout_collates_as_collate_fn(original_base, cut):
    """(32 / 8)^2 = 16 image tokens: a row of n ids is n + 15 long; a cut keeps every image
    sentinel and drops [SEG]s."""
    base_format = load_base_format(original_base["version"], model_max_length=512)
    assert (base_format.kind, base_format.num_image_tokens) == ("llava", 16)
    builder = SampleBuilder(base_format=base_format, image_size=SAM_SIDE)
    samples = two_samples(builder)
    rows = [base_format.tokenise(t, None)[0] for s in samples for t in s.conversations]
    max_length = max(row.index(-200) for row in rows) + 2 + 15 if cut else 512
    ours = collate_with_format(samples, base_format, model_max_length=max_length)
    theirs = collate_fn(samples, base_format.tokenizer, model_max_length=max_length,
                        num_image_tokens=16)  # fmt: skip
    for field in ("input_ids", "labels", "attention_mask", "images_clip", "images", "offset"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field
    assert [m.shape for m in ours.gt_masks] == [m.shape for m in theirs.gt_masks]
    assert sum(m.shape[0] for m in ours.gt_masks) == (0 if cut else 4)
    assert ours.conversations == theirs.conversations
    assert (ours.input_ids == -200).sum() == 3

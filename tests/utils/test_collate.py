import json

import numpy as np
import pytest
import torch

from utils.batch import LisaBatch
from utils.collate import collate_fn, mask_instruction_labels
from utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from utils.conversation import build_conversation, wrap_image_token
from utils.data.sample import Sample
from utils.tokenization import load_tokenizer, tokenizer_image_token

pytestmark = pytest.mark.reference

# LisaBatch field -> key of the same tensor in the reference fixtures (the original's dict keys)
BATCH_FIELDS_OF_FIXTURE_KEYS = {
    "input_ids": "input_ids",
    "labels": "labels",
    "attention_mask": "attention_masks",
    "offset": "offset",
}
SEG_ID = 512


@pytest.fixture(scope="module")
def tokenizer(tiny_lisa_dir):
    return load_tokenizer(tiny_lisa_dir)


def _samples_from_fixture(record: dict, inference: bool) -> list[Sample]:
    """Samples rebuilt from a forward fixture: its conversations, one distinct mask per [SEG]."""
    conversations = [
        c.replace("<im_start><image><im_end>", "<image>") for c in record["conversation_list"]
    ]
    offset = record["offset"]
    samples = []
    for i in range(len(offset) - 1):
        height, width = record["label_list_shapes"][i]
        own = conversations[offset[i] : offset[i + 1]]
        n = sum(c.count("[SEG]") for c in own)
        masks = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, height, width)
        samples.append(
            Sample(
                image_path=f"image{i}.png",
                image=torch.full((3, 1024, 1024), float(i)),
                image_clip=torch.full((3, 64, 64), float(i)),
                conversations=own,
                masks=masks.clone(),
                label=torch.full((height, width), 255.0),
                resize=tuple(record["resize_list"][i]),
                questions=[f"q{i}"],
                sampled_classes=[f"c{i}"],
                inference=inference,
            )
        )
    return samples


@pytest.mark.parametrize(
    ("name", "inference"), [("train_forward", False), ("inference_forward", True)]
)
def test_batch_matches_reference(name, inference, tokenizer, tiny_cases_dir):
    record = json.loads((tiny_cases_dir / f"{name}.json").read_text())
    expected = np.load(tiny_cases_dir / f"{name}.npz")
    samples = _samples_from_fixture(record, inference)
    batch = collate_fn(samples, tokenizer, conv_type="llava_v1", use_mm_start_end=True)

    assert isinstance(batch, LisaBatch)
    for field, key in BATCH_FIELDS_OF_FIXTURE_KEYS.items():
        assert torch.equal(getattr(batch, field), torch.from_numpy(expected[key])), key
    assert batch.input_ids.dtype == batch.labels.dtype == torch.long
    assert batch.attention_mask.dtype == torch.bool
    assert batch.conversations == record["conversation_list"]
    n_images = len(samples)
    assert batch.images.shape == (n_images, 3, 1024, 1024)
    assert batch.images_clip.shape == (
        n_images,
        3,
        64,
        64,
    )  # one per image, not per conversation
    assert [m.dtype for m in batch.gt_masks] == [torch.float32] * n_images
    assert [tuple(m.shape[1:]) for m in batch.gt_masks] == [
        tuple(s) for s in record["label_list_shapes"]
    ]
    assert batch.resize_sizes == tuple(tuple(r) for r in record["resize_list"])
    assert batch.original_sizes == tuple(tuple(s) for s in record["label_list_shapes"])
    assert batch.questions == [[f"q{i}"] for i in range(n_images)]
    assert batch.image_paths == [f"image{i}.png" for i in range(n_images)]


def test_samples_as_original_tuples(tokenizer, tiny_cases_dir):
    record = json.loads((tiny_cases_dir / "train_forward.json").read_text())
    samples = _samples_from_fixture(record, False)
    tuples = [tuple(vars(s).values()) for s in samples]
    a, b = collate_fn(samples, tokenizer), collate_fn(tuples, tokenizer)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def _seg_masks_agree(batch) -> None:
    """Every image has as many ground-truth masks as [SEG] ids left in its conversations."""
    offset = batch.offset.tolist()
    for i, masks in enumerate(batch.gt_masks):
        ids = batch.input_ids[offset[i] : offset[i + 1]]
        assert int((ids == SEG_ID).sum()) == masks.shape[0]


def test_truncation_drops_the_masks_of_cut_seg_tokens(tokenizer, tiny_cases_dir):
    record = json.loads((tiny_cases_dir / "train_forward.json").read_text())
    expected = np.load(tiny_cases_dir / "train_forward.npz")
    samples = _samples_from_fixture(record, False)
    # Put img1's two-[SEG] conversation first, so the mask to drop sits in the middle of its list.
    samples[0].conversations.reverse()
    seg_columns = np.argwhere(expected["input_ids"] == SEG_ID).tolist()
    assert seg_columns == [[0, 121], [1, 124], [1, 158], [2, 129]]
    limit = 140  # keeps [SEG]s at 121, 124, 129; cuts the one at 158
    batch = collate_fn(samples, tokenizer, model_max_length=limit + 255, num_image_tokens=256)

    assert batch.input_ids.shape[1] == limit
    order = [1, 0, 2]  # rows after the swap
    assert torch.equal(batch.input_ids, torch.from_numpy(expected["input_ids"][order, :limit]))
    assert torch.equal(batch.labels, torch.from_numpy(expected["labels"][order, :limit]))
    # img1's masks were [blue (conv A, 1st), green (conv A, 2nd), red (conv B)] = values 0, 1, 2;
    # the green one's [SEG] was cut.
    first = batch.gt_masks[0]
    assert first.shape[0] == 2 and first[:, 0, 0].tolist() == [0.0, 2.0]
    assert batch.gt_masks[1].shape[0] == 1
    _seg_masks_agree(batch)
    attention = torch.from_numpy(expected["attention_masks"][order, :limit])
    assert torch.equal(batch.attention_mask, attention)


def test_no_truncation_at_inference(tokenizer, tiny_cases_dir):
    record = json.loads((tiny_cases_dir / "train_forward.json").read_text())
    samples = _samples_from_fixture(record, True)
    batch = collate_fn(samples, tokenizer, model_max_length=300)
    assert batch.input_ids.shape[1] == 162
    _seg_masks_agree(batch)


def test_truncation_that_removes_the_image_raises(tokenizer, tiny_cases_dir):
    record = json.loads((tiny_cases_dir / "train_forward.json").read_text())
    samples = _samples_from_fixture(record, False)
    with pytest.raises(ValueError, match="removes its image"):
        collate_fn(samples, tokenizer, model_max_length=50 + 255)


def _sample(conversations, n_masks=0, inference=False) -> Sample:
    return Sample(
        image_path="x.png",
        image=torch.zeros(3, 8, 8),
        image_clip=torch.zeros(3, 4, 4),
        conversations=conversations,
        masks=torch.zeros(n_masks, 5, 6),
        label=torch.zeros(5, 6),
        resize=(5, 6),
        inference=inference,
    )


def test_unk_in_text_is_attended_and_counted(tokenizer):
    text = build_conversation(
        [("<image>\nIs the <unk> thing there?", "Sure, <unk> is [SEG].")], "llava_v1"
    )
    short = build_conversation([("<image>\nHi", "[SEG].")], "llava_v1")
    batch = collate_fn([_sample([text, short], n_masks=2)], tokenizer)
    ids, labels, attention = batch.input_ids, batch.labels, batch.attention_mask
    unk_positions = (ids[0] == tokenizer.unk_token_id).nonzero().flatten().tolist()
    assert len(unk_positions) == 2  # both genuine, the first row is the longest: no padding
    assert attention[0].all()
    assert labels[0, unk_positions[0]] == IGNORE_INDEX  # in the question
    assert labels[0, unk_positions[1]] == tokenizer.unk_token_id  # in the answer: supervised
    # The padded row: attention follows its true length, padding is ignored in the labels.
    length = len(tokenizer_image_token(wrap_image_token(short, True), tokenizer))
    assert attention[1].tolist() == [True] * length + [False] * (ids.shape[1] - length)
    assert (labels[1, length:] == IGNORE_INDEX).all()


def _supervised_spans(tokenizer, ids, labels) -> list[str]:
    spans, run = [], []
    for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


@pytest.mark.parametrize("conv_type", ["llava_v1", "llava_llama_2"])
def test_only_answers_are_supervised(tokenizer, conv_type):
    turns = [
        ("<image>\nCan you segment the red circle?", "Sure, [SEG]."),
        ("And the blue one?", "It is [SEG] on the left."),
    ]
    text = build_conversation(turns, conv_type)
    batch = collate_fn([_sample([text], n_masks=2)], tokenizer, conv_type=conv_type)
    spans = _supervised_spans(tokenizer, batch.input_ids[0], batch.labels[0])
    assert [s.replace(" ", "") for s in spans] == ["Sure,[SEG].</s>", "Itis[SEG]ontheleft.</s>"]
    ids = batch.input_ids[0]
    assert IMAGE_TOKEN_INDEX in ids.tolist()
    assert batch.labels[0, ids == IMAGE_TOKEN_INDEX].eq(IGNORE_INDEX).all()


def test_mask_instruction_labels_direct(tokenizer):
    text = wrap_image_token(build_conversation([("<image>\nq", "a")], "llava_v1"), True)
    ids = tokenizer_image_token(text, tokenizer)
    labels = mask_instruction_labels(text, ids, tokenizer)
    assert labels.shape == (len(ids),) and labels[0] == IGNORE_INDEX
    assert labels[-1] == tokenizer.eos_token_id


def test_bad_batches_raise(tokenizer):
    good = build_conversation([("<image>\nq", "[SEG].")], "llava_v1")
    with pytest.raises(ValueError, match="exactly one <image>"):
        collate_fn([_sample([good.replace("<image>", "")])], tokenizer)
    with pytest.raises(ValueError, match="exactly one <image>"):
        collate_fn([_sample([good.replace("<image>", "<image><image>")])], tokenizer)
    with pytest.raises(ValueError, match="mixes"):
        collate_fn([_sample([good]), _sample([good], inference=True)], tokenizer)
    with pytest.raises(ValueError, match="instruction and one answer"):
        collate_fn([_sample([good.replace(" ASSISTANT: ", " BOT: ")])], tokenizer)
    with pytest.raises(ValueError, match="empty batch"):
        collate_fn([], tokenizer)
    with pytest.raises(ValueError, match="conv_type"):
        collate_fn([_sample([good])], tokenizer, conv_type="vicuna")

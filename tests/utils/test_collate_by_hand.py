"""Tokenization and collation on a vocabulary written by hand, so every expected id is known.

The tokenizer is a sentencepiece unigram model whose pieces are listed below: one piece per word
of the texts used (with sentencepiece's word-start mark "▁"), a few punctuation pieces and a lone
"▁". Word pieces score far above single characters, so each text splits into its words. These
tests need no reference data: the ids, labels and masks are written out from the rules of LISA's
collate (BOS ignored, the instruction ignored up to "ASSISTANT:", the answer and its closing
</s> supervised, right padding with the pad id = unk, truncation dropping cut [SEG] masks).
"""

import json

import pytest
import torch
from sentencepiece import sentencepiece_model_pb2 as sp_model

from utils.collate import collate_fn, pad, truncate
from utils.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from utils.conversation import get_conv_template
from utils.data.sample import Sample
from utils.tokenization import add_lisa_tokens, load_tokenizer, tokenizer_image_token

SYSTEM_WORDS = (
    "A chat between a curious human and an artificial intelligence assistant . The assistant "
    "gives helpful , detailed , and polite answers to the human 's questions ."
)
WORDS = ["A", "chat", "between", "a", "curious", "human", "and", "an", "artificial"]
WORDS += ["intelligence", "assistant", "The", "gives", "helpful", "detailed", "polite"]
WORDS += ["answers", "to", "the", "questions", "USER", "ASSISTANT", "What", "is", "it", "It"]
WORDS += ["Where", "dog", "cat", "Sure"]
SYMBOLS = [".", ",", "'s", ":", "?", "▁"]
PIECES = ["<unk>", "<s>", "</s>"] + [f"▁{word}" for word in WORDS] + SYMBOLS
ID = {piece: index for index, piece in enumerate(PIECES)}
SEG, IM_START, IM_END = len(PIECES), len(PIECES) + 1, len(PIECES) + 2  # added in this order


def _write_tokenizer(folder) -> None:
    model = sp_model.ModelProto()
    for index, piece in enumerate(PIECES):
        entry = model.pieces.add()
        entry.piece = piece
        if index < 3:
            entry.type = (sp_model.ModelProto.SentencePiece.UNKNOWN if index == 0
                          else sp_model.ModelProto.SentencePiece.CONTROL)  # fmt: skip
            entry.score = 0.0
        else:
            entry.score = -1.0 if piece.startswith("▁") and len(piece) > 1 else -10.0
    spec = model.trainer_spec
    spec.model_type = sp_model.TrainerSpec.UNIGRAM
    spec.vocab_size = len(PIECES)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    spec.byte_fallback = False
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True,
              "add_eos_token": False, "padding_side": "right", **special, "pad_token": None}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps(special))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hand_tokenizer")
    _write_tokenizer(folder)
    tokenizer = load_tokenizer(folder)
    assert add_lisa_tokens(tokenizer, use_mm_start_end=True) == SEG
    assert tokenizer.convert_tokens_to_ids(["<im_start>", "<im_end>"]) == [IM_START, IM_END]
    return tokenizer


def ids_of(words: str) -> list[int]:
    """Ids of space-separated pieces; a word stands for its "▁word" piece, symbols for themselves."""
    return [ID[word] if word in SYMBOLS else ID[f"▁{word}"] for word in words.split()]


def conversation(question: str, answer: str) -> str:
    conv = get_conv_template("llava_v1")
    conv.append_message("USER", f"<image>\n{question}")
    conv.append_message("ASSISTANT", answer)
    return conv.get_prompt()


def sample(conversations: list[str], masks: int, inference: bool = False) -> Sample:
    return Sample(
        image_path="pic.jpg",
        image=torch.zeros(3, 8, 8),
        image_clip=torch.zeros(3, 4, 4),
        conversations=conversations,
        masks=torch.arange(masks, dtype=torch.float32)[:, None, None].expand(masks, 5, 6),
        label=torch.zeros(5, 6),
        resize=(5, 6),
        inference=inference,
    )


# "<im_start>" / "<im_end>" / "[SEG]" strip the spaces and the newline around them; the text after
# [SEG] is encoded on its own, so its dummy prefix gives a lone "▁" before ".".
PREFIX = [1, *ids_of(SYSTEM_WORDS), *ids_of("USER :"), IM_START, IMAGE_TOKEN_INDEX, IM_END]
WHAT_IS_IT = [*PREFIX, *ids_of("What is it ? ASSISTANT :")]
ANSWER = [*ids_of("It is"), SEG, ID["▁"], ID["."], 2]  # "It is [SEG].</s>"


def test_one_conversation_ids_and_labels(tokenizer):
    text = conversation("What is it?", "It is [SEG].")
    wrapped = text.replace("<image>", "<im_start><image><im_end>")
    assert tokenizer_image_token(wrapped, tokenizer) == WHAT_IS_IT + ANSWER
    batch = collate_fn([sample([text], masks=1)], tokenizer, num_image_tokens=4)
    assert batch.input_ids.tolist() == [WHAT_IS_IT + ANSWER]
    assert batch.labels.tolist() == [[IGNORE_INDEX] * len(WHAT_IS_IT) + ANSWER]
    assert batch.attention_mask.all()
    assert batch.offset.tolist() == [0, 1]


def test_two_images_padding_and_offsets(tokenizer):
    first = [
        conversation("What is it?", "It is [SEG]."),
        conversation("Where is it?", "Sure, it is [SEG]."),
    ]
    second = [conversation("What is it?", "It is.")]
    batch = collate_fn(
        [sample(first, masks=2), sample(second, masks=0)], tokenizer, num_image_tokens=4
    )
    where = [*PREFIX, *ids_of("Where is it ? ASSISTANT :")]
    sure = [*ids_of("Sure , it is"), SEG, ID["▁"], ID["."], 2]
    plain = [*ids_of("It is ."), 2]
    rows = [WHAT_IS_IT + ANSWER, where + sure, WHAT_IS_IT + plain]
    width = max(len(row) for row in rows)
    assert batch.input_ids.tolist() == [row + [0] * (width - len(row)) for row in rows]
    expected_labels = [
        [IGNORE_INDEX] * len(WHAT_IS_IT) + ANSWER,
        [IGNORE_INDEX] * len(where) + sure,
        [IGNORE_INDEX] * len(WHAT_IS_IT) + plain,
    ]
    assert batch.labels.tolist() == [
        row + [IGNORE_INDEX] * (width - len(row)) for row in expected_labels
    ]
    assert batch.attention_mask.sum(1).tolist() == [len(row) for row in rows]
    assert batch.offset.tolist() == [0, 2, 3]
    assert [m.shape[0] for m in batch.gt_masks] == [2, 0]


def test_truncation_keeps_the_masks_of_the_seg_tokens_left(tokenizer):
    two_segs = conversation("What is it?", "It is [SEG] and [SEG].")
    ids = tokenizer_image_token(two_segs.replace("<image>", "<im_start><image><im_end>"), tokenizer)
    second_seg = [i for i, token in enumerate(ids) if token == SEG][1]
    limit = second_seg  # cuts the second [SEG] and what follows
    num_image_tokens = 4
    batch = collate_fn(
        [sample([two_segs], masks=2)],
        tokenizer,
        model_max_length=limit + num_image_tokens - 1,
        num_image_tokens=num_image_tokens,
    )
    assert batch.input_ids.tolist() == [ids[:limit]]
    masks = batch.gt_masks[0]
    assert masks.shape[0] == 1 and masks[0].unique().tolist() == [0.0]  # the first mask stays
    inference = collate_fn([sample([two_segs], masks=2, inference=True)], tokenizer,
                           model_max_length=limit + num_image_tokens - 1,
                           num_image_tokens=num_image_tokens)  # fmt: skip
    assert inference.input_ids.tolist() == [ids]  # validation is never cut
    assert inference.gt_masks[0].shape[0] == 2


def test_unknown_word_is_unk_attended_and_supervised_in_the_answer(tokenizer):
    text = conversation("What is it?", "It is zebra.")
    batch = collate_fn([sample([text], masks=0)], tokenizer, num_image_tokens=4)
    # No piece holds "zebra": the lone "▁" then one <unk> (= the pad id 0) for its letters.
    answer = [*ids_of("It is"), ID["▁"], 0, ID["."], 2]
    assert batch.input_ids.tolist() == [WHAT_IS_IT + answer]
    assert batch.labels[0, len(WHAT_IS_IT) :].tolist() == answer
    assert batch.attention_mask.all()  # the genuine <unk> is attended although it is the pad id


def test_the_batch_carries_sizes_images_and_bookkeeping(tokenizer):
    first = sample([conversation("What is it?", "It is [SEG].")], masks=1)
    second = Sample(
        image_path="other.jpg",
        image=torch.ones(3, 8, 8),
        image_clip=torch.ones(3, 4, 4),
        conversations=[conversation("Where is it?", "It is.")],
        masks=torch.zeros(0, 7, 3),
        label=torch.zeros(7, 3),
        resize=(8, 3),
        questions=["Where is it?"],
        sampled_classes=["dog"],
    )
    batch = collate_fn([first, second], tokenizer, num_image_tokens=4)
    assert batch.images.shape == (2, 3, 8, 8) and batch.images_clip.shape == (2, 3, 4, 4)
    assert torch.equal(batch.images[1], torch.ones(3, 8, 8))
    assert batch.resize_sizes == ((5, 6), (8, 3))
    assert batch.original_sizes == ((5, 6), (7, 3))  # the label map's shape, not the map
    assert batch.image_paths == ["pic.jpg", "other.jpg"]
    assert batch.questions == [None, ["Where is it?"]]
    assert batch.sampled_classes == [None, ["dog"]]
    assert batch.conversations == [
        text.replace("<image>", "<im_start><image><im_end>")
        for text in first.conversations + second.conversations
    ]
    assert [m.shape for m in batch.gt_masks] == [(1, 5, 6), (0, 7, 3)]


def test_pad_and_truncate_steps():
    ids, labels, attention = pad(
        [[1, 5, 6], [1, 7]], [torch.tensor([-100, 5, 6]), torch.tensor([-100, 7])], 0
    )
    assert ids.tolist() == [[1, 5, 6], [1, 7, 0]]
    assert labels.tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert attention.tolist() == [[True, True, True], [True, True, False]]
    samples = [sample([conversation("What is it?", "It is [SEG].")], masks=1)]
    short = [[1, IMAGE_TOKEN_INDEX, 4]]
    kept = truncate(
        samples, [0, 1], short, [torch.tensor([-100, -100, 4])], [torch.zeros(1, 5, 6)], 3, None
    )
    assert kept[0] == short  # nothing longer than the limit: unchanged

import json
import pickle
import shutil

import pytest
import torch
from transformers import AddedToken

from utils.constants import IMAGE_TOKEN_INDEX
from utils.tokenization import (
    LegacyLlamaTokenizer,
    add_lisa_tokens,
    decode_answer,
    load_tokenizer,
    tokenizer_image_token,
)

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def cases(tiny_cases_dir):
    return json.loads((tiny_cases_dir / "tokenization.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(tiny_lisa_dir):
    return load_tokenizer(tiny_lisa_dir)


def _pieces(tokenizer, ids):
    return [
        f"<IMAGE:{IMAGE_TOKEN_INDEX}>"
        if i == IMAGE_TOKEN_INDEX
        else tokenizer.convert_ids_to_tokens(i)
        for i in ids
    ]


def test_vocabulary(tokenizer, cases):
    vocab = cases["vocab"]
    assert isinstance(tokenizer, LegacyLlamaTokenizer)
    assert len(tokenizer) == vocab["len_tokenizer"] == 515
    assert tokenizer.vocab_size == vocab["sp_vocab_size"]
    assert tokenizer.convert_tokens_to_ids(["[SEG]", "<im_start>", "<im_end>"]) == [
        vocab["seg_token_idx"],
        vocab["im_start_id"],
        vocab["im_end_id"],
    ]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (vocab["bos_id"], vocab["eos_id"])
    assert (tokenizer.unk_token_id, tokenizer.pad_token_id) == (vocab["unk_id"], vocab["pad_id"])
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 512
    assert tokenizer.get_vocab()["[SEG]"] == 512


def test_prompt_cases(tokenizer, cases):
    assert len(cases["prompt_cases"]) == 8
    for case in cases["prompt_cases"]:
        ids = tokenizer_image_token(case["prompt"], tokenizer)
        assert ids == case["input_ids"], case["id"]
        assert _pieces(tokenizer, ids) == case["tokens"], case["id"]


def test_raw_string_cases(tokenizer, cases):
    assert len(cases["raw_string_cases"]) == 12
    for case in cases["raw_string_cases"]:
        text = case["text"]
        ids = tokenizer(text).input_ids
        assert ids == case["input_ids"], text
        assert tokenizer(text, add_special_tokens=False).input_ids == case["input_ids_no_special"]
        assert tokenizer.convert_ids_to_tokens(ids) == case["tokens"], text
        assert tokenizer.decode(ids, skip_special_tokens=False) == case["decode_skip_special_false"]


def test_decode_cases(tokenizer, cases):
    for case in cases["decode_cases"]:
        assert tokenizer.decode(case["ids"]) == case["decode_skip_special_false"]
        assert (
            tokenizer.decode(case["ids"], skip_special_tokens=True)
            == case["decode_skip_special_true"]
        )


def test_tokenizer_image_token_structure(tokenizer):
    assert tokenizer_image_token("no image here", tokenizer) == tokenizer("no image here").input_ids
    ids = tokenizer_image_token("a<image>b<image>", tokenizer)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 2 and ids[-1] == IMAGE_TOKEN_INDEX
    assert tokenizer_image_token("<image>", tokenizer) == [1, IMAGE_TOKEN_INDEX]


def test_decode_answer_reproduces_chat_py(tokenizer, tiny_cases_dir):
    evaluate = json.loads((tiny_cases_dir / "evaluate_plain.json").read_text())
    assert decode_answer(evaluate["output_ids"], tokenizer) == evaluate["chat_py_text_output"]
    as_tensor = torch.tensor([evaluate["output_ids"]])
    assert decode_answer(as_tensor, tokenizer) == evaluate["chat_py_text_output"]
    clean = decode_answer(evaluate["output_ids"], tokenizer, clean=True)
    assert clean.startswith("A chat between") and clean.endswith("box [SEG] ide")
    for token in ("<s>", "<im_start>", "<im_end>"):
        assert token not in clean


def test_decode_answer_clean_keeps_newlines_and_seg(tokenizer):
    ids = tokenizer("Sure,\nit is [SEG].").input_ids + [tokenizer.eos_token_id]
    assert decode_answer(ids, tokenizer, clean=True) == "Sure,\nit is [SEG] ."
    assert tokenizer.decode(ids) == "<s>Sure,\nit is [SEG]  .</s>"  # 4.31 spacing
    assert decode_answer(ids, tokenizer) == "<s>Sure,it is [SEG] .</s>"
    with pytest.raises(ValueError, match="1-D"):
        decode_answer(torch.ones(2, 3, dtype=torch.long), tokenizer)


def test_decoding_the_image_sentinel_raises(tokenizer):
    with pytest.raises(ValueError, match="image sentinel"):
        tokenizer.decode([1, IMAGE_TOKEN_INDEX, 2])


def test_batch_call_pads_right_with_unk(tokenizer):
    batch = tokenizer(["Sure, it is [SEG].", "hi"], padding=True, return_tensors="pt")
    assert batch.input_ids[1].tolist()[:3] == tokenizer("hi").input_ids
    assert batch.input_ids[1, 3:].eq(0).all() and not batch.attention_mask[1, 3:].any()


def test_save_and_reload_gives_identical_ids(tokenizer, cases, tmp_path):
    tokenizer.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer" and config["legacy"] is True
    assert (tmp_path / "saved" / "tokenizer.model").is_file()
    reloaded = load_tokenizer(tmp_path / "saved")
    assert len(reloaded) == len(tokenizer)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    for case in cases["prompt_cases"]:
        assert tokenizer_image_token(case["prompt"], reloaded) == case["input_ids"]
    for case in cases["raw_string_cases"]:
        assert reloaded(case["text"]).input_ids == case["input_ids"]
        assert reloaded.decode(case["input_ids"]) == case["decode_skip_special_false"]
    # A second round trip changes nothing either.
    reloaded.save_pretrained(tmp_path / "again")
    again = load_tokenizer(tmp_path / "again")
    assert again.get_vocab() == tokenizer.get_vocab()
    assert (
        again("a <im_start>x<im_end> [SEG].").input_ids
        == tokenizer("a <im_start>x<im_end> [SEG].").input_ids
    )


@pytest.fixture
def base_tokenizer(tiny_lisa_dir, tmp_path):
    """The tiny sentencepiece model alone, as a base LLaVA tokenizer directory would hold it."""
    shutil.copy(tiny_lisa_dir / "tokenizer.model", tmp_path / "tokenizer.model")
    return load_tokenizer(tmp_path)


def test_add_lisa_tokens_on_a_base_tokenizer(base_tokenizer, cases):
    assert len(base_tokenizer) == 512 and base_tokenizer.pad_token_id == 0
    assert add_lisa_tokens(base_tokenizer) == 512
    assert len(base_tokenizer) == 515
    assert base_tokenizer.convert_tokens_to_ids(["<im_start>", "<im_end>"]) == [513, 514]
    # Adding again changes nothing.
    assert add_lisa_tokens(base_tokenizer) == 512 and len(base_tokenizer) == 515
    for case in cases["prompt_cases"]:
        assert tokenizer_image_token(case["prompt"], base_tokenizer) == case["input_ids"]
    for case in cases["raw_string_cases"]:
        assert base_tokenizer(case["text"]).input_ids == case["input_ids"]
    for case in cases["decode_cases"]:
        assert base_tokenizer.decode(case["ids"]) == case["decode_skip_special_false"]
        assert (
            base_tokenizer.decode(case["ids"], skip_special_tokens=True)
            == case["decode_skip_special_true"]
        )


def test_add_lisa_tokens_without_start_end(base_tokenizer):
    assert add_lisa_tokens(base_tokenizer, use_mm_start_end=False) == 512
    assert len(base_tokenizer) == 513


def test_existing_pieces_are_not_added(base_tokenizer):
    before = base_tokenizer("walking").input_ids
    assert base_tokenizer.add_tokens(["ing", "<s>"]) == 0
    assert len(base_tokenizer) == 512
    assert base_tokenizer("walking").input_ids == before  # "ing" did not become a split point
    add_lisa_tokens(base_tokenizer)
    assert base_tokenizer.add_tokens([AddedToken("[SEG]", lstrip=False, rstrip=False)]) == 0
    assert len(base_tokenizer) == 515
    assert base_tokenizer("it is [SEG].").input_ids == [1, 356, 269, 512, 461, 475]


def test_new_plain_tokens_strip_like_4_31(base_tokenizer):
    assert base_tokenizer.add_tokens(["<new>"]) == 1
    new_id = base_tokenizer.convert_tokens_to_ids("<new>")
    assert new_id == 512
    assert base_tokenizer("a <new>\n b").input_ids == base_tokenizer("a<new>b").input_ids


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError, match="tokenizer.model"):
        load_tokenizer(tmp_path)


def test_tokenizer_pickles_for_dataloader_workers(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    text = "USER: <im_start>x<im_end>\nit is [SEG]."
    assert clone(text).input_ids == tokenizer(text).input_ids
    assert len(clone) == len(tokenizer)

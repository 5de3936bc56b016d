"""tools.tiny_vlm_bases writes the directories transformers' classes load as the hub's."""

import json

from transformers import AutoConfig, AutoTokenizer

from tests.bad_inputs.user_files import assert_process_refuses
from tools.tiny_vlm_bases import QWEN_SPECIAL_TOKENS, main


def test_writes_the_chosen_base_in_its_hub_layout(tmp_path, capsys):
    main(["--output_dir", str(tmp_path), "--base", "qwen2_5_vl"])
    base = tmp_path / "qwen2_5_vl"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"qwen2_5_vl: --version={base}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen2_5_vl"]  # no staging left
    config = AutoConfig.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    assert ids == list(range(ids[0], ids[0] + len(QWEN_SPECIAL_TOKENS)))  # Qwen's order
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    rows = config.text_config.vocab_size
    assert rows % 64 == 0 and len(tokenizer) < rows  # padded, with room for [SEG]
    processor = json.loads((base / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "Qwen2VLImageProcessor"


def test_refuses_a_folder_that_holds_files(tmp_path):
    own = tmp_path / "llava_hf" / "notes.txt"
    own.parent.mkdir()
    own.write_text("mine")
    assert_process_refuses(
        ["-m", "tools.tiny_vlm_bases", "--output_dir", str(tmp_path), "--base", "llava_hf"],
        "python -m tools.tiny_vlm_bases",
        str(own.parent),
        "not an empty folder",
    )
    assert own.read_text() == "mine"

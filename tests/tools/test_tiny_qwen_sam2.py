"""tools.tiny_qwen_sam2: the learning run's Qwen2.5-VL base and SAM 2, and its refusals."""

import json

import pytest

from model.bases.load import load_base_format
from model.segmenters import segmenter_ops
from model.segmenters.load import load_segmenter
from tools.tiny_qwen_sam2 import LEARNING_SIZES, main


def test_writes_a_base_that_knows_the_corpus_and_a_sam2(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Which shape has the colour of an aubergine?\npurple hexagon.\n")
    main(["--output_dir", str(tmp_path / "out"), "--corpus", str(corpus), "--image_size", "64"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--")]
    base, sam2 = tmp_path / "out" / "qwen2_5_vl", tmp_path / "out" / "sam2"
    assert printed == [f"--version={base}", f"--vision_pretrained={sam2}"]

    base_format = load_base_format(base, model_max_length=256)
    assert base_format.kind == "qwen2_5_vl"
    # learnt words are few pieces; a word it never saw falls apart into many
    assert len(base_format.tokenizer.tokenize(" aubergine")) == 1
    assert len(base_format.tokenizer.tokenize(" zucchini")) > 2
    text_config = json.loads((base / "config.json").read_text())["text_config"]
    assert text_config["hidden_size"] == LEARNING_SIZES.hidden_size
    assert text_config["num_hidden_layers"] == LEARNING_SIZES.num_hidden_layers

    module = load_segmenter(sam2)
    ops = segmenter_ops(module)
    assert ops.kind == "sam2" and ops.input_size(module) == 64


def test_refuses_a_folder_with_files_and_a_missing_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("red circle.\n")
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as refused:
        main(["--output_dir", str(output), "--corpus", str(corpus)])
    assert refused.value.code == 2
    assert f"--output_dir {output} exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    assert (output / "notes.txt").read_text() == "keep me"

    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path / "new"), "--corpus", str(tmp_path / "absent.txt")])
    assert f"--corpus {tmp_path / 'absent.txt'}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()

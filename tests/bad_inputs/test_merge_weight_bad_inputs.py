"""merge_lora_weights_and_save_hf_model.py with a --weight file that is no state dict (a bare
tensor, a pickle, text, a truncated file): one line naming the file, exit status 2, said before
the model is built, no code run, nothing written."""

import pytest

import merge_lora_weights_and_save_hf_model as merge

from .broken_files import WEIGHT_FILES, one_line, snapshot


@pytest.mark.parametrize("name", list(WEIGHT_FILES))
def test_a_weight_file_that_is_no_state_dict_is_one_line(tmp_path, capsys, name):
    write, piece = WEIGHT_FILES[name]
    base = tmp_path / "base"  # never read: the weight file is checked first
    base.mkdir()
    weight = tmp_path / "pytorch_model.bin"
    write(weight, tmp_path / "code_ran")
    before = snapshot(tmp_path)
    code = merge.main(
        [f"--version={base}", f"--weight={weight}", f"--save_path={tmp_path / 'merged'}"]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    message = one_line(captured.err, "merge:", str(weight), piece)
    assert "weights_only" not in message
    assert not (tmp_path / "code_ran").exists() and not (tmp_path / "merged").exists()
    assert snapshot(tmp_path) == before

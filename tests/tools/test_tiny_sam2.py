"""tools.tiny_sam2: the published SAM 2 layout at a tiny size, written safely."""

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.segmenters.load import load_segmenter
from model.segmenters.sam2 import SAM2_OPS
from tests.bad_inputs.user_files import UserFiles, assert_process_refuses, hidden_leftovers
from tools.tiny_sam2 import main, write_tiny_sam2
from utils.errors import UsageError


def test_the_published_layout(tmp_path):
    directory = write_tiny_sam2(tmp_path / "sam2", seed=3)
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "sam2_video"
    assert config["architectures"] == ["Sam2VideoModel"]
    weights = load_file(directory / "model.safetensors")
    assert any(name.startswith("memory_attention.") for name in weights)  # the whole video model
    processor = json.loads((directory / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 64}
    assert processor["image_mean"] == [0.485, 0.456, 0.406]
    assert processor["image_std"] == [0.229, 0.224, 0.225]
    assert hidden_leftovers(tmp_path) == []
    again = write_tiny_sam2(tmp_path / "again", seed=3)
    repeated = load_file(again / "model.safetensors")
    assert all(torch.equal(tensor, repeated[name]) for name, tensor in weights.items())


def test_an_image_model_at_another_size(tmp_path):
    directory = write_tiny_sam2(tmp_path / "sam2", image_size=128, video=False)
    assert json.loads((directory / "config.json").read_text())["model_type"] == "sam2"
    model = load_segmenter(directory)
    assert SAM2_OPS.input_size(model) == 128
    image = torch.randint(0, 256, (1, 3, 90, 70), dtype=torch.uint8)
    with torch.no_grad():
        embedding = SAM2_OPS.encode(model, image, (90, 70), (0, 0))
        masks = SAM2_OPS.decode(model, embedding, torch.randn(2, 32), (0, 0), (90, 70))
    assert embedding.image_embedding.shape == (1, 32, 8, 8) and masks.shape == (2, 90, 70)


def test_a_folder_of_the_users_is_never_written(tmp_path):
    user = UserFiles()
    user.add(tmp_path / "mine" / "notes.txt")
    with pytest.raises(UsageError, match="--output_dir .* is not an empty folder"):
        write_tiny_sam2(tmp_path / "mine")
    user.assert_untouched()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert (write_tiny_sam2(tmp_path / "empty") / "model.safetensors").is_file()


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    real_write_text = Path.write_text

    def disk_full(path, *args, **kwargs):
        if path.name == "preprocessor_config.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_tiny_sam2(tmp_path / "sam2")
    assert list(tmp_path.iterdir()) == []


def test_the_command_line(tmp_path, capsys):
    main(["--output_dir", str(tmp_path / "sam2"), "--no-video", "--seed", "1"])
    assert capsys.readouterr().out.strip() == f"--vision_pretrained={tmp_path / 'sam2'}"
    assert json.loads((tmp_path / "sam2" / "config.json").read_text())["model_type"] == "sam2"
    assert_process_refuses(
        ["-m", "tools.tiny_sam2", "--output_dir", str(tmp_path / "sam2")],
        "tiny_sam2.py: error:",
        "--output_dir",
        "not an empty folder",
    )
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path / "odd"), "--image_size", "100"])
    assert "--image_size 100" in capsys.readouterr().err
    assert not (tmp_path / "odd").exists()

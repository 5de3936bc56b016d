import json

import pytest

from utils.deepspeed_config import build_deepspeed_config, load_deepspeed_config
from utils.errors import UsageError


def test_original_optimisation_settings():
    config = build_deepspeed_config(
        micro_batch_size=2,
        grad_accumulation_steps=10,
        lr=3e-4,
        betas=(0.9, 0.95),
        total_steps=5000,
        precision="bf16",
    )
    assert config["optimizer"] == {
        "type": "AdamW",
        "params": {"lr": 3e-4, "weight_decay": 0.0, "betas": [0.9, 0.95]},
    }
    scheduler = config["scheduler"]
    assert scheduler["type"] == "WarmupDecayLR"
    assert (
        scheduler["params"]["warmup_num_steps"] == 100
        and scheduler["params"]["total_num_steps"] == 5000
    )
    assert config["gradient_clipping"] == 1.0 and config["zero_optimization"]["stage"] == 2
    assert config["bf16"]["enabled"] and not config["fp16"]["enabled"]


def test_zero3_and_client_optimizer():
    config = build_deepspeed_config(
        micro_batch_size=1,
        grad_accumulation_steps=1,
        lr=1e-3,
        betas=(0.9, 0.95),
        total_steps=20,
        precision="fp32",
        zero_stage=3,
        with_optimizer=False,
    )
    assert "optimizer" not in config and config["zero_optimization"]["stage"] == 3
    assert config["scheduler"]["params"]["warmup_num_steps"] < 20  # a short run still gets to decay


def test_user_config_errors_are_one_sentence(tmp_path):
    with pytest.raises(UsageError, match="--deepspeed_config: .* is not a file"):
        load_deepspeed_config(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid json"):
        load_deepspeed_config(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 1}))
    assert load_deepspeed_config(tmp_path / "ok.json") == {"train_micro_batch_size_per_gpu": 1}

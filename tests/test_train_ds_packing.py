"""Two processes under ZeRO-3 with packed conversations train the weights the unpacked rows train
(the real `deepspeed` launcher on CPU, tiny base, toy data, fp32)."""

import pytest

from tests.test_train_ds import common_args, final_weights, launcher, run, workspace  # noqa: F401

pytestmark = pytest.mark.slow


def test_packed_and_unpacked_zero3_runs_train_the_same_weights(workspace):  # noqa: F811
    weights = {}
    for flag in ("--pack_conversations", "--no-pack_conversations"):
        name = "zero3" + flag.replace("-", "_")
        output = run(
            launcher("--num_gpus", "2")
            + common_args(workspace, name)
            + ["--epochs", "1", "--steps_per_epoch", "3", "--zero_stage", "3", "--no_eval"]
            + ["--precision", "fp32", "--lora_dropout", "0", flag]
        )
        assert "on 2 process(es)" in output
        weights[flag] = final_weights(workspace[0] / "runs" / name)
    packed, unpacked = weights.values()
    assert packed.keys() == unpacked.keys()
    for name, tensor in unpacked.items():
        difference = (packed[name] - tensor).abs().max().item()
        assert difference <= 1e-5 * max(1.0, tensor.abs().max().item()), (name, difference)

"""Two processes under ZeRO-2 and under ZeRO-3 with packed conversations train the weights the
unpacked rows train (the real `deepspeed` launcher on CPU, tiny base, toy data, fp32, the
default LoRA recipe with gradient checkpointing). Both tests share the module's toy data and
base (the `workspace` fixture)."""

import pytest

from tests.test_train_ds import common_args, final_weights, launcher, run, workspace  # noqa: F401

pytestmark = pytest.mark.slow


def trained_weights(workspace, stage: int, flag: str) -> dict:  # noqa: F811
    """The consolidated weights after 3 steps of a 2-process run at ZeRO ``stage``."""
    name = f"zero{stage}" + flag.replace("-", "_")
    output = run(
        launcher("--num_gpus", "2")
        + common_args(workspace, name)
        + ["--epochs", "1", "--steps_per_epoch", "3", "--zero_stage", str(stage), "--no_eval"]
        + ["--precision", "fp32", "--lora_dropout", "0", flag]
    )
    assert "on 2 process(es)" in output
    return final_weights(workspace[0] / "runs" / name)


def assert_same_weights(packed: dict, unpacked: dict) -> None:
    assert packed.keys() == unpacked.keys()
    for name, tensor in unpacked.items():
        difference = (packed[name] - tensor).abs().max().item()
        assert difference <= 1e-5 * max(1.0, tensor.abs().max().item()), (name, difference)


@pytest.mark.parametrize("stage", [2, 3])
def test_packed_and_unpacked_runs_train_the_same_weights(workspace, stage):  # noqa: F811
    packed = trained_weights(workspace, stage, "--pack_conversations")
    unpacked = trained_weights(workspace, stage, "--no-pack_conversations")
    assert_same_weights(packed, unpacked)

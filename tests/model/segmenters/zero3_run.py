"""SAM 2 as LISA runs it under a ZeRO-3 DeepSpeed engine, in one process of its own (the test
runs this module as a process, so that no process group outlives it):

    python -m tests.model.segmenters.zero3_run SAM2_DIR

The segmenter is built partitioned (``deepspeed.zero.Init``, as ``from_pretrained`` does under
ZeRO-3) from ``segmenter_config``, filled with the directory's weights, and called inside the
engine's forward: frozen encoder, trained decoder, with prompts and with none. Prints one line
per step: the number of masks, whether they equal the unpartitioned module's, and the largest
change of the decoder's weights.
"""

from __future__ import annotations

import os
import sys

import deepspeed
import torch
from torch import nn

from model.segmenters import segmenter_ops
from model.segmenters.load import build_segmenter, load_segmenter, segmenter_config
from utils.distributed import free_port

SIZE = (40, 50)
DS_CONFIG = {
    "train_micro_batch_size_per_gpu": 1,
    "zero_allow_untested_optimizer": True,
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
}


class Segment(nn.Module):
    """What LISA's forward does with its segmenter: encode without gradients, then decode."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        ops = segmenter_ops(self.segmenter)
        with torch.no_grad():
            embedding = ops.encode(self.segmenter, images, SIZE, (0, 0))
        return ops.decode(self.segmenter, embedding, prompts, (0, 0), SIZE)


def main(directory: str) -> None:
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    deepspeed.init_distributed("gloo")
    reference = load_segmenter(directory)
    with deepspeed.zero.Init(config_dict_or_path=DS_CONFIG):
        partitioned = build_segmenter("sam2", segmenter_config(reference))
    with deepspeed.zero.GatheredParameters(list(partitioned.parameters()), modifier_rank=0):
        partitioned.load_state_dict(reference.state_dict())
    partitioned.requires_grad_(False)
    partitioned.mask_decoder.requires_grad_(True)
    model = Segment(partitioned)
    trained = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.SGD(trained, lr=1.0), config=DS_CONFIG
    )
    images = torch.randint(0, 256, (1, 3, 45, 60), dtype=torch.uint8)
    prompts = torch.randn(2, 32)
    for count in (2, 0):
        masks = engine(images, prompts[:count])
        with torch.no_grad():
            expected = Segment(reference)(images, prompts[:count])
        equal = masks.shape == expected.shape and torch.allclose(masks, expected, atol=1e-9)
        engine.backward(masks.sigmoid().sum())
        engine.step()
        with deepspeed.zero.GatheredParameters(list(partitioned.mask_decoder.parameters())):
            after = partitioned.mask_decoder.state_dict()
            change = max(
                (after[name] - tensor).abs().max().item()
                for name, tensor in reference.mask_decoder.state_dict().items()
            )
        print(f"masks {masks.shape[0]} equal {equal} decoder change {change:.3g}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

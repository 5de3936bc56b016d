#!/usr/bin/env python
"""Consolidate a DeepSpeed ZeRO checkpoint into one fp32 state dict file.

Copied into every checkpoint folder as ``zero_to_fp32.py``, replacing DeepSpeed's own script so
that the original command line keeps working:

    cd runs/EXP/ckpt_model && python zero_to_fp32.py . ../pytorch_model.bin

OUTPUT may be a file path (written as a torch state dict) or an existing directory (then
OUTPUT/pytorch_model.bin is written, as DeepSpeed's newer script does). The file is written under
a temporary name and renamed, so an interrupted run never leaves a truncated file behind.

The checkpoint files are read with restricted unpickling (tensors, plain data and the few DeepSpeed
classes its training state holds), so a crafted file cannot run code. DeepSpeed's reader asks for
full unpickling; torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD switch overrides it. (This file runs on its
own inside a checkpoint folder, so it does not import the project.)
"""

import argparse
import os
import pickle
import sys
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint_dir", help="the folder holding 'latest' and global_step*/")
    parser.add_argument("output", help="output file (e.g. ../pytorch_model.bin) or directory")
    parser.add_argument(
        "-t", "--tag", default=None, help="checkpoint tag (default: the one in 'latest')"
    )
    parser.add_argument("--exclude_frozen_parameters", action="store_true")
    args = parser.parse_args()

    if not os.path.isdir(args.checkpoint_dir):
        print(f"zero_to_fp32.py: {args.checkpoint_dir} is not a directory", file=sys.stderr)
        return 1
    output = args.output
    if os.path.isdir(output):
        output = os.path.join(output, "pytorch_model.bin")
    try:
        state_dict = consolidate_weights_only(args)
    except pickle.UnpicklingError:
        print(f"zero_to_fp32.py: {refused_file(Path(args.checkpoint_dir))}", file=sys.stderr)
        return 1
    state_dict = {name: tensor.contiguous() for name, tensor in state_dict.items()}
    partial = output + ".partial"
    torch.save(state_dict, partial)
    os.replace(partial, output)
    print(f"saved {len(state_dict)} fp32 tensors to {output}")
    return 0


def deepspeed_state_types() -> list:
    """The DeepSpeed classes in its checkpoints besides tensors and plain data (the list of
    utils/deepspeed_safe_loading.py, which says why each is there)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def consolidate_weights_only(args: argparse.Namespace) -> dict:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(deepspeed_state_types()):
            return get_fp32_state_dict_from_zero_checkpoint(
                args.checkpoint_dir,
                tag=args.tag,
                exclude_frozen_parameters=args.exclude_frozen_parameters,
            )
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def refused_file(folder: Path) -> str:
    """One sentence naming the first file whose pickled record names a global that is not
    allowed (found by a scan; nothing is unpickled)."""
    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in deepspeed_state_types()}
    for path in sorted(folder.rglob("*.pt")):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # a legacy-format file cannot be scanned
            names = ["objects other than tensors"]
        refused = [name for name in names if name not in allowed]
        if refused:
            return (
                f"{path} is not loaded: it refers to {refused[0]}, and unpickling it could run "
                "code (a checkpoint of this project holds only tensors and training state)"
            )
    return f"{folder} holds a file with objects other than tensors; it is not loaded"


if __name__ == "__main__":
    sys.exit(main())

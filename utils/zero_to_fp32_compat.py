#!/usr/bin/env python
"""Consolidate a DeepSpeed ZeRO checkpoint into one fp32 state dict file.

Copied into every checkpoint folder as ``zero_to_fp32.py``, replacing DeepSpeed's own script so
that the original command line keeps working:

    cd runs/EXP/ckpt_model && python zero_to_fp32.py . ../pytorch_model.bin

OUTPUT may be a file path (written as a torch state dict) or an existing directory (then
OUTPUT/pytorch_model.bin is written, as DeepSpeed's newer script does). The file is written under
a temporary name and renamed, so an interrupted run never leaves a truncated file behind.
"""

import argparse
import os
import sys

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

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if not os.path.isdir(args.checkpoint_dir):
        print(f"zero_to_fp32.py: {args.checkpoint_dir} is not a directory", file=sys.stderr)
        return 1
    output = args.output
    if os.path.isdir(output):
        output = os.path.join(output, "pytorch_model.bin")
    state_dict = get_fp32_state_dict_from_zero_checkpoint(
        args.checkpoint_dir, tag=args.tag, exclude_frozen_parameters=args.exclude_frozen_parameters
    )
    state_dict = {name: tensor.contiguous() for name, tensor in state_dict.items()}
    partial = output + ".partial"
    torch.save(state_dict, partial)
    os.replace(partial, output)
    print(f"saved {len(state_dict)} fp32 tensors to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

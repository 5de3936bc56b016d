"""One rank of a launch that joins the processes as train_ds.py does, for
tests/utils/test_distributed.py:

    deepspeed --num_gpus 2 --master_addr 127.0.0.1 --master_port P tests/utils/shared_memory_run.py

Prints one line per rank: whether DeepSpeed's shared-memory buffer of this rank is still named in
/dev/shm after joining, and the sums of a process-group all-reduce and of DeepSpeed's
shared-memory all-reduce of (rank + 1).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import deepspeed.comm  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from utils.distributed import init_distributed, shared_memory_buffer  # noqa: E402

info = init_distributed()
named = shared_memory_buffer(info.rank).exists()
group_sum = torch.full((4,), float(info.rank + 1))
dist.all_reduce(group_sum)
shared_sum = torch.full((4,), float(info.rank + 1))
deepspeed.comm.inference_all_reduce(shared_sum)
print(
    f"rank {info.rank}: named {named} group {group_sum.tolist()} shared {shared_sum.tolist()}",
    flush=True,
)
dist.barrier()

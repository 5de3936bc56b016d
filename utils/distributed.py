"""The distributed runtime: one process or many, CPU (gloo) or GPU (NCCL), via DeepSpeed.

World size and ranks come from the runtime (the launcher's environment), never from the number
of visible GPUs. A script started with plain ``python`` runs as a world of one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from utils.devices import resolve_device


@dataclass(frozen=True)
class DistributedInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init_distributed(local_rank: int = 0) -> DistributedInfo:
    """Join (or, without a launcher, create) the process group; pick this rank's device.

    ``local_rank`` (train_ds.py --local_rank) is the device index of a world of one started
    without a launcher; under a launcher its LOCAL_RANK environment variable decides.
    """
    import deepspeed  # imported here: it probes the hardware on import

    if "RANK" not in os.environ:  # plain `python train_ds.py`: a world of one
        os.environ.update(
            RANK="0", LOCAL_RANK=str(local_rank), WORLD_SIZE="1", MASTER_ADDR="127.0.0.1"
        )
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(None, local_rank=local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
        if device.type == "cpu":
            release_shared_memory_names()
    return DistributedInfo(dist.get_rank(), local_rank, dist.get_world_size(), device)


SHARED_MEMORY_DIR = Path("/dev/shm")


def shared_memory_buffer(rank: int) -> Path:
    """The file of the all-reduce buffer DeepSpeed's CPU communication op makes for ``rank``
    of this run (its name: uid, master address and port, rank)."""
    address = os.environ.get("MASTER_ADDR", "")
    port = os.environ.get("MASTER_PORT", "")
    return SHARED_MEMORY_DIR / f"deepspeed_allreduce_buffer_{os.getuid()}_{address}_{port}_{rank}"


def release_shared_memory_names() -> None:
    """Unlink this rank's shared-memory all-reduce buffer once every rank has mapped it.

    DeepSpeed's CPU op makes one 69 MB buffer per rank when all ranks share a machine (the
    launcher's LOCAL_SIZE equals the world size) and never unlinks it: each run would leave its
    buffers in /dev/shm, in memory, until the machine restarts. The mappings outlive the name,
    so the run goes on unchanged and the memory returns when its processes end, however they end.
    """
    world_size = dist.get_world_size()
    if os.environ.get("LOCAL_SIZE") != str(world_size):
        return  # no buffer was made
    dist.barrier()  # every rank has opened every other rank's buffer during its initialisation
    shared_memory_buffer(dist.get_rank()).unlink(missing_ok=True)


def launcher_rank() -> int:
    """This process's rank as the launcher's environment gives it (0 without a launcher), for
    what happens before the process group is joined."""
    return int(os.environ.get("RANK", "0"))


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returned, not in place); a no-op in a world of one."""
    values = values.clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values

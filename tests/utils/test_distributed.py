"""utils.distributed under the real deepspeed launcher on CPU: the shared-memory buffers of
DeepSpeed's CPU all-reduce leave no file in /dev/shm, and communication works without them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from utils.distributed import SHARED_MEMORY_DIR, free_port

REPO = Path(__file__).resolve().parents[2]
DEEPSPEED = str(Path(sys.executable).with_name("deepspeed"))


@pytest.mark.skipif(not SHARED_MEMORY_DIR.is_dir(), reason="no /dev/shm on this system")
def test_a_launch_leaves_no_shared_memory_behind():
    port = free_port()
    run = subprocess.run(
        [DEEPSPEED, "--num_gpus", "2", "--master_addr", "127.0.0.1", "--master_port", str(port)]
        + [str(REPO / "tests/utils/shared_memory_run.py")],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # (the launcher relays both ranks' output into one stream, not always a line each)
    reports = sorted(re.findall(r"rank \d: named \w+ group \[[^]]*\] shared \[[^]]*\]", run.stdout))
    sums = "group [3.0, 3.0, 3.0, 3.0] shared [3.0, 3.0, 3.0, 3.0]"
    assert reports == [f"rank 0: named False {sums}", f"rank 1: named False {sums}"], run.stdout
    left = [path.name for path in SHARED_MEMORY_DIR.glob(f"deepspeed_*_127.0.0.1_{port}_*")]
    assert left == []

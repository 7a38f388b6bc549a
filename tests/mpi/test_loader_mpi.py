"""The loader under `mpirun -n 2`: ranks take disjoint shares of the same global order."""

import json
import subprocess
import sys

import pytest

from conftest import BIN, REPO, cli_env
from pipeline.data.loader import ShardedLoader

pytestmark = pytest.mark.mpi


def test_two_ranks_split_the_global_batches(tiny_data):
    cmd = [str(BIN / "mpirun"), "-n", "2", sys.executable, str(REPO / "tests/mpi/loader_shares.py"),
           str(tiny_data / "train"), "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120, check=True)
    rank0, rank1 = json.loads(proc.stdout)
    assert len(rank0) == len(rank1) == 192 // 16
    assert not set(sum(rank0, [])) & set(sum(rank1, []))
    serial = [b["index"].tolist() for b in ShardedLoader(tiny_data / "train", batch_size=16, seed=11,
                                                          augment=True)]
    assert serial == [a + b for a, b in zip(rank0, rank1)]

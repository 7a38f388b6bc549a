"""`cosmogan generate` under `mpirun -n 2`: the same dataset, byte for byte, as one rank."""

import pytest

from conftest import CONFIGS, run_cli
from test_make_data_mpi import dataset_fingerprint

pytestmark = pytest.mark.mpi


def test_two_ranks_generate_the_same_bytes_as_one(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_cli("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
            "--set", "train.steps=8", check=True)
    one, two = tmp_path / "one", tmp_path / "two"
    # 70 maps: shards of 32 (the tiny config), the last one partial; batches of 16 within them
    run_cli("generate", "--run", run, "--n", 70, "--out", one, "--quiet", check=True)
    proc = run_cli("generate", "--run", run, "--n", 70, "--out", two, "--quiet", ranks=2, check=True)
    assert proc.stdout.count("70 generated maps") == 1
    fp = dataset_fingerprint(one)
    assert len(fp) == 4 and dataset_fingerprint(two) == fp
    # a different seed gives different maps
    other = tmp_path / "other"
    run_cli("generate", "--run", run, "--n", 70, "--out", other, "--quiet", "--set", "generate.seed=1", check=True)
    assert dataset_fingerprint(other)["shard-00000.h5"] != fp["shard-00000.h5"]

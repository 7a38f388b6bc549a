"""`cosmogan stats` under `mpirun -n 2`: the same table as one rank; resumable after a kill."""

import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import BIN, CONFIGS, REPO, cli_env, kill_launch, run_cli
from pipeline.stats import all_statistics
from pipeline.data.loader import MapDataset

pytestmark = pytest.mark.mpi


def table_contents(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, {k: np.asarray(v).tolist() for k, v in f.attrs.items()}


def assert_same_table(a, b):
    (da, aa), (db, ab) = table_contents(a), table_contents(b)
    assert da.keys() == db.keys() and aa == ab
    for k in da:
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


@pytest.fixture(scope="module")
def serial_table(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "train.h5"
    run_cli("stats", tiny_data / "train", "--out", out, "--config", CONFIGS / "tiny.yaml", "--quiet", check=True)
    return out


def test_table_holds_every_map_in_index_order(serial_table, tiny_data):
    cols, attrs = table_contents(serial_table)
    np.testing.assert_array_equal(cols["index"], np.arange(192))
    assert cols["power_spectrum"].shape == (192, 8) and cols["minkowski"].shape == (192, 3, 34)
    # row 100 is the statistics of map 100, computed directly
    maps, params = MapDataset(tiny_data / "train").read([100])
    direct = all_statistics(maps, 1.75, cols["l_edges"], cols["thresholds"])
    for key in ("power_spectrum", "minkowski", "peaks", "pdf", "moments"):
        np.testing.assert_allclose(cols[key][100], direct[key][0], rtol=1e-12, atol=0, err_msg=key)
    np.testing.assert_array_equal(cols["params"][100], params[0])
    # thresholds span -2..3 in units of the pooled pixel sigma of the dataset
    sigma = MapDataset(tiny_data / "train").read(np.arange(192))[0].astype(np.float64).std()
    np.testing.assert_allclose(cols["thresholds"][[0, -1]], [-2 * sigma, 3 * sigma], rtol=1e-6)


def test_two_ranks_give_the_same_table(serial_table, tiny_data, tmp_path):
    out = tmp_path / "train.h5"
    run_cli("stats", tiny_data / "train", "--out", out, "--config", CONFIGS / "tiny.yaml", "--quiet",
            ranks=2, check=True)
    assert_same_table(out, serial_table)
    assert not out.with_name("train.h5.parts").exists()


def test_killed_stats_resume_computes_only_missing_chunks(tmp_path):
    data = tmp_path / "data"
    run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", data, "--quiet",
            "--set", "data.n_train=12000", "--set", "data.shard_size=2000", check=True)
    settings = ["--config", CONFIGS / "tiny.yaml", "--set", "stats.chunk_size=200", "--quiet"]
    ref = tmp_path / "ref.h5"
    run_cli("stats", data / "train", "--out", ref, *settings, check=True)

    out = tmp_path / "killed.h5"
    parts = tmp_path / "killed.h5.parts"
    cmd = [str(BIN / "mpirun"), "-n", "2", sys.executable, "-m", "pipeline", "stats", str(data / "train"),
           "--out", str(out), *map(str, settings)]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(parts.glob("chunk-*.h5"))) < 8:
        assert proc.poll() is None, "stats finished before it could be killed; make the run longer"
        assert time.time() < deadline
        time.sleep(0.005)
    kill_launch(proc)
    assert not out.exists()
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk-*.h5")}
    assert 8 <= len(done) < 60

    proc = run_cli("stats", data / "train", "--out", out, *settings, ranks=2, check=True)
    assert f"reused {len(done)} of 60 chunks" in proc.stdout
    assert_same_table(out, ref)
    assert not parts.exists()

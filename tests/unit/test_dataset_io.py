"""Importing, reading and the manifest: round trips and invariants."""

import json

import h5py
import numpy as np
import pytest

from conftest import run_cli
from pipeline.data.format import Manifest, read_manifest
from pipeline.data.importers import import_maps, load_npy_maps
from pipeline.data.loader import MapDataset
from pipeline.data.verify import verify_dataset


@pytest.mark.parametrize("shape", [(13, 8, 8), (13, 1, 8, 8), (13, 8, 8, 1)])
def test_import_npy_round_trip(tmp_path, shape):
    maps = np.random.default_rng(1).normal(size=shape)  # float64 in, float32 stored
    np.save(tmp_path / "m.npy", maps)
    params = np.random.default_rng(2).uniform(size=(13, 2)).astype(np.float32)
    np.save(tmp_path / "p.npy", params)
    proc = run_cli("import-npy", tmp_path / "m.npy", "--out", tmp_path / "ds", "--side-angle-deg", 3.5,
                   "--shard-size", 5, "--params", tmp_path / "p.npy", "--param-names", "Omega_m,sigma_8",
                   "--quiet", check=True)
    assert "13 maps 8x8, 3 shards" in proc.stdout
    m = verify_dataset(tmp_path / "ds")
    assert (m.n_maps, m.map_shape, m.side_angle_deg) == (13, (8, 8), 3.5)
    assert [s.n_maps for s in m.shards] == [5, 5, 3]
    got, got_params = MapDataset(tmp_path / "ds").read(np.arange(13))
    np.testing.assert_array_equal(got, maps.reshape(13, 8, 8).astype(np.float32))
    np.testing.assert_array_equal(got_params, params)


def test_import_rerun_after_it_finished_writes_nothing(tmp_path):
    """The same import run again (say, after a kill that came once it had finished) is a
    no-op; an import with other settings into the same directory is refused."""
    np.save(tmp_path / "m.npy", np.random.default_rng(3).normal(size=(7, 8, 8)).astype(np.float32))
    args = ["import-npy", tmp_path / "m.npy", "--out", tmp_path / "ds", "--side-angle-deg", 2, "--quiet"]
    run_cli(*args, "--shard-size", 3, check=True)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*")}
    proc = run_cli(*args, "--shard-size", 3, check=True)
    assert "7 maps 8x8, 3 shards" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*")} == before
    proc = run_cli(*args, "--shard-size", 4)
    assert proc.returncode != 0 and "already exists and is not empty" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*")} == before


def test_import_streams_from_memory_map(tmp_path, monkeypatch):
    """The importer reads the source in blocks: never asks for the whole array at once."""
    np.save(tmp_path / "m.npy", np.ones((300, 4, 4), np.float32))
    src = load_npy_maps(tmp_path / "m.npy")
    assert isinstance(src, np.memmap)
    requested = []

    class Spy:
        shape, dtype, ndim = src.shape, src.dtype, 3

        def __getitem__(self, s):
            requested.append(s.stop - s.start)
            return src[s]

    import_maps(Spy(), tmp_path / "ds", 1.0, tmp_path / "m.npy", shard_size=128, progress=False)
    assert sum(requested) == 300 and max(requested) <= 64


def test_import_h5(tmp_path):
    maps = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["kappa"] = maps
    run_cli("import-h5", tmp_path / "in.h5", "--key", "kappa", "--out", tmp_path / "ds",
            "--side-angle-deg", 1, "--quiet", check=True)
    m = verify_dataset(tmp_path / "ds")
    assert m.provenance["source_key"] == "kappa"
    np.testing.assert_array_equal(MapDataset(tmp_path / "ds").read([1, 0])[0], maps[[1, 0], 0])


def test_manifest_json_round_trip(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((3, 4, 4), np.float32))
    run_cli("import-npy", tmp_path / "m.npy", "--out", tmp_path / "ds", "--side-angle-deg", 2,
            "--quiet", check=True)
    m = read_manifest(tmp_path / "ds")
    again = Manifest.from_dict(json.loads(m.to_json()), "x")
    assert again == m and again.digest() == m.digest()


def test_shard_layout_matches_the_contract(tiny_data):
    """maps float32 chunked one map per chunk, params, index, physical attrs."""
    m = read_manifest(tiny_data / "train")
    with h5py.File(tiny_data / "train" / m.shards[1].path) as f:
        assert f["maps"].dtype == np.float32 and f["maps"].chunks == (1, 32, 32)
        assert f["params"].shape == (64, 2)
        np.testing.assert_array_equal(f["index"][:], np.arange(64, 128))
        assert f.attrs["side_angle_deg"] == 1.75
        assert json.loads(f.attrs["param_names"]) == ["Omega_m", "sigma_8"]


def test_splits_are_disjoint_and_params_follow_the_grid(tiny_data):
    firsts = [MapDataset(tiny_data / s).read([0])[0][0] for s in ("train", "validation", "test")]
    assert not np.array_equal(firsts[0], firsts[1]) and not np.array_equal(firsts[1], firsts[2])
    _, params = MapDataset(tiny_data / "train").read(np.arange(4))
    np.testing.assert_allclose(params, [[0.25, 0.8], [0.35, 0.8], [0.25, 0.8], [0.35, 0.8]], rtol=1e-6)


def test_make_data_rerun_is_idempotent(tiny_data):
    before = {p: p.stat().st_mtime_ns for p in tiny_data.rglob("*")}
    from conftest import CONFIGS
    proc = run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", tiny_data, "--quiet", check=True)
    assert "192 maps 32x32" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in tiny_data.rglob("*")} == before

"""Every bad input gets one clear line naming the file (and index or key), a non-zero exit,
no traceback, and nothing half-written.

Most cases run the CLI in-process (run_main) for speed; a few go through a real
`python -m pipeline` process (run_cli) to cover the exit status and stderr end to end."""

import json

import h5py
import numpy as np
import pytest

from conftest import CONFIGS, assert_one_line_error, rewrite_checksum, run_cli, run_main


@pytest.fixture
def dataset(tmp_path):
    """A valid 3-shard dataset of 10 random 8x8 maps, imported from .npy."""
    src = tmp_path / "maps.npy"
    np.save(src, np.random.default_rng(0).normal(size=(10, 8, 8)).astype(np.float32))
    out = tmp_path / "ds"
    run_main("import-npy", src, "--out", out, "--side-angle-deg", 1.0, "--shard-size", 4, "--quiet",
            check=True)
    assert run_main("verify-data", out).returncode == 0
    return out


def rewrite_shard(dataset, name, mutate, fix_checksum=True):
    """Apply mutate(h5py.File) to a shard and, by default, record its new sha256 in the
    manifest, so that verify-data gets past the checksum to the check under test."""
    with h5py.File(dataset / name, "r+") as f:
        mutate(f)
    if fix_checksum:
        rewrite_checksum(dataset, name)


def replace_maps(data):
    def mutate(f):
        attrs = dict(f["maps"].attrs)
        del f["maps"]
        f.create_dataset("maps", data=data)
        f["maps"].attrs.update(attrs)
    return mutate


def test_truncated_shard(dataset):
    path = dataset / "shard-00001.h5"
    path.write_bytes(path.read_bytes()[:1000])
    assert_one_line_error(run_cli("verify-data", dataset), "shard-00001.h5", "sha256")
    rewrite_checksum(dataset, "shard-00001.h5")
    assert_one_line_error(run_main("verify-data", dataset), "shard-00001.h5", "not a readable HDF5")


def test_checksum_mismatch(dataset):
    rewrite_shard(dataset, "shard-00000.h5", lambda f: f["maps"].__setitem__((0, 0, 0), 1.0),
                  fix_checksum=False)
    assert_one_line_error(run_main("verify-data", dataset), "shard-00000.h5", "sha256 does not match")


def test_missing_maps_dataset(dataset):
    rewrite_shard(dataset, "shard-00002.h5", lambda f: f.__delitem__("maps"))
    assert_one_line_error(run_main("verify-data", dataset), "shard-00002.h5", "missing dataset 'maps'")


def test_wrong_dtype(dataset):
    rewrite_shard(dataset, "shard-00000.h5", replace_maps(np.zeros((4, 8, 8), np.float64)))
    assert_one_line_error(run_main("verify-data", dataset), "shard-00000.h5", "dtype float64")


def test_wrong_rank(dataset):
    rewrite_shard(dataset, "shard-00000.h5", replace_maps(np.zeros((4, 64), np.float32)))
    assert_one_line_error(run_main("verify-data", dataset), "shard-00000.h5", "rank 2")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_map(dataset, bad):
    rewrite_shard(dataset, "shard-00001.h5", lambda f: f["maps"].__setitem__((2, 3, 3), bad))
    # shard 1 starts at global index 4, so its maps[2] is map 6
    assert_one_line_error(run_main("verify-data", dataset), "shard-00001.h5", "map 6", "NaN or Inf")


def test_empty_shard(dataset):
    rewrite_shard(dataset, "shard-00002.h5", replace_maps(np.zeros((0, 8, 8), np.float32)))
    assert_one_line_error(run_main("verify-data", dataset), "shard-00002.h5", "empty")


def test_manifest_names_missing_file(dataset):
    (dataset / "shard-00001.h5").unlink()
    assert_one_line_error(run_main("verify-data", dataset), "shard-00001.h5", "missing")


def test_mixed_map_shapes(dataset):
    rewrite_shard(dataset, "shard-00001.h5", replace_maps(np.zeros((4, 16, 16), np.float32)))
    assert_one_line_error(run_main("verify-data", dataset), "shard-00001.h5", "16x16", "8x8")


def test_loader_refuses_bad_shard_without_checksums(dataset):
    """The loader checks layout (not checksums) when it opens a dataset."""
    from pipeline.data.loader import MapDataset
    from pipeline.errors import DataError

    rewrite_shard(dataset, "shard-00001.h5", replace_maps(np.zeros((4, 16, 16), np.float32)),
                  fix_checksum=False)
    with pytest.raises(DataError, match="shard-00001.h5: maps are 16x16"):
        MapDataset(dataset)


def test_manifest_not_json(dataset):
    (dataset / "manifest.json").write_text("{not json")
    assert_one_line_error(run_main("verify-data", dataset), "manifest.json", "JSON")


def test_manifest_future_version(dataset):
    m = json.loads((dataset / "manifest.json").read_text())
    m["format_version"] = 99
    (dataset / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(run_main("verify-data", dataset), "manifest.json", "format_version 99")


def test_not_a_dataset(tmp_path):
    assert_one_line_error(run_main("verify-data", tmp_path), str(tmp_path), "no manifest.json")


def test_out_dir_holds_other_dataset(tmp_path):
    out = tmp_path / "data"
    args = ["make-data", "--config", CONFIGS / "tiny.yaml", "--out", out, "--quiet",
            "--set", "data.n_train=16", "--set", "data.n_validation=16", "--set", "data.n_test=16"]
    run_main(*args, check=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    proc = run_main(*args, "--set", "data.seed=8")
    assert_one_line_error(proc, str(out / "train"), "different dataset")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_import_into_nonempty_dir(dataset, tmp_path):
    src = tmp_path / "more.npy"
    np.save(src, np.zeros((2, 8, 8), np.float32))
    assert_one_line_error(run_main("import-npy", src, "--out", dataset, "--side-angle-deg", 1, "--quiet"),
                          str(dataset), "not empty")


@pytest.mark.parametrize("override, fragments", [
    ("physics.map_sise=32", ["unknown key 'physics.map_sise'"]),
    ("physics.map_size=big", ["physics.map_size", "expected an integer"]),
    ("physics.map_size=0", ["physics.map_size", "must be positive"]),
    ("physics.side_angle_deg=-1", ["physics.side_angle_deg", "must be positive"]),
    ("data.n_train=0", ["data.n_train", "must be positive"]),
    ("data.shard_size=-5", ["data.shard_size", "must be positive"]),
    ("physics.field=poisson", ["physics.field", "gaussian, lognormal"]),
    ("cosmology.design.grid.sigma_8=[]", ["cosmology.design.grid.sigma_8", "non-empty list"]),
])
def test_bad_config(tmp_path, override, fragments):
    out = tmp_path / "data"
    proc = run_main("make-data", "--config", CONFIGS / "tiny.yaml", "--out", out, "--set", override)
    assert_one_line_error(proc, "tiny.yaml", *fragments)
    assert not out.exists()


def test_unknown_key_in_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text((CONFIGS / "tiny.yaml").read_text() + "\ntraining: {steps: 3}\n")
    assert_one_line_error(run_cli("make-data", "--config", cfg, "--out", tmp_path / "d"),
                          "c.yaml", "unknown key 'training'")


def test_import_nonfinite_leaves_nothing(tmp_path):
    src = tmp_path / "maps.npy"
    maps = np.zeros((300, 8, 8), np.float32)
    maps[290, 1, 1] = np.nan
    np.save(src, maps)
    out = tmp_path / "ds"
    proc = run_main("import-npy", src, "--out", out, "--side-angle-deg", 1, "--shard-size", 100, "--quiet")
    assert_one_line_error(proc, "maps.npy", "map 290", "NaN")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npy"]


@pytest.mark.parametrize("shape, fragment", [((5, 8), "is not (n, H, W)"), ((0, 8, 8), "holds no maps"),
                                             ((3, 2, 8, 8), "is not (n, H, W)"),
                                             ((3, 8, 8, 3), "is not (n, H, W)")])
def test_import_bad_shape(tmp_path, shape, fragment):
    src = tmp_path / "maps.npy"
    np.save(src, np.zeros(shape, np.float32))
    proc = run_main("import-npy", src, "--out", tmp_path / "ds", "--side-angle-deg", 1, "--quiet")
    assert_one_line_error(proc, "maps.npy", fragment)
    assert not (tmp_path / "ds").exists()


def test_import_nonpositive_sizes(tmp_path):
    src = tmp_path / "maps.npy"
    np.save(src, np.zeros((3, 8, 8), np.float32))
    assert_one_line_error(run_main("import-npy", src, "--out", tmp_path / "a", "--side-angle-deg", 0),
                          "--side-angle-deg", "positive")
    assert_one_line_error(run_main("import-npy", src, "--out", tmp_path / "b", "--side-angle-deg", 1,
                                  "--shard-size", 0), "--shard-size", "positive")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_h5_missing_key(tmp_path):
    src = tmp_path / "maps.h5"
    with h5py.File(src, "w") as f:
        f["kappa"] = np.zeros((3, 8, 8), np.float32)
    assert_one_line_error(run_main("import-h5", src, "--out", tmp_path / "ds", "--side-angle-deg", 1),
                          "maps.h5", "no dataset 'maps'")
    assert not (tmp_path / "ds").exists()


def test_lognormal_shift_too_small_fails_before_any_write(tmp_path):
    out = tmp_path / "data"
    proc = run_main("make-data", "--config", CONFIGS / "tiny.yaml", "--out", out,
                    "--set", "physics.lognormal_shift=0.0001")
    assert_one_line_error(proc, "physics.lognormal_shift", "too small")
    assert not out.exists()

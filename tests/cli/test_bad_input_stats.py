"""Bad input to `stats` and `compare`: one line, non-zero exit, nothing written.

Run in-process (run_main) for speed; tests/cli/test_bad_input.py covers the same
error path through a real `python -m pipeline` process."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_main


def imported(tmp_path, name, n=8, size=16, angle=1.0, seed=0):
    src = tmp_path / f"{name}.npy"
    np.save(src, np.random.default_rng(seed).normal(size=(n, size, size)).astype(np.float32))
    run_main("import-npy", src, "--out", tmp_path / name, "--side-angle-deg", angle, "--quiet", check=True)
    return tmp_path / name


STATS = ["--set", "stats.n_ell=4", "--quiet"]


@pytest.fixture
def table_a(tmp_path):
    out = tmp_path / "a.h5"
    run_main("stats", imported(tmp_path, "a"), "--out", out, *STATS, check=True)
    return out


def test_compare_different_bins(tmp_path, table_a):
    b = tmp_path / "b.h5"
    run_main("stats", imported(tmp_path, "b", seed=1), "--out", b, "--set", "stats.n_ell=5", "--quiet", check=True)
    assert_one_line_error(run_main("compare", table_a, b, "--out", tmp_path / "cmp"), "b.h5", "ell bins differ")
    c = tmp_path / "c.h5"
    run_main("stats", imported(tmp_path, "c", seed=2), "--out", c, *STATS, check=True)  # its own sigma
    assert_one_line_error(run_main("compare", table_a, c, "--out", tmp_path / "cmp"), "c.h5", "thresholds differ")
    assert not (tmp_path / "cmp").exists()


def test_compare_different_geometry(tmp_path, table_a):
    b = tmp_path / "b.h5"
    run_main("stats", imported(tmp_path, "b", angle=2.0), "--out", b, *STATS, check=True)
    assert_one_line_error(run_main("compare", table_a, b, "--out", tmp_path / "cmp"),
                          "b.h5", "over 2.0 deg", "over 1.0 deg")


@pytest.mark.parametrize("size, angle", [(32, 1.0), (16, 2.0)])
def test_stats_like_other_geometry(tmp_path, table_a, size, angle):
    data = imported(tmp_path, "b", size=size, angle=angle)
    out = tmp_path / "b.h5"
    assert_one_line_error(run_main("stats", data, "--out", out, "--like", table_a, "--quiet"),
                          str(data), "a.h5")
    assert not out.exists() and not out.with_name("b.h5.parts").exists()


def test_stats_of_empty_dataset(tmp_path):
    data = imported(tmp_path, "a")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest.update(n_maps=0, shards=[])
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_main("stats", data, "--out", tmp_path / "s.h5"), str(data), "no maps")
    assert not (tmp_path / "s.h5").exists()


def test_stats_of_non_dataset(tmp_path):
    assert_one_line_error(run_main("stats", tmp_path, "--out", tmp_path / "s.h5"), "no manifest.json")


def test_stats_refuses_other_table_in_out(tmp_path, table_a):
    data = imported(tmp_path, "b", seed=3)
    before = table_a.read_bytes()
    assert_one_line_error(run_main("stats", data, "--out", table_a, *STATS), "a.h5", "other statistics")
    assert table_a.read_bytes() == before


def test_stats_out_dir_missing(tmp_path):
    data = imported(tmp_path, "a")
    assert_one_line_error(run_main("stats", data, "--out", tmp_path / "nope" / "s.h5", *STATS),
                          "nope", "does not exist")


def test_stats_bins_without_modes(tmp_path):
    data = imported(tmp_path, "a")
    assert_one_line_error(run_main("stats", data, "--out", tmp_path / "s.h5", "--set", "stats.n_ell=40"),
                          "holds no Fourier mode", "stats.n_ell")


def test_compare_non_table(tmp_path, table_a):
    bogus = tmp_path / "x.h5"
    bogus.write_bytes(b"not hdf5")
    assert_one_line_error(run_main("compare", table_a, bogus, "--out", tmp_path / "cmp"), "x.h5", "not a readable")
    assert_one_line_error(run_main("compare", table_a, tmp_path / "y.h5", "--out", tmp_path / "cmp"),
                          "y.h5", "no such stats table")


def test_compare_writes_summary(tmp_path, table_a):
    b = tmp_path / "b.h5"
    run_main("stats", imported(tmp_path, "b", seed=4), "--out", b, "--like", table_a, "--quiet", check=True)
    proc = run_main("compare", table_a, b, "--out", tmp_path / "cmp", check=True)
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert set(summary["statistics"]) == {"power_spectrum", "V0", "V1", "V2", "peaks", "pdf"}
    assert "power_spectrum" in proc.stdout and (tmp_path / "cmp" / "summary.md").is_file()

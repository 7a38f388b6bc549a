"""Bad input a user or a crash can hand a stage: one line naming what is wrong, a non-zero
exit, nothing half-written. Each row of CASES is one input; tests/cli holds the ones the
project refused before this suite (counted in docs/reliability.md).
"""

import json
import os
import socket

import h5py
import numpy as np
import pytest

from conftest import CONFIGS, LENIENT, assert_one_line_error, rewrite_checksum, run_main

TINY = CONFIGS / "tiny.yaml"


@pytest.fixture
def maps_npy(tmp_path):
    path = tmp_path / "maps.npy"
    np.save(path, np.random.default_rng(0).normal(0, 0.01, (20, 16, 16)).astype(np.float32))
    return path


def npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


def text(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    return path


def nan_dataset(tiny_data, tmp_path, value=np.nan):
    """A copy of the tiny test split with one NaN (or value) pixel in map 5 (checksum updated)."""
    import shutil

    ds = tmp_path / "nan"
    shutil.copytree(tiny_data / "test", ds)
    with h5py.File(ds / "shard-00000.h5", "r+") as f:
        f["maps"][5, 3, 3] = value
    rewrite_checksum(ds, "shard-00000.h5")
    return ds


# (id, arguments given tmp_path and the fixtures, fragments the one line must hold, what must not exist)
CASES = [
    ("config NaN", lambda t, f: ["make-data", "--config", TINY, "--out", t / "d", "--set", "train.lr_g=.nan"],
     ["train.lr_g", "finite"], ["d"]),
    ("config inf", lambda t, f: ["make-data", "--config", TINY, "--out", t / "d", "--set",
                                 "physics.side_angle_deg=.inf"], ["physics.side_angle_deg", "finite"], ["d"]),
    ("config -inf threshold", lambda t, f: ["stats", f["data"] / "test", "--out", t / "s.h5", "--config", TINY, "--set",
                                            "stats.threshold_min=-.inf"], ["stats.threshold_min", "finite"], ["s.h5"]),
    ("side angle inf", lambda t, f: ["import-npy", f["npy"], "--out", t / "d", "--side-angle-deg", "inf"],
     ["--side-angle-deg", "positive number"], ["d"]),
    ("side angle NaN", lambda t, f: ["import-npy", f["npy"], "--out", t / "d", "--side-angle-deg", "nan"],
     ["--side-angle-deg", "positive number"], ["d"]),
    ("params NaN", lambda t, f: ["import-npy", f["npy"], "--out", t / "d", "--side-angle-deg", 1,
                                 "--params", npy(t, "p.npy", np.where(np.arange(40).reshape(20, 2) == 7, np.nan, 0.3)),
                                 "--param-names", "Omega_m,sigma_8"], ["--params", "row 3", "NaN"], ["d"]),
    ("params inf", lambda t, f: ["import-npy", f["npy"], "--out", t / "d", "--side-angle-deg", 1,
                                 "--params", npy(t, "p.npy", np.full((20, 1), np.inf)), "--param-names", "sigma_8"],
     ["--params", "row 0"], ["d"]),
    ("empty import (n, 1, H, W)", lambda t, f: ["import-npy", npy(t, "e.npy", np.zeros((0, 1, 8, 8), np.float32)),
                                                "--out", t / "d", "--side-angle-deg", 1], ["holds no maps"], ["d"]),
    ("empty import (n, H, W, 1)", lambda t, f: ["import-npy", npy(t, "e.npy", np.zeros((0, 8, 8, 1), np.float32)),
                                                "--out", t / "d", "--side-angle-deg", 1], ["holds no maps"], ["d"]),
    ("NaN pixel in stats", lambda t, f: ["stats", nan_dataset(f["data"], t), "--out", t / "s.h5", "--config", TINY],
     ["map 5", "NaN"], ["s.h5", "s.h5.parts"]),
    ("Inf pixel in stats", lambda t, f: ["stats", nan_dataset(f["data"], t, np.inf), "--out", t / "s.h5",
                                         "--config", TINY], ["map 5", "Inf"], ["s.h5", "s.h5.parts"]),
    ("NaN pixel in stats --like", lambda t, f: ["stats", nan_dataset(f["data"], t), "--out", t / "s.h5",
                                                "--like", f["table"]], ["map 5", "NaN"], ["s.h5", "s.h5.parts"]),
    ("generate --set model", lambda t, f: ["generate", "--run", f["run"], "--n", 4, "--out", t / "g",
                                           "--set", "model.z_dim=4"], ["model", "fixed by the run"], ["g"]),
    ("make-data --out is a file", lambda t, f: ["make-data", "--config", TINY, "--out", f["file"]],
     ["not a directory"], []),
    ("import --out is a file", lambda t, f: ["import-npy", f["npy"], "--out", f["file"], "--side-angle-deg", 1],
     ["already exists"], []),
    ("stats --out is a directory", lambda t, f: ["stats", f["data"] / "test", "--out", t, "--config", TINY],
     ["already exists"], []),
    ("generate --out is a file", lambda t, f: ["generate", "--run", f["run"], "--n", 4, "--out", f["file"]],
     ["not a directory"], []),
    ("validate --out is a file", lambda t, f: ["validate", "--run", f["run"], "--reference", f["data"] / "test",
                                               "--n", 8, "--out", f["file"]], ["cannot write the report"], []),
    ("train --run is a file", lambda t, f: ["train", "--config", TINY, "--data", f["data"], "--run", f["file"]],
     ["not a directory"], []),
    ("map_size beyond memory", lambda t, f: ["make-data", "--config", TINY, "--out", t / "d",
                                             "--set", "physics.map_size=200000"], ["physics.map_size", "TiB"], ["d"]),
    ("config NaN in a design list", lambda t, f: ["make-data", "--config", TINY, "--out", t / "d", "--set",
                                                  "cosmology.design.grid.sigma_8=[.nan]"],
     ["cosmology.design.grid.sigma_8", "finite"], ["d"]),
    ("config inf range end", lambda t, f: ["make-data", "--config", TINY, "--out", t / "d", "--set",
                                           "cosmology.design={kind: latin_hypercube, n_points: 2, ranges: "
                                           "{Omega_m: [0.2, .inf], sigma_8: [0.7, 0.9]}}"],
     ["cosmology.design.ranges.Omega_m", "finite"], ["d"]),
    ("Omega_m above 1", lambda t, f: ["make-data", "--config", TINY, "--out", t / "d", "--set",
                                      "cosmology.design.grid.Omega_m=[2.0]"], ["Omega_m > 1"], ["d"]),
    ("empty config file", lambda t, f: ["make-data", "--config", text(t, "empty.yaml", ""), "--out", t / "d"],
     ["empty.yaml", "is empty"], ["d"]),
    ("repeated --param-names", lambda t, f: ["import-npy", f["npy"], "--out", t / "d", "--side-angle-deg", 1,
                                             "--params", npy(t, "p.npy", np.full((20, 3), 0.3)),
                                             "--param-names", "a,a,b"], ["--param-names", "a given more than once"],
     ["d"]),
    ("validate --n 1 over 2 bins", lambda t, f: ["validate", "--run", f["run"], "--reference", f["data"] / "test",
                                                 "--n", 1, "--out", t / "v"], ["--n 1", "at least 2"], ["v"]),
]


@pytest.fixture
def inputs(tiny_data, trained_tiny, tmp_path, maps_npy):
    file = tmp_path / "a-file"
    file.write_text("x")
    table = tmp_path / "test.h5"
    run_main("stats", tiny_data / "test", "--out", table, "--config", TINY, "--quiet", check=True)
    return {"data": tiny_data, "run": trained_tiny, "npy": maps_npy, "file": file, "table": table}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, inputs, tmp_path):
    _, args, fragments, absent = case
    proc = run_main(*args(tmp_path, inputs), "--quiet")
    assert_one_line_error(proc, *fragments)
    for name in absent:
        assert not (tmp_path / name).exists(), name
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".lock"))]


def test_validate_fail_has_its_own_exit_status(trained_tiny, tiny_data, tmp_path):
    """An 8-step run fails the criteria: exit 3 (a batch job can stop on it); lenient criteria pass: 0."""
    common = ("validate", "--run", trained_tiny, "--reference", tiny_data / "test", "--n", 16, "--quiet")
    proc = run_main(*common, "--out", tmp_path / "strict")
    assert proc.returncode == 3 and "validate: FAIL" in proc.stdout
    assert (tmp_path / "strict" / "index.html").is_file()  # the report is whole: it says why
    proc = run_main(*common, "--out", tmp_path / "lenient", *LENIENT)
    assert proc.returncode == 0 and "validate: PASS" in proc.stdout


def test_summaries_are_strict_json_with_reasons(tmp_path):
    """Figures undefined for small samples are null with a reason, never a bare NaN: chi^2 of
    8 ell bins over 5 maps (the Hartlap factor needs more maps than bins + 2)."""
    from conftest import lognormal_maps

    for name, seed in (("a", 0), ("b", 1)):
        run_main("import-npy", npy(tmp_path, f"{name}.npy", lognormal_maps(seed, 5)), "--out", tmp_path / name,
                 "--side-angle-deg", 1.75, "--quiet", check=True)
    run_main("stats", tmp_path / "a", "--out", tmp_path / "a.h5", "--quiet", "--set", "stats.n_ell=8", check=True)
    run_main("stats", tmp_path / "b", "--out", tmp_path / "b.h5", "--like", tmp_path / "a.h5", "--quiet", check=True)
    run_main("compare", tmp_path / "a.h5", tmp_path / "b.h5", "--out", tmp_path / "c", check=True)
    summary = json.loads((tmp_path / "c" / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    ps = summary["statistics"]["power_spectrum"]
    assert ps["chi2"] is None and ps["chi2_pvalue"] is None
    assert ps["notes"]["chi2"] == "needs more maps than bins + 2 (Hartlap factor): 5 maps, 8 bins that vary"


def test_one_map_tables_are_refused_by_compare(tmp_path):
    from conftest import lognormal_maps

    run_main("import-npy", npy(tmp_path, "one.npy", lognormal_maps(0, 1)), "--out", tmp_path / "one",
             "--side-angle-deg", 1.75, "--quiet", check=True)
    run_main("stats", tmp_path / "one", "--out", tmp_path / "one.h5", "--quiet", "--set", "stats.n_ell=8", "--set",
             "stats.threshold_units=kappa", "--set", "stats.threshold_min=-0.05", "--set", "stats.threshold_max=0.1",
             check=True)
    assert_one_line_error(run_main("compare", tmp_path / "one.h5", tmp_path / "one.h5", "--out", tmp_path / "c"),
                          "one.h5", "holds 1 map", "at least 2")
    assert not (tmp_path / "c").exists()


def test_a_second_trainer_is_refused_naming_the_holder(tiny_data, tmp_path):
    from pipeline.locking import lock_path

    run = tmp_path / "run"
    lock = lock_path(run)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": None,
                                "since": "2026-12-01 10:00:00", "command": "cosmogan train ..."}))
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet")
    assert_one_line_error(proc, str(run), "another train is writing here", f"pid {os.getpid()}")
    assert not run.exists() and lock.exists()


def test_a_stale_lock_is_taken_over_and_a_foreign_one_named(tiny_data, tmp_path):
    from pipeline.locking import lock_path

    out = tmp_path / "d"
    lock = lock_path(out)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "start": "1"}))  # no such pid
    run_main("make-data", "--config", TINY, "--out", out, "--quiet", check=True)
    assert not lock.exists() and (out / "test" / "manifest.json").exists()
    other = tmp_path / "e"
    lock_path(other).write_text(json.dumps({"host": "nid001234", "pid": 77, "since": "then", "command": "x"}))
    proc = run_main("make-data", "--config", TINY, "--out", other, "--quiet")
    assert_one_line_error(proc, "pid 77 on nid001234", f"remove {lock_path(other)}")


def test_a_torn_metrics_line_is_dropped_on_resume(tiny_data, tmp_path):
    run = tmp_path / "run"
    common = ("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet")
    run_main(*common, "--set", "train.steps=8", check=True)
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 9, "loss_d": 0.6')  # a crash mid-line
    proc = run_main(*common, "--set", "train.steps=12", check=True)
    assert "dropped 1 torn line" in proc.stdout
    steps = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines() if "loss_d" in ln]
    assert steps == [4, 8, 12]


def test_resume_on_another_dataset_is_refused_unless_asked_for(tiny_data, tmp_path):
    run = tmp_path / "run"
    other = tmp_path / "other"
    run_main("make-data", "--config", TINY, "--out", other, "--quiet", "--set", "data.seed=8", check=True)
    run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet", "--set", "train.steps=4",
             check=True)
    proc = run_main("train", "--config", TINY, "--data", other, "--run", run, "--quiet", "--set", "train.steps=8")
    assert_one_line_error(proc, "step-00000004.pt", "trained on another dataset", "--allow-data-change")
    run_main("train", "--config", TINY, "--data", other, "--run", run, "--quiet", "--set", "train.steps=8",
             "--allow-data-change", check=True)
    from conftest import last_checkpoint

    ckpt = last_checkpoint(run)
    assert ckpt.step == 8 and ckpt.parts["loader"]["epoch"] == 0  # the new data from its first epoch


def test_a_killed_import_of_another_source_starts_clean(maps_npy, tmp_path):
    """A hidden import directory left by a kill is resumed by the same import and cleared by another."""
    out = tmp_path / "ds"
    hidden = tmp_path / ".ds.import"
    hidden.mkdir()
    (hidden / "shard-00000.h5").write_bytes(b"not a shard")
    (hidden / ".shard-00001.h5.x.tmp").write_bytes(b"partial")
    run_main("import-npy", maps_npy, "--out", out, "--side-angle-deg", 1, "--shard-size", 8, "--quiet", check=True)
    assert not hidden.exists() and (out / "manifest.json").exists()
    run_main("verify-data", out, check=True)


def test_imported_datasets_are_readable_by_the_group(maps_npy, tmp_path):
    old = os.umask(0o022)
    try:
        run_main("import-npy", maps_npy, "--out", tmp_path / "ds", "--side-angle-deg", 1, "--quiet", check=True)
    finally:
        os.umask(old)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "ds").iterdir())

"""`cosmogan infer` end to end on the tiny conditional run: the posterior, summary and report;
1 and 2 ranks identical; a killed grid resumes to the same numbers; emcee on the same
likelihood; the physical-model baseline; every bad input one line with nothing written."""

import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, cli_env, run_cli, run_main
from test_conditional_mpi import cond_data, cond_run  # noqa: F401 (fixtures)

pytestmark = pytest.mark.mpi

HELD_OUT = "Omega_m=0.3,sigma_8=0.75"
# a small grid and few maps: seconds on 2 cores; d = 8 ell bins + 4 x 4 threshold bins = 24
SMALL = ("--grid", "6", "--n-sim", "16", "--n-cov", "64", "--set", "infer.n_thresholds=4", "--set", "infer.refine=3",
         "--quiet")


def infer_args(run, data, out, *extra):
    return ("infer", "--emulator", run, "--observed", data / "test", "--select", HELD_OUT, "--n-obs", "8",
            "--out", out, *SMALL, *extra)


def numbers(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
        return out


@pytest.fixture(scope="module")
def serial(cond_run, cond_data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("infer") / "serial"
    proc = run_cli(*infer_args(cond_run, cond_data, out), check=True)
    return out, proc


def test_infer_writes_the_posterior_summary_and_report(serial):
    out, proc = serial
    assert {p.name for p in out.iterdir()} >= {"simulations-emulator.h5", "posterior.h5", "summary.json",
                                                "contours.png", "index.html"}
    assert not list(out.glob("*.parts")) and not list(out.glob(".*.tmp"))
    s = json.loads((out / "summary.json").read_text())
    assert s["observed"]["n_obs"] == 8
    np.testing.assert_allclose(s["observed"]["truth"], [0.3, 0.75], rtol=1e-6)
    post = s["posteriors"]["emulator"]
    assert post["parameters"] == ["Omega_m", "sigma_8"] and post["sampler"] == "grid"
    for j, (lo, hi) in enumerate([(0.25 - 1e-6, 0.35 + 1e-6), (0.7 - 1e-6, 0.9 + 1e-6)]):  # the float32 support
        assert lo <= post["interval95"][j][0] <= post["interval68"][j][0] <= post["mean"][j]
        assert post["mean"][j] <= post["interval68"][j][1] <= post["interval95"][j][1] <= hi
        assert post["std"][j] > 0
    like = s["likelihood"]["emulator"]
    assert like["kind"] == "t" and like["covariance"] == "best-fit" and like["n_cov"] == 64
    assert len(like["covariance_point"]) == 2
    assert like["grid"] == [6, 6] and like["components"] + len(like["dropped"]) == 24
    with h5py.File(out / "posterior.h5", "r") as f:
        lp = f["emulator/log_posterior"][:]
        assert lp.shape == (16, 16) and lp.max() == 0.0  # (6 - 1) x 3 + 1 fine points per axis
    html = (out / "index.html").read_text()
    assert "contours.png" in html and "Sellentin" in html
    assert "infer: emulator: Omega_m = " in proc.stdout and "(truth 0.3000, 0.7500)" in proc.stdout


def test_two_ranks_give_the_same_simulations_and_posterior(serial, cond_run, cond_data, tmp_path):  # noqa: F811
    out = tmp_path / "two"
    run_cli(*infer_args(cond_run, cond_data, out), ranks=2, check=True)
    for name in ("simulations-emulator.h5", "posterior.h5"):
        a, b = numbers(serial[0] / name), numbers(out / name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (serial[0], out))
    assert sa["posteriors"] == sb["posteriors"]


def test_a_killed_grid_resumes_to_the_same_numbers(serial, cond_run, cond_data, tmp_path):  # noqa: F811
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline", *map(str, infer_args(cond_run, cond_data, out))]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "simulations-emulator.h5.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("chunk-*.h5"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("chunk-*.h5")))
    assert 3 <= done < 7, "the kill should land mid-grid (1 covariance chunk + 6 rows)"
    assert not (out / "summary.json").exists()
    rerun = run_cli(*infer_args(cond_run, cond_data, out), check=True)
    assert f"reused {done} of 7 chunks" in rerun.stdout
    a, b = numbers(serial[0] / "simulations-emulator.h5"), numbers(out / "simulations-emulator.h5")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def copy_of_the_simulations(serial, out):
    out.mkdir()
    (out / "simulations-emulator.h5").write_bytes((serial[0] / "simulations-emulator.h5").read_bytes())
    return out


def test_a_rerun_reuses_the_simulations(serial, cond_run, cond_data, tmp_path):  # noqa: F811
    out = copy_of_the_simulations(serial, tmp_path / "again")
    before = (out / "simulations-emulator.h5").stat().st_mtime_ns
    run_cli(*infer_args(cond_run, cond_data, out, "--likelihood", "hartlap"), check=True)
    assert (out / "simulations-emulator.h5").stat().st_mtime_ns == before
    assert json.loads((out / "summary.json").read_text())["likelihood"]["emulator"]["kind"] == "hartlap"


def test_emcee_samples_the_grid_likelihood(serial, cond_run, cond_data, tmp_path):  # noqa: F811
    out = copy_of_the_simulations(serial, tmp_path / "emcee")
    run_cli(*infer_args(cond_run, cond_data, out, "--sampler", "emcee", "--set", "infer.steps=600",
                        "--set", "infer.burn=200", "--set", "infer.walkers=16"), check=True)
    grid = json.loads((serial[0] / "summary.json").read_text())["posteriors"]["emulator"]
    mc = json.loads((out / "summary.json").read_text())["posteriors"]["emulator"]
    assert mc["sampler"] == "emcee" and mc["n_samples"] == 16 * 400
    # 6400 correlated samples (autocorrelation ~ 30-50 steps of 16 walkers: ~2000 effective):
    # their mean and width within 0.25 and 20% of the grid's
    g_std = np.array(grid["std"])
    np.testing.assert_array_less(np.abs(np.array(mc["mean"]) - grid["mean"]), 0.25 * g_std)
    np.testing.assert_allclose(mc["std"], g_std, rtol=0.2)
    with h5py.File(out / "posterior.h5", "r") as f:
        assert f["emulator/samples"].shape == (6400, 2)


def test_a_fits_cube_is_observed_directly(serial, cond_run, cond_data, tmp_path):  # noqa: F811
    """The same 8 maps as a FITS cube with LensTools' ANGLE: the same posterior as from the dataset."""
    from astropy.io import fits

    from pipeline.data.loader import MapDataset
    from pipeline.models.conditioning import distinct_rows

    data = MapDataset(cond_data / "test")
    points, which = distinct_rows(data.all_params())
    c = int(np.flatnonzero(np.all(np.abs(points - [0.3, 0.75]) < 1e-6, axis=1))[0])
    maps, _ = data.read(np.flatnonzero(which == c)[:8])
    fits.PrimaryHDU(maps, header=fits.Header([("ANGLE", 1.75)])).writeto(tmp_path / "survey.fits")
    out = copy_of_the_simulations(serial, tmp_path / "fits")
    run_cli("infer", "--emulator", cond_run, "--observed", tmp_path / "survey.fits", "--out", out, *SMALL, check=True)
    a = json.loads((serial[0] / "summary.json").read_text())["posteriors"]["emulator"]
    b = json.loads((out / "summary.json").read_text())["posteriors"]["emulator"]
    assert b["mean"] == a["mean"] and b["interval68"] == a["interval68"] and "truth" not in b


def test_the_physical_model_baseline_is_overlaid(cond_run, cond_data, tmp_path):  # noqa: F811
    out = tmp_path / "both"
    run_cli(*infer_args(cond_run, cond_data, out, "--simulator", "both"), check=True)
    s = json.loads((out / "summary.json").read_text())
    assert set(s["posteriors"]) == {"emulator", "physics"}
    assert len(s["emulator_over_physics"]["width_ratio"]) == 2
    phys = s["posteriors"]["physics"]
    # the physical model on its own test maps: the truth within its 95% interval (one draw)
    for j, t in enumerate([0.3, 0.75]):
        assert phys["interval95"][j][0] - 1e-9 <= t <= phys["interval95"][j][1] + 1e-9
    assert (out / "simulations-physics.h5").is_file()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, cond_data):  # noqa: F811
    from astropy.io import fits

    from pipeline.data.loader import MapDataset

    d = tmp_path_factory.mktemp("bad-obs")
    maps, _ = MapDataset(cond_data / "test").read(np.arange(4))
    np.save(d / "small.npy", np.zeros((2, 16, 16), np.float32))
    nan = maps.copy()
    nan[1, 3, 3] = np.nan
    np.save(d / "nan.npy", nan)
    fits.PrimaryHDU(maps[0], header=fits.Header([("ANGLE", 3.5)])).writeto(d / "angle.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]).writeto(
        d / "table.fits")
    np.save(d / "good.npy", maps)
    return d


@pytest.mark.parametrize("observed, extra, fragments", [
    ("small.npy", (), ("small.npy", "16x16", "32x32")),
    ("nan.npy", (), ("nan.npy", "map 1", "NaN")),
    ("angle.fits", (), ("angle.fits", "3.5 deg", "1.75 deg")),
    ("table.fits", (), ("table.fits", "image")),
    ("good.npy", ("--side-angle-deg", "2"), ("good.npy", "2 deg", "1.75 deg")),
    ("good.npy", ("--set", "infer.ranges=Omega_m=0.1:0.3"), ("infer.ranges", "Omega_m", "outside the training support")),
    ("good.npy", ("--set", "infer.ranges=w0=0:1"), ("infer.ranges", "unknown parameter 'w0'")),
    ("good.npy", ("--set", "infer.fiducial=Omega_m=0.5,sigma_8=0.8"), ("infer.fiducial", "Omega_m = 0.5")),
    ("good.npy", ("--select", HELD_OUT), ("--select", "only a dataset")),
    ("good.npy", ("--n-obs", "9"), ("--n-obs 9", "holds 4 maps")),
    ("good.npy", ("--statistics", "power_spectrum,minkowski"), ("infer.statistics", "minkowski")),
    ("good.npy", ("--grid", "3"), ("infer.grid", "at least 4")),
    ("good.npy", ("--n-cov", "16"), ("infer.n_cov: 16 fiducial maps", "24 components")),
    ("missing.npy", (), ("missing.npy", "no such file")),
])
def test_bad_inputs_are_one_line_and_write_nothing(cond_run, bad_files, tmp_path, observed, extra,  # noqa: F811
                                                   fragments):
    out = tmp_path / "out"
    proc = run_main("infer", "--emulator", cond_run, "--observed", bad_files / observed, "--out", out, *SMALL, *extra)
    assert_one_line_error(proc, *fragments)
    assert not out.exists() or not any(p.suffix in (".json", ".html", ".png") for p in out.iterdir())


def test_a_dataset_of_many_cosmologies_needs_select(cond_run, cond_data, tmp_path):  # noqa: F811
    proc = run_main("infer", "--emulator", cond_run, "--observed", cond_data / "test", "--out", tmp_path / "o", *SMALL)
    assert_one_line_error(proc, "cosmologies", "--select")
    proc = run_main("infer", "--emulator", cond_run, "--observed", cond_data / "test", "--select",
                    "Omega_m=0.31,sigma_8=0.75", "--out", tmp_path / "o", *SMALL)
    assert_one_line_error(proc, "--select", "no map at Omega_m=0.31")
    assert not (tmp_path / "o").exists()


def test_an_unconditional_run_is_refused(trained_tiny, bad_files, tmp_path):
    proc = run_main("infer", "--emulator", trained_tiny, "--observed", bad_files / "good.npy", "--out", tmp_path / "o",
                    *SMALL)
    assert_one_line_error(proc, "unconditional")
    assert not (tmp_path / "o").exists()


def test_calibration_over_mock_surveys(cond_run, cond_data, tmp_path):  # noqa: F811
    out = tmp_path / "cal"
    proc = run_cli("infer-calibration", "--emulator", cond_run, "--reference", cond_data / "test", "--out", out,
                   "--surveys", "4", "--n-obs", "4", *SMALL, ranks=2, check=True)
    doc = json.loads((out / "calibration.json").read_text())
    assert doc["surveys"] == 4 and doc["n_obs"] == 4
    # the two held-out cosmologies of the tiny design (the edge one is not asked for), both simulators
    got = {(tuple(np.round(r["point"], 4)), r["simulator"]) for r in doc["results"]}
    assert got == {((0.3, 0.75), "emulator"), ((0.3, 0.75), "physics"), ((0.3, 0.85), "emulator"),
                   ((0.3, 0.85), "physics")}
    for r in doc["results"]:
        assert r["category"] == "held-out" and r["n_surveys"] == 4
        assert all(c in (0, 0.25, 0.5, 0.75, 1) for c in r["coverage68"] + r["coverage95"])
        assert all(a <= b for a, b in zip(r["coverage68"], r["coverage95"]))
        assert (r["width_ratio"] is not None) == (r["simulator"] == "emulator") and r["passed"] in (True, False)
    assert "| Omega_m=0.3,sigma_8=0.75 | held-out | emulator |" in (out / "calibration.md").read_text()
    ratios = doc["scatter_ratio_at_fiducial"]
    assert set(ratios) == {"power_spectrum", "peaks", "V0", "V1", "V2"} and all(r > 0 for r in ratios.values())
    assert proc.stdout.count("infer-calibration: [") == 4
    # Fisher forecasts at each truth: the five statistics together and each alone, every pairing
    # of the two simulators' means and covariances
    fishers = doc["fisher"]
    assert len(fishers) == 2 * 6 * 4
    assert {(f["mean_from"], f["covariance_from"]) for f in fishers} == {
        (m, c) for m in ("emulator", "physics") for c in ("emulator", "physics")}
    together = [f for f in fishers if len(f["statistics"]) == 5]
    assert len(together) == 8 and all(f["std"] and all(v > 0 for v in f["std"]) for f in together)
    assert "Fisher forecasts at the truth, 4 maps" in (out / "calibration.md").read_text()


def test_calibration_needs_enough_maps(cond_run, cond_data, tmp_path):  # noqa: F811
    proc = run_main("infer-calibration", "--emulator", cond_run, "--reference", cond_data / "test", "--out",
                    tmp_path / "cal", "--surveys", "5", "--n-obs", "4", *SMALL)
    assert_one_line_error(proc, "16 maps at Omega_m=0.3,sigma_8=0.75", "fewer than 5 surveys of 4 maps")
    assert not (tmp_path / "cal").exists()


def test_training_maps_correct_the_emulators_mean(serial, cond_run, cond_data, tmp_path):  # noqa: F811
    """--training-maps: at each training cosmology the residual is the training maps' mean data
    vector minus the emulator's (its n_sim grid draws), computed here independently; 1 and 2
    ranks write the same correction; the summary and page say that the mean was corrected."""
    from pipeline.data.loader import MapDataset
    from pipeline.emulator import Emulator
    from pipeline.infer.simulations import read_table
    from pipeline.models.conditioning import distinct_rows

    outs = []
    for ranks in (0, 2):
        out = copy_of_the_simulations(serial, tmp_path / f"ranks{ranks}")
        run_cli(*infer_args(cond_run, cond_data, out, "--training-maps", cond_data / "train"), ranks=ranks,
                check=True)
        outs.append(out)
    a, b = (numbers(out / "mean-correction.h5") for out in outs)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    a2, b2 = (numbers(out / "posterior.h5") for out in outs)
    assert a2.keys() == b2.keys()
    for k in a2:
        np.testing.assert_array_equal(a2[k], b2[k], err_msg=f"posterior.h5:{k}")

    table = read_table(serial[0] / "simulations-emulator.h5")
    data = MapDataset(cond_data / "train")
    points, which = distinct_rows(data.all_params())
    emu = Emulator.load(cond_run, "best")
    for k, point in enumerate(points):
        maps, _ = data.read(np.flatnonzero(which == k))
        want = table.spec.measure(maps).mean(0) - table.spec.measure(
            emu.sample(table.n_sim, params=point, seed=table.seed)).mean(0)
        row = int(np.flatnonzero(np.all(np.abs(a["points"] - point) < 1e-12, axis=1))[0])
        np.testing.assert_allclose(a["residuals"][row], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert sorted(a["n_maps"].tolist()) == [64] * 4

    s = json.loads((outs[0] / "summary.json").read_text())
    c = s["likelihood"]["emulator"]["mean_correction"]
    assert c["points"] == 4 and c["maps_per_point"] == [64] * 4
    assert c["noise_in_sigma"] == pytest.approx(np.sqrt((1 / 64) / (1 / 8 + 1 / 16)))
    assert json.loads((serial[0] / "summary.json").read_text())["likelihood"]["emulator"]["mean_correction"] is None
    assert s["posteriors"]["emulator"]["mean"] != json.loads(
        (serial[0] / "summary.json").read_text())["posteriors"]["emulator"]["mean"]
    assert "corrected by its training maps" in (outs[0] / "index.html").read_text()


@pytest.fixture(scope="module")
def bad_training_maps(tmp_path_factory, cond_data):  # noqa: F811
    """Datasets that cannot correct the tiny run: maps of another size, parameters outside the
    support, too few maps at a cosmology, too few cosmologies, no parameters."""
    from pipeline.data.loader import MapDataset

    d = tmp_path_factory.mktemp("bad-train")
    maps, params = MapDataset(cond_data / "train").read(np.arange(64))
    corners = np.array([[0.25, 0.7], [0.25, 0.9], [0.35, 0.7], [0.35, 0.9]], np.float32)

    def dataset(name, m, p=None, angle=1.75):
        args = ["import-npy", d / f"{name}.npy", "--out", d / name, "--side-angle-deg", angle, "--quiet"]
        np.save(d / f"{name}.npy", m)
        if p is not None:
            np.save(d / f"{name}-params.npy", p)
            args += ["--params", d / f"{name}-params.npy", "--param-names", "Omega_m,sigma_8"]
        run_main(*args, check=True)

    dataset("small", np.zeros((64, 16, 16), np.float32), np.repeat(corners, 16, axis=0))
    dataset("outside", maps, np.repeat(np.array([[0.25, 0.7], [0.25, 0.9], [0.35, 0.7], [0.45, 0.9]],
                                                np.float32), 16, axis=0))
    dataset("few", maps[:32], np.repeat(corners, 8, axis=0))
    dataset("two", maps, np.repeat(corners[:2], 32, axis=0))
    dataset("bare", maps)
    dataset("angle", maps, np.repeat(corners, 16, axis=0), angle=3.5)
    return d


@pytest.mark.parametrize("name, extra, fragments", [
    ("small", (), ("--training-maps", "small", "16x16", "32x32")),
    ("angle", (), ("--training-maps", "3.5 deg", "1.75 deg")),
    ("outside", (), ("--training-maps", "Omega_m=0.45", "outside the emulator's training support")),
    ("few", (), ("--training-maps", "8 maps at Omega_m=0.25,sigma_8=0.7", "at least 16")),
    ("two", (), ("--training-maps", "2 cosmologies", "at least 4")),
    ("bare", (), ("--training-maps", "Omega_m")),
    ("missing", (), ("missing",)),
    ("small", ("--simulator", "physics"), ("--training-maps", "physical model alone")),
])
def test_bad_training_maps_are_one_line_and_write_nothing(cond_run, cond_data, bad_training_maps,  # noqa: F811
                                                          tmp_path, name, extra, fragments):
    out = tmp_path / "out"
    proc = run_main(*infer_args(cond_run, cond_data, out, "--training-maps", bad_training_maps / name, *extra))
    assert_one_line_error(proc, *fragments)
    assert not out.exists()


def test_calibration_with_the_training_maps(cond_run, cond_data, tmp_path):  # noqa: F811
    out = tmp_path / "cal"
    run_cli("infer-calibration", "--emulator", cond_run, "--reference", cond_data / "test", "--out", out,
            "--surveys", "4", "--n-obs", "4", "--training-maps", cond_data / "train", *SMALL, check=True)
    doc = json.loads((out / "calibration.json").read_text())
    assert doc["mean_correction"]["points"] == 4 and len(doc["results"]) == 4
    assert (out / "mean-correction.h5").is_file()
    assert "corrected by its training maps" in (out / "calibration.md").read_text()

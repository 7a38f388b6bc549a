"""The conditional emulator end to end on a 2 x 2 design: training saves its support, generate
takes --params and --like, validate judges every cosmology (1 and 2 ranks alike, resumable),
a killed conditional run resumes exactly, and every bad input is one line."""

import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from conftest import (CONFIGS, LENIENT, REPO, assert_one_line_error, assert_same_state, cli_env, last_checkpoint,
                      run_cli, run_main)
from test_make_data_mpi import dataset_fingerprint

pytestmark = pytest.mark.mpi

TINY = CONFIGS / "tiny.yaml"
# training: Omega_m in {0.25, 0.35} x sigma_8 in {0.7, 0.9}; the test split adds two held-out
# cosmologies one sigma_8 apart and one on the support's edge
DESIGN = ("--set", "cosmology.design.grid.sigma_8=[0.7, 0.9]",
          "--set", "data.n_train=256", "--set", "data.n_validation=32", "--set", "data.n_test=112",
          "--set", "data.splits.test.extra_points=[{Omega_m: 0.3, sigma_8: 0.75}, {Omega_m: 0.3, sigma_8: 0.85},"
                   " {Omega_m: 0.25, sigma_8: 0.8}]")
CONDITIONAL = ("--set", "model.condition_on=[Omega_m, sigma_8]", "--set", "train.spectral_weight=5")
LOOSE = (*LENIENT, "--set", "validation.response_max_rel_err=1e9")


@pytest.fixture(scope="module")
def cond_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "data"
    run_cli("make-data", "--config", TINY, "--out", out, "--quiet", *DESIGN, check=True)
    return out


@pytest.fixture(scope="module")
def cond_run(cond_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("cond-run") / "run"
    run_cli("train", "--config", TINY, "--data", cond_data, "--run", run, "--quiet", "--set", "train.steps=8",
            *CONDITIONAL, check=True)
    return run


def params_of(dataset):
    from pipeline.data.loader import MapDataset

    return MapDataset(dataset).all_params()


def test_checkpoint_holds_the_training_support(cond_run):
    ckpt = last_checkpoint(cond_run)
    s = ckpt.support
    assert s.names == ("Omega_m", "sigma_8") and ckpt.model_args.condition_on == ["Omega_m", "sigma_8"]
    np.testing.assert_allclose(s.low, (0.25, 0.7), rtol=1e-6)
    np.testing.assert_allclose(s.high, (0.35, 0.9), rtol=1e-6)
    assert sorted(np.round(s.points, 6).tolist()) == [[0.25, 0.7], [0.25, 0.9], [0.35, 0.7], [0.35, 0.9]]
    assert any("film" in k for k in ckpt.parts["generator"]) and any("projection" in k
                                                                      for k in ckpt.parts["discriminator"])


def test_generate_at_params_and_like_a_dataset(cond_run, cond_data, tmp_path):
    run_main("generate", "--run", cond_run, "--n", 5, "--out", tmp_path / "p", "--params",
             "Omega_m=0.3,sigma_8=0.8", "--quiet", check=True)
    np.testing.assert_allclose(params_of(tmp_path / "p"), np.tile([0.3, 0.8], (5, 1)), rtol=1e-6)
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["design"]["kind"] == "requested"
    # --like: one map per test map, at its parameters; the same on 1 and 2 ranks
    run_main("generate", "--run", cond_run, "--like", cond_data / "test", "--out", tmp_path / "one", "--quiet",
             check=True)
    run_cli("generate", "--run", cond_run, "--like", cond_data / "test", "--out", tmp_path / "two", "--quiet",
            ranks=2, check=True)
    assert dataset_fingerprint(tmp_path / "one") == dataset_fingerprint(tmp_path / "two")
    np.testing.assert_array_equal(params_of(tmp_path / "one"), params_of(cond_data / "test"))
    # the same z at another cosmology gives another map
    run_main("generate", "--run", cond_run, "--n", 5, "--out", tmp_path / "q", "--params",
             "Omega_m=0.26,sigma_8=0.88", "--quiet", check=True)
    with h5py.File(tmp_path / "p" / "shard-00000.h5") as a, h5py.File(tmp_path / "q" / "shard-00000.h5") as b:
        assert not np.allclose(a["maps"][:], b["maps"][:])


@pytest.mark.parametrize("args,message", [
    ((), "conditional on Omega_m, sigma_8"),
    (("--params", "Omega_m=0.3"), "no value for sigma_8"),
    (("--params", "Omega_m=0.3,sigma_8=0.8,h=0.7"), "unknown parameter 'h'"),
    (("--params", "Omega_m=0.3,sigma_8=x"), "sigma_8='x' is not a number"),
    (("--params", "Omega_m=0.5,sigma_8=0.8"), "Omega_m = 0.5 is outside the training support [0.25, 0.35]"),
    (("--params", "Omega_m=0.3,sigma_8=0.8", "--like", "DATA"), "give one of them"),
])
def test_bad_parameters_are_one_line_and_write_nothing(cond_run, cond_data, tmp_path, args, message):
    args = tuple(str(cond_data / "test") if a == "DATA" else a for a in args)
    n = () if "--like" in args else ("--n", 4)
    proc = run_main("generate", "--run", cond_run, *n, "--out", tmp_path / "g", *args)
    assert_one_line_error(proc, message)
    assert not (tmp_path / "g").exists()


def test_extrapolation_when_asked_for(cond_run, tmp_path):
    run_main("generate", "--run", cond_run, "--n", 3, "--out", tmp_path / "g", "--params",
             "Omega_m=0.5,sigma_8=0.8", "--allow-extrapolation", "--quiet", check=True)
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["design"]["spec"] == {"allow_extrapolation": True}


def test_an_unconditional_run_refuses_parameters(trained_tiny, tiny_data, tmp_path):
    for args, message in ((("--n", 4, "--params", "Omega_m=0.3"), "unconditional; it takes no parameters"),
                          (("--like", tiny_data / "test"), "unconditional; it takes no parameters")):
        proc = run_main("generate", "--run", trained_tiny, *args, "--out", tmp_path / "g")
        assert_one_line_error(proc, message)
        assert not (tmp_path / "g").exists()


def test_training_on_one_value_of_a_conditioning_parameter_is_refused(tiny_data, tmp_path):
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", tmp_path / "r",
                    "--set", "model.condition_on=[Omega_m, sigma_8]")
    assert_one_line_error(proc, "every training map has sigma_8 = 0.8")
    assert not (tmp_path / "r").exists()


def test_a_per_cosmology_transform_is_saved_and_generates_each_cosmology_above_its_own_floor(cond_data,
                                                                                          tmp_path):
    """transform.per_cosmology (degree 1: the 2 x 2 design has 4 cosmologies) trains, the
    checkpoint holds the fitted transform, and generated maps keep each cosmology's floor:
    no pixel below -shift(theta), a deeper floor where sigma_8 is higher. Degree 2 (6 terms)
    on 4 cosmologies is refused before anything is written."""
    from pipeline.data.transforms import ConditionalPixelTransform
    from pipeline.emulator import Emulator

    run = tmp_path / "run"
    run_cli("train", "--config", TINY, "--data", cond_data, "--run", run, "--quiet", "--set", "train.steps=4",
            *CONDITIONAL, "--set", "transform.per_cosmology=true", "--set", "transform.degree=1", check=True)
    t = last_checkpoint(run).transform
    assert isinstance(t, ConditionalPixelTransform) and t.degree == 1
    emulator = Emulator.load(run, "last")
    floors = []
    for point in ([0.25, 0.7], [0.25, 0.9]):
        maps = emulator.sample(16, params=np.array(point))
        cond = emulator.support.normalise(torch.as_tensor([point], dtype=torch.float32)).numpy()
        shift = float(np.ravel(t.shift_scale(cond, maps[:1])[0])[0])
        assert maps.min() >= -shift * (1 + 1e-5)
        floors.append(shift)
    assert floors[1] > floors[0]

    proc = run_main("train", "--config", TINY, "--data", cond_data, "--run", tmp_path / "r2", "--set",
                    "model.condition_on=[Omega_m, sigma_8]", "--set", "transform.per_cosmology=true")
    assert_one_line_error(proc, "at least 6 training cosmologies, the training split has 4")
    assert not (tmp_path / "r2").exists()


def summary_numbers(path):
    d = json.loads(path.read_text())
    d.pop("run")
    for c in d["cosmologies"]:
        for k in ("reference", "candidate", "run"):
            c["summary"].pop(k, None)
    return d


def test_validate_judges_every_cosmology_alike_on_one_and_two_ranks(cond_run, cond_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = run_main("validate", "--run", cond_run, "--reference", cond_data / "test", "--n", 16, "--out", one,
                  "--quiet", *LOOSE)
    assert p1.returncode in (0, 3), p1.stderr
    run_cli("validate", "--run", cond_run, "--reference", cond_data / "test", "--n", 16, "--out", two,
            "--quiet", *LOOSE, ranks=2, check=True)
    s1 = summary_numbers(one / "summary.json")
    assert s1 == summary_numbers(two / "summary.json")
    assert dataset_fingerprint(one / "generated") == dataset_fingerprint(two / "generated")
    categories = {tuple(np.round(c["point"], 4)): c["category"] for c in s1["cosmologies"]}
    assert categories == {(0.25, 0.7): "training", (0.25, 0.9): "training", (0.35, 0.7): "training",
                          (0.35, 0.9): "training", (0.3, 0.75): "held-out", (0.3, 0.85): "held-out",
                          (0.25, 0.8): "edge"}
    for c in s1["cosmologies"]:
        assert c["summary"]["n_reference"] == 16 and c["summary"]["n_candidate"] == 16
        assert (c["interpolation"] is None) == (c["category"] == "training")
        if c["category"] == "edge":  # the mean criteria times edge_factor
            assert c["summary"]["verdicts"]["statistics"]["power_spectrum"]["threshold"] == 1.5e9
    (response,) = s1["responses"]
    assert response["parameter"] == "sigma_8" and np.allclose(response["a"], [0.3, 0.75])
    assert s1["groups"]["training"]["n"] == 4 and s1["groups"]["training"]["mean_pass"] is True
    # with every criterion loosened only the interpolation check can fail (8 training steps)
    assert p1.returncode == (0 if s1["pass"] else 3) and s1["pass"] == s1["interpolation_pass"]
    assert "held-out cosmologies: means pass at 2 of 2" in p1.stdout
    for name in ("index.html", "report.md", "plane.png", "spectra.png", "response.png", "parameter_line.png",
                 "cosmology_errors.png"):
        assert (one / name).is_file(), name
    # each cosmology's tables hold that cosmology's maps only
    with h5py.File(one / "cosmologies" / "Omega_m=0.3_sigma_8=0.75" / "generated.h5") as f:
        np.testing.assert_allclose(f["params"][:], np.tile([0.3, 0.75], (16, 1)), rtol=1e-6)
    # every cosmology renders the same 16 z's: generated map c * 16 + j is z_j at cosmology c
    from pipeline.data.loader import MapDataset
    from pipeline.emulator import Emulator

    emulator = Emulator.load(cond_run)
    maps, params = MapDataset(one / "generated").read(np.array([3, 16 + 3, 6 * 16 + 3]))
    for m, p in zip(maps, params):  # to float rounding: a batch of 16 there, of one here
        want, other = emulator.sample_indices([3, 4], np.tile(p.astype(np.float64), (2, 1)))
        np.testing.assert_allclose(m, want, rtol=0, atol=1e-4 * want.std())
        assert np.abs(m - other).max() > 0.1 * want.std()


def test_a_cosmology_judged_with_the_physical_model_itself_passes_and_interpolates(cond_data, tmp_path):
    """The interpolation and response checks on numbers known in advance: the reference
    compared with itself gives chi^2 0 at the truth (and > 0 at the nearest training
    cosmology) and response ratios equal to the physical model's."""
    from pipeline.stats.compare import statistic_columns
    from pipeline.stats.fanout import compute_stats
    from pipeline.stats.table import read_table
    from pipeline.config import load_config
    from pipeline.models.conditioning import ParamSupport, distinct_rows
    from pipeline.validate.conditional import CosmologyResult, Rows, _interpolation, _responses

    table = tmp_path / "t.h5"
    compute_stats(cond_data / "test", table, load_config(TINY).stats, progress=False)
    t = read_table(table)
    s = statistic_columns(t)
    points, which = distinct_rows(t.columns["params"])
    support = ParamSupport.fit(["Omega_m", "sigma_8"], t.header.param_names, params_of(cond_data / "train"), "train")
    results = [CosmologyResult(list(p), support.category(p), None) for p in points]
    _interpolation(results, support, points, s["power_spectrum"], which, s["power_spectrum"], which)
    held = [r for r in results if r.category != "training"]
    assert len(held) == 3 and all(r.interpolation.chi2_truth == 0 and r.interpolation.chi2_nearest > 0
                                  for r in held)
    vc = load_config(TINY).validation
    (response,) = _responses(results, ("Omega_m", "sigma_8"), points, Rows(s, which), Rows(s, which), vc)
    assert response.ps_worst == 0 and response.passed
    assert np.nanmax(response.ps_ratio_reference) > 1  # more sigma_8, more power
    # the noise: four samples' relative standard errors in quadrature (here two, each twice)
    lo, hi = [int(np.flatnonzero(np.all(np.isclose(points, p), 1))[0]) for p in (response.a, response.b)]
    x_lo, x_hi = s["power_spectrum"][which == lo], s["power_spectrum"][which == hi]
    rel_se = [np.std(x, 0, ddof=1) / np.sqrt(len(x)) / x.mean(0) for x in (x_lo, x_hi)]
    np.testing.assert_allclose(response.ps_noise, np.sqrt(2 * (rel_se[0] ** 2 + rel_se[1] ** 2)), rtol=1e-10)
    assert 0 < response.ps_worst_noise < 1
    # matched realisations: the variance of each pair's difference of relative powers; here
    # the rows of the two cosmologies paired in index order (as if they had drawn the same
    # fields), and the emulator's side with the maps of hi as its own pairs of both
    real = np.zeros(len(which), int)
    for k in (lo, hi):
        real[which == k] = np.arange((which == k).sum())
    s2 = {**s, "power_spectrum": s["power_spectrum"].copy()}
    s2["power_spectrum"][which == lo] = x_hi / 1.7  # the emulator: ratio 1.7 in every bin, exactly
    (paired,) = _responses(results, ("Omega_m", "sigma_8"), points, Rows(s, which, real), Rows(s2, which, real),
                             vc)
    d = x_hi / x_hi.mean(0) - x_lo / x_lo.mean(0)
    np.testing.assert_allclose(paired.ps_noise, np.sqrt(d.var(0, ddof=1) / len(d)), rtol=1e-10)
    np.testing.assert_allclose(paired.ps_ratio_emulator, 1.7, rtol=1e-6)


def test_validate_resumes_from_its_generated_maps(cond_run, cond_data, tmp_path):
    out = tmp_path / "r"
    args = ["validate", "--run", cond_run, "--reference", cond_data / "test", "--n", 8, "--out", out, "--quiet",
            *LOOSE]
    run_main(*args, check=True)
    first = summary_numbers(out / "summary.json")
    made = {p: p.stat().st_mtime_ns for p in (out / "generated").glob("shard-*.h5")}
    (out / "summary.json").unlink()
    (out / "index.html").unlink()
    run_main(*args, check=True)
    assert summary_numbers(out / "summary.json") == first
    assert {p: p.stat().st_mtime_ns for p in (out / "generated").glob("shard-*.h5")} == made  # kept, not redone


def test_validate_bad_inputs(cond_run, cond_data, tmp_path):
    proc = run_main("validate", "--run", cond_run, "--reference", cond_data / "test", "--n", 8, "--out",
                    tmp_path / "a", "--noise-floor", cond_data / "validation")
    assert_one_line_error(proc, "--noise-floor: not available for a conditional run")
    assert not (tmp_path / "a").exists()


def test_a_killed_conditional_run_resumes_exactly(cond_data, tmp_path):
    """With the per-cosmology term focused: its moving sums are in the checkpoints, so the
    resumed run ends in the same state, those sums included; with the per-map distribution
    term, each map standardised by its own cosmology's training maps."""
    base = ["train", "--config", str(TINY), "--data", str(cond_data), "--quiet", "--set", "train.steps=24",
            "--set", "train.checkpoint_every=4", "--set", "train.keep_checkpoints=100", *CONDITIONAL,
            "--set", "train.cosmology_spectral_weight=5", "--set", "train.cosmology_spectral_focus=0.9",
            "--set", "train.distribution_weight=2", "--set", "train.distribution_spread_weight=1",
            "--set", "train.distribution_correlation_weight=1"]
    run_cli(*base, "--run", tmp_path / "whole", check=True)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline", *base, "--run", str(run)]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from pipeline.train.checkpoint import step_checkpoints

    deadline = time.time() + 120
    while len(step_checkpoints(run)) < 2:
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last_checkpoint(run).step < 24
    run_cli(*cmd[3:], check=True)
    a, b = last_checkpoint(run), last_checkpoint(tmp_path / "whole")
    assert a.step == b.step == 24 and a.support == b.support
    assert a.parts["spectral_focus"]["map_count"].sum() > 0
    assert_same_state(a.parts, b.parts)


def test_validate_generates_as_many_as_the_reference_holds_per_cosmology_by_default(cond_run, cond_data,
                                                                                      trained_tiny, tiny_data,
                                                                                      tmp_path):
    run_main("validate", "--run", cond_run, "--reference", cond_data / "test", "--out", tmp_path / "c", "--quiet",
             *LOOSE, check=False)
    d = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert d["n_per_cosmology"] == 16 and len(d["cosmologies"]) == 7  # 112 test maps over 7 cosmologies
    run_main("validate", "--run", trained_tiny, "--reference", tiny_data / "test", "--out", tmp_path / "u",
             "--quiet", *LENIENT, check=True)
    assert json.loads((tmp_path / "u" / "summary.json").read_text())["n_candidate"] == 32

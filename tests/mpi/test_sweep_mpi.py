"""`cosmogan sweep`: one table for any rank count and group size, each row what `cosmogan
validate` gives for that checkpoint; a killed sweep reruns only its unfinished items; the
per-cosmology items of a conditional run; the report; bad input."""

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CONFIGS, assert_one_line_error, run_cli, run_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))  # faultlib: kills at progress markers
from faultlib import Stage, kill_after  # noqa: E402

pytestmark = pytest.mark.mpi
CHECKPOINT_STEPS = (2, 4, 6, 8)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """Two runs of the tiny config (another seed for the second), a checkpoint every 2 of 8 steps."""
    root = tmp_path_factory.mktemp("sweep-runs")
    made = []
    for name, seed in (("a", 0), ("b", 1)):
        run = root / name
        run_cli("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
                "--set", "train.steps=8", "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=10",
                "--set", "train.fidelity_every=4", "--set", f"train.seed={seed}", check=True)
        made.append(run)
    return made


def sweep_args(runs, reference, out, *extra):
    return ["sweep", "--runs", *runs, "--reference", reference, "--n", 24, "--out", out, "--quiet", *extra]


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def h5_numbers(path):
    """Every column of a sweep.h5: numbers as bytes, strings as lists."""
    from pipeline.validate.sweep_table import read_table

    return {k: v.tolist() if v.dtype == object else v.tobytes() for k, v in read_table(path).items()}


@pytest.fixture(scope="module")
def serial_sweep(runs, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-serial") / "sweep"
    proc = run_cli(*sweep_args(runs, tiny_data / "test", out), check=True)
    return out, proc


def test_one_row_per_checkpoint_ranked(serial_sweep, runs):
    out, proc = serial_sweep
    table = csv_rows(out / "sweep.csv")
    assert [(t["run"], int(t["step"])) for t in table] == [(r.name, s) for r in runs for s in CHECKPOINT_STEPS]
    assert sum(int(t["best"]) for t in table) == 2  # one best.pt per run, found among the step checkpoints
    for t in table:
        ratios = {s: float(t[f"{s}_ratio"]) for s in ("power_spectrum", "V0", "V1", "V2", "peaks", "pdf")}
        assert float(t["worst_ratio"]) == pytest.approx(max(ratios.values()), rel=1e-5)
        assert t["worst_statistic"] == max(ratios, key=ratios.get)
    ranked = [ln for ln in proc.stdout.splitlines() if ln.lstrip()[:2].rstrip(".").isdigit()]
    worst = [float(ln.split(" uses ")[1].split("x")[0]) for ln in ranked]
    assert len(ranked) == 8 and worst == sorted(worst)
    assert "sweep: " in proc.stdout and (out / "index.html").is_file() and (out / "sweep_curves.png").is_file()
    # the generated maps are not kept without --keep-maps; each item keeps its result and stats table
    assert not list(out.glob("items/*/*/generated")) and len(list(out.glob("items/*/*/result.json"))) == 8


def test_a_row_is_what_validate_gives(serial_sweep, runs, tiny_data, tmp_path):
    out, _ = serial_sweep
    run_main("validate", "--run", runs[1], "--checkpoint", runs[1] / "checkpoints" / "step-00000004.pt",
             "--reference", tiny_data / "test", "--n", 24, "--out", tmp_path / "v", "--quiet")
    alone = json.loads((tmp_path / "v" / "summary.json").read_text())
    item = json.loads((out / "items" / "b" / "step-00000004" / "result.json").read_text())["summary"]
    assert item["verdicts"] == alone["verdicts"]
    assert item["statistics"] == alone["statistics"]


@pytest.mark.parametrize("groups", [1, 2])
def test_same_table_for_any_ranks_and_group_size(serial_sweep, runs, tiny_data, tmp_path, groups):
    out = tmp_path / "sweep"
    run_cli(*sweep_args(runs, tiny_data / "test", out, "--groups", groups), ranks=2, check=True)
    serial = serial_sweep[0]
    assert (out / "sweep.csv").read_text() == (serial / "sweep.csv").read_text()
    assert h5_numbers(out / "sweep.h5") == h5_numbers(serial / "sweep.h5")


def test_killed_sweep_reruns_only_the_unfinished_items(serial_sweep, runs, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    stage = Stage("sweep", lambda o: sweep_args(runs, tiny_data / "test", o, "--groups", 2),
                  ["{out}/items/*/*/result.json"], 8, None, None)
    seen, _ = kill_after(stage, out, 3, ranks=2)
    done = {p: p.stat().st_mtime_ns for p in out.glob("items/*/*/result.json")}
    assert 3 <= len(done) < 8, len(done)
    run_cli(*sweep_args(runs, tiny_data / "test", out, "--groups", 2), ranks=2, check=True)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished items were not redone
    assert (out / "sweep.csv").read_text() == (serial_sweep[0] / "sweep.csv").read_text()


def test_changed_checkpoint_is_validated_again(runs, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    args = sweep_args([run], tiny_data / "test", tmp_path / "sweep", "--checkpoints", "last")
    run_main(*args, check=True)
    result = tmp_path / "sweep" / "items" / "run" / "step-00000008" / "result.json"
    first = result.stat().st_mtime_ns
    run_main(*args, check=True)
    assert result.stat().st_mtime_ns == first
    shutil.copy(runs[1] / "checkpoints" / "step-00000008.pt", run / "checkpoints" / "step-00000008.pt")
    run_main(*args, check=True)  # other weights under the same name: not the result on disk
    assert result.stat().st_mtime_ns != first
    sha = json.loads(result.read_text())["checkpoint_sha256"]
    from pipeline.data.format import file_sha256

    assert sha == file_sha256(runs[1] / "checkpoints" / "step-00000008.pt")


def test_full_reports_are_linked(runs, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    run_main(*sweep_args(runs[:1], tiny_data / "test", out, "--checkpoints", "every-4", "--full-reports",
                         "--keep-maps"), check=True)
    for step in (4, 8):
        item = out / "items" / "a" / f"step-{step:08d}"
        assert (item / "index.html").is_file() and (item / "summary.json").is_file()
        assert (item / "generated" / "manifest.json").is_file()
        assert f'href="items/a/step-{step:08d}/index.html"' in (out / "index.html").read_text()
    page = (out / "index.html").read_text()
    targets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert targets and all((out / t).is_file() for t in targets), targets  # relative, and all there
    assert "http" not in "".join(targets)


def test_conditional_run_has_one_item_per_reference_cosmology(runs, tiny_data, tmp_path):
    """A conditional checkpoint (the tiny run's weights with a support over Omega_m and sigma_8:
    its generator ignores them, but the sweep cannot tell) is judged at each cosmology of the
    reference, against that cosmology's maps only, and ranked by the worst of them."""
    from pipeline.models.conditioning import ParamSupport
    from pipeline.train.checkpoint import read_checkpoint, write_checkpoint

    run = tmp_path / "cond"
    (run / "checkpoints").mkdir(parents=True)
    for step in (4, 8):
        ckpt = read_checkpoint(runs[0] / "checkpoints" / f"step-{step:08d}.pt")
        ckpt.support = ParamSupport(("Omega_m", "sigma_8"), (0.25, 0.8), (0.3, 0.8))
        write_checkpoint(run / "checkpoints" / f"step-{step:08d}.pt", ckpt)
    out = tmp_path / "sweep"
    proc = run_main(*sweep_args([run], tiny_data / "test", out), check=True)
    assert "(0 of 2 cosmologies)" in proc.stdout or "(1 of 2 cosmologies)" in proc.stdout \
        or "(2 of 2 cosmologies)" in proc.stdout
    table = csv_rows(out / "sweep.csv")
    assert [(int(t["step"]), float(t["Omega_m"])) for t in table] == [(4, 0.25), (4, 0.35), (8, 0.25), (8, 0.35)]
    assert [t["extrapolated"] for t in table] == ["0", "1", "0", "1"]  # 0.35 lies beyond the support
    from pipeline.stats.table import read_table

    for omega in (0.25, 0.35):
        item = out / "items" / "cond" / "step-00000004" / f"Omega_m={omega:g}_sigma_8=0.8"
        summary = json.loads((item / "result.json").read_text())["summary"]
        assert summary["n_reference"] == 16  # the reference's maps at this cosmology only
        reference = read_table(summary["reference"])
        assert np.allclose(reference.columns["params"][:, 0], omega)
        assert np.allclose(read_table(item / "generated.h5").columns["params"], [omega, 0.8])
    assert "Every item (checkpoint and cosmology)" in (out / "index.html").read_text()


# ------------------------------------------------------------------ bad input: one line, nothing written

def test_reference_of_another_geometry(runs, tmp_path):
    data = tmp_path / "data"
    run_main("make-data", "--config", CONFIGS / "tiny.yaml", "--out", data, "--quiet",
             "--set", "physics.side_angle_deg=3.5", check=True)
    proc = run_main(*sweep_args(runs, data / "test", tmp_path / "s"))
    assert_one_line_error(proc, str(data / "test"), "over 3.5 deg", "over 1.75 deg")
    assert not (tmp_path / "s").exists()


def test_run_without_checkpoints(runs, tiny_data, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_main(*sweep_args([runs[0], tmp_path / "empty"], tiny_data / "test", tmp_path / "s"))
    assert_one_line_error(proc, str(tmp_path / "empty"), "holds no checkpoint")
    assert not (tmp_path / "s").exists()


def test_more_groups_than_ranks(runs, tiny_data, tmp_path):
    proc = run_cli(*sweep_args(runs, tiny_data / "test", tmp_path / "s", "--groups", 3), ranks=2)
    assert_one_line_error(proc, "--groups 3", "number of ranks (2)")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("selector, fragment", [("newest", "'newest' is not a selector"),
                                                ("every-0", "'every-0' is not a selector"),
                                                ("every-5", "no checkpoint at a multiple of 5 steps")])
def test_bad_checkpoint_selector(runs, tiny_data, tmp_path, selector, fragment):
    proc = run_main(*sweep_args(runs, tiny_data / "test", tmp_path / "s", "--checkpoints", selector))
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "s").exists()


def test_same_run_twice(runs, tiny_data, tmp_path):
    proc = run_main(*sweep_args([runs[0], runs[0]], tiny_data / "test", tmp_path / "s"))
    assert_one_line_error(proc, "is given twice")
    assert not (tmp_path / "s").exists()


def test_conditional_run_and_a_reference_without_parameters(runs, tiny_data, tmp_path):
    from pipeline.models.conditioning import ParamSupport
    from pipeline.train.checkpoint import read_checkpoint, write_checkpoint

    run = tmp_path / "cond"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = read_checkpoint(runs[0] / "checkpoints" / "step-00000008.pt")
    ckpt.support = ParamSupport(("Omega_m",), (0.25,), (0.35,))
    write_checkpoint(run / "checkpoints" / "step-00000008.pt", ckpt)
    maps = tmp_path / "maps.npy"
    from conftest import lognormal_maps

    np.save(maps, lognormal_maps(0, 8))
    run_main("import-npy", maps, "--out", tmp_path / "ref", "--side-angle-deg", 1.75, "--quiet", check=True)
    proc = run_main(*sweep_args([run], tmp_path / "ref", tmp_path / "s"))
    assert_one_line_error(proc, "carry no parameters", "conditional on Omega_m")
    assert not (tmp_path / "s").exists()


def test_rerun_with_other_settings_is_refused(serial_sweep, runs, tiny_data, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(serial_sweep[0], out)
    proc = run_main(*sweep_args(runs, tiny_data / "test", out, "--set", "validation.ps_max_rel_err=0.5"))
    assert_one_line_error(proc, str(out), "other settings")
    proc = run_main("sweep", "--runs", *runs, "--reference", tiny_data / "test", "--n", 30, "--out", out, "--quiet")
    assert_one_line_error(proc, "other settings")

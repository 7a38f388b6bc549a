"""generate and validate take their settings from their own --config / --set over the run's:
bins, criteria and batch sizes change without retraining; the training sections do not."""

import json

import numpy as np

from conftest import assert_one_line_error, run_main
from pipeline.data.loader import MapDataset


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


def test_revalidate_on_other_bins_and_criteria(trained_tiny, tiny_data, tmp_path):
    """tiny.yaml trains with 8 ell bins and 34 thresholds; a validation file asks for 6 bins
    and 10 thresholds, --set then for 4 bins and a 50% threshold: --set wins over the file,
    the file over the run, and the file's training sections are ignored."""
    conf = tmp_path / "validate.yaml"
    conf.write_text("stats: {n_ell: 6, n_thresholds: 10}\nvalidation: {ps_max_rel_err: 0.2}\n"
                    "model: {g_channels: 999}\n")
    common = ("validate", "--run", trained_tiny, "--reference", tiny_data / "test", "--n", 32, "--quiet")
    # (an 8-step run fails every criterion: validate exits 3, and these tests read its summary)
    assert run_main(*common, "--out", tmp_path / "file", "--config", conf).returncode == 3
    s = summary_of(tmp_path / "file")
    assert len(s["ell"]) == 6 and len(s["nu"]) == 10
    assert s["verdicts"]["criteria"]["ps_max_rel_err"] == 0.2 and s["verdicts"]["statistics"]["V0"]["threshold"] == 0.1
    assert run_main(*common, "--out", tmp_path / "both", "--config", conf, "--set", "stats.n_ell=4",
                    "--set", "validation.ps_max_rel_err=0.5").returncode == 3
    s = summary_of(tmp_path / "both")
    assert len(s["ell"]) == 4 and len(s["nu"]) == 10
    assert s["verdicts"]["statistics"]["power_spectrum"]["threshold"] == 0.5
    assert run_main(*common, "--out", tmp_path / "run").returncode == 3
    assert len(summary_of(tmp_path / "run")["ell"]) == 8  # the run's own bins otherwise


def test_generate_settings_override_the_runs(trained_tiny, tmp_path):
    conf = tmp_path / "gen.yaml"
    conf.write_text("generate: {seed: 4, shard_size: 3}\n")
    run_main("generate", "--run", trained_tiny, "--n", 5, "--out", tmp_path / "a", "--config", conf, "--quiet",
             check=True)
    run_main("generate", "--run", trained_tiny, "--n", 5, "--out", tmp_path / "b", "--quiet",
             "--set", "generate.seed=4", check=True)
    a, b = MapDataset(tmp_path / "a"), MapDataset(tmp_path / "b")
    assert len(a.manifest.shards) == 2 and len(b.manifest.shards) == 1  # shards of 3, of the run's 32
    # map i from (seed, i): the same maps, to float32 rounding (other shards, so other batches)
    np.testing.assert_allclose(a.read(np.arange(5))[0], b.read(np.arange(5))[0], rtol=0, atol=1e-6)


def test_training_sections_cannot_be_set_at_validation(trained_tiny, tiny_data, tmp_path):
    proc = run_main("validate", "--run", trained_tiny, "--reference", tiny_data / "test", "--n", 32,
                    "--out", tmp_path / "v", "--set", "model.z_dim=4")
    assert_one_line_error(proc, "--set 'model.z_dim=4'", "reads only the stats, validation, generate sections")
    proc = run_main("generate", "--run", trained_tiny, "--n", 4, "--out", tmp_path / "g",
                    "--set", "train.steps=9")
    assert_one_line_error(proc, "--set 'train.steps=9'", "generate reads only")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stats: {n_ell: -1}\n")
    proc = run_main("generate", "--run", trained_tiny, "--n", 4, "--out", tmp_path / "g", "--config", bad)
    assert_one_line_error(proc, "bad.yaml", "stats.n_ell: must be positive")
    assert not (tmp_path / "v").exists() and not (tmp_path / "g").exists()

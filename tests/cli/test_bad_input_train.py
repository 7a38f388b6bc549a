"""Bad input to `train` and `generate`: one line, non-zero exit, the run directory untouched."""

import json

import numpy as np
import pytest

from conftest import CONFIGS, assert_one_line_error, run_main

TINY = CONFIGS / "tiny.yaml"


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet",
             "--set", "train.steps=8", check=True)
    return run


def snapshot(run):
    return {p: p.stat().st_mtime_ns for p in run.rglob("*")}


def test_checkpoint_of_another_architecture(trained, tiny_data):
    before = snapshot(trained)
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", trained,
                    "--set", "train.steps=16", "--set", "model.g_channels=16")
    assert_one_line_error(proc, "step-00000008.pt", "made for the model")
    assert snapshot(trained) == before


def test_checkpoint_of_other_settings(trained, tiny_data):
    before = snapshot(trained)
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", trained,
                    "--set", "train.steps=16", "--set", "loader.batch_size=8")
    assert_one_line_error(proc, "step-00000008.pt", "loader.batch_size")
    assert snapshot(trained) == before


def test_corrupt_checkpoint(trained, tiny_data, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoints" / "step-00000008.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    before = snapshot(run)
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--set", "train.steps=16")
    assert_one_line_error(proc, "step-00000008.pt", "not a readable checkpoint")
    assert_one_line_error(run_main("generate", "--run", run, "--n", 4, "--out", tmp_path / "g"),
                          "step-00000008.pt", "not a readable checkpoint")
    assert snapshot(run) == before and not (tmp_path / "g").exists()


def test_data_of_another_resolution(trained, tmp_path):
    data = tmp_path / "data64"
    run_main("make-data", "--config", TINY, "--out", data, "--quiet", "--set", "physics.map_size=64",
             "--set", "physics.side_angle_deg=3.5", check=True)
    before = snapshot(trained)
    proc = run_main("train", "--config", TINY, "--data", data, "--run", trained, "--set", "train.steps=16")
    assert_one_line_error(proc, "step-00000008.pt", "trained on another dataset", "--allow-data-change")
    assert snapshot(trained) == before
    # Asking for the change does not get past a checkpoint of another architecture.
    proc = run_main("train", "--config", TINY, "--data", data, "--run", trained, "--set", "train.steps=16",
                    "--allow-data-change")
    assert_one_line_error(proc, "step-00000008.pt", "'image_size': 32", "'image_size': 64")
    assert snapshot(trained) == before


def test_model_size_disagrees_with_data(tiny_data, tmp_path):
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", tmp_path / "run",
                    "--set", "model.image_size=64")
    assert_one_line_error(proc, "model.image_size is 64", "32x32")
    assert not (tmp_path / "run").exists()


def test_empty_training_split(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    manifest = json.loads((data / "train" / "manifest.json").read_text())
    manifest.update(n_maps=0, shards=[])
    (data / "train" / "manifest.json").write_text(json.dumps(manifest))
    proc = run_main("train", "--config", TINY, "--data", data, "--run", tmp_path / "run")
    assert_one_line_error(proc, str(data / "train"), "no maps")
    assert not (tmp_path / "run").exists()


def test_training_split_smaller_than_a_batch(tmp_path):
    src = tmp_path / "m.npy"
    np.save(src, np.random.default_rng(0).normal(0, 0.01, (10, 32, 32)).astype(np.float32))
    for split in ("train", "validation"):
        run_main("import-npy", src, "--out", tmp_path / "data" / split, "--side-angle-deg", 1.75, "--quiet",
                 check=True)
    proc = run_main("train", "--config", TINY, "--data", tmp_path / "data", "--run", tmp_path / "run")
    assert_one_line_error(proc, "10 maps make no full global batch of 16")


def test_generate_from_run_without_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    assert_one_line_error(run_main("generate", "--run", tmp_path / "run", "--n", 4, "--out", tmp_path / "g"),
                          "holds no checkpoint")
    assert_one_line_error(run_main("generate", "--run", tmp_path / "run", "--checkpoint", "best", "--n", 4,
                                   "--out", tmp_path / "g"), "best.pt", "no such checkpoint")
    assert not (tmp_path / "g").exists()


def test_generate_nonpositive_n(trained, tmp_path):
    assert_one_line_error(run_main("generate", "--run", trained, "--n", 0, "--out", tmp_path / "g"),
                          "--n must be positive")


def test_resume_without_config_uses_the_runs(trained, tiny_data, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    run_main("train", "--data", tiny_data, "--run", run, "--quiet", "--set", "train.steps=12", check=True)
    assert_one_line_error(run_main("train", "--data", tiny_data, "--run", tmp_path / "new"),
                          "--config is needed")

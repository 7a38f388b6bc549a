"""Training on the tiny config: checkpoints, exact resume after SIGKILL, signals, divergence."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import CONFIGS, REPO, assert_same_state, cli_env, last_checkpoint, run_cli, run_main
from pipeline.train.checkpoint import read_checkpoint, step_checkpoints

TINY = CONFIGS / "tiny.yaml"


def assert_same_final_checkpoint(run_a, run_b):
    """Every tensor and value of the last checkpoint of two runs is the same: models, weight
    average, optimizers, scaler, loader position, progress and torch's RNG state."""
    a, b = last_checkpoint(run_a), last_checkpoint(run_b)
    assert a.step == b.step and a.model_args == b.model_args and a.transform == b.transform
    assert_same_state(a.parts, b.parts)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    """The reference: 40 steps in one go, in a subprocess (one thread, as the resumed runs)."""
    run = tmp_path_factory.mktemp("ref") / "run"
    run_cli("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet",
            "--set", "train.steps=40", check=True)
    return run


def test_run_directory_holds_what_it_promises(uninterrupted):
    run = uninterrupted
    assert [p.name for p in step_checkpoints(run)] == [f"step-000000{s}.pt" for s in (24, 32, 40)]  # keep 3
    assert (run / "checkpoints" / "best.pt").is_file()
    assert sorted(p.name for p in (run / "samples").iterdir())[-1] == "step-00000040.png"
    assert any((run / "tensorboard").iterdir())
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [ln["step"] for ln in lines if "loss_d" in ln]
    assert steps == list(range(4, 41, 4))
    assert all(k in lines[0] for k in ("loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "images_per_s"))
    fid = [ln for ln in lines if "fid_score" in ln]
    assert [ln["step"] for ln in fid] == [8, 16, 24, 32, 40]
    ckpt = last_checkpoint(run)
    assert sorted(ckpt.parts) == sorted(("generator", "generator_ema", "discriminator", "opt_g", "opt_d", "scaler",
                                         "loader", "progress", "rng"))
    assert ckpt.parts["loader"]["epoch"] == 3 and ckpt.parts["loader"]["step"] == 4  # 40 = 3 * 12 + 4
    assert ckpt.model_args.image_size == 32 and not ckpt.support.conditional and ckpt.side_angle_deg == 1.75
    best = read_checkpoint(run / "checkpoints" / "best.pt")
    progress = ckpt.parts["progress"]
    assert best.step == progress["best_step"]
    assert min(ln["fid_score"] for ln in fid) == progress["best_score"]


def test_sigkill_and_resume_end_with_identical_weights(tiny_data, uninterrupted, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline", "train", "--config", str(TINY), "--data", str(tiny_data),
           "--run", str(run), "--quiet", "--set", "train.steps=40", "--set", "train.checkpoint_every=4",
           "--set", "train.keep_checkpoints=100"]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(step_checkpoints(run)) < 3:  # killed somewhere after step 12
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = last_checkpoint(run).step
    assert killed_at < 40
    run_cli(*cmd[3:], check=True)  # the same command resumes
    assert_same_final_checkpoint(run, uninterrupted)
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()
             if "loss_d" in ln]
    assert steps == list(range(4, 41, 4))  # redone steps are logged once


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_exits_75(tiny_data, uninterrupted, tmp_path, sig):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline", "train", "--config", str(TINY), "--data", str(tiny_data),
           "--run", str(run), "--quiet", "--set", "train.steps=40"]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("training ended before the signal arrived")
    assert proc.returncode == 75, err
    assert f"{sig.name} at step" in out
    stopped = last_checkpoint(run).step
    assert 0 < stopped < 40
    run_cli(*cmd[3:], check=True)
    assert_same_final_checkpoint(run, uninterrupted)


def test_divergence_stops_with_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    import pipeline.train.fit as fit

    real_step = fit.gan_step
    calls = []

    def step_then_nan(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 11:
            out["loss_d"] = float("nan")
        return out

    monkeypatch.setattr(fit, "gan_step", step_then_nan)
    run = tmp_path / "run"
    proc = run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet")
    assert proc.returncode == 1
    assert "step 11: losses are not finite" in proc.stderr and "step-00000008.pt" in proc.stderr
    assert [p.name for p in step_checkpoints(run)] == ["step-00000008.pt"]


def test_cosine_schedule_values():
    from pipeline.train.fit import lr_schedule

    assert lr_schedule(0, 100, "cosine", 0.1) == 1.0
    assert lr_schedule(50, 100, "cosine", 0.1) == pytest.approx(0.55)  # half way: the mean
    assert lr_schedule(100, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_schedule(150, 100, "cosine", 0.1) == pytest.approx(0.1)  # past the end: the floor
    assert lr_schedule(37, 100, "none", 0.1) == 1.0


def test_learning_rates_follow_the_schedule(uninterrupted):
    """tiny.yaml decays both rates: the last update ran at lr x schedule(steps - 1)."""
    from pipeline.train.fit import lr_schedule

    ckpt = last_checkpoint(uninterrupted)
    tc = ckpt.config.train
    assert tc.lr_decay == "cosine"
    factor = lr_schedule(39, 40, "cosine", tc.lr_final_fraction)
    assert ckpt.parts["opt_g"]["param_groups"][0]["lr"] == pytest.approx(tc.lr_g * factor, rel=1e-12)
    assert ckpt.parts["opt_d"]["param_groups"][0]["lr"] == pytest.approx(tc.lr_d * factor, rel=1e-12)
    assert factor < 0.2


@pytest.mark.parametrize("setting", ["train.precision=bf16", "train.precision=fp16", "train.precision=auto",
                                     "train.channels_last=true",
                                     "train.compile=true", "model.upsample=resize_conv",
                                     "model.kernel_size=4", "model.padding=circular"])
def test_precision_and_layout_options_train(tiny_data, tmp_path, setting):
    run = tmp_path / "run"
    run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet",
             "--set", "train.steps=4", "--set", setting, check=True)
    ckpt = last_checkpoint(run)
    assert ckpt.step == 4
    assert all(torch.isfinite(v).all() for v in ckpt.parts["generator"].values() if v.is_floating_point())


def test_the_fidelity_check_under_bf16_training_scores_the_maps_generate_makes(tiny_data, tmp_path):
    """The check that picks best.pt runs the generator in fp32, as generate does, whatever the
    training precision: its logged score equals the score of the saved checkpoint's maps.
    (Under bf16 the quickstart's check read the PDF 3x worse than the saved model's.)"""
    from pipeline.config import load_config
    from pipeline.emulator import Emulator
    from pipeline.parallel.backend import SingleBackend
    from pipeline.train.fit import Trainer

    run = tmp_path / "run"
    settings = ("--set", "train.steps=8", "--set", "train.precision=bf16")
    run_main("train", "--config", TINY, "--data", tiny_data, "--run", run, "--quiet", *settings, check=True)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = next(m for m in logged if m.get("step") == 8 and "fid_score" in m)
    # the same check (reference maps, noise) as the run built, on the checkpoint read back
    cfg = load_config(TINY, [s for s in settings if s != "--set"])
    check = Trainer(cfg, tiny_data, run, SingleBackend("cpu"), progress=False)._fidelity_check()
    scores = check(Emulator.load(run, "best"), cfg.loader.batch_size)
    for key in ("fid_ps_mean", "fid_pdf_max", "fid_bias_max", "fid_score"):
        assert scores[key] == pytest.approx(logged[key], rel=1e-5, abs=1e-7), key


def test_generated_maps_are_kappa(tiny_data, uninterrupted, tmp_path):
    """generate writes a dataset in physical units: values above the transform's floor -shift."""
    from pipeline.data.loader import MapDataset

    out = tmp_path / "gen"
    run_main("generate", "--run", uninterrupted, "--n", 20, "--out", out, "--quiet", check=True)
    run_main("verify-data", out, check=True)
    maps = MapDataset(out).read(np.arange(20))[0]
    shift = last_checkpoint(uninterrupted).transform.shift
    assert maps.min() >= -shift and maps.std() > 0

"""Shared by the training benchmarks: a small dataset, and one short `cosmogan train` timed
by its own metrics.jsonl."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

#: `python -m pipeline`, run by the benchmarks' interpreter (the venv's)
PIPELINE = [sys.executable, "-m", "pipeline"]
#: a run's checks and checkpoints pushed past its end, so the timed steps are training only
NO_CHECKS = ["--set", "train.fidelity_every=100000", "--set", "train.sample_every=100000",
             "--set", "train.checkpoint_every=100000"]


def make_small_data(config: str, out: Path, n_train: int, n_validation: int, overrides: list[str],
                    env: dict | None = None) -> None:
    """A dataset of the config's geometry with n_train training maps (8 test maps)."""
    subprocess.run(PIPELINE + ["make-data", "--config", config, "--out", str(out), "--quiet",
                               "--set", f"data.n_train={n_train}", "--set", f"data.n_validation={n_validation}",
                               "--set", "data.n_test=8", *overrides],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def train_images_per_s(launcher: list[str], config: str, data: Path, run: Path, steps: int, log_every: int,
                       overrides: list[str], env: dict | None = None) -> float:
    """Runs `launcher cosmogan train` for ``steps`` steps and gives the median images/s (global)
    over its logging windows, the first (which holds start-up) dropped."""
    subprocess.run(launcher + PIPELINE + [
        "train", "--config", config, "--data", str(data), "--run", str(run), "--quiet", *overrides,
        "--set", f"train.steps={steps}", "--set", f"train.log_every={log_every}", *NO_CHECKS],
        check=True, env=env, stdout=subprocess.DEVNULL)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([x["images_per_s"] for x in lines if "images_per_s" in x][1:])

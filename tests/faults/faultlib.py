"""The stages as a fault-injection suite runs them: commands, progress markers, fingerprints.

Each stage of the pipeline is described by a ``Stage``: the command that writes one
output (on the tiny config's data), glob patterns of the files that appear as it makes
progress (where a kill lands mid-work), and a fingerprint of its finished output (what an
uninterrupted run and a rerun after a fault must share: bytes of datasets, the numbers of
stats tables and reports, every tensor of a run's last checkpoint).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from conftest import BIN, CONFIGS, LENIENT, REPO, cli_env, kill_launch

TINY = CONFIGS / "tiny.yaml"


def command(args, ranks: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", *map(str, args)]
    return [str(BIN / "mpirun"), "-n", str(ranks), *cmd] if ranks else cmd


def run(args, ranks: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(args, ranks), capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          cwd=REPO)


def dataset_bytes(root: Path) -> dict:
    """sha256 of every file of a dataset (manifest included)."""
    from pipeline.data.format import file_sha256

    return {p.name: file_sha256(p) for p in sorted(Path(root).iterdir()) if p.is_file()}


def table_numbers(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: f[k][:].tobytes() for k in f if isinstance(f[k], h5py.Dataset)}


def run_numbers(run: Path) -> dict:
    """Every tensor and value of the run's newest checkpoint (state_dicts flattened)."""
    import torch

    from pipeline.train.checkpoint import read_checkpoint, step_checkpoints

    ckpt = read_checkpoint(step_checkpoints(run)[-1])
    flat = {"step": ckpt.step}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif isinstance(value, torch.Tensor):
            flat[prefix] = value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes()
        else:
            flat[prefix] = value

    walk("parts", ckpt.parts)
    return flat


def report_numbers(out: Path) -> dict:
    """A report's numbers: its summary without paths, and its generated maps' bytes."""
    s = json.loads((out / "summary.json").read_text())
    return {"summary": {k: v for k, v in s.items() if k not in ("reference", "candidate", "run")},
            "generated": dataset_bytes(out / "generated")}


@dataclass
class Stage:
    """name; args(out) -> CLI arguments writing ``out``; markers: globs (relative to out's
    parent) of the files that appear as the work goes on, of which a whole run makes at
    least ``total`` (some are gone at the end: shards moved into place, stats parts joined);
    fingerprint(out) of the finished output; complete(out): True when the output claims to
    be finished (what must then equal the reference)."""

    name: str
    args: Callable[[Path], list]
    markers: list[str]
    total: int
    fingerprint: Callable[[Path], dict]
    complete: Callable[[Path], bool]


def stages(data: Path, npy: Path, run: Path) -> dict[str, Stage]:
    """The six stages, reading the tiny data ``data``, the map array ``npy`` and the trained run ``run``."""
    return {s.name: s for s in [
        Stage("make-data", lambda out: ["make-data", "--config", TINY, "--out", out, "--quiet"],
              ["{out}/*/shard-*.h5"], 5, lambda out: {split: dataset_bytes(out / split) for split in
                                                      ("train", "validation", "test")},
              lambda out: (out / "test" / "manifest.json").exists()),
        Stage("import-npy", lambda out: ["import-npy", npy, "--out", out, "--side-angle-deg", 1.75,
                                         "--shard-size", 64, "--quiet"],
              [".{name}.import/shard-*.h5"], 10, dataset_bytes, lambda out: (out / "manifest.json").exists()),
        Stage("stats", lambda out: ["stats", data / "train", "--out", out, "--config", TINY, "--quiet",
                                    "--set", "stats.chunk_size=8"],
              ["{out}.parts/chunk-*.h5"], 24, table_numbers, lambda out: out.exists()),
        Stage("train", lambda out: ["train", "--config", TINY, "--data", data, "--run", out, "--quiet",
                                    "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=30"],
              ["{out}/checkpoints/step-*.pt"], 12, run_numbers,
              lambda out: (out / "checkpoints" / "step-00000024.pt").exists()),
        Stage("generate", lambda out: ["generate", "--run", run, "--n", 96, "--out", out, "--quiet",
                                       "--set", "generate.shard_size=8"],
              ["{out}/shard-*.h5"], 12, dataset_bytes, lambda out: (out / "manifest.json").exists()),
        Stage("validate", lambda out: ["validate", "--run", run, "--reference", data / "train", "--n", 96,
                                       "--out", out, "--quiet", "--set", "generate.shard_size=8",
                                       "--set", "stats.chunk_size=8", *LENIENT],
              ["{out}/stats/*.parts/chunk-*.h5"], 12, report_numbers,  # kills while the statistics run
              lambda out: (out / "index.html").exists()),
    ]}


def stage_inputs(data: Path, run: Path, root: Path, seed: int) -> dict[str, Stage]:
    """The stages over the tiny data, the trained run and a seeded (640, 32, 32) map array
    written under ``root`` (what import-npy reads)."""
    npy = root / "maps.npy"
    np.save(npy, np.random.default_rng(seed).lognormal(-4.0, 0.5, (640, 32, 32)).astype(np.float32) - 0.02)
    return stages(data, npy, run)


def count_markers(stage: Stage, out: Path) -> int:
    n = 0
    for pattern in stage.markers:
        pattern = pattern.format(out=out.name, name=out.name)
        n += len(list(out.parent.glob(pattern)))
    return n


def kill_after(stage: Stage, out: Path, markers: int, ranks: int, timeout: float = 180) -> tuple[int, float]:
    """Start the stage, SIGKILL it and all its processes once ``markers`` progress files exist;
    returns (markers seen at the kill, seconds it ran). Fails if it finished first."""
    proc = subprocess.Popen(command(stage.args(out), ranks), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=cli_env(), cwd=REPO, start_new_session=True)
    t0 = time.time()
    try:
        while count_markers(stage, out) < markers:
            if proc.poll() is not None:
                raise AssertionError(f"{stage.name} ended ({proc.returncode}) before {markers} markers: "
                                     f"{proc.stderr.read()[-2000:]}")
            if time.time() - t0 > timeout:
                raise AssertionError(f"{stage.name}: no {markers} markers within {timeout} s")
            time.sleep(0.005)
        seen = count_markers(stage, out)
        kill_launch(proc)
    finally:
        if proc.poll() is None:
            kill_launch(proc)
        proc.stderr.close()
    return seen, time.time() - t0


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failure reported as error lines (one per rank that saw it), no traceback."""
    assert proc.returncode not in (0, 3), proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("cosmogan: error: ")]
    assert errors, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for frag in fragments:
        assert any(frag in ln for ln in errors), (frag, errors)


def leftovers(root: Path) -> list[Path]:
    """Temporary files a stage writes under (partial shards, checkpoints, tables)."""
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp")]


def seeded_points(seed: int, total: int, k: int) -> list[int]:
    """k distinct kill points in 1 .. total - 1 (markers), from a seeded sequence."""
    rng = np.random.default_rng(seed)
    return sorted(int(x) for x in rng.choice(np.arange(1, total), size=min(k, total - 1), replace=False))

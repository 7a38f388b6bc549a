"""What a sweep validates: its items, one per (run, checkpoint[, cosmology]).

``--checkpoints`` picks each run's checkpoints with comma-separated selectors:
``all`` (every step checkpoint the run kept), ``last``, ``best`` (RUN/checkpoints/best.pt)
and ``every-K`` (the step checkpoints at multiples of K steps). A checkpoint picked
twice (best.pt holds the same weights as the step checkpoint of its step) is one item,
marked best. For a conditional run every cosmology of the reference is an item too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.models.conditioning import distinct_rows
from pipeline.train.checkpoint import checkpoint_dir, read_checkpoint, step_checkpoints

_EVERY = re.compile(r"every-([0-9]+)")
SELECTORS_TEXT = "all, last, best or every-K (K a positive number of steps), comma-separated"


@dataclass(frozen=True)
class SweepItem:
    """One validation. run_label: the run's name in the sweep (its directory's name, made
    unique); checkpoint: the file validated, holding the weights after ``step`` updates;
    best: the run's best.pt holds this step; cosmology: the values of param_names the maps
    are generated at (empty for an unconditional run, which is compared with the whole
    reference); extrapolated: the cosmology lies outside the run's training support."""

    run_label: str
    run_dir: str
    checkpoint: str
    step: int
    best: bool
    param_names: tuple[str, ...] = ()
    cosmology: tuple[float, ...] = ()
    extrapolated: bool = False

    @property
    def cosmology_label(self) -> str:
        """e.g. "Omega_m=0.3,sigma_8=0.8"; "" for an unconditional item."""
        return ",".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, self.cosmology))

    @property
    def key(self) -> str:
        """The item's directory under OUT/items: RUN/step-NNNNNNNN[/COSMOLOGY]."""
        parts = [self.run_label, f"step-{self.step:08d}"]
        if self.cosmology:
            parts.append(self.cosmology_label.replace(",", "_"))
        return "/".join(parts)

    @property
    def checkpoint_key(self) -> tuple[str, int]:
        return self.run_label, self.step

    def to_json(self) -> dict:
        return {"run_label": self.run_label, "run_dir": self.run_dir, "checkpoint": self.checkpoint,
                "step": self.step, "best": self.best, "param_names": list(self.param_names),
                "cosmology": list(self.cosmology), "extrapolated": self.extrapolated}

    @classmethod
    def from_json(cls, d: dict) -> SweepItem:
        return cls(d["run_label"], d["run_dir"], d["checkpoint"], int(d["step"]), bool(d["best"]),
                   tuple(d["param_names"]), tuple(float(v) for v in d["cosmology"]), bool(d["extrapolated"]))


@dataclass(frozen=True)
class PickedCheckpoint:
    path: Path
    step: int
    best: bool


def parse_selectors(spec: str) -> list[str]:
    """The selectors of --checkpoints, refused with one line when one is unknown."""
    selectors = [s.strip() for s in spec.split(",") if s.strip()]
    if not selectors:
        raise DataError(f"--checkpoints {spec!r}: give {SELECTORS_TEXT}")
    for s in selectors:
        m = _EVERY.fullmatch(s)
        if s not in ("all", "last", "best") and not (m and int(m.group(1)) > 0):
            raise DataError(f"--checkpoints: {s!r} is not a selector; use {SELECTORS_TEXT}")
    return selectors


def pick_checkpoints(run_dir: Path, selectors: list[str]) -> list[PickedCheckpoint]:
    """The run's checkpoints the selectors pick, by step (a step picked twice once)."""
    steps = {int(p.name[5:13]): p for p in step_checkpoints(run_dir)}
    best_path = checkpoint_dir(run_dir) / "best.pt"
    if not steps and not best_path.is_file():
        raise DataError(f"{run_dir}: run directory holds no checkpoint")
    picked: dict[int, Path] = {}
    best_step = None
    for s in selectors:
        if s == "all":
            picked.update(steps)
        elif s == "last":
            if not steps:
                raise DataError(f"{run_dir}: holds no step checkpoint for --checkpoints last")
            last = max(steps)
            picked[last] = steps[last]
        elif s == "best":
            if not best_path.is_file():
                raise DataError(f"{best_path}: no such checkpoint (the run kept no best; "
                                "train.fidelity_every makes one)")
            best_step = read_checkpoint(best_path).step
            picked.setdefault(best_step, steps.get(best_step, best_path))
        else:
            k = int(_EVERY.fullmatch(s).group(1))
            chosen = {step: p for step, p in steps.items() if step % k == 0}
            if not chosen:
                raise DataError(f"{run_dir}: no checkpoint at a multiple of {k} steps "
                                f"(it holds steps {', '.join(map(str, sorted(steps))) or 'none'})")
            picked.update(chosen)
    if best_step is None and best_path.is_file():  # mark the best even when not asked for by name
        best_step = read_checkpoint(best_path).step
    return [PickedCheckpoint(picked[s], s, s == best_step) for s in sorted(picked)]


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's name in the sweep: its directory's name, or, when two share one, its path
    below the runs' common directory with "/" as "_"."""
    resolved = [Path(os.path.abspath(r)) for r in run_dirs]
    if len(set(resolved)) != len(resolved):
        dup = next(r for r in resolved if resolved.count(r) > 1)
        raise DataError(f"--runs: {dup} is given twice")
    names = [r.name for r in resolved]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath(resolved))
    return [str(r.relative_to(common)).replace(os.sep, "_") for r in resolved]


def reference_cosmologies(param_names: tuple[str, ...], data_names: list[str], params: np.ndarray,
                          where: str) -> tuple[list[tuple[float, ...]], np.ndarray]:
    """The distinct cosmologies of a reference's per-map parameters (n, P_data) in the run's
    parameters, in order of first appearance, and each map's cosmology number (n,)."""
    missing = [n for n in param_names if n not in data_names]
    if missing:
        raise DataError(f"{where}: has no parameter {missing[0]!r}, which the run is conditional on "
                        f"(it has {list(data_names) or 'none'})")
    points, which = distinct_rows(np.asarray(params, np.float64)[:, [list(data_names).index(n) for n in param_names]])
    return [tuple(float(v) for v in row) for row in points], which

"""Checkpoints: everything with state, in one file, written atomically, last k kept.

``RUN/checkpoints/step-NNNNNNNN.pt`` holds models, both optimizers, the grad
scaler, step, loader position, RNG states, the resolved config, the model
arguments, the pixel transform and the fidelity record. ``best.pt`` is the
checkpoint with the best fidelity score so far. Files are plain dicts of
tensors, numbers and strings, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from pipeline.data.format import atomic_path
from pipeline.errors import DataError

FORMAT_NAME = "cosmogan-checkpoint"
FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"step-(\d{8})\.pt")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    d = checkpoint_dir(run_dir)
    files = [p for p in d.glob("step-*.pt") if _STEP_FILE.fullmatch(p.name)] if d.is_dir() else []
    return sorted(files, key=lambda p: int(_STEP_FILE.fullmatch(p.name).group(1)))


def save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Write step-<step>.pt atomically, then delete all but the newest ``keep``."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step-{state['step']:08d}.pt"
    write_checkpoint(path, state)
    for old in step_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def write_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **state}, tmp)


def resolve_checkpoint(run_dir: Path, which: str) -> Path:
    """"last", "best" or a path, as a checkpoint file that exists."""
    if which == "last":
        found = step_checkpoints(run_dir)
        if not found:
            raise DataError(f"{run_dir}: run directory holds no checkpoint")
        return found[-1]
    path = checkpoint_dir(run_dir) / "best.pt" if which == "best" else Path(which)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise DataError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: not a cosmogan checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: checkpoint format_version {state.get('format_version')} is not readable")
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

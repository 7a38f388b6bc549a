"""Checkpoints: a typed header plus the trainer's stateful parts, in one file, written
atomically, the last k kept.

``RUN/checkpoints/step-NNNNNNNN.pt`` holds a ``Checkpoint``: what any reader needs (step,
resolved config, model arguments, pixel transform, conditioning support, training data)
and ``parts``, the state dicts of everything the trainer restores (models, weight
average, optimizers, scaler, loader position, progress, RNG), by the names of its
registry (pipeline/train/state.py). ``best.pt`` is the checkpoint with the best
fidelity score so far. Files are plain dicts of tensors, numbers and strings, loaded
with ``weights_only=True``. This module is the only one that knows the file's keys.

Format versions: 2 (this one). 1 (before the conditioning support existed; its parts
lay at the top level) still loads, as an unconditional run. Anything else is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config, config_from_dict
from pipeline.data.format import atomic_path
from pipeline.data.transforms import ConditionalPixelTransform, PixelTransform, transform_from_state
from pipeline.errors import ConfigError, DataError
from pipeline.models.args import ModelArgs
from pipeline.models.conditioning import ParamSupport

FORMAT_NAME = "cosmogan-checkpoint"
FORMAT_VERSION = 2
_V1_PARTS = ("generator", "discriminator", "generator_ema", "opt_g", "opt_d", "scaler", "loader", "rng")
_STEP_FILE = re.compile(r"step-(\d{8})\.pt")


@dataclass
class Checkpoint:
    """step: generator updates done; config: the run's resolved config; side_angle_deg: the
    training maps' field side (degrees); train_manifest_digest: names the training dataset;
    parts: the trainer's state dicts by registry name; path: where it was read from."""

    step: int
    config: Config
    model_args: ModelArgs
    transform: PixelTransform | ConditionalPixelTransform
    support: ParamSupport
    side_angle_deg: float
    train_manifest_digest: str
    parts: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def generator_weights(self) -> tuple[dict, str]:
        """The generator to use and its part name: the moving average of the weights when the
        run kept one (train.ema_decay), else the live generator."""
        average = self.parts.get("generator_ema")
        if average:
            return average["weights"], "generator_ema"
        return self.parts["generator"], "generator"

    def to_file(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "step": int(self.step),
                "config": self.config.to_dict(), "model_args": self.model_args.to_dict(),
                "transform": self.transform.state_dict(), "conditioning": self.support.to_dict(),
                "data": {"train_manifest_digest": self.train_manifest_digest,
                         "side_angle_deg": float(self.side_angle_deg)},
                "parts": self.parts}

    @classmethod
    def from_file(cls, d: dict, path: Path) -> Checkpoint:
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise DataError(f"{path}: not a cosmogan checkpoint")
        version = d.get("format_version")
        if version == 1:
            d = _upgrade_v1(d)
        elif version != FORMAT_VERSION:
            raise DataError(f"{path}: checkpoint format_version {version!r} is not readable "
                            f"(this version reads 1 and {FORMAT_VERSION})")
        try:
            config = config_from_dict(d["config"])
            return cls(step=int(d["step"]), config=config,
                       model_args=ModelArgs.from_dict(d["model_args"], f"{path}: model_args"),
                       transform=transform_from_state(d["transform"]),
                       support=ParamSupport.from_dict(d["conditioning"], f"{path}: conditioning"),
                       side_angle_deg=float(d["data"]["side_angle_deg"]),
                       train_manifest_digest=str(d["data"]["train_manifest_digest"]),
                       parts=dict(d["parts"]), path=Path(path))
        except KeyError as e:
            raise DataError(f"{path}: checkpoint lacks {e.args[0]!r}") from None
        except ConfigError as e:
            raise DataError(f"{path}: {e}") from None


def _upgrade_v1(d: dict) -> dict:
    """Version 1: the parts lay beside the header, and there was no conditioning."""
    parts = {k: d[k] for k in _V1_PARTS if k in d}
    parts["progress"] = {"step": d.get("step"), **dict(d.get("fidelity", {}))}
    return {**{k: d[k] for k in ("step", "config", "model_args", "transform", "data") if k in d},
            "conditioning": ParamSupport().to_dict(), "parts": parts}


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    d = checkpoint_dir(run_dir)
    files = [p for p in d.glob("step-*.pt") if _STEP_FILE.fullmatch(p.name)] if d.is_dir() else []
    return sorted(files, key=lambda p: int(_STEP_FILE.fullmatch(p.name).group(1)))


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint.to_file(), tmp)


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


def read_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise DataError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    return Checkpoint.from_file(d, path)


class Checkpointer:
    """Writes a run's checkpoints and says when one is due: every ``every`` steps, at the last
    step, on a stop, and whenever the fidelity check found a new best (best.pt too)."""

    def __init__(self, run_dir: Path, every: int, keep: int, last_step: int):
        self.run_dir, self.every, self.keep, self.last_step = Path(run_dir), every, keep, last_step

    def due(self, step: int, stopping: bool, best: bool) -> bool:
        return step % self.every == 0 or step == self.last_step or stopping or best

    def newest(self) -> Path | None:
        found = step_checkpoints(self.run_dir)
        return found[-1] if found else None

    def save(self, checkpoint: Checkpoint, best: bool) -> Path:
        """Write step-<step>.pt (and best.pt) atomically, then delete all but the newest ``keep``."""
        d = checkpoint_dir(self.run_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"step-{checkpoint.step:08d}.pt"
        write_checkpoint(path, checkpoint)
        if best:
            write_checkpoint(d / "best.pt", checkpoint)
        for old in step_checkpoints(self.run_dir)[:-self.keep]:
            old.unlink()
        return path

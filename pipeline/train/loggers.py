"""Metric loggers: JSONL always, TensorBoard when installed, nothing on ranks > 0.

The loop holds one logger and never asks which kinds are on (null objects).
Scalars go to ``RUN/metrics.jsonl`` one JSON object per line; images (sample
grids) to PNG files under ``RUN/samples/`` and to TensorBoard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline.data.format import atomic_path, atomic_write_bytes


class Logger:
    """Does nothing: what ranks > 0 hold, and the base of the real ones."""

    def scalars(self, step: int, values: dict) -> None:
        pass

    def image(self, step: int, tag: str, image: np.ndarray, path: Path | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLogger(Logger):
    """Appends {"step": s, **values} lines. A run resumed at step s first drops the lines of
    steps after s (written by the interrupted run and about to be redone)."""

    def __init__(self, path: Path, resume_step: int = 0):
        if path.exists():
            kept, torn = [], 0
            for ln in path.read_text(errors="replace").splitlines():
                try:
                    step = json.loads(ln)["step"]
                except (ValueError, KeyError, TypeError):  # cut short by a crash or a full disk
                    torn += bool(ln.strip())
                    continue
                if step <= resume_step:
                    kept.append(ln + "\n")
            if torn:
                print(f"train: {path}: dropped {torn} torn line(s) (a crash or a full disk cut them short)",
                      flush=True)
            atomic_write_bytes(path, "".join(kept).encode())
        self._f = open(path, "a", buffering=1)

    def scalars(self, step, values):
        clean = {k: (v if isinstance(v, (int, str)) or math.isfinite(v) else str(v)) for k, v in values.items()}
        self._f.write(json.dumps({"step": step, **clean}) + "\n")

    def close(self):
        self._f.close()


class TensorBoardLogger(Logger):
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, step, values):
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self._w.add_scalar(k, v, step)

    def image(self, step, tag, image, path=None):
        self._w.add_image(tag, image, step, dataformats="HWC")

    def close(self):
        self._w.close()


class PngLogger(Logger):
    """Writes images to the path given (sample grids)."""

    def image(self, step, tag, image, path=None):
        if path is None:
            return
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            plt.imsave(tmp, image, format="png")


class MultiLogger(Logger):
    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def scalars(self, step, values):
        for lg in self.loggers:
            lg.scalars(step, values)

    def image(self, step, tag, image, path=None):
        for lg in self.loggers:
            lg.image(step, tag, image, path)

    def close(self):
        for lg in self.loggers:
            lg.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def make_logger(run_dir: Path, is_main: bool, resume_step: int = 0) -> Logger:
    if not is_main:
        return Logger()
    loggers = [JsonlLogger(run_dir / "metrics.jsonl", resume_step), PngLogger()]
    if tensorboard_available():
        loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
    return MultiLogger(loggers)


def sample_grid(maps: np.ndarray, columns: int = 4) -> np.ndarray:
    """A (rows*H, columns*W, 3) uint8 RGB image of maps (n, H, W), one colour scale for all
    (the 1st to 99th percentile of the values), viridis."""
    from matplotlib import colormaps

    n, h, w = maps.shape
    rows = math.ceil(n / columns)
    lo, hi = np.percentile(maps, [1, 99])
    grid = np.full((rows * h, columns * w), np.nan)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = maps[i]
    scaled = np.clip((grid - lo) / max(hi - lo, 1e-30), 0, 1)
    rgb = colormaps["viridis"](np.nan_to_num(scaled))[..., :3]
    rgb[np.isnan(grid)] = 1.0
    return (rgb * 255).astype(np.uint8)

"""What the likelihood draws its maps from: the emulator, or the physical model itself.

A simulator gives maps i = first_index .. first_index + n - 1 of a stream ``seed`` at one
point of parameter space. Map i's randomness depends only on (seed, i), never on the point:
the same latent draw z_i (emulator) or white noise (physical model) at every point, so the
mean of the first n maps is a smooth function of the parameters (common random numbers).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pipeline.config import PARAM_NAMES, Config
from pipeline.emulator import Emulator
from pipeline.errors import DataError

PHYSICS_STREAM = 17  # seed words (seed, 17, i): apart from make-data's (data.seed, split 0-2, i)


class Simulator(Protocol):
    name: str
    param_names: tuple[str, ...]
    map_size: int
    side_angle_deg: float

    def maps(self, point: np.ndarray, n: int, seed: int, first_index: int = 0) -> np.ndarray:
        """Maps (n, H, W) kappa at ``point`` (P,) in param_names order."""


class EmulatorSimulator:
    """The trained conditional generator (on its device: the GPU when the run's is one)."""

    name = "emulator"

    def __init__(self, emulator: Emulator, batch_size: int = 256):
        if not emulator.support.conditional:
            raise DataError(f"{emulator.source}: this run is unconditional; inference needs a run conditioned "
                            "on the parameters (model.condition_on)")
        self.emulator, self.batch_size = emulator, batch_size
        self.param_names = emulator.param_names
        self.map_size, self.side_angle_deg = emulator.map_size, emulator.side_angle_deg

    def maps(self, point, n: int, seed: int, first_index: int = 0) -> np.ndarray:
        return self.emulator.sample(n, params=np.asarray(point, np.float64), seed=seed, first_index=first_index,
                                    batch_size=self.batch_size, allow_extrapolation=True)


class PhysicsSimulator:
    """The physical model S(sigma, r) of the run's config (physics and cosmology sections):
    the baseline an emulator's posterior is judged against. It needs the run to be
    conditioned on both of its parameters, Omega_m and sigma_8 (in any order)."""

    name = "physics"

    def __init__(self, cfg: Config, param_names: tuple[str, ...]):
        from pipeline.physics import MapModel

        if sorted(param_names) != sorted(PARAM_NAMES):
            raise DataError(f"--simulator physics: the physical model takes {', '.join(PARAM_NAMES)}; this run "
                            f"is conditioned on {', '.join(param_names)}")
        self.model = MapModel(cfg.physics, cfg.cosmology)
        self.param_names = tuple(param_names)
        self.map_size, self.side_angle_deg = cfg.physics.map_size, cfg.physics.side_angle_deg

    def maps(self, point, n: int, seed: int, first_index: int = 0) -> np.ndarray:
        values = {name: float(v) for name, v in zip(self.param_names, point)}
        p = tuple(values[name] for name in PARAM_NAMES)
        out = np.empty((n, self.map_size, self.map_size), np.float32)
        for j in range(n):
            out[j] = self.model.synthesize(p, (seed, PHYSICS_STREAM, first_index + j))
        return out

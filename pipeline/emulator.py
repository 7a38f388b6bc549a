"""The one way to load a trained run and sample kappa maps from it.

    emu = Emulator.load("runs/quickstart", checkpoint="best")     # or "last", or a path
    maps = emu.sample(1024, seed=0)                                # (1024, H, W) float32 kappa

    emu = Emulator.load("runs/conditional")                        # a conditional run
    maps = emu.sample(512, params={"Omega_m": 0.31, "sigma_8": 0.79})
    p = emu.params_like("data/conditional/test")                   # one row per map of a dataset
    maps = emu.sample(len(p), params=p)

Map i of ``sample(n, seed=s)`` is G(z_i) with z_i drawn from its own stream seeded by
(s, first_index + i), so a map never depends on how many are drawn at once or by which
rank. The generator runs in eval mode (BatchNorm from its running statistics), so a map
does not depend on the others in its batch either: bit for bit when the batches hold the
same maps (generate starts them at fixed offsets), else to float32 rounding (CPU
convolution kernels sum in an order that depends on the batch size). The output is mapped back to kappa
(dimensionless, physical units) by the run's pixel transform. ``generate``, ``validate``
and the fidelity check during training all sample through this class.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.config import Config
from pipeline.data.transforms import PixelTransform
from pipeline.models.args import ModelArgs
from pipeline.models.conditioning import ParamSupport
from pipeline.models.dcgan import Generator
from pipeline.train.checkpoint import Checkpoint, read_checkpoint, resolve_checkpoint


def latent(seed: int, index: int, z_dim: int) -> torch.Tensor:
    """z (z_dim,) for map ``index``: its own stream, so no map depends on how the work is split."""
    words = np.random.SeedSequence([seed, index]).generate_state(1)[0]
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(int(words)))


class Emulator:
    """A generator, its pixel transform and what it was trained on.

    config: the run's resolved config; side_angle_deg: field side of the maps (degrees);
    map_size: pixels per side; param_names / param_ranges: the conditioning parameters and
    their training support ((), {} for an unconditional run); autocast: the precision
    context the generator runs under (fp32 when None).
    """

    def __init__(self, generator: nn.Module, transform: PixelTransform, model_args: ModelArgs,
                 support: ParamSupport, side_angle_deg: float, config: Config,
                 device: torch.device | str = "cpu", autocast=None, step: int | None = None,
                 weights: str = "generator", source: Path | None = None):
        self.generator, self.transform, self.model_args = generator, transform, model_args
        self.support, self.side_angle_deg, self.config = support, float(side_angle_deg), config
        self.device = torch.device(device)
        self.autocast = autocast if autocast is not None else contextlib.nullcontext()
        self.step, self.weights, self.source = step, weights, source

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Emulator:
        """The run's checkpoint "best" (by fidelity), "last" or a path to a checkpoint file."""
        return cls.from_checkpoint(read_checkpoint(resolve_checkpoint(Path(run_dir), str(checkpoint))), device)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str = "cpu") -> Emulator:
        gen = Generator(ckpt.model_args)
        weights, which = ckpt.generator_weights()
        gen.load_state_dict(weights)
        return cls(gen.to(device).eval(), ckpt.transform, ckpt.model_args, ckpt.support, ckpt.side_angle_deg,
                   ckpt.config, device, step=ckpt.step, weights=which, source=ckpt.path)

    @property
    def map_size(self) -> int:
        return self.model_args.image_size

    @property
    def z_dim(self) -> int:
        return self.model_args.z_dim

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.support.names

    @property
    def param_ranges(self) -> dict[str, tuple[float, float]]:
        return self.support.ranges

    def params_like(self, dataset_dir: str | Path) -> np.ndarray:
        """The per-map parameters (n, P) of a dataset, in param_names order: generating
        ``sample(n, params=...)`` with them mirrors its design (``generate --like``)."""
        from pipeline.data.loader import MapDataset
        from pipeline.errors import DataError

        if not self.support.conditional:
            raise DataError(f"--like {dataset_dir}: this run is unconditional; it takes no parameters")
        data = MapDataset(dataset_dir)
        try:
            return np.asarray(self.support.select(data.manifest.param_names, data.all_params(), str(dataset_dir)),
                              np.float64)
        finally:
            data.close()

    def check_params(self, params, n: int, allow_extrapolation: bool = False, where: str = "params") -> np.ndarray:
        """params as (n, P) float64 in param_names order: None (unconditional), one row for
        every map ((P,) or {name: value}), or n rows. Refuses what the run cannot take
        (ParamSupport.check)."""
        if isinstance(params, dict):
            params = self.support.parse(",".join(f"{k}={v}" for k, v in params.items()), where)
        if params is None:
            p = np.zeros((n, 0))
        else:
            p = np.asarray(params, np.float64)
            if p.ndim == 1:
                p = np.broadcast_to(p, (n, len(p)))
            if p.ndim != 2 or len(p) != n:
                raise ValueError(f"{where}: expected (P,) or ({n}, P) values, got shape {p.shape}")
        if self.support.conditional and not p.size:
            from pipeline.errors import DataError

            raise DataError(f"{where}: this run is conditional on {', '.join(self.param_names)}; give their values")
        self.support.check(p, allow_extrapolation, where)
        return p

    def sample(self, n: int, params=None, seed: int = 0, batch_size: int | None = None,
               first_index: int = 0, allow_extrapolation: bool = False) -> np.ndarray:
        """n kappa maps (n, H, W) float32: maps first_index .. first_index + n - 1 of the stream
        ``seed``, at ``params`` (see check_params) for a conditional run."""
        return self.sample_indices(range(first_index, first_index + n), params, seed, batch_size, allow_extrapolation)

    def sample_indices(self, indices, params=None, seed: int = 0, batch_size: int | None = None,
                       allow_extrapolation: bool = False) -> np.ndarray:
        """Maps (len(indices), H, W) float32 from the noise z_i of the stream ``seed`` at each
        index i: an index given twice at two cosmologies renders the same z at both."""
        indices = [int(i) for i in indices]
        p = self.check_params(params, len(indices), allow_extrapolation)
        z = torch.stack([latent(seed, i, self.z_dim) for i in indices]) if indices else torch.zeros(0, self.z_dim)
        return self.maps_from_latent(z, p, batch_size)

    def maps_from_latent(self, z: torch.Tensor, params=None, batch_size: int | None = None) -> np.ndarray:
        """kappa maps (n, H, W) float32 from given noise z (n, z_dim) and physical params (n, P)."""
        n = len(z)
        p = torch.as_tensor(np.zeros((n, 0)) if params is None else np.array(params, np.float32), dtype=torch.float32)
        cond = self.support.normalise(p) if self.support.conditional else p
        batch_size = batch_size or self.config.generate.batch_size
        gen = self.generator
        was_training = gen.training
        gen.eval()
        out = []
        try:
            with torch.no_grad(), self.autocast:
                for start in range(0, n, batch_size):
                    sl = slice(start, start + batch_size)
                    c = cond[sl].to(self.device)
                    y = gen(z[sl].to(self.device), c).float()
                    out.append(self.transform.inverse(y, c)[:, 0].cpu().numpy().astype(np.float32, copy=False))
        finally:
            gen.train(was_training)
        h = self.map_size
        return np.concatenate(out) if out else np.zeros((0, h, h), np.float32)

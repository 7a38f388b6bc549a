"""Builders of what the trainer holds: data, models, optimizers, precision, auxiliary terms.

Each function builds one thing from the config and checks what it needs, so that
``Trainer.__init__`` only wires them together (and every check runs before anything is
written). Seeds come from (train.seed, stream) words (``seed_from``), never from a rank.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config, TrainConfig
from pipeline.data.loader import MapDataset, ShardedLoader
from pipeline.data.transforms import ConditionalPixelTransform, PixelTransform, TransformError
from pipeline.errors import ConfigError, DataError
from pipeline.models.args import ModelArgs
from pipeline.models.conditioning import ParamSupport, distinct_rows
from pipeline.models.dcgan import build_models
from pipeline.parallel.backend import Backend
from pipeline.train.aux_losses import SpectralLoss
from pipeline.train.distribution_loss import PerMapDistributionLoss
from pipeline.train.ema import GeneratorEMA

# The seed streams of training: (seed, STREAM, ...) words for np.random.SeedSequence.
STEP_NOISE, SAMPLE_NOISE, FIDELITY_NOISE, EMA_CALIBRATION, FIT_SAMPLE = range(5)


def seed_from(*words: int) -> int:
    """A torch seed from non-negative words. Streams (train.seed, s, ...): STEP_NOISE with
    (rank, step), the same whenever the step is (re)run; SAMPLE_NOISE the fixed sample
    grid's noise; FIDELITY_NOISE the fidelity check's; EMA_CALIBRATION the noise that
    calibrates the weight average's BatchNorm; FIT_SAMPLE which maps the pixel transform,
    the spectral target and the fidelity reference are measured on."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """min(n, n_total) distinct map indices drawn at random (seeded), in file order: a
    sample of the whole split, whatever order its maps were written in."""
    if n >= n_total:
        return np.arange(n_total)
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(n_total, size=n, replace=False))


@dataclass
class TrainingData:
    """The training split's loader, the validation split, and their geometry (side in degrees)."""

    loader: ShardedLoader
    validation: MapDataset
    side_angle_deg: float
    map_size: int


def open_training_data(cfg: Config, data_dir: Path, backend: Backend) -> TrainingData:
    lc = cfg.loader
    loader = ShardedLoader(data_dir / "train", lc.batch_size, backend.rank, backend.world_size, seed=lc.seed,
                           shuffle=lc.shuffle, augment=lc.augment, num_workers=lc.num_workers)
    manifest = loader.data.manifest
    h, w = manifest.map_shape
    if h != w or h % 16:
        raise DataError(f"{data_dir / 'train'}: maps are {h}x{w}; the DCGAN needs square maps "
                        "whose side is a multiple of 16")
    if cfg.model.image_size and cfg.model.image_size != h:
        raise ConfigError(f"model.image_size is {cfg.model.image_size} but the maps in "
                          f"{data_dir / 'train'} are {h}x{w}")
    validation = MapDataset(data_dir / "validation")
    if validation.manifest.map_shape != (h, w):
        raise DataError(f"{data_dir / 'validation'}: maps are {validation.manifest.map_shape}, "
                        f"the training maps {h}x{w}")
    return TrainingData(loader, validation, manifest.side_angle_deg, h)


def read_sample(data: MapDataset, n: int, seed: int, chunk: int = 256, among: np.ndarray | None = None):
    """Yield the maps (kappa) of a seeded random sample of n maps, ``chunk`` at a time;
    drawn from the indices ``among`` (default: the whole split)."""
    pool = np.arange(len(data)) if among is None else np.asarray(among)
    idx = pool[sample_indices(len(pool), n, seed)]
    for start in range(0, len(idx), chunk):
        yield data.read(idx[start:start + chunk])[0]


@dataclass
class Cosmologies:
    """The distinct cosmologies of a split, in a conditional run's parameters: points
    (C, P) in physical units, in order of first appearance, and each map's number (n,)."""

    points: np.ndarray
    which: np.ndarray

    def members(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.which == c)


def split_cosmologies(data: MapDataset, support: ParamSupport) -> Cosmologies:
    """A split's cosmologies (one, at no parameters, for an unconditional run)."""
    if not support.conditional:
        return Cosmologies(np.zeros((1, 0)), np.zeros(len(data), np.int64))
    return Cosmologies(*distinct_rows(support.select(data.manifest.param_names, data.all_params(), str(data.root))))


def fit_support(args: ModelArgs, data: MapDataset) -> ParamSupport:
    """The training support of a conditional run (empty for an unconditional one): every
    parameter of model.condition_on must be in the data and take more than one value."""
    names = list(args.condition_on)
    if not names:
        return ParamSupport()
    support = ParamSupport.fit(names, data.manifest.param_names, data.all_params(), str(data.root))
    for name, lo, hi in zip(support.names, support.low, support.high):
        if not hi > lo:
            raise DataError(f"{data.root}: every training map has {name} = {lo:.6g}; model.condition_on needs "
                            "training data that spans a range of it")
    return support


def fit_transform(cfg: Config, data: MapDataset, support: ParamSupport) -> PixelTransform | ConditionalPixelTransform:
    """The pixel transform, fitted on transform.fit_maps maps drawn from the whole split; with
    transform.per_cosmology, on fit_maps maps of each training cosmology."""
    seed = seed_from(cfg.train.seed, FIT_SAMPLE)
    if not cfg.transform.per_cosmology:
        return PixelTransform.fit(np.concatenate(list(read_sample(data, cfg.transform.fit_maps, seed))), cfg.transform)
    cosmologies = split_cosmologies(data, support)
    samples = [np.concatenate(list(read_sample(data, cfg.transform.fit_maps, seed, among=cosmologies.members(c))))
               for c in range(len(cosmologies.points))]
    points = support.normalise(torch.as_tensor(cosmologies.points, dtype=torch.float64)).numpy()
    try:
        return ConditionalPixelTransform.fit(samples, points, cfg.transform)
    except TransformError as e:
        raise DataError(f"{data.root}: {e}") from None


def build_networks(args: ModelArgs, tc: TrainConfig, backend: Backend, memory_format):
    """(G, D), initialised from train.seed (generator first), on the backend's device."""
    torch.manual_seed(tc.seed)
    gen, disc = (m.to(backend.device).to(memory_format=memory_format) for m in build_models(args))
    return gen, disc


def learning_rate_factor(tc: TrainConfig, global_batch: int) -> float:
    """The multiplier of lr_g / lr_d for this global batch (train.lr_scaling)."""
    ratio = global_batch / tc.lr_reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[tc.lr_scaling]


def build_optimizers(gen, disc, tc: TrainConfig, lr_factor: float, backend: Backend):
    betas = (tc.beta1, tc.beta2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=tc.lr_g * lr_factor, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr_d * lr_factor, betas=betas)
    # wrapped before any restore: Horovod's wrapper is a new optimizer that keeps only
    # the param_groups of the one it wraps, not its state
    return backend.wrap_optimizer(opt_g, gen, "generator"), backend.wrap_optimizer(opt_d, disc, "discriminator")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: on CUDA, what torch reports; on a CPU, what
    oneDNN reports (AVX512-BF16 or AMX), read from /proc/cpuinfo where torch cannot say."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """train.precision as run: "auto" is bf16 where the device has it natively, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


@dataclass
class AuxiliaryTerms:
    """The generator's weighted auxiliary loss ``f(fake, params)``: the per-mode spectral
    term (train.spectral_weight) plus, for a conditional run, its per-cosmology part
    (train.cosmology_spectral_weight), its anisotropy part (train.spectral_anisotropy_weight),
    and the per-map distribution term
    (train.distribution_weight). ``loss`` (the spectral term, or None) holds the focus
    state that checkpoints keep."""

    loss: SpectralLoss | None
    weight: float
    cosmology_weight: float
    distribution: PerMapDistributionLoss | None = None
    distribution_weight: float = 0.0
    anisotropy_weight: float = 0.0

    def __call__(self, fake: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros(())
        if self.weight > 0 or self.anisotropy_weight > 0:
            errors = self.loss.mode_errors(fake, params)  # once, for both terms
            if self.weight > 0:
                total = total + self.weight * self.loss.spectral_term(errors)
            if self.anisotropy_weight > 0:
                total = total + self.anisotropy_weight * self.loss.anisotropy_term(errors)
        if self.cosmology_weight > 0:
            total = total + self.cosmology_weight * self.loss.cosmology_term(fake, params)
        if self.distribution is not None:
            total = total + self.distribution_weight * self.distribution(fake, params)
        return total


def build_auxiliary_loss(cfg: Config, data: MapDataset, transform: PixelTransform, size: int,
                         backend: Backend, support: ParamSupport) -> AuxiliaryTerms | None:
    """The weighted auxiliary terms (train.spectral_weight, cosmology_spectral_weight,
    distribution_weight), or None when all are 0. The spectral target: 1024 training maps
    drawn from the whole split (error ~1/sqrt(n modes)); for a conditional run, up to 1024
    maps of each training cosmology, that cosmology's own. The distribution term's bank:
    2048 training maps drawn the same way (another draw); for a conditional run, up to 512
    maps of each training cosmology, each standardised by its own."""
    tc = cfg.train
    if (tc.spectral_weight <= 0 and tc.cosmology_spectral_weight <= 0 and tc.spectral_anisotropy_weight <= 0
            and tc.distribution_weight <= 0):
        return None
    spectral = None
    if tc.spectral_weight > 0 or tc.cosmology_spectral_weight > 0 or tc.spectral_anisotropy_weight > 0:
        spectral = _spectral_loss(tc, data, transform, size, backend, support)
    distribution = None
    if tc.distribution_weight > 0:
        distribution = _distribution_loss(tc, data, transform, size, backend, support)
    return AuxiliaryTerms(spectral, tc.spectral_weight, tc.cosmology_spectral_weight, distribution,
                          tc.distribution_weight, tc.spectral_anisotropy_weight)


def _distribution_loss(tc: TrainConfig, data: MapDataset, transform: PixelTransform, size: int,
                       backend: Backend, support: ParamSupport) -> PerMapDistributionLoss:
    seed = seed_from(tc.seed, FIT_SAMPLE, 2)
    parts = dict(spread_weight=tc.distribution_spread_weight, correlation_weight=tc.distribution_correlation_weight,
                 fundamental_group=tc.distribution_fundamental_group)
    if not support.conditional:
        return PerMapDistributionLoss(size, read_sample(data, 2048, seed, 256), transform, backend.device, **parts)
    cosmologies = split_cosmologies(data, support)
    per = [read_sample(data, 512, seed, 256, among=cosmologies.members(c)) for c in range(len(cosmologies.points))]
    points = support.normalise(torch.as_tensor(cosmologies.points, dtype=torch.float32))
    return PerMapDistributionLoss(size, [], transform, backend.device, per_cosmology=per, points=points, **parts)


def _spectral_loss(tc: TrainConfig, data: MapDataset, transform: PixelTransform, size: int,
                   backend: Backend, support: ParamSupport) -> SpectralLoss:
    seed = seed_from(tc.seed, FIT_SAMPLE, 1)
    if not support.conditional:
        return SpectralLoss(size, read_sample(data, 1024, seed, 128), transform, backend.device)
    cosmologies = split_cosmologies(data, support)
    per = [read_sample(data, 1024, seed, 128, among=cosmologies.members(c)) for c in range(len(cosmologies.points))]
    points = support.normalise(torch.as_tensor(cosmologies.points, dtype=torch.float32))
    focus = tc.cosmology_spectral_focus if tc.cosmology_spectral_weight > 0 else 0.0
    return SpectralLoss(size, [], transform, backend.device, per_cosmology=per, points=points,
                        cosmology_mean=tc.cosmology_spectral_mean, focus=focus,
                        cosmology_scale=tc.cosmology_spectral_scale,
                        pool=backend.sum if backend.world_size > 1 else None)


def build_ema(gen, tc: TrainConfig, batch_size: int, z_dim: int, n_params: int = 0) -> GeneratorEMA | None:
    """The moving average of G's weights (train.ema_decay), started from G's current weights,
    or with train.standing_stats and no average a copy of the live weights (decay 0). Its
    BatchNorm is calibrated on noise and, when conditional, uniform draws over the support."""
    if tc.ema_decay <= 0 and not tc.standing_stats:
        return None
    g = torch.Generator().manual_seed(seed_from(tc.seed, EMA_CALIBRATION))
    z = torch.randn(8 * batch_size, z_dim, generator=g)
    params = torch.rand(8 * batch_size, n_params, generator=g) * 2 - 1 if n_params else None
    return GeneratorEMA(gen, tc.ema_decay, z, batch_size, params)

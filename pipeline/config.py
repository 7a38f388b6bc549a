"""Typed configuration: dataclasses with defaults, YAML files, ``--set`` overrides.

Every stage reads one ``Config``. Unknown keys, wrong types and out-of-range
values raise ``ConfigError`` naming the file and the dotted key. The resolved
config (after overrides) is what gets saved next to every output, so a run can
be reproduced from its output alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from pipeline.errors import ConfigError

PARAM_NAMES = ("Omega_m", "sigma_8")


@dataclass
class SourceConfig:
    """Source redshift distribution.

    kind: "plane" (all sources at redshift ``z``) or "smail"
    (n(z) ~ z^alpha exp(-(z/z0)^beta), truncated at ``z_max``).
    """

    kind: Literal["plane", "smail"] = "plane"
    z: float = 1.0
    z0: float = 0.64
    alpha: float = 2.0
    beta: float = 1.5
    z_max: float = 4.0

    def validate(self, where: str) -> None:
        for name in ("z", "z0", "alpha", "beta", "z_max"):
            _positive(getattr(self, name), f"{where}.{name}")


def _check_point(point, key: str) -> tuple[float, ...]:
    """A cosmology {Omega_m: x, sigma_8: y} as a tuple in PARAM_NAMES order."""
    if not isinstance(point, dict) or set(point) != set(PARAM_NAMES):
        raise ConfigError(f"{key}: expected a mapping of exactly {list(PARAM_NAMES)}, got {point!r}")
    out = []
    for name in PARAM_NAMES:
        v = point[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}.{name}: expected a number, got {v!r}")
        _positive(v, f"{key}.{name}")
        out.append(float(v))
    return tuple(out)


@dataclass
class DesignConfig:
    """Which cosmologies (Omega_m, sigma_8) a dataset covers (docs/data-format.md).

    kind "grid": the Cartesian product of ``grid`` (each varied parameter's list of
    values), Omega_m slowest. kind "latin_hypercube": ``n_points`` points over ``ranges``
    (each parameter's [low, high]), one per row and column of an n x n stratification
    (scipy.stats.qmc.LatinHypercube, seeded by ``seed``), so every parameter's range is
    covered evenly with few points. kind "points": the explicit list ``points`` of
    {Omega_m: ..., sigma_8: ...}. Map i of a split has cosmology i % n_points.
    """

    kind: Literal["grid", "latin_hypercube", "points"] = "grid"
    grid: dict = dataclasses.field(default_factory=lambda: {"Omega_m": [0.3], "sigma_8": [0.8]})
    n_points: int = 0
    ranges: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    points: list = dataclasses.field(default_factory=list)

    def validate(self, where: str) -> None:
        if self.kind == "grid":
            self._validate_grid(f"{where}.grid")
        elif self.kind == "latin_hypercube":
            _positive(self.n_points, f"{where}.n_points")
            _non_negative(self.seed, f"{where}.seed")
            if set(self.ranges) != set(PARAM_NAMES):
                raise ConfigError(f"{where}.ranges: must give [low, high] for exactly {list(PARAM_NAMES)}, "
                                  f"got {sorted(self.ranges)}")
            for name, r in self.ranges.items():
                key = f"{where}.ranges.{name}"
                if (not isinstance(r, list) or len(r) != 2
                        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in r)):
                    raise ConfigError(f"{key}: expected [low, high], got {r!r}")
                _positive(r[0], key)
                _positive(r[1], key)
                if not r[1] > r[0]:
                    raise ConfigError(f"{key}: high must exceed low, got {r}")
                self.ranges[name] = [float(r[0]), float(r[1])]
        else:
            if not isinstance(self.points, list) or not self.points:
                raise ConfigError(f"{where}.points: expected a non-empty list of cosmologies")
            for i, p in enumerate(self.points):
                _check_point(p, f"{where}.points[{i}]")

    def _validate_grid(self, key: str) -> None:
        if set(self.grid) != set(PARAM_NAMES):
            raise ConfigError(f"{key}: must list exactly {list(PARAM_NAMES)}, got {sorted(self.grid)}")
        for name, values in self.grid.items():
            k = f"{key}.{name}"
            if isinstance(values, (int, float)) and not isinstance(values, bool):
                values = [values]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{k}: expected a non-empty list of numbers")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"{k}: expected numbers, got {v!r}")
                _positive(v, k)
            self.grid[name] = [float(v) for v in values]

    def points_list(self) -> list[tuple[float, ...]]:
        """The design's cosmologies, as tuples in PARAM_NAMES order."""
        if self.kind == "grid":
            out = [()]
            for name in PARAM_NAMES:
                out = [p + (v,) for p in out for v in self.grid[name]]
            return out
        if self.kind == "latin_hypercube":
            import numpy as np
            from scipy.stats import qmc

            unit = qmc.LatinHypercube(len(PARAM_NAMES), seed=np.random.default_rng(self.seed)).random(self.n_points)
            lows = [self.ranges[n][0] for n in PARAM_NAMES]
            highs = [self.ranges[n][1] for n in PARAM_NAMES]
            return [tuple(float(v) for v in row) for row in qmc.scale(unit, lows, highs)]
        return [_check_point(p, "points") for p in self.points]


@dataclass
class CosmologyConfig:
    """LambdaCDM parameters held fixed, and the design of the varied ones (Omega_m, sigma_8).

    ``design`` is the cosmologies every split covers unless ``data.splits.<split>`` gives
    its own. Omega_m is the total matter density (CDM + baryons); Omega_b, h, n_s are
    fixed for all maps.
    """

    design: DesignConfig = dataclasses.field(default_factory=DesignConfig)
    Omega_b: float = 0.045
    h: float = 0.7
    n_s: float = 0.96
    transfer_function: Literal["eisenstein_hu", "bbks", "boltzmann_camb"] = "eisenstein_hu"
    matter_power_spectrum: Literal["halofit", "linear"] = "halofit"

    def validate(self, where: str) -> None:
        self.design.validate(f"{where}.design")
        for name in ("Omega_b", "h", "n_s"):
            _positive(getattr(self, name), f"{where}.{name}")


@dataclass
class PhysicsConfig:
    """How one convergence map is synthesised.

    map_size: pixels per side; side_angle_deg: field side (degrees);
    field: "gaussian" or "lognormal"; lognormal_shift: "auto" (empty-beam
    convergence, see docs/physics.md) or the shift lambda as a number;
    smoothing_arcmin: FWHM of a Gaussian smoothing (0 = none);
    shape_noise_sigma_e: intrinsic ellipticity dispersion per component
    (0 = no noise) with n_gal_arcmin2 galaxies per arcmin^2.
    """

    map_size: int = 64
    side_angle_deg: float = 3.5
    field: Literal["gaussian", "lognormal"] = "lognormal"
    lognormal_shift: Union[Literal["auto"], float] = "auto"
    smoothing_arcmin: float = 0.0
    shape_noise_sigma_e: float = 0.0
    n_gal_arcmin2: float = 30.0
    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)

    def validate(self, where: str) -> None:
        _positive(self.map_size, f"{where}.map_size")
        if self.map_size % 2:
            raise ConfigError(f"{where}.map_size: must be even, got {self.map_size}")
        _positive(self.side_angle_deg, f"{where}.side_angle_deg")
        if not isinstance(self.lognormal_shift, str):
            _positive(self.lognormal_shift, f"{where}.lognormal_shift")
        _non_negative(self.smoothing_arcmin, f"{where}.smoothing_arcmin")
        _non_negative(self.shape_noise_sigma_e, f"{where}.shape_noise_sigma_e")
        _positive(self.n_gal_arcmin2, f"{where}.n_gal_arcmin2")
        self.source.validate(f"{where}.source")


@dataclass
class SplitConfig:
    """One split's cosmologies: ``design`` (None: cosmology.design) plus ``extra_points``
    ({Omega_m: ..., sigma_8: ...} each), e.g. held-out cosmologies for the test split.
    matched_seeds: every cosmology of the split gets the same random fields (map i draws
    realisation i // n_points, not i), as simulation suites do for derivatives: a ratio
    of two cosmologies' statistics then carries little of the sample variance (the
    response check of a conditional validation)."""

    design: Optional[DesignConfig] = None
    extra_points: list = dataclasses.field(default_factory=list)
    matched_seeds: bool = False

    def validate(self, where: str) -> None:
        if self.design is not None:
            self.design.validate(f"{where}.design")
        if not isinstance(self.extra_points, list):
            raise ConfigError(f"{where}.extra_points: expected a list of cosmologies")
        for i, p in enumerate(self.extra_points):
            _check_point(p, f"{where}.extra_points[{i}]")


@dataclass
class SplitsConfig:
    train: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    validation: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    test: SplitConfig = dataclasses.field(default_factory=SplitConfig)

    def validate(self, where: str) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f"{where}.{f.name}")


@dataclass
class DataConfig:
    """The dataset that make-data writes: one per split, disjoint seeds.

    n_train / n_validation / n_test: maps per split; shard_size: maps per
    HDF5 shard file (fixed, so the files do not depend on the rank count);
    splits: each split's cosmologies when they differ from cosmology.design.
    """

    seed: int = 1234
    n_train: int = 400
    n_validation: int = 100
    n_test: int = 100
    shard_size: int = 256
    splits: SplitsConfig = dataclasses.field(default_factory=SplitsConfig)

    def validate(self, where: str) -> None:
        _non_negative(self.seed, f"{where}.seed")
        for name in ("n_train", "n_validation", "n_test", "shard_size"):
            _positive(getattr(self, name), f"{where}.{name}")
        self.splits.validate(f"{where}.splits")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}


@dataclass
class LoaderConfig:
    """How training reads a dataset: per-rank batch, shuffling, augmentation."""

    batch_size: int = 64
    shuffle: bool = True
    augment: bool = True
    num_workers: int = 0
    seed: int = 0

    def validate(self, where: str) -> None:
        _positive(self.batch_size, f"{where}.batch_size")
        _non_negative(self.num_workers, f"{where}.num_workers")
        _non_negative(self.seed, f"{where}.seed")


@dataclass
class StatsConfig:
    """Bins of the summary statistics (docs/statistics.md) and the fan-out's chunking.

    ell bins: n_ell bins from ell_min to ell_max (rad^-1), "linear" or "log"
    spacing (every bin must hold at least one Fourier mode); 0 means automatic: ell_min = half
    the fundamental mode, pi / theta (bins are open below),
    ell_max = half the Nyquist ell, pi N / (2 theta). Thresholds: n_thresholds bins
    from threshold_min to threshold_max, in units of the dataset's pooled pixel
    standard deviation ("sigma") or of kappa itself ("kappa"). chunk_size: maps
    per unit of work (and per resumable part file).
    """

    n_ell: int = 20
    ell_min: float = 0.0
    ell_max: float = 0.0
    ell_spacing: Literal["linear", "log"] = "linear"
    n_thresholds: int = 34
    threshold_min: float = -2.0
    threshold_max: float = 3.0
    threshold_units: Literal["sigma", "kappa"] = "sigma"
    chunk_size: int = 256

    def validate(self, where: str) -> None:
        for name in ("n_ell", "n_thresholds", "chunk_size"):
            _positive(getattr(self, name), f"{where}.{name}")
        _non_negative(self.ell_min, f"{where}.ell_min")
        _non_negative(self.ell_max, f"{where}.ell_max")
        if self.ell_max and self.ell_max <= self.ell_min:
            raise ConfigError(f"{where}.ell_max: must exceed ell_min ({self.ell_min}), got {self.ell_max}")
        if self.threshold_max <= self.threshold_min:
            raise ConfigError(f"{where}.threshold_max: must exceed threshold_min "
                              f"({self.threshold_min}), got {self.threshold_max}")


@dataclass
class ModelConfig:
    """The DCGAN (CosmoGAN): widths, latent size, kernel, upsampling.

    image_size: pixels per side of the maps (0 = take it from the training data;
    must be a multiple of 16). g_channels: width of the generator's last hidden
    layer (its first is 8x, e.g. 512 for 64); d_channels: width of the
    discriminator's first layer (its last is 8x). kernel_size: odd (CosmoGAN: 5) or,
    with transposed upsampling, even (DCGAN's 4: no checkerboard from uneven overlap).
    upsample: "transposed" (CosmoGAN) or "resize_conv" (nearest-neighbour upsampling then a
    convolution, against checkerboard artefacts). padding: "zeros" (CosmoGAN) or
    "circular" (the maps of the physical model are periodic: every convolution wraps around).
    d_minibatch_std: 0 (CosmoGAN) or a group size G: D's last features get one more channel,
    the standard deviation of its features over groups of G maps of the batch, averaged
    (Karras et al. 2018), so that D sees how varied the maps are, not only each map.
    condition_on: the per-map parameters (names in the training data, e.g. [Omega_m,
    sigma_8]) a conditional emulator takes; empty: one cosmology, unconditional.
    g_conditioning: "film" (conditional BatchNorm: a small MLP of the parameters gives
    every BatchNorm of G its gain and bias), "concat" (appended to z) or "film+concat";
    d_conditioning: "projection" (Miyato & Koyama 2018: the inner product of an embedding
    of the parameters with D's pooled features, added to the logit), "planes" (one
    constant input channel per parameter, as NERSC's PyTorch CosmoGAN port did) or
    "projection+planes". Parameters enter normalised over the training support.
    g_large_scale_rings: G's R lowest rings of |k| (1 .. R) get a learned gain before
    tanh, of the parameters' choosing when conditional (pipeline/models/dcgan.py,
    LargeScaleGain; 0 = off).
    """

    image_size: int = 0
    z_dim: int = 64
    g_channels: int = 64
    d_channels: int = 64
    kernel_size: int = 5
    upsample: Literal["transposed", "resize_conv"] = "transposed"
    padding: Literal["zeros", "circular"] = "zeros"
    d_minibatch_std: int = 0
    condition_on: list[str] = dataclasses.field(default_factory=list)
    g_conditioning: Literal["film", "concat", "film+concat"] = "film"
    d_conditioning: Literal["projection", "planes", "projection+planes"] = "projection"
    g_large_scale_rings: int = 0

    def validate(self, where: str) -> None:
        _non_negative(self.image_size, f"{where}.image_size")
        if self.image_size % 16:
            raise ConfigError(f"{where}.image_size: must be a multiple of 16, got {self.image_size}")
        from pipeline.models.args import ModelArgs

        ModelArgs.from_config(self, self.image_size or 16)  # the models' own checks, once


@dataclass
class TransformConfig:
    """The monotone map of kappa into tanh's range (-1, 1) that the GAN sees.

    s(x) = 2x / (x + scale) - 1 with x = kappa + shift (Rodriguez et al. 2018),
    which keeps the heavy positive tail resolved. shift: "auto" (the training
    sample's most negative kappa, times 1 + margin) or a number > -min(kappa);
    scale: "auto" (the median of x over the training sample) or a positive number.
    fit_maps: the size of that sample, drawn at random (seeded by train.seed) from the
    whole training split. s is steepest at x = 0, so a small margin spreads the deepest
    pixels over much of tanh's range: at 0.05 the quickstart's dark tail (-2 sigma to its
    floor near -3 sigma) took 0.44 of it against 0.08 for +2..+3 sigma, and G compressed
    that tail; configs/quickstart.yaml sets 0.5 (docs/training-notes.md, v1m5_s0).
    per_cosmology (conditional runs): shift and scale are smooth functions of the
    parameters instead, polynomials of ``degree`` in the normalised parameters fitted to
    log(-min kappa) and log median(kappa + shift) of fit_maps maps of each training
    cosmology (pipeline/data/transforms.py, ConditionalPixelTransform), so that every
    cosmology's maps span a like part of tanh's range.
    """

    shift: Union[Literal["auto"], float] = "auto"
    scale: Union[Literal["auto"], float] = "auto"
    margin: float = 0.05
    fit_maps: int = 256
    per_cosmology: bool = False
    degree: int = 2

    def validate(self, where: str) -> None:
        for name in ("shift", "scale"):
            if not isinstance(getattr(self, name), str):
                _positive(getattr(self, name), f"{where}.{name}")
        _non_negative(self.margin, f"{where}.margin")
        _positive(self.fit_maps, f"{where}.fit_maps")
        _non_negative(self.degree, f"{where}.degree")
        if self.per_cosmology and (self.shift != "auto" or self.scale != "auto"):
            raise ConfigError(f"{where}.per_cosmology: shift and scale are fitted per cosmology; leave "
                              f"{where}.shift and {where}.scale at 'auto'")


@dataclass
class TrainConfig:
    """The training loop. Steps count generator updates; every *_every is in steps.

    precision: "fp32", "bf16" or "fp16" (autocast; fp16 with a gradient scaler), or "auto": bf16
    where the device computes it natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX), else
    fp32 (a CPU without them emulates bf16, many times slower than fp32); device: "auto" (CUDA when present),
    "cpu" or "cuda"; backend: "single" (one process), "ddp", "horovod" or "auto" (single
    for one process, horovod under an MPI launcher when installed, else ddp). lr_*: Adam
    learning rates at the global batch lr_reference_batch, scaled to the actual global
    batch by lr_scaling ("none", "linear" or "sqrt"); collective_timeout_s: how long a
    rank waits for the others before failing (DDP); spectral_weight: weight of the
    auxiliary power-spectrum loss of the generator (0 = off; pipeline/train/aux_losses.py);
    cosmology_spectral_weight: weight of the spectral term's per-cosmology part, the squared
    bias of each training cosmology's broadband power per ring (0 = off; aux_losses.py);
    cosmology_spectral_mean: that part judges the map mean (ring 0) too;
    cosmology_spectral_scale: that part's amplitude, "log" (each map's log power ratio per
    ring: matches the mean log power) or "linear" (the ratio: matches the mean power, which
    the validation criteria judge; aux_losses.py);
    spectral_anisotropy_weight: weight of the spectral term's anisotropy part, each mode's
    log power ratio against its ring's mean, every mode alike (0 = off; aux_losses.py);
    cosmology_spectral_focus: that part pulls each map by a moving mean of its
    (cosmology, ring) cell's deviation, decaying by this factor per step, and weighs each
    cell by that mean's square (0 = off: the batch's pairs, every cell alike; ~0.99
    averages the last ~100 steps; aux_losses.py);
    distribution_weight: weight of the per-map distribution term, the energy distance of
    each map's pixel moments, soft V0, soft V1 and ring powers from those of training maps (0 = off;
    a conditional run standardises each map's by its own cosmology's training maps;
    pipeline/train/distribution_loss.py);
    distribution_spread_weight: that term's weight, relative to its distances, of the
    squared log ratio of each summary's standard deviation over the batch to the
    training maps' (0 = off);
    distribution_correlation_weight: that term's weight, relative to its distances, of the
    squared difference of each pair of summaries' correlation over the batch from the
    training maps', on Fisher's z scale (0 = off);
    distribution_fundamental_group: that term weighs the ring-1 (|k| = 1 and sqrt 2) power
    as a group of its own, beside the map mean, sigma, skewness, V0s, V1s and other rings;
    fresh_params: a conditional run draws its generated maps at uniform draws over the
    training support instead of at the real batch's parameters (needs the spectral,
    anisotropy and distribution weights 0);
    lr_decay: "none" (constant learning rates) or "cosine" (from lr_* at step 0 down to
    lr_final_fraction x lr_* at train.steps, half a cosine; a function of the step, so a
    resumed run follows it, and changing train.steps reshapes it);
    ema_decay: per-step decay of the moving average of the generator's weights that the
    fidelity check, best.pt and generate use (0 = off, the live generator; ~0.999 averages
    the last ~1000 steps; pipeline/train/ema.py); standing_stats: with ema_decay 0, the
    generator used is the live weights with BatchNorm statistics recomputed over fixed
    noise before each use, as the average's are, instead of the running ones (ema.py).
    Other fields:
    beta1/beta2 Adam's betas; label_flip: probability of flipping each label
    the discriminator sees; fidelity_maps: generated maps per fidelity check,
    compared with as many validation maps; fidelity_bias_weight: the fidelity score's
    weight of the worst per-map bias |delta mu| / sigma_ref (0 = the means only;
    pipeline/train/fidelity.py).
    """

    steps: int = 1000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    label_flip: float = 0.01
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "single", "ddp", "horovod"] = "auto"
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_reference_batch: int = 64
    collective_timeout_s: float = 300.0
    spectral_weight: float = 0.0
    cosmology_spectral_weight: float = 0.0
    cosmology_spectral_mean: bool = False
    cosmology_spectral_scale: Literal["log", "linear"] = "log"
    spectral_anisotropy_weight: float = 0.0
    cosmology_spectral_focus: float = 0.0
    distribution_weight: float = 0.0
    distribution_spread_weight: float = 0.0
    distribution_correlation_weight: float = 0.0
    distribution_fundamental_group: bool = False
    fresh_params: bool = False
    lr_decay: Literal["none", "cosine"] = "none"
    lr_final_fraction: float = 0.1
    ema_decay: float = 0.0
    standing_stats: bool = False
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 10
    sample_every: int = 200
    fidelity_every: int = 200
    fidelity_maps: int = 256
    fidelity_bias_weight: float = 0.0

    def validate(self, where: str) -> None:
        for name in ("steps", "lr_g", "lr_d", "checkpoint_every", "keep_checkpoints", "log_every",
                     "sample_every", "fidelity_every", "fidelity_maps"):
            _positive(getattr(self, name), f"{where}.{name}")
        for name in ("beta1", "beta2", "label_flip", "ema_decay", "cosmology_spectral_focus"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{where}.{name}: must be in [0, 1), got {value}")
        _non_negative(self.seed, f"{where}.seed")
        if not 0 <= self.lr_final_fraction <= 1:
            raise ConfigError(f"{where}.lr_final_fraction: must be in [0, 1], got {self.lr_final_fraction}")
        _positive(self.lr_reference_batch, f"{where}.lr_reference_batch")
        _positive(self.collective_timeout_s, f"{where}.collective_timeout_s")
        _non_negative(self.spectral_weight, f"{where}.spectral_weight")
        _non_negative(self.cosmology_spectral_weight, f"{where}.cosmology_spectral_weight")
        _non_negative(self.spectral_anisotropy_weight, f"{where}.spectral_anisotropy_weight")
        _non_negative(self.distribution_weight, f"{where}.distribution_weight")
        _non_negative(self.distribution_spread_weight, f"{where}.distribution_spread_weight")
        _non_negative(self.distribution_correlation_weight, f"{where}.distribution_correlation_weight")
        _non_negative(self.fidelity_bias_weight, f"{where}.fidelity_bias_weight")
        if self.fresh_params and (self.spectral_weight > 0 or self.cosmology_spectral_weight > 0
                                  or self.spectral_anisotropy_weight > 0 or self.distribution_weight > 0):
            raise ConfigError(f"{where}.fresh_params: the spectral and distribution terms' targets exist only at the "
                              "training cosmologies; set train.spectral_weight, cosmology_spectral_weight, "
                              "spectral_anisotropy_weight and distribution_weight to 0 to draw generated maps at "
                              "fresh parameters")


@dataclass
class GenerateConfig:
    """Generation: maps per shard of the output and per forward pass (both fixed, so the
    output does not depend on the number of ranks)."""

    seed: int = 0
    batch_size: int = 64
    shard_size: int = 1024

    def validate(self, where: str) -> None:
        _non_negative(self.seed, f"{where}.seed")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.shard_size, f"{where}.shard_size")


@dataclass
class ValidationConfig:
    """The verdicts of `cosmogan validate`: each statistic's worst error against a threshold.

    ps_max_rel_err: worst |relative error| of the mean power spectrum over the ell bins;
    mf_max_err_over_peak, peaks_max_err_over_peak, pdf_max_err_over_peak: worst |difference
    of the means| over the peak amplitude of the reference curve (per Minkowski functional);
    ks_min_frac: least fraction of bins with KS p > 0.05 (0 = not required);
    chi2_max_reduced: largest chi^2/dof (0 = not required).

    The per-map distributions, for every statistic (0 = not required): max_bias_over_sigma,
    the largest |difference of the means| / the reference's per-map standard deviation over
    the bins; sigma_ratio_min / sigma_ratio_max, the range the ratio of per-map standard
    deviations (emulator / reference) must keep in every bin, except, for the peak counts
    and the PDF, the bins whose reference mean is below spread_min_mean_frac of its largest
    (shown, not judged: a few peaks per map make a noisy ratio); max_corr_diff, the largest
    |difference| of the power spectrum's correlation coefficients between ell bins.

    A conditional emulator is judged per cosmology with these criteria; at cosmologies on
    the edge of the training support the four mean criteria are multiplied by edge_factor.
    response_max_rel_err: the largest |relative difference| of the emulator's ratio of mean
    power spectra between two held-out cosmologies one parameter apart from the physical
    model's ratio, in any ell bin.
    """

    ps_max_rel_err: float = 0.10
    mf_max_err_over_peak: float = 0.10
    peaks_max_err_over_peak: float = 0.10
    pdf_max_err_over_peak: float = 0.10
    ks_min_frac: float = 0.0
    chi2_max_reduced: float = 0.0
    max_bias_over_sigma: float = 0.25
    sigma_ratio_min: float = 0.85
    sigma_ratio_max: float = 1.15
    spread_min_mean_frac: float = 0.05
    max_corr_diff: float = 0.15
    edge_factor: float = 1.5
    response_max_rel_err: float = 0.05

    def validate(self, where: str) -> None:
        _positive(self.edge_factor, f"{where}.edge_factor")
        _positive(self.response_max_rel_err, f"{where}.response_max_rel_err")
        for name in ("ps_max_rel_err", "mf_max_err_over_peak", "peaks_max_err_over_peak", "pdf_max_err_over_peak"):
            _positive(getattr(self, name), f"{where}.{name}")
        if not 0 <= self.ks_min_frac <= 1:
            raise ConfigError(f"{where}.ks_min_frac: must be in [0, 1], got {self.ks_min_frac}")
        _non_negative(self.chi2_max_reduced, f"{where}.chi2_max_reduced")
        for name in ("max_bias_over_sigma", "sigma_ratio_min", "sigma_ratio_max", "max_corr_diff"):
            _non_negative(getattr(self, name), f"{where}.{name}")
        if self.sigma_ratio_max and self.sigma_ratio_min > self.sigma_ratio_max:
            raise ConfigError(f"{where}.sigma_ratio_min: {self.sigma_ratio_min} exceeds sigma_ratio_max "
                              f"({self.sigma_ratio_max})")
        if not 0 <= self.spread_min_mean_frac < 1:
            raise ConfigError(f"{where}.spread_min_mean_frac: must be in [0, 1), got {self.spread_min_mean_frac}")


INFER_STATISTICS = ("power_spectrum", "peaks", "V0", "V1", "V2", "pdf")


@dataclass
class InferConfig:
    """`cosmogan infer`: a Gaussian likelihood of map statistics with the emulator as the
    simulator (docs/inference.md).

    statistics: the summary statistics, concatenated (of INFER_STATISTICS); the power
    spectrum in the stats section's ell bins, the threshold statistics at n_thresholds bins
    from stats.threshold_min to threshold_max in units of the pixel standard deviation of
    the emulator's maps at the fiducial cosmology (fixed kappa thresholds, the same for every
    cosmology, survey and simulator). grid: points per parameter of the simulation grid over
    the support (or over ``ranges``, "Omega_m=0.25:0.35,..."); n_sim: maps per grid point
    for the mean (the same latent draws at every point, so the mean is smooth in the
    parameters); n_cov: maps at the fiducial cosmology ("centre" of the support, or
    "Omega_m=0.3,sigma_8=0.8") for the covariance; covariance: "fiducial" (that one) or
    "best-fit" (n_cov maps drawn again at the grid point nearest the fiducial posterior's
    maximum, and the posterior recomputed with their covariance); refine: the posterior is evaluated on a
    grid `refine` times finer, the means interpolated by a cubic spline; likelihood: "t"
    (Sellentin & Heavens 2016) or "hartlap" (Gaussian, inverse covariance debiased by
    Hartlap et al. 2007); sampler: "grid" or "emcee" (on the interpolated mean) with
    walkers, steps and burn.
    """

    statistics: list[str] = dataclasses.field(default_factory=lambda: ["power_spectrum", "peaks", "V0", "V1", "V2"])
    n_thresholds: int = 10
    grid: int = 41
    ranges: str = ""
    n_sim: int = 128
    n_cov: int = 1024
    fiducial: str = "centre"
    covariance: Literal["fiducial", "best-fit"] = "best-fit"
    refine: int = 4
    likelihood: Literal["t", "hartlap"] = "t"
    sampler: Literal["grid", "emcee"] = "grid"
    walkers: int = 32
    steps: int = 3000
    burn: int = 1000
    seed: int = 0
    batch_size: int = 256

    def validate(self, where: str) -> None:
        bad = [s for s in self.statistics if s not in INFER_STATISTICS]
        if bad or not self.statistics:
            raise ConfigError(f"{where}.statistics: expected some of {', '.join(INFER_STATISTICS)}, got "
                              f"{', '.join(map(str, self.statistics)) or 'none'}")
        if len(set(self.statistics)) != len(self.statistics):
            raise ConfigError(f"{where}.statistics: {', '.join(self.statistics)} names one twice")
        for name in ("n_thresholds", "n_sim", "refine", "walkers", "steps", "batch_size"):
            _positive(getattr(self, name), f"{where}.{name}")
        _non_negative(self.burn, f"{where}.burn")
        _non_negative(self.seed, f"{where}.seed")
        if self.grid < 4:
            raise ConfigError(f"{where}.grid: a cubic spline needs at least 4 points per parameter, got {self.grid}")
        if self.n_cov < 3:
            raise ConfigError(f"{where}.n_cov: a covariance needs at least 3 maps, got {self.n_cov}")
        if self.burn >= self.steps:
            raise ConfigError(f"{where}.burn: {self.burn} leaves no samples of {self.steps} steps")
        if self.sampler == "emcee" and self.walkers < 4:
            raise ConfigError(f"{where}.walkers: emcee needs at least 4 walkers (twice the parameters), "
                              f"got {self.walkers}")


@dataclass
class Config:
    physics: PhysicsConfig = dataclasses.field(default_factory=PhysicsConfig)
    cosmology: CosmologyConfig = dataclasses.field(default_factory=CosmologyConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    stats: StatsConfig = dataclasses.field(default_factory=StatsConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    transform: TransformConfig = dataclasses.field(default_factory=TransformConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    generate: GenerateConfig = dataclasses.field(default_factory=GenerateConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    infer: InferConfig = dataclasses.field(default_factory=InferConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        if self.transform.per_cosmology and not self.model.condition_on:
            raise ConfigError("transform.per_cosmology: needs a conditional model (model.condition_on); an "
                              "unconditional run has one cosmology")
        for split in ("train", "validation", "test"):
            if self.cosmology.Omega_b >= min(p[0] for p in self.split_points(split)):
                raise ConfigError(f"cosmology.Omega_b: must be below every Omega_m of the {split} split's "
                                  "cosmologies")
            # Flat LambdaCDM: Omega_Lambda = 1 - Omega_m must not be negative.
            if max(p[0] for p in self.split_points(split)) > 1:
                raise ConfigError(f"Omega_m: the {split} split's cosmologies reach Omega_m > 1 "
                                  "(a flat universe with negative dark energy)")
        return self

    def split_design(self, split: str) -> DesignConfig:
        """The design a split draws from: its own (data.splits.<split>.design) or cosmology.design."""
        return getattr(self.data.splits, split).design or self.cosmology.design

    def split_points(self, split: str) -> list[tuple[float, ...]]:
        """A split's cosmologies in PARAM_NAMES order: its design's points, then its extra_points."""
        extra = [_check_point(p, f"data.splits.{split}.extra_points")
                 for p in getattr(self.data.splits, split).extra_points]
        return self.split_design(split).points_list() + extra

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """sha256 of the named sections (all if none): identifies what a dataset was made from."""
        d = self.to_dict()
        if sections:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------
# loading


def load_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Load ``path`` (YAML; None = defaults), apply ``key.sub=value`` overrides, validate."""
    raw: dict = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item)
    try:
        cfg = _build(Config, raw, "")
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _read_yaml(path: str | Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    if raw is None:  # an empty file is more likely a mistake than a wish for all defaults
        raise ConfigError(f"{path}: is empty (write {{}} to take every default)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def with_sections(cfg: Config, sections: tuple[str, ...], path: Optional[str | Path] = None,
                  overrides=(), what: str = "this stage") -> Config:
    """``cfg`` with the named sections updated key by key: first from the YAML file ``path``
    (checked as a whole config; its other sections are ignored), then from ``--set``
    overrides, which may name only those sections. So the precedence, lowest first, is:
    built-in defaults, ``cfg`` (e.g. a run's saved config), the file, the overrides."""
    raw = cfg.to_dict()
    if path is not None:
        load_config(path)  # unknown keys and bad values are refused as for any config
        for section, values in (_read_yaml(path) or {}).items():
            if section in sections:
                raw[section].update(values or {})
    for item in overrides:
        section = item.partition("=")[0].strip().split(".")[0]
        if section not in sections:
            raise ConfigError(f"--set {item!r}: {what} reads only the {', '.join(sections)} sections; "
                              f"{section} is fixed by the run")
        _apply_override(raw, item)
    try:
        return _build(Config, raw, "").validate()
    except ConfigError as e:
        raise ConfigError(f"{path or '--set'}: {e}") from None


def config_from_dict(d: dict) -> Config:
    """Rebuild a Config saved with ``Config.to_dict`` (e.g. from a manifest)."""
    return _build(Config, d, "").validate()


def build_typed(cls, raw: Any, where: str):
    """A dataclass ``cls`` from a mapping, with the config's coercion: unknown keys, wrong
    types and values outside a ``Literal`` raise ConfigError naming ``where.key``."""
    return _build(cls, raw, where)


def check_field_types(obj, where: str) -> None:
    """Check every field of a dataclass instance against its annotation (as loading does)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _coerce(hints[f.name], getattr(obj, f.name), f"{where}.{f.name}")


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {p} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: value is not valid YAML") from None


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    return cls(**kwargs)


def _coerce(tp, value, key):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is Literal:
        options = typing.get_args(tp)
        if value not in options or isinstance(value, bool):
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, options))}; got {value!r}")
        return value
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:  # Optional[X]
        return None if value is None else _coerce(next(a for a in args if a is not type(None)), value, key)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if tp is float:
        if isinstance(value, str) and value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity"):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"config type {tp} of {key} is not supported")


def _type_name(tp) -> str:
    def name(a):
        if typing.get_origin(a) is Literal:
            return " or ".join(repr(v) for v in typing.get_args(a))
        return {float: "a number", int: "an integer", str: "a string"}.get(a, getattr(a, "__name__", str(a)))
    return " or ".join(name(a) for a in typing.get_args(tp))


def _positive(value, key):
    if not math.isfinite(value):  # NaN passes `value <= 0`
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if value <= 0:
        raise ConfigError(f"{key}: must be positive, got {value}")


def _non_negative(value, key):
    if value < 0:
        raise ConfigError(f"{key}: must be non-negative, got {value}")

"""Flat-sky periodic convergence maps: Gaussian and shifted-lognormal fields.

Conventions (LensTools; shared with pipeline/stats): a map kappa of N x N
pixels on a square field of side theta (radians) has Fourier modes
F_k = fft2(kappa)_k at ell_k = 2 pi |k| / theta (k the integer wave vector),
and measured power spectrum C_hat(ell_k) = |F_k|^2 (theta / N^2)^2. A field
is synthesised with <|F_k|^2> = S_k = C(ell_k) N^4 / theta^2, so its expected
measured spectrum is exactly C(ell_k). All spectral grids here live on the
rfft2 half-plane, shape (N, N // 2 + 1). See docs/physics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.config import CosmologyConfig, PhysicsConfig, SourceConfig
from pipeline.errors import ConfigError
from pipeline.physics.cosmology import (
    CosmoParams, convergence_cl, empty_beam_convergence, source_key)

ARCMIN = math.pi / (180.0 * 60.0)  # radians per arcmin
FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))


def ell_grid(map_size: int, side_angle_deg: float) -> np.ndarray:
    """ell (rad^-1) of each rfft2 mode of an N x N map of side ``side_angle_deg``."""
    k_y = np.fft.fftfreq(map_size, 1.0 / map_size)  # integer wave numbers, axis 0
    k_x = np.fft.rfftfreq(map_size, 1.0 / map_size)  # non-negative, axis 1 (halved)
    return 2.0 * math.pi / math.radians(side_angle_deg) * np.hypot(k_y[:, None], k_x[None, :])


def gaussian_beam(ell: np.ndarray, fwhm_arcmin: float) -> np.ndarray:
    """Fourier transform B_ell of a unit-area Gaussian of FWHM ``fwhm_arcmin``."""
    sigma = fwhm_arcmin * ARCMIN / FWHM_PER_SIGMA  # radians
    return np.exp(-0.5 * (ell * sigma) ** 2)


def noise_pixel_sigma(sigma_e: float, n_gal_arcmin2: float, map_size: int,
                      side_angle_deg: float) -> float:
    """Per-pixel shape-noise rms on kappa: sigma_e / sqrt(n_gal * pixel area).

    sigma_e is the rms of one ellipticity component (e1 or e2), so this is
    the noise of a kappa (or gamma_1) estimate averaged over a pixel's galaxies.
    """
    pixel_arcmin2 = (side_angle_deg * 60.0 / map_size) ** 2
    return sigma_e / math.sqrt(n_gal_arcmin2 * pixel_arcmin2)


def noise_cl(sigma_e: float, n_gal_arcmin2: float) -> float:
    """White shape-noise power spectrum sigma_e^2 / n_gal (n_gal per steradian)."""
    return sigma_e**2 / (n_gal_arcmin2 / ARCMIN**2)


def gaussian_amplitude(cl_grid: np.ndarray, side_angle_deg: float) -> np.ndarray:
    """Multiplier sqrt(C N^2 / theta^2) on rfft2(white noise) giving spectrum ``cl_grid``."""
    n = cl_grid.shape[0]
    return np.sqrt(cl_grid) * (n / math.radians(side_angle_deg))


def gaussian_field(white: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """irfft2(rfft2(white) * amplitude): a periodic Gaussian field from N(0,1) pixels.

    Real white noise makes the modes Hermitian, so the result is exactly real.
    """
    modes = np.fft.rfft2(white)
    modes *= amplitude
    return np.fft.irfft2(modes, s=white.shape)


@dataclass(frozen=True)
class LognormalSpectrum:
    """The Gaussian field g behind kappa = shift * (exp(g - sigma_g2 / 2) - 1).

    amplitude: rfft2 multiplier for g (read-only; see gaussian_amplitude);
    sigma_g2: pixel variance of g implied by the clipped spectrum;
    shift: lambda (kappa >= -lambda); clipped_fraction: fraction of
    half-plane modes whose Gaussian power S_g came out negative and was set
    to 0; cl_bias: max over k != 0 of |expected spectrum of kappa / target - 1|
    (from clipping, and from zeroing S_g at k = 0, which rescales it by e^delta).
    """

    amplitude: np.ndarray
    sigma_g2: float
    shift: float
    clipped_fraction: float
    cl_bias: float

    def field(self, white: np.ndarray) -> np.ndarray:
        """The lognormal kappa map made from N(0,1) pixels ``white``."""
        g = gaussian_field(white, self.amplitude)
        # expm1 >= -1 in floating point too, so kappa >= -shift exactly.
        return self.shift * np.expm1(g - 0.5 * self.sigma_g2)


def lognormal_spectrum(cl_grid: np.ndarray, side_angle_deg: float,
                       shift: float) -> LognormalSpectrum:
    """Gaussian spectrum S_g whose shifted-lognormal transform has spectrum ``cl_grid``.

    xi = pixel correlation of the target, xi_g = ln(1 + xi / shift^2),
    S_g = its spectrum with negative values clipped to 0 and k = 0 set to 0.
    """
    n = cl_grid.shape[0]
    theta = math.radians(side_angle_deg)
    s_kappa = cl_grid * (n**4 / theta**2)
    xi = np.fft.irfft2(s_kappa, s=(n, n)) / n**2
    if xi.min() <= -shift**2:
        raise ConfigError(
            f"physics.lognormal_shift: lambda={shift:.4g} is too small for this spectrum "
            f"(pixel correlation reaches {xi.min():.4g} < -lambda^2); use a larger shift")
    s_g = np.fft.rfft2(np.log1p(xi / shift**2)).real * n**2
    s_g[0, 0] = 0.0  # zero-mean g, as for the Gaussian fields
    negative = s_g < 0
    s_g[negative] = 0.0
    xi_g = np.fft.irfft2(s_g, s=(n, n)) / n**2
    s_realised = np.fft.rfft2(shift**2 * np.expm1(xi_g)).real * n**2
    target = s_kappa > 0
    cl_bias = float(np.abs(s_realised[target] / s_kappa[target] - 1.0).max())
    amplitude = np.sqrt(s_g) / n
    amplitude.flags.writeable = False
    return LognormalSpectrum(amplitude, float(xi_g[0, 0]), float(shift),
                             float(negative.mean()), cl_bias)


class MapModel:
    """The physical model S(sigma, r): one convergence map per (point, seed_words).

    point = (Omega_m, sigma_8); seed_words = non-negative ints, e.g.
    (seed, split_id, map_index). Maps are float64 (N, N), dimensionless kappa,
    and depend only on (seed_words, point, physics, cosmology).
    """

    def __init__(self, physics: PhysicsConfig, cosmology: CosmologyConfig):
        self.physics = physics
        self.cosmology = cosmology
        self.map_size = physics.map_size
        self.side_angle_deg = physics.side_angle_deg
        self.ell = ell_grid(physics.map_size, physics.side_angle_deg)
        self.ell.flags.writeable = False
        self._beam = (gaussian_beam(self.ell, physics.smoothing_arcmin)
                      if physics.smoothing_arcmin > 0 else None)
        self._noise_sigma = (noise_pixel_sigma(physics.shape_noise_sigma_e, physics.n_gal_arcmin2,
                                               physics.map_size, physics.side_angle_deg)
                             if physics.shape_noise_sigma_e > 0 else 0.0)

    def params(self, point) -> CosmoParams:
        """CCL parameters for ``point`` = (Omega_m, sigma_8)."""
        return CosmoParams.from_point(point, self.cosmology)

    def shift(self, point) -> float:
        """Lognormal shift lambda: the configured number, or |kappa_empty| for 'auto'."""
        if isinstance(self.physics.lognormal_shift, str):  # "auto"
            return abs(empty_beam_convergence(self.params(point), self.physics.source))
        return float(self.physics.lognormal_shift)

    def cl_grid(self, point) -> np.ndarray:
        """Theory C(ell_k) of the noiseless, unsmoothed field on the rfft2 half-plane (k=0: 0)."""
        return _cl_grid(self.params(point), source_key(self.physics.source),
                        self.map_size, self.side_angle_deg)

    def expected_cl_grid(self, point) -> np.ndarray:
        """Expected measured spectrum of synthesize(): (C + sigma_e^2/n_gal) B_ell^2, k=0: 0.

        Exact for Gaussian fields; for lognormal ones to a relative
        lognormal_spectrum(point).cl_bias (~1e-6 with the 'auto' shift).
        """
        cl = self.cl_grid(point).copy()
        if self._noise_sigma:
            cl += noise_cl(self.physics.shape_noise_sigma_e, self.physics.n_gal_arcmin2)
        if self._beam is not None:
            cl *= self._beam**2
        cl[0, 0] = 0.0
        return cl

    def lognormal_spectrum(self, point) -> LognormalSpectrum:
        """The cached Gaussian spectrum behind lognormal maps at ``point``."""
        return _lognormal(self.params(point), source_key(self.physics.source),
                          self.map_size, self.side_angle_deg, self.shift(point))

    def _gaussian_amplitude(self, point) -> np.ndarray:
        return _gaussian_amplitude(self.params(point), source_key(self.physics.source),
                                   self.map_size, self.side_angle_deg)

    def synthesize(self, point, seed_words) -> np.ndarray:
        """One (N, N) float64 kappa map for ``point``, random stream from ``seed_words``."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(tuple(seed_words))))
        white = rng.standard_normal((self.map_size, self.map_size))
        if self.physics.field == "gaussian":
            kappa = gaussian_field(white, self._gaussian_amplitude(point))
        else:
            kappa = self.lognormal_spectrum(point).field(white)
        return self._observe(kappa, rng)

    def _observe(self, kappa: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """smooth(kappa + shape noise): noise is white in pixels, the beam acts on both."""
        if self._noise_sigma:
            kappa += self._noise_sigma * rng.standard_normal(kappa.shape)
        if self._beam is not None:
            kappa = np.fft.irfft2(np.fft.rfft2(kappa) * self._beam, s=kappa.shape)
        return kappa


@lru_cache(maxsize=128)
def _cl_grid(params: CosmoParams, source_tuple: tuple, map_size: int,
             side_angle_deg: float) -> np.ndarray:
    grid = convergence_cl(ell_grid(map_size, side_angle_deg), params, SourceConfig(*source_tuple))
    grid.flags.writeable = False
    return grid


@lru_cache(maxsize=128)
def _gaussian_amplitude(params: CosmoParams, source_tuple: tuple, map_size: int,
                        side_angle_deg: float) -> np.ndarray:
    amplitude = gaussian_amplitude(_cl_grid(params, source_tuple, map_size, side_angle_deg),
                                   side_angle_deg)
    amplitude.flags.writeable = False
    return amplitude


@lru_cache(maxsize=128)
def _lognormal(params: CosmoParams, source_tuple: tuple, map_size: int, side_angle_deg: float,
               shift: float) -> LognormalSpectrum:
    return lognormal_spectrum(_cl_grid(params, source_tuple, map_size, side_angle_deg),
                              side_angle_deg, shift)

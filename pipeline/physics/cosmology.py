"""Convergence power spectrum and empty-beam convergence from CCL.

Units: ell in radians^-1, C_ell dimensionless (kappa is dimensionless),
comoving distances in Mpc, H0/c in Mpc^-1. See docs/physics.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyccl as ccl

from pipeline.config import CosmologyConfig, SourceConfig

# C_ell table: log-spaced ell on [1, 1e6] covers the largest ell of a map,
# sqrt(2) pi N / theta, for pixels down to 0.92 arcsec (N = 256 on 3.5 deg
# needs 1.9e4); beyond it we extrapolate as a power law. 512 points
# (0.012 dex apart): log-log linear interpolation errs by < 1e-4 (measured 7e-5).
ELL_TABLE = np.geomspace(1.0, 1.0e6, 512)
# CCL's 'spline' Limber integration: smooth in ell. The default 'qag_quad'
# has isolated ~2e-3 jumps (e.g. at ell = 172 for the Smail n(z)), which
# interpolation would spread over the neighbouring ell.
LIMBER_METHOD = "spline"
# Samples of the radial lensing kernel (CCL's WeakLensingTracer default);
# 100 vs 1000 samples change C_ell by < 1e-6.
N_KERNEL_SAMPLES = 256
# Redshift samples of a Smail n(z) on [0, z_max] (more than N_KERNEL_SAMPLES,
# so CCL's spline integration of the kernel is well sampled).
N_NZ_SAMPLES = 1024
# Gauss-Legendre nodes for the empty-beam integrals (smooth integrands:
# 64 nodes converge to ~1e-12 relative).
N_GAUSS = 64


@dataclass(frozen=True)
class CosmoParams:
    """Flat LambdaCDM parameters of one map ensemble (hashable: a cache key).

    Omega_m: total matter density (CDM + baryons, no massive neutrinos);
    sigma_8: rms linear density contrast in 8 Mpc/h spheres at z = 0;
    h: H0 / (100 km/s/Mpc). transfer_function / matter_power_spectrum are
    CCL's names ('eisenstein_hu', 'bbks', 'boltzmann_camb'; 'halofit', 'linear').
    """

    Omega_m: float
    sigma_8: float
    Omega_b: float = 0.045
    h: float = 0.7
    n_s: float = 0.96
    transfer_function: str = "eisenstein_hu"
    matter_power_spectrum: str = "halofit"

    def __post_init__(self):
        if not 0.0 < self.Omega_b < self.Omega_m:
            raise ValueError(f"need 0 < Omega_b < Omega_m, got Omega_b={self.Omega_b}, "
                             f"Omega_m={self.Omega_m}")

    @property
    def Omega_c(self) -> float:
        """Cold dark matter density, Omega_m - Omega_b."""
        return self.Omega_m - self.Omega_b

    @classmethod
    def from_point(cls, point, cosmology: CosmologyConfig) -> "CosmoParams":
        """Parameters for grid ``point`` = (Omega_m, sigma_8); the rest from ``cosmology``."""
        omega_m, sigma_8 = (float(v) for v in point)
        return cls(Omega_m=omega_m, sigma_8=sigma_8, Omega_b=float(cosmology.Omega_b),
                   h=float(cosmology.h), n_s=float(cosmology.n_s),
                   transfer_function=cosmology.transfer_function,
                   matter_power_spectrum=cosmology.matter_power_spectrum)


def source_key(source: SourceConfig) -> tuple:
    """A hashable key for ``source`` (SourceConfig is a plain, unhashable dataclass)."""
    return dataclasses.astuple(source)


def convergence_cl(ell, params: CosmoParams, source: SourceConfig) -> np.ndarray:
    """Limber convergence power spectrum C_ell (dimensionless) at ``ell`` (rad^-1).

    Interpolated log-log from a table computed once per (params, source);
    C_0 = 0; above ELL_TABLE[-1] a power law with the table's last slope.
    """
    ell = np.asarray(ell, dtype=np.float64)
    if np.any(ell < 0) or not np.all(np.isfinite(ell)):
        raise ValueError("ell must be finite and non-negative")
    log_ell, log_cl = _cl_table(params, source_key(source))
    out = np.zeros_like(ell)
    pos = ell > 0
    out[pos] = np.exp(_loglog_extrapolating(np.log(ell[pos]), log_ell, log_cl))
    return out


def empty_beam_convergence(params: CosmoParams, source: SourceConfig) -> float:
    """Empty-beam convergence kappa_empty (< 0, dimensionless) for ``source``.

    kappa_empty(z_s) = -(3/2) Omega_m (H0/c)^2 int_0^chi_s dchi (1+z) chi (chi_s-chi)/chi_s,
    the convergence of a light ray through a region with delta = -1 at all
    z < z_s (Taruya et al. 2002); averaged over n(z) for a Smail source.
    """
    return _empty_beam(params, source_key(source))


@lru_cache(maxsize=32)
def ccl_cosmology(params: CosmoParams) -> ccl.Cosmology:
    """The (cached) CCL cosmology for ``params``; massless neutrinos, flat."""
    return ccl.Cosmology(Omega_c=params.Omega_c, Omega_b=params.Omega_b, h=params.h,
                         n_s=params.n_s, sigma8=params.sigma_8,
                         transfer_function=params.transfer_function,
                         matter_power_spectrum=params.matter_power_spectrum)


def convergence_tracer(cosmo: ccl.Cosmology, source: SourceConfig) -> ccl.Tracer:
    """CCL tracer of the convergence kappa (not shear) for ``source``.

    Plane: CCL's CMBLensingTracer, which is exactly the single-source-plane
    convergence kernel (its name notwithstanding, z_source is free).
    Smail: the WeakLensingTracer kernel (get_lensing_kernel) with the
    convergence ell factor (der_angles=1, l(l+1)/(l+1/2)^2) instead of the
    shear one (der_angles=2); they differ by (l+2)(l-1)/(l(l+1)) = 1 - 2/(l(l+1)).
    """
    if source.kind == "plane":
        return ccl.CMBLensingTracer(cosmo, z_source=source.z, n_samples=N_KERNEL_SAMPLES)
    kernel = ccl.get_lensing_kernel(cosmo, dndz=smail_nz(source), n_chi=N_KERNEL_SAMPLES)
    tracer = ccl.Tracer()
    tracer.add_tracer(cosmo, kernel=kernel, der_bessel=-1, der_angles=1)
    return tracer


def smail_nz(source: SourceConfig) -> tuple[np.ndarray, np.ndarray]:
    """(z, n(z)) with n ~ z^alpha exp(-(z/z0)^beta) on [0, z_max], unnormalised."""
    z = np.linspace(0.0, source.z_max, N_NZ_SAMPLES)
    return z, z**source.alpha * np.exp(-((z / source.z0) ** source.beta))


@lru_cache(maxsize=256)
def _cl_table(params: CosmoParams, source_tuple: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(ln ell, ln C_ell) on ELL_TABLE; arrays are read-only (shared by the cache)."""
    cosmo = ccl_cosmology(params)
    tracer = convergence_tracer(cosmo, SourceConfig(*source_tuple))
    cl = ccl.angular_cl(cosmo, tracer, tracer, ELL_TABLE, limber_integration_method=LIMBER_METHOD)
    if not np.all(cl > 0):
        raise ValueError(f"CCL returned non-positive C_ell for {params}")
    table = np.log(ELL_TABLE), np.log(cl)
    for a in table:
        a.flags.writeable = False
    return table


def _loglog_extrapolating(x: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> np.ndarray:
    """Linear interpolation of (xt, yt) at x, extended linearly beyond both ends."""
    y = np.interp(x, xt, yt)
    lo, hi = x < xt[0], x > xt[-1]
    y[lo] = yt[0] + (x[lo] - xt[0]) * (yt[1] - yt[0]) / (xt[1] - xt[0])
    y[hi] = yt[-1] + (x[hi] - xt[-1]) * (yt[-1] - yt[-2]) / (xt[-1] - xt[-2])
    return y


@lru_cache(maxsize=256)
def _empty_beam(params: CosmoParams, source_tuple: tuple) -> float:
    source = SourceConfig(*source_tuple)
    cosmo = ccl_cosmology(params)
    if source.kind == "plane":
        return float(_empty_beam_planes(cosmo, params, np.array([source.z]))[0])
    # Average kappa_empty(z) over n(z) with Gauss-Legendre nodes on (0, z_max).
    x, w = np.polynomial.legendre.leggauss(N_GAUSS)
    z = 0.5 * source.z_max * (x + 1.0)
    nz = z**source.alpha * np.exp(-((z / source.z0) ** source.beta))
    return float(np.sum(w * nz * _empty_beam_planes(cosmo, params, z)) / np.sum(w * nz))


def _empty_beam_planes(cosmo: ccl.Cosmology, params: CosmoParams, z_s: np.ndarray) -> np.ndarray:
    """kappa_empty for each source redshift in ``z_s`` (Gauss-Legendre in chi)."""
    x, w = np.polynomial.legendre.leggauss(N_GAUSS)
    chi_s = ccl.comoving_radial_distance(cosmo, 1.0 / (1.0 + z_s))  # Mpc
    u = 0.5 * (x + 1.0)  # chi / chi_s on (0, 1)
    chi = chi_s[:, None] * u[None, :]
    a = ccl.scale_factor_of_chi(cosmo, chi.ravel()).reshape(chi.shape)
    # int_0^chi_s dchi chi (chi_s - chi)/chi_s / a = chi_s^2 int_0^1 du u (1-u) / a
    integral = chi_s**2 * 0.5 * np.sum(w * u * (1.0 - u) / a, axis=1)
    h0_over_c = params.h / ccl.physical_constants.CLIGHT_HMPC  # Mpc^-1
    return -1.5 * params.Omega_m * h0_over_c**2 * integral

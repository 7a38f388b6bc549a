"""The pixel transform: kappa (dimensionless) <-> the generator's tanh range [-1, 1).

    x    = max(kappa + shift, 0)
    s(x) = 2 x / (x + scale) - 1  =  (x - scale) / (x + scale)        (Rodriguez et al. 2018)
    s^-1(y) = scale (1 + y) / (1 - y) - shift

s is strictly increasing, s(0) = -1, s(scale) = 0 and s -> 1 as x -> inf, so the heavy
positive tail of kappa is compressed smoothly rather than clipped. ``shift`` lifts
the most negative kappa to x >= 0; ``scale`` puts the median pixel at 0.

Both directions are elementwise and keep the input's type, dtype and device: a
torch tensor in gives a tensor out, a numpy array (or scalar) gives numpy.
Maps are stored in kappa (docs/data-format.md); only the GAN sees s(kappa).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.config import TransformConfig

Array = torch.Tensor | np.ndarray

#: Smallest gap kept between y and 1 in ``inverse``: 1 - 1e-6 is a float32 number
#: (float32's spacing just below 1 is 6e-8), so 1 - y >= ~1e-6 and kappa <= ~2e6 scale.
INVERSE_EPS = 1e-6
#: Shift used when the fit sample has no negative pixel, relative to max |kappa| (see ``fit``).
NONNEGATIVE_SHIFT = 1e-3


class TransformError(ConfigError, ValueError):
    """A bad transform parameter or fit sample (a ValueError; a ConfigError for the CLI)."""


def _positive_float(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TransformError(f"{key}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise TransformError(f"{key}: must be positive and finite, got {value!r}")
    return value


def _float_dtype_eps(a: Array) -> float:
    """Machine epsilon of ``a``'s floating dtype."""
    if isinstance(a, torch.Tensor):
        return torch.finfo(a.dtype).eps
    return float(np.finfo(a.dtype).eps)


def _as_float(a):
    """A floating tensor / ndarray view of ``a`` (ints become float32 / float64)."""
    if isinstance(a, torch.Tensor):
        return a if a.is_floating_point() else a.to(torch.get_default_dtype())
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def _forward(kappa: Array, shift, scale) -> Array:
    """s(kappa + shift) for shift, scale numbers or arrays broadcasting against kappa."""
    k = _as_float(kappa)
    if isinstance(k, torch.Tensor):
        x = (k + shift).clamp_min(0)
    else:
        x = np.maximum(k + np.asarray(shift, k.dtype), 0)
        scale = np.asarray(scale, k.dtype)
    return (x - scale) / (x + scale)


def _inverse(y: Array, shift, scale) -> Array:
    """s^-1(y) - shift, y clamped to [-1, 1 - eps] (see PixelTransform.inverse)."""
    t = _as_float(y)
    eps = max(INVERSE_EPS, _float_dtype_eps(t))
    if isinstance(t, torch.Tensor):
        t = t.clamp(-1.0, 1.0 - eps)
        return scale * (1 + t) / (1 - t) - shift
    one = t.dtype.type(1)
    t = np.clip(t, -one, one - t.dtype.type(eps))
    return np.asarray(scale, t.dtype) * (one + t) / (one - t) - np.asarray(shift, t.dtype)


class PixelTransform:
    """s(kappa) = 2x / (x + scale) - 1, x = kappa + shift, clamped at x >= 0.

    shift > 0 and scale > 0 are in kappa units (dimensionless). Build with
    ``PixelTransform(shift, scale)``, ``PixelTransform.fit(sample, cfg)`` or
    ``PixelTransform.from_state_dict(d)``.
    """

    kind = "rodriguez"

    def __init__(self, shift: float, scale: float):
        self.shift = _positive_float(shift, "transform.shift")
        self.scale = _positive_float(scale, "transform.scale")

    # -- the maps ------------------------------------------------------------------------

    def forward(self, kappa: Array, params: Array | None = None) -> Array:
        """kappa -> y in [-1, 1), elementwise, same type / dtype / device (params, the
        maps' normalised parameters, are not used: one transform for every cosmology).

        kappa <= -shift (x clamped to 0) maps to exactly -1: information below -shift
        is lost, which is why ``fit`` puts shift a margin beyond the sample's minimum.
        In float32, y rounds to 1.0 only for x > ~1e7 scale, far beyond any kappa.
        """
        return _forward(kappa, self.shift, self.scale)

    def inverse(self, y: Array, params: Array | None = None) -> Array:
        """y -> kappa, elementwise, same type / dtype / device; finite for every finite y.

        y is first clamped to [-1, 1 - eps] with eps = max(INVERSE_EPS = 1e-6, the
        machine epsilon of y's dtype): y = -1 (or below) gives kappa = -shift, y >= 1
        gives kappa = scale (2 - eps) / eps - shift (~2e6 scale in float32/float64;
        ~2e3 scale in float16, 2.5e2 scale in bfloat16, whose spacing below 1 is coarse:
        invert float32 generator output for statistics).
        """
        return _inverse(y, self.shift, self.scale)

    __call__ = forward

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"kind": self.kind, "shift": self.shift, "scale": self.scale}

    @classmethod
    def from_state_dict(cls, d: dict) -> PixelTransform:
        if not isinstance(d, dict) or d.get("kind") != cls.kind or set(d) != {"kind", "shift", "scale"}:
            raise TransformError(f"transform state: expected {{'kind': {cls.kind!r}, 'shift': ..., "
                                 f"'scale': ...}}, got {d!r}")
        return cls(d["shift"], d["scale"])

    def __repr__(self) -> str:
        return f"PixelTransform(shift={self.shift!r}, scale={self.scale!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, PixelTransform) and self.state_dict() == other.state_dict()

    # -- fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(cls, kappa_sample: np.ndarray, cfg: TransformConfig) -> PixelTransform:
        """Fix shift and scale from a sample of training maps (any shape), deterministically.

        shift: ``cfg.shift`` if a number (it must exceed -min(sample), else pixels of the
        sample would clamp to -1); "auto": -min(sample) (1 + cfg.margin), or, when the
        sample has no negative pixel, NONNEGATIVE_SHIFT x max|sample| (1e-6 if the
        sample is all zero): anything positive keeps x > 0, and a small one leaves s
        nearly s(kappa).
        scale: ``cfg.scale`` if a number, "auto": median(sample + shift).
        Computed in float64 from the whole sample; numpy's min and median are exact,
        so the result depends only on the sample's values.
        """
        k = np.asarray(kappa_sample, dtype=np.float64)
        if k.size == 0:
            raise TransformError("transform fit sample: empty")
        if not np.isfinite(k).all():
            raise TransformError(f"transform fit sample: {int((~np.isfinite(k)).sum())} "
                                 "non-finite pixels (NaN or inf)")
        kmin = float(k.min())
        if isinstance(cfg.shift, str):
            if cfg.shift != "auto":
                raise TransformError(f"transform.shift: must be 'auto' or a number, got {cfg.shift!r}")
            if kmin < 0:
                shift = -kmin * (1.0 + float(cfg.margin))
            else:
                shift = NONNEGATIVE_SHIFT * float(np.abs(k).max()) or 1e-6
        else:
            shift = _positive_float(cfg.shift, "transform.shift")
            if shift <= -kmin:
                raise TransformError(f"transform.shift: {shift!r} does not exceed -min(kappa) = "
                                     f"{-kmin!r} of the fit sample; pixels would clamp to -1")
        if isinstance(cfg.scale, str):
            if cfg.scale != "auto":
                raise TransformError(f"transform.scale: must be 'auto' or a number, got {cfg.scale!r}")
            scale = float(np.median(k + shift))
        else:
            scale = cfg.scale
        return cls(shift, scale)


def monomials(n_params: int, degree: int) -> list[tuple[int, ...]]:
    """The monomials of n_params variables up to ``degree``, each as the tuple of its
    variables' indices: (), (0,), (1,), (0, 0), (0, 1), (1, 1) for 2 and 2."""
    return [m for d in range(degree + 1) for m in itertools.combinations_with_replacement(range(n_params), d)]


class ConditionalPixelTransform:
    """The same s(x) with shift and scale smooth functions of the maps' cosmology:

        log shift(u) = sum_m a_m u^m,  log scale(u) = sum_m b_m u^m,

    polynomials of ``degree`` in u, the parameters normalised over the training support to
    [-1, 1] (the models' conditioning values). Each cosmology's maps then span a like part
    of tanh's range: over configs/conditional.yaml's support the deepest pixel goes from
    kappa = -0.023 to -0.059 and the pixel sigma 3.5-fold, which one transform for all
    squeezed into 0.4 of the range at (0.2, 0.6) and spread over 0.9 at (0.4, 1.0). It also
    hands the generator the floor's smooth dependence on the cosmology (a lognormal's
    kappa >= -lambda(Omega_m); the empty-beam convergence of a ray-traced map), which it
    otherwise has to learn cosmology by cosmology.

    Every method takes the maps' normalised parameters (B, P), one row per map.
    """

    kind = "rodriguez-conditional"

    def __init__(self, n_params: int, degree: int, log_shift: list[float], log_scale: list[float]):
        self.n_params, self.degree = int(n_params), int(degree)
        self.terms = monomials(self.n_params, self.degree)
        self.log_shift = [float(v) for v in log_shift]
        self.log_scale = [float(v) for v in log_scale]
        for name, coef in (("log_shift", self.log_shift), ("log_scale", self.log_scale)):
            if len(coef) != len(self.terms) or not all(math.isfinite(v) for v in coef):
                raise TransformError(f"conditional transform: {name} needs {len(self.terms)} finite coefficients "
                                     f"(degree {self.degree} in {self.n_params} parameters), got {coef!r}")

    def features(self, params: Array) -> Array:
        """The monomials (B, M) of normalised params (B, P), numpy or torch as given."""
        if params is None or params.ndim != 2 or params.shape[1] != self.n_params:
            shape = None if params is None else tuple(params.shape)
            raise TransformError(f"conditional transform: expected normalised parameters (B, {self.n_params}), "
                                 f"got {shape}")
        cols = []
        for m in self.terms:
            col = params[:, 0] * 0 + 1
            for i in m:
                col = col * params[:, i]
            cols.append(col)
        return torch.stack(cols, 1) if isinstance(params, torch.Tensor) else np.stack(cols, 1)

    def shift_scale(self, params: Array, like: Array) -> tuple[Array, Array]:
        """(shift, scale) per map, shaped to broadcast against ``like`` (B, ...) and of its
        kind (tensor on its device, or ndarray)."""
        if isinstance(like, torch.Tensor):
            f = self.features(torch.as_tensor(params, dtype=torch.float64).to(like.device))
            a = torch.tensor(self.log_shift, dtype=torch.float64, device=like.device)
            b = torch.tensor(self.log_scale, dtype=torch.float64, device=like.device)
            shift, scale = torch.exp(f @ a), torch.exp(f @ b)
            dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
            shape = (-1,) + (1,) * (like.ndim - 1)
            return shift.to(dtype).reshape(shape), scale.to(dtype).reshape(shape)
        f = self.features(np.asarray(params, np.float64))
        shape = (-1,) + (1,) * (np.ndim(like) - 1)
        return np.exp(f @ np.array(self.log_shift)).reshape(shape), np.exp(f @ np.array(self.log_scale)).reshape(shape)

    def forward(self, kappa: Array, params: Array) -> Array:
        """kappa (B, ...) -> y in [-1, 1), each map by its cosmology's shift and scale."""
        k = _as_float(kappa)
        return _forward(k, *self.shift_scale(params, k))

    def inverse(self, y: Array, params: Array) -> Array:
        """y (B, ...) -> kappa; y = -1 gives kappa = -shift of that map's cosmology."""
        t = _as_float(y)
        return _inverse(t, *self.shift_scale(params, t))

    __call__ = forward

    def state_dict(self) -> dict:
        return {"kind": self.kind, "n_params": self.n_params, "degree": self.degree,
                "log_shift": list(self.log_shift), "log_scale": list(self.log_scale)}

    @classmethod
    def from_state_dict(cls, d: dict) -> ConditionalPixelTransform:
        keys = {"kind", "n_params", "degree", "log_shift", "log_scale"}
        if not isinstance(d, dict) or d.get("kind") != cls.kind or set(d) != keys:
            raise TransformError(f"transform state: expected {{'kind': {cls.kind!r}, 'n_params', 'degree', "
                                 f"'log_shift', 'log_scale'}}, got {d!r}")
        return cls(d["n_params"], d["degree"], d["log_shift"], d["log_scale"])

    def __repr__(self) -> str:
        return f"ConditionalPixelTransform(n_params={self.n_params}, degree={self.degree})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ConditionalPixelTransform) and self.state_dict() == other.state_dict()

    @classmethod
    def fit(cls, samples: list[np.ndarray], points: np.ndarray, cfg: TransformConfig) -> ConditionalPixelTransform:
        """Fit from one sample of maps per training cosmology (kappa, any shape) at its
        normalised parameters points (C, P): least squares over the cosmologies of each one's
        log(-min kappa) (then the constant lifted until no cosmology's deepest pixel lies
        below the fitted floor), shift = floor (1 + cfg.margin); then of log median(kappa +
        shift). Deterministic in the samples' values, in float64."""
        points = np.asarray(points, np.float64)
        n_params, degree = points.shape[1], int(cfg.degree)
        terms = monomials(n_params, degree)
        if len(samples) != len(points) or len(points) < len(terms):
            raise TransformError(f"transform.per_cosmology: a degree-{degree} fit in {n_params} parameters needs "
                                 f"at least {len(terms)} training cosmologies, the training split has {len(points)}")
        if cfg.shift != "auto" or cfg.scale != "auto":
            raise TransformError("transform.per_cosmology: shift and scale are fitted per cosmology; leave "
                                 "transform.shift and transform.scale at 'auto'")
        ks = [np.asarray(k, np.float64) for k in samples]
        for k, p in zip(ks, points):
            if k.size == 0 or not np.isfinite(k).all():
                raise TransformError(f"transform fit sample at {p.tolist()}: empty or not finite")
            if k.min() >= 0:
                raise TransformError(f"transform.per_cosmology: the training maps at normalised parameters "
                                     f"{p.tolist()} have no negative pixel; use the one transform "
                                     "(transform.per_cosmology: false)")
        probe = cls(n_params, degree, [0.0] * len(terms), [0.0] * len(terms))
        feats = probe.features(points)
        log_floor = np.log([-k.min() for k in ks])
        a = np.linalg.lstsq(feats, log_floor, rcond=None)[0]
        a[0] += max(0.0, float(np.max(log_floor - feats @ a)))  # every cosmology's deepest pixel above the floor
        a[0] += math.log1p(float(cfg.margin))
        shift = np.exp(feats @ a)
        log_median = np.log([float(np.median(k + s)) for k, s in zip(ks, shift)])
        b = np.linalg.lstsq(feats, log_median, rcond=None)[0]
        return cls(n_params, degree, a.tolist(), b.tolist())


def transform_from_state(d: dict) -> PixelTransform | ConditionalPixelTransform:
    """The transform a checkpoint saved (either kind)."""
    if isinstance(d, dict) and d.get("kind") == ConditionalPixelTransform.kind:
        return ConditionalPixelTransform.from_state_dict(d)
    return PixelTransform.from_state_dict(d)

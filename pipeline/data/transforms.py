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

    def forward(self, kappa: Array) -> Array:
        """kappa -> y in [-1, 1), elementwise, same type / dtype / device.

        kappa <= -shift (x clamped to 0) maps to exactly -1: information below -shift
        is lost, which is why ``fit`` puts shift a margin beyond the sample's minimum.
        In float32, y rounds to 1.0 only for x > ~1e7 scale, far beyond any kappa.
        """
        k = _as_float(kappa)
        if isinstance(k, torch.Tensor):
            x = (k + self.shift).clamp_min(0)
        else:
            x = np.maximum(k + k.dtype.type(self.shift), 0)
        return (x - self.scale) / (x + self.scale)

    def inverse(self, y: Array) -> Array:
        """y -> kappa, elementwise, same type / dtype / device; finite for every finite y.

        y is first clamped to [-1, 1 - eps] with eps = max(INVERSE_EPS = 1e-6, the
        machine epsilon of y's dtype): y = -1 (or below) gives kappa = -shift, y >= 1
        gives kappa = scale (2 - eps) / eps - shift (~2e6 scale in float32/float64;
        ~2e3 scale in float16, 2.5e2 scale in bfloat16, whose spacing below 1 is coarse:
        invert float32 generator output for statistics).
        """
        t = _as_float(y)
        eps = max(INVERSE_EPS, _float_dtype_eps(t))
        if isinstance(t, torch.Tensor):
            t = t.clamp(-1.0, 1.0 - eps)
            return self.scale * (1 + t) / (1 - t) - self.shift
        one = t.dtype.type(1)
        t = np.clip(t, -one, one - t.dtype.type(eps))
        return t.dtype.type(self.scale) * (one + t) / (one - t) - t.dtype.type(self.shift)

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

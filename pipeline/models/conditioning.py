"""The conditioning parameters of a model and their training support.

A conditional model sees each cosmological parameter normalised over its training
support [low, high] to [-1, 1]; an unconditional model has an empty support (no
names) and sees (B, 0) values. The support is fitted from the training split's
parameters, saved in every checkpoint, and used to refuse parameters outside it unless
extrapolation is asked for (DESIGN.md, conditioning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import DataError

FLOAT32_SLACK = 1e-6  # relative: a value this close to the support's edge is on it (float32 rounding)


@dataclass(frozen=True)
class ParamSupport:
    """names: the parameters conditioned on, in the model's input order; low / high: each
    one's training range, in its physical units (Omega_m, sigma_8 are dimensionless);
    points: the distinct training cosmologies (the design the run saw), () when unknown."""

    names: tuple[str, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    points: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self):
        if not len(self.names) == len(self.low) == len(self.high):
            raise ValueError(f"support: {len(self.names)} names, {len(self.low)} lows, {len(self.high)} highs")
        for name, lo, hi in zip(self.names, self.low, self.high):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise DataError(f"support of {name}: [{lo}, {hi}] is not a finite range")

    @property
    def conditional(self) -> bool:
        return bool(self.names)

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """{name: (low, high)}; empty for an unconditional model."""
        return {n: (lo, hi) for n, lo, hi in zip(self.names, self.low, self.high)}

    @classmethod
    def fit(cls, names: list[str], data_names: list[str], params: np.ndarray, where: str) -> ParamSupport:
        """The support of ``names`` over a split's parameters (n, P_data) named ``data_names``."""
        columns = _columns(names, data_names, where)
        p = np.asarray(params, np.float64)[:, columns]
        if len(p) == 0 or not np.isfinite(p).all():
            raise DataError(f"{where}: parameters {list(names)} are missing or not finite")
        points = tuple(tuple(float(v) for v in row) for row in distinct_rows(p)[0])
        return cls(tuple(names), tuple(float(v) for v in p.min(0)), tuple(float(v) for v in p.max(0)), points)

    def category(self, point) -> str:
        """Where a cosmology (P,) lies: "training" (a training cosmology), "extrapolated"
        (outside the support), "edge" (on its boundary) or "held-out" (inside), to float32
        rounding."""
        p = np.asarray(point, np.float64)
        lo, hi = np.array(self.low), np.array(self.high)
        slack = FLOAT32_SLACK * np.maximum(1.0, np.maximum(abs(lo), abs(hi)))
        if self.points and (np.abs(np.array(self.points) - p) <= slack).all(1).any():
            return "training"
        if ((p < lo - slack) | (p > hi + slack)).any():
            return "extrapolated"
        if ((np.abs(p - lo) <= slack) | (np.abs(p - hi) <= slack)).any():
            return "edge"
        return "held-out"

    def select(self, data_names: list[str], params, where: str):
        """The conditioning columns (n, P) of a dataset's parameters (n, P_data), in this order."""
        return params[:, _columns(self.names, data_names, where)]

    def normalise(self, params: torch.Tensor) -> torch.Tensor:
        """Physical values (n, P) -> (n, P) with the support mapped onto [-1, 1] (a parameter
        with a single training value maps to 0)."""
        lo = torch.tensor(self.low, dtype=params.dtype, device=params.device)
        hi = torch.tensor(self.high, dtype=params.dtype, device=params.device)
        half = torch.where(hi > lo, (hi - lo) / 2, torch.ones_like(hi))
        return (params - (lo + hi) / 2) / half

    def check(self, params: np.ndarray, allow_extrapolation: bool, where: str) -> np.ndarray:
        """Refuse values (n, P) for an unconditional model, non-finite ones, and ones outside
        the support (by more than float32 rounding) unless allow_extrapolation. Returns a
        boolean (n,) of rows outside it."""
        p = np.asarray(params, np.float64)
        if not self.conditional:
            if p.size:
                raise DataError(f"{where}: this run is unconditional; it takes no parameters")
            return np.zeros(len(p), bool)
        if p.ndim != 2 or p.shape[1] != len(self.names):
            raise DataError(f"{where}: expected values of {list(self.names)}, got an array of shape {p.shape}")
        bad = ~np.isfinite(p)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise DataError(f"{where}: {self.names[j]} of row {i} is {p[i, j]}, not a finite number")
        lo, hi = np.array(self.low), np.array(self.high)
        # Datasets store parameters as float32: 0.8 typed and 0.8 stored differ by 1e-8.
        slack = FLOAT32_SLACK * np.maximum(1.0, np.maximum(abs(lo), abs(hi)))
        outside = (p < lo - slack) | (p > hi + slack)
        if outside.any() and not allow_extrapolation:
            i, j = map(int, np.argwhere(outside)[0])
            raise DataError(f"{where}: {self.names[j]} = {p[i, j]:g} is outside the training support "
                            f"[{lo[j]:g}, {hi[j]:g}] (--allow-extrapolation to ask for it)")
        return outside.any(1)

    def parse(self, text: str, where: str = "--params") -> np.ndarray:
        """"Omega_m=0.31,sigma_8=0.79" -> (P,) in this support's order. Refused with one line:
        values for an unconditional model, an unknown, repeated or missing name, a non-number."""
        if not self.conditional:
            raise DataError(f"{where}: this run is unconditional; it takes no parameters")
        values: dict[str, float] = {}
        for item in [t.strip() for t in str(text).split(",") if t.strip()]:
            name, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not name:
                raise DataError(f"{where}: {item!r} is not NAME=VALUE (e.g. {self.names[0]}=0.3)")
            if name not in self.names:
                raise DataError(f"{where}: unknown parameter {name!r}; this run takes {', '.join(self.names)}")
            if name in values:
                raise DataError(f"{where}: {name} is given twice")
            try:
                values[name] = float(value)
            except ValueError:
                raise DataError(f"{where}: {name}={value!r} is not a number") from None
            if not math.isfinite(values[name]):
                raise DataError(f"{where}: {name}={value} is not a finite number")
        missing = [n for n in self.names if n not in values]
        if missing:
            raise DataError(f"{where}: no value for {', '.join(missing)} (this run takes {', '.join(self.names)})")
        return np.array([values[n] for n in self.names])

    def to_dict(self) -> dict:
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high),
                "points": [list(p) for p in self.points]}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> ParamSupport:
        try:  # "points" came later: checkpoints without it have ()
            return cls(tuple(str(n) for n in d["names"]), tuple(float(v) for v in d["low"]),
                       tuple(float(v) for v in d["high"]),
                       tuple(tuple(float(v) for v in p) for p in d.get("points", ())))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed conditioning support ({e})") from None


def point_label(names, point) -> str:
    """One cosmology for a message or table: "Omega_m=0.3,sigma_8=0.8"."""
    return ",".join(f"{n}={v:.4g}" for n, v in zip(names, point))


def distinct_rows(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows (C, P) of per-map parameters (n, P), in order of first appearance,
    and each map's row number (n,): a dataset's cosmologies and which map has which."""
    columns = np.asarray(columns, np.float64).reshape(len(columns), -1)
    unique, first, which = np.unique(columns, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return unique[order], renumber[which.ravel()]


def nearest_points(points: torch.Tensor | None, params: torch.Tensor | None, n: int,
                   device: torch.device) -> torch.Tensor:
    """The index (n,) of the row of points (C, P) nearest each row of params (n, P), both
    normalised; all 0 when there is one point or none (an unconditional run)."""
    if points is None or len(points) == 1:
        return torch.zeros(n, dtype=torch.long, device=device)
    return torch.cdist(params.float().to(points.device), points.float()).argmin(1)


def rows_at(params: np.ndarray, point) -> np.ndarray:
    """Indices of the rows of params (n, P) equal to point (P,) to float32 rounding: the
    maps of a dataset (whose parameters are stored as float32) at a typed cosmology."""
    p = np.asarray(point, np.float64)
    slack = FLOAT32_SLACK * np.maximum(1.0, np.abs(p))
    return np.flatnonzero(np.all(np.abs(np.asarray(params, np.float64) - p) <= slack, axis=1))


def _columns(names, data_names, where: str) -> list[int]:
    missing = [n for n in names if n not in data_names]
    if missing:
        raise DataError(f"{where}: has no parameter {missing[0]!r} (it has {list(data_names)})")
    return [list(data_names).index(n) for n in names]

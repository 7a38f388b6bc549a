"""Chunked evaluation shared by the public statistics functions."""

from __future__ import annotations

import numpy as np
import torch

from . import kernels
from .inputs import (Prepared, StatsInputError, check_edges, check_side_angle,
                       default_chunk_size, prepare_maps)


def spectrum_plan(n_side: int, side_angle_deg, l_edges) -> kernels.SpectrumPlan:
    side = check_side_angle(side_angle_deg)
    edges = check_edges(l_edges, "l_edges", nonneg=True)
    return kernels.spectrum_plan(n_side, side, tuple(edges.tolist()))


def threshold_plan(thresholds, name: str = "thresholds") -> kernels.ThresholdPlan:
    t = check_edges(thresholds, name)
    return kernels.threshold_plan(tuple(t.tolist()))


def check_flag(value, name: str) -> bool:
    """A boolean argument: True/False (numpy bools and 0/1 integers accepted)."""
    if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise StatsInputError(f"{name} must be True or False; got {value!r}")


def check_chunk(chunk_size, prep: Prepared) -> int:
    if chunk_size is None:
        return default_chunk_size(prep.n_side, prep.x.device, prep.dtype)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise StatsInputError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    return chunk_size


def run(prep: Prepared, chunk_size: int, **plans) -> dict:
    """compute_chunk over the batch in chunks, concatenated along axis 0."""
    x = prep.x
    parts: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk_size):
            res = kernels.compute_chunk(x[start:start + chunk_size], dtype=prep.dtype, **plans)
            for k, v in res.items():
                parts.setdefault(k, []).append(v)
    if x.shape[0] == 0:          # empty batch: shapes from a one-map dry run
        res = kernels.compute_chunk(torch.zeros((1,) + tuple(x.shape[1:]), dtype=prep.dtype,
                                              device=x.device), **plans)
        return {k: v[:0] for k, v in res.items()}
    return {k: torch.cat(v, 0) if len(v) > 1 else v[0] for k, v in parts.items()}


def threshold_statistic(kind: str, output: str, maps, thresholds, norm, dtype, device, chunk_size):
    """One threshold statistic of checked maps: (prep, plan, the (B, ...) result tensor).
    kind: compute_chunk's plan name (mf, peaks, pdf); output: its result key."""
    prep = prepare_maps(maps, dtype, device)
    plan = threshold_plan(thresholds)
    norm = check_flag(norm, "norm")
    chunk = check_chunk(chunk_size, prep)
    return prep, plan, run(prep, chunk, norm=norm, **{kind: plan})[output]


def axis(prep: Prepared, values, dtype=None) -> torch.Tensor:
    """A bin axis (ell, nu) as a tensor like the results."""
    return torch.as_tensor(values, dtype=dtype or prep.dtype, device=prep.x.device)


__all__ = ["spectrum_plan", "threshold_plan", "check_flag", "check_chunk", "run", "threshold_statistic", "axis",
           "prepare_maps"]

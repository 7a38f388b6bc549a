"""The data vector of the likelihood: chosen map statistics, concatenated, in fixed bins.

Thresholds are fixed kappa values, the same for every cosmology, survey and simulator (in
units of one pixel standard deviation measured once, at the fiducial cosmology): a
threshold that followed each map's own sigma would divide out much of what sigma_8 does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from pipeline.config import Config
from pipeline.stats import all_statistics
from pipeline.stats.bins import ell_edges, threshold_edges

# Each statistic: (key of all_statistics' output, index along its second axis or None).
_SOURCES = {"power_spectrum": ("power_spectrum", None), "peaks": ("peaks", None), "pdf": ("pdf", None),
            "V0": ("minkowski", 0), "V1": ("minkowski", 1), "V2": ("minkowski", 2)}


@dataclass(frozen=True)
class SummarySpec:
    """What one map's data vector holds. statistics: names (pipeline.config.INFER_STATISTICS);
    l_edges: ell bin edges (rad^-1); thresholds: threshold bin edges (kappa); sigma: the
    pixel standard deviation (kappa) they are scaled by; map_size (pixels), side_angle_deg."""

    statistics: tuple[str, ...]
    l_edges: tuple[float, ...]
    thresholds: tuple[float, ...]
    sigma: float
    map_size: int
    side_angle_deg: float

    @classmethod
    def from_config(cls, cfg: Config, map_size: int, side_angle_deg: float, sigma: float) -> SummarySpec:
        stats = cfg.stats
        edges = threshold_edges(dataclasses.replace(stats, n_thresholds=cfg.infer.n_thresholds,
                                                    threshold_units="sigma"), sigma)
        return cls(tuple(cfg.infer.statistics), tuple(ell_edges(stats, map_size, side_angle_deg).tolist()),
                   tuple(edges.tolist()), float(sigma), int(map_size), float(side_angle_deg))

    @property
    def size(self) -> int:
        """Length d of the data vector."""
        n_ell, n_thr = len(self.l_edges) - 1, len(self.thresholds) - 1
        return sum(n_ell if s == "power_spectrum" else n_thr for s in self.statistics)

    def labels(self) -> list[str]:
        """One name per component, e.g. "power_spectrum[3]", "V1[7]"."""
        n_ell, n_thr = len(self.l_edges) - 1, len(self.thresholds) - 1
        return [f"{s}[{i}]" for s in self.statistics for i in range(n_ell if s == "power_spectrum" else n_thr)]

    def measure(self, maps: np.ndarray) -> np.ndarray:
        """Data vectors (n, d) float64 of maps (n, H, W) kappa."""
        maps = np.asarray(maps)
        if maps.ndim != 3 or maps.shape[1:] != (self.map_size, self.map_size):
            raise ValueError(f"expected maps (n, {self.map_size}, {self.map_size}), got {maps.shape}")
        if not len(maps):
            return np.zeros((0, self.size))
        s = all_statistics(maps, self.side_angle_deg, np.asarray(self.l_edges), np.asarray(self.thresholds))
        parts = []
        for name in self.statistics:
            key, i = _SOURCES[name]
            parts.append(s[key] if i is None else s[key][:, i])
        return np.concatenate(parts, axis=1).astype(np.float64, copy=False)

    def to_dict(self) -> dict:
        return {"statistics": list(self.statistics), "l_edges": list(self.l_edges),
                "thresholds": list(self.thresholds), "sigma": self.sigma, "map_size": self.map_size,
                "side_angle_deg": self.side_angle_deg}

    @classmethod
    def from_dict(cls, d: dict) -> SummarySpec:
        return cls(tuple(d["statistics"]), tuple(d["l_edges"]), tuple(d["thresholds"]), float(d["sigma"]),
                   int(d["map_size"]), float(d["side_angle_deg"]))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

"""The quick fidelity check run during training: generated maps against validation maps.

Two statistics, on the bins of the ``stats`` config section (pipeline/stats/bins.py): the
mean power spectrum (relative error per ell bin) and the mean pixel PDF (difference per
threshold bin over the PDF's peak). The score that picks the best checkpoint is the mean
absolute relative error of the power spectrum plus the worst PDF difference over peak:
both are 0 for a perfect emulator and ~0.01-0.1 for a good one.

A conditional run is scored at every cosmology of the validation split (the training
cosmologies, and held-out ones when the split has them): one generated map per
validation map, at that map's parameters, compared with the maps of its own cosmology
(PDF thresholds in that cosmology's sigma). Each figure logged is the worst cosmology's,
so best.pt is the checkpoint whose worst cosmology is best.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.config import StatsConfig
from pipeline.emulator import Emulator
from pipeline.stats import pixel_pdf, power_spectrum
from pipeline.stats.bins import ell_edges, threshold_edges


class FidelityCheck:
    def __init__(self, reference: np.ndarray, side_angle_deg: float, cfg: StatsConfig, every: int,
                 z: torch.Tensor, points: np.ndarray | None = None, which: np.ndarray | None = None):
        """reference: validation maps (n, N, N), kappa; every: run every that many steps;
        z: the fixed noise (n, z_dim) the emulator's maps are drawn from. Conditional:
        points (C, P), the validation cosmologies (physical units), and which (n,), the
        cosmology of each reference map; generated map i is drawn at points[which[i]]."""
        self.side_angle_deg, self.every, self.z = side_angle_deg, every, z
        n = len(reference)
        self.points = np.zeros((1, 0)) if points is None else np.asarray(points, np.float64)
        self.which = np.zeros(n, np.int64) if which is None else np.asarray(which, np.int64)
        self.params = self.points[self.which] if self.points.shape[1] else None
        self.l_edges = ell_edges(cfg, reference.shape[-1], side_angle_deg)
        self.thresholds, self.ref = [], []
        for c in range(len(self.points)):
            maps = reference[self.which == c]
            self.thresholds.append(threshold_edges(cfg, float(maps.astype(np.float64).std())))
            self.ref.append(self._means(maps, c))

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def _means(self, maps: np.ndarray, c: int):
        _, ps = power_spectrum(maps, self.side_angle_deg, self.l_edges)
        _, pdf = pixel_pdf(maps, self.thresholds[c])
        return ps.mean(0), pdf.mean(0)

    def score(self, generated: np.ndarray) -> dict:
        """Scalars for the logger, each the worst over the cosmologies: fid_ps_mean (mean
        |rel err| of C_ell), fid_ps_max, fid_pdf_max (max |diff| / peak of the reference
        PDF) and fid_score (the worst cosmology's fid_ps_mean + fid_pdf_max)."""
        rows = []
        for c, (ref_ps, ref_pdf) in enumerate(self.ref):
            ps, pdf = self._means(generated[self.which == c], c)
            ps_rel = np.abs(ps / ref_ps - 1)
            pdf_err = float(np.abs(pdf - ref_pdf).max() / ref_pdf.max())
            rows.append((float(ps_rel.mean()), float(ps_rel.max()), pdf_err))
        worst = np.max(rows, axis=0)
        return {"fid_ps_mean": float(worst[0]), "fid_ps_max": float(worst[1]), "fid_pdf_max": float(worst[2]),
                "fid_score": max(a + c for a, _, c in rows)}

    def __call__(self, emulator: Emulator, batch_size: int) -> dict:
        return self.score(emulator.maps_from_latent(self.z, self.params, batch_size=batch_size))

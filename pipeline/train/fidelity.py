"""The quick fidelity check run during training: generated maps against validation maps.

Two statistics, on the bins of the ``stats`` config section (pipeline/stats/bins.py): the
mean power spectrum (relative error per ell bin) and the mean pixel PDF (difference per
threshold bin over the PDF's peak). The score that picks the best checkpoint is the mean
absolute relative error of the power spectrum plus the worst PDF difference over peak:
both are 0 for a perfect emulator and ~0.01-0.1 for a good one.
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
                 z: torch.Tensor):
        """reference: validation maps (n, N, N), kappa; every: run every that many steps;
        z: the fixed noise (n_generated, z_dim) the emulator's maps are drawn from."""
        self.side_angle_deg, self.every, self.z = side_angle_deg, every, z
        self.l_edges = ell_edges(cfg, reference.shape[-1], side_angle_deg)
        self.thresholds = threshold_edges(cfg, float(reference.astype(np.float64).std()))
        self.ref_ps, self.ref_pdf = self._means(reference)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def _means(self, maps: np.ndarray):
        _, ps = power_spectrum(maps, self.side_angle_deg, self.l_edges)
        _, pdf = pixel_pdf(maps, self.thresholds)
        return ps.mean(0), pdf.mean(0)

    def score(self, generated: np.ndarray) -> dict:
        """Scalars for the logger: fid_ps_mean (mean |rel err| of C_ell), fid_ps_max,
        fid_pdf_max (max |diff| / peak of the reference PDF) and fid_score."""
        ps, pdf = self._means(generated)
        ps_rel = np.abs(ps / self.ref_ps - 1)
        pdf_err = float(np.abs(pdf - self.ref_pdf).max() / self.ref_pdf.max())
        return {"fid_ps_mean": float(ps_rel.mean()), "fid_ps_max": float(ps_rel.max()),
                "fid_pdf_max": pdf_err, "fid_score": float(ps_rel.mean()) + pdf_err}

    def __call__(self, emulator: Emulator, batch_size: int) -> dict:
        return self.score(emulator.maps_from_latent(self.z, batch_size=batch_size))

"""The quick fidelity check run during training: generated maps against validation maps.

Two statistics, on the bins of the ``stats`` config section (pipeline/stats/bins.py): the
mean power spectrum (relative error per ell bin) and the mean pixel PDF (difference per
threshold bin over the PDF's peak). The score that picks the best checkpoint is the mean
absolute relative error of the power spectrum plus the worst PDF difference over peak:
both are 0 for a perfect emulator and ~0.01-0.1 for a good one. With a bias weight w
(train.fidelity_bias_weight) the score adds w x the worst bias of the per-map mean in
units of the reference's per-map standard deviation (|delta mu| / sigma_ref, as the
validation verdicts judge it, pipeline.stats.compare) over the bins of the power
spectrum and the PDF: the means alone picked, in one run, the
checkpoint worse on every distribution figure than the last one (docs/training-notes.md,
mbstd4). w = 0.4 weighs a 0.25 sigma bias (the validation target) as a 10% mean error;
on the quickstart's 1024 check maps that worst bin is noisy enough that w = 0.4 picked a
checkpoint of half the training, worse on every figure (training notes, ss_a2): off by
default. (That check ran the generator under training's bf16, whose coarse pixel values
inflated the PDF's bias, 0.53 against 0.18 in fp32 on one checkpoint; the check now runs
in fp32, and w has not been tried since.)

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
from pipeline.stats.compare import compare_statistic
from pipeline.stats.bins import ell_edges, threshold_edges


class FidelityCheck:
    def __init__(self, reference: np.ndarray, side_angle_deg: float, cfg: StatsConfig, every: int,
                 z: torch.Tensor, points: np.ndarray | None = None, which: np.ndarray | None = None,
                 bias_weight: float = 0.0):
        """reference: validation maps (n, N, N), kappa; every: run every that many steps;
        z: the fixed noise (n, z_dim) the emulator's maps are drawn from; bias_weight: the
        score's weight of the worst per-map bias. Conditional:
        points (C, P), the validation cosmologies (physical units), and which (n,), the
        cosmology of each reference map; generated map i is drawn at points[which[i]]."""
        self.side_angle_deg, self.every, self.z = side_angle_deg, every, z
        self.bias_weight = bias_weight
        n = len(reference)
        self.points = np.zeros((1, 0)) if points is None else np.asarray(points, np.float64)
        self.which = np.zeros(n, np.int64) if which is None else np.asarray(which, np.int64)
        self.params = self.points[self.which] if self.points.shape[1] else None
        self.l_edges = ell_edges(cfg, reference.shape[-1], side_angle_deg)
        self.thresholds, self.ref = [], []
        for c in range(len(self.points)):
            maps = reference[self.which == c]
            self.thresholds.append(threshold_edges(cfg, float(maps.astype(np.float64).std())))
            self.ref.append(self._per_map(maps, c))

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def _per_map(self, maps: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Each map's power spectrum (n, n_ell) and pixel PDF (n, n_thresholds)."""
        _, ps = power_spectrum(maps, self.side_angle_deg, self.l_edges)
        _, pdf = pixel_pdf(maps, self.thresholds[c])
        return ps, pdf

    @staticmethod
    def _worst_bias(ref: np.ndarray, gen: np.ndarray) -> float:
        """The validation's max |mean(gen) - mean(ref)| / std(ref) over the bins (0 when no bin varies)."""
        return compare_statistic(ref, gen).max_abs_bias_over_sigma or 0.0

    def score(self, generated: np.ndarray) -> dict:
        """Scalars for the logger, each the worst over the cosmologies: fid_ps_mean (mean
        |rel err| of C_ell), fid_ps_max, fid_pdf_max (max |diff| / peak of the reference
        PDF), fid_bias_max (the worst per-map |delta mu| / sigma_ref of the power spectrum
        and the PDF) and fid_score (the worst cosmology's fid_ps_mean + fid_pdf_max +
        bias_weight x fid_bias_max)."""
        rows = []
        for c, (ref_ps, ref_pdf) in enumerate(self.ref):
            ps, pdf = self._per_map(generated[self.which == c], c)
            ref_ps_mean, ref_pdf_mean = ref_ps.mean(0), ref_pdf.mean(0)
            ps_rel = np.abs(ps.mean(0) / ref_ps_mean - 1)
            pdf_err = float(np.abs(pdf.mean(0) - ref_pdf_mean).max() / ref_pdf_mean.max())
            bias = max(self._worst_bias(ref_ps, ps), self._worst_bias(ref_pdf, pdf))
            rows.append((float(ps_rel.mean()), float(ps_rel.max()), pdf_err, bias))
        worst = np.max(rows, axis=0)
        return {"fid_ps_mean": float(worst[0]), "fid_ps_max": float(worst[1]), "fid_pdf_max": float(worst[2]),
                "fid_bias_max": float(worst[3]),
                "fid_score": max(a + c + self.bias_weight * d for a, _, c, d in rows)}

    def __call__(self, emulator: Emulator, batch_size: int) -> dict:
        return self.score(emulator.maps_from_latent(self.z, self.params, batch_size=batch_size))

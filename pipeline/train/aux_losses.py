"""Auxiliary generator loss: match the mean power of every Fourier mode to the training set's.

The GAN loss alone learns the spectrum imprecisely: power on the generator's upsampling
grid (a pattern that repeats every 16 pixels puts 2.5-3.3x the power on the axis modes
|k| = 4, 8, 12, 16 of 64-pixel maps) and broadband offsets of 10-40%
(docs/training-notes.md). NERSC's PyTorch port of CosmoGAN added spectral and histogram
terms for that reason. This term is

    L_spec = mean over rings r of  mean over shells s in r of  mean over modes k in s of
             (log <|F[kappa_fake](k)|^2> - log P_s)^2

with kappa_fake the generated batch mapped back to kappa by the pixel transform (the
spectrum users measure: the transform is nonlinear, and matching the transformed maps'
spectrum left the kappa spectrum 20-40% high at low ell), F the 2D FFT, <> the mean over
the batch, and P_s the training maps' mean power over the modes of shell s, computed once.
A shell is the set of modes with the same |k|^2 = kx^2 + ky^2 (integer wave numbers,
|k| <= N/2): an isotropic field has the same power at every mode of a shell, so the term
sees anisotropic artefacts (grids, stripes) that a radial average would hide. A ring is
the shells whose |k| rounds to the same integer; every ring weighs the same, like the
linear ell bins the statistics use (weighing every shell the same gave the few shells of
the largest scales ~1/300 of the loss each, and the fundamental modes stayed 7-11% low).
Shell 0 is the map mean: the generator's means varied ~150x more (in variance) than the
physical model's, whose maps have a near-fixed mean, which shifts each map's PDF and
Minkowski curves. It is scale-free (logs) and differentiable; a floor of
1e-3 x the median shell power is added inside both logs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from pipeline.data.transforms import PixelTransform


class SpectralLoss:
    def __init__(self, size: int, target_chunks: Iterable[np.ndarray], transform: PixelTransform,
                 device: torch.device):
        """size: pixels per side N; target_chunks: training maps in kappa, as arrays (n_i, N, N),
        whose mean power per shell is the target; transform: the run's pixel transform."""
        ky = torch.fft.fftfreq(size, d=1.0 / size, device=device)
        kx = torch.fft.rfftfreq(size, d=1.0 / size, device=device)
        k2 = torch.round(ky[:, None] ** 2 + kx[None, :] ** 2).long()
        self.keep = k2 <= (size // 2) ** 2  # the modes used, on the rfft2 grid, the mean (k = 0) included
        self.k2 = k2[self.keep]
        shells, self.shell = torch.unique(self.k2, return_inverse=True)  # shell index of each mode
        self.n_shells = len(shells)
        self.counts = torch.bincount(self.shell, minlength=self.n_shells).to(torch.float32)
        # every ring of integer |k| weighs the same (as linear ell bins do), every shell in a
        # ring the same, every mode in a shell the same
        ring_of_shell = torch.round(torch.sqrt(shells.to(torch.float64))).long()
        _, ring_index = torch.unique(ring_of_shell, return_inverse=True)
        shells_per_ring = torch.bincount(ring_index).to(torch.float32)
        shell_weight = 1.0 / (shells_per_ring[ring_index] * len(shells_per_ring))
        self.weights = shell_weight[self.shell] / self.counts[self.shell]
        self.transform = transform
        total, n = torch.zeros(self.n_shells, device=device), 0
        for maps in target_chunks:
            total += self.shell_power(torch.as_tensor(np.asarray(maps, np.float32), device=device)) * len(maps)
            n += len(maps)
        target = total / n
        # a floor far below any shell's power keeps the logs finite for data whose maps all
        # have mean exactly 0 (shell k = 0 empty): a generated mean then costs log(P / floor)
        self.floor = 1e-3 * float(target.median())
        self.log_target = torch.log(target + self.floor)

    def mode_power(self, kappa: torch.Tensor) -> torch.Tensor:
        """Mean power over the maps (B, N, N) of each mode used, float32."""
        return torch.fft.rfft2(kappa.float()).abs().square().mean(0)[self.keep]

    def shell_power(self, kappa: torch.Tensor) -> torch.Tensor:
        """Mean power over the maps (B, N, N) and the modes of each shell."""
        power = self.mode_power(kappa)
        sums = torch.zeros(self.n_shells, device=kappa.device, dtype=power.dtype).index_add(0, self.shell, power)
        return sums / self.counts

    def __call__(self, fake: torch.Tensor) -> torch.Tensor:
        """fake: generated maps (B, 1, N, N) as the generator makes them (transformed)."""
        kappa = self.transform.inverse(fake[:, 0].float())
        error = torch.log(self.mode_power(kappa) + self.floor) - self.log_target[self.shell]
        return (self.weights * error.square()).sum()

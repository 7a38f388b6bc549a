"""Auxiliary generator loss: match the generated maps' mean power spectrum to the training set's.

The GAN loss alone learns the spectrum imprecisely: power on the generator's stride grid,
and broadband offsets of 10-40% (docs/training-notes.md). NERSC's PyTorch port of CosmoGAN
added spectral and histogram terms for that reason. This term is

    L_spec = mean over |k| bins of (log <|F[kappa_fake](k)|^2> - log P_train(k))^2

with kappa_fake the generated batch mapped back to kappa by the pixel transform (the
spectrum users measure, not that of the transformed maps: the transform is nonlinear, and
matching the transformed spectrum left the kappa spectrum 20-40% high at low ell), F the
2D FFT, <> the mean over the batch and the modes of a bin, and P_train the same mean over
training maps, computed once. Radial bins of width 1 in integer wave number, from the
fundamental to the Nyquist frequency. It is scale-free (logs) and differentiable.
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
        whose mean binned power is the target; transform: the run's pixel transform."""
        ky = torch.fft.fftfreq(size, d=1.0 / size, device=device)
        kx = torch.fft.rfftfreq(size, d=1.0 / size, device=device)
        k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
        index = torch.round(k).long()  # bin j holds |k| in [j - 1/2, j + 1/2)
        keep = (index >= 1) & (index <= size // 2)
        self.index = index[keep] - 1
        self.keep = keep
        self.n_bins = size // 2
        self.counts = torch.bincount(self.index, minlength=self.n_bins).to(torch.float32)
        self.transform = transform
        total, n = torch.zeros(self.n_bins, device=device), 0
        for maps in target_chunks:
            total += self.binned(torch.as_tensor(np.asarray(maps, np.float32), device=device)) * len(maps)
            n += len(maps)
        self.log_target = torch.log(total / n)

    def binned(self, kappa: torch.Tensor) -> torch.Tensor:
        """Mean power over the maps (B, N, N) and the modes of each radial bin, float32."""
        power = torch.fft.rfft2(kappa.float()).abs().square().mean(0)[self.keep]
        sums = torch.zeros(self.n_bins, device=kappa.device, dtype=power.dtype).index_add(0, self.index, power)
        return sums / self.counts

    def __call__(self, fake: torch.Tensor) -> torch.Tensor:
        """fake: generated maps (B, 1, N, N) as the generator makes them (transformed)."""
        kappa = self.transform.inverse(fake[:, 0].float())
        return (torch.log(self.binned(kappa)) - self.log_target).square().mean()

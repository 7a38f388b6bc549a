"""Auxiliary generator loss: match the power spectrum of the generated batch to the real one.

The GAN loss alone learns the small scales late and imprecisely (checkerboard power at
high ell is typical); NERSC's PyTorch port of CosmoGAN added spectral and histogram terms
for that reason. This term is

    L_spec = mean over |k| bins of (log <|F_fake(k)|^2> - log <|F_real(k)|^2>)^2

with F the 2D FFT of the maps the GAN sees (after the pixel transform), <> the mean over
the batch and the modes of a bin; radial bins of width 1 in integer wave number, from the
fundamental to the Nyquist frequency. It is scale-free (logs) and differentiable.
"""

from __future__ import annotations

import torch


class SpectralLoss:
    def __init__(self, size: int, device: torch.device):
        ky = torch.fft.fftfreq(size, d=1.0 / size, device=device)
        kx = torch.fft.rfftfreq(size, d=1.0 / size, device=device)
        k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
        index = torch.round(k).long()  # bin j holds |k| in [j - 1/2, j + 1/2)
        keep = (index >= 1) & (index <= size // 2)
        self.index = index[keep] - 1
        self.keep = keep
        self.n_bins = size // 2
        self.counts = torch.bincount(self.index, minlength=self.n_bins).to(torch.float32)

    def binned(self, maps: torch.Tensor) -> torch.Tensor:
        """Batch-mean power in each radial bin; maps (B, 1, N, N)."""
        power = torch.fft.rfft2(maps[:, 0].float()).abs().square().mean(0)[self.keep]
        sums = torch.zeros(self.n_bins, device=maps.device, dtype=power.dtype).index_add(0, self.index, power)
        return sums / self.counts

    def __call__(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = torch.log(self.binned(real))
        return (torch.log(self.binned(fake)) - target).square().mean()

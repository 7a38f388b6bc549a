"""The rfft2 grid's wavenumbers, shared by the models and the spectral terms."""

from __future__ import annotations

import torch


def rfft_k2(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """|k|^2 (size, size // 2 + 1), int64, of each mode of torch.fft.rfft2 of a size x size
    map, k in cycles per map (integers, so |k|^2 is exact)."""
    ky = torch.fft.fftfreq(size, d=1.0 / size, device=device)
    kx = torch.fft.rfftfreq(size, d=1.0 / size, device=device)
    return torch.round(ky[:, None] ** 2 + kx[None, :] ** 2).long()


def rfft_rings(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ring round(|k|) (size, size // 2 + 1), int64, of each rfft2 mode: ring 0 the map
    mean, ring r the modes with r - 1/2 <= |k| < r + 1/2 (as the evaluation's linear bins)."""
    return torch.round(torch.sqrt(rfft_k2(size, device).double())).long()

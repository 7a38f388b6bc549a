"""Quadratic, cubic and quartic moments of maps and their derivatives (LensTools)."""

from __future__ import annotations

from . import chunking
from .inputs import finish
from .kernels import MOMENT_NAMES


def moments(maps, connected=False, dimensionless=False, *, dtype=None, device=None,
            chunk_size=None):
    """The nine moments of LensTools' ConvergenceMap.moments.

    With k the map, g = grad k and lap = h_xx + h_yy (periodic central
    differences, pixel units) and <.> the mean over pixels:

    ======  =============================  ====================================
    index   name                           value
    ======  =============================  ====================================
    0       sigma0                         std(k) (population, mean removed)
    1       sigma1                         sqrt(<|g|^2>)
    2       S0                             <k^3>
    3       S1                             <k^2 lap>
    4       S2                             <|g|^2 lap>
    5       K0                             <k^4>
    6       K1                             <k^3 lap>
    7       K2                             <k |g|^2 lap>
    8       K3                             <|g|^4>
    ======  =============================  ====================================

    The cubic and quartic moments use k itself, not k - <k> (as LensTools).
    connected=True subtracts the Gaussian parts of the quartic ones:
    K0 - 3 s0^4, K1 + 3 s0^2 s1^2, K2 + s1^4, K3 - 2 s1^4.
    dimensionless=True divides by powers of sigma0, sigma1: S0/s0^3,
    S1/(s0 s1^2), S2 s0/s1^4, K0/s0^4, K1/(s0^2 s1^2), K2/s1^4, K3/s1^4 and
    sigma0 = sigma1 = 1.

    Returns (9,) or (B, 9), float64 whatever the working dtype (the sums
    are accumulated in float64). Order as :data:`MOMENT_NAMES`.
    """
    prep = chunking.prepare_maps(maps, dtype, device)
    connected = chunking.check_flag(connected, "connected")
    dimensionless = chunking.check_flag(dimensionless, "dimensionless")
    chunk = chunking.check_chunk(chunk_size, prep)
    m = chunking.run(prep, chunk, moments=(connected, dimensionless))["moments"]
    return finish(prep, m)


__all__ = ["moments", "MOMENT_NAMES"]

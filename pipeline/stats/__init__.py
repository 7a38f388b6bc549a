"""Summary statistics of convergence maps, in LensTools' conventions.

Power spectrum, Minkowski functionals, peak counts, pixel PDF and moments of
(N, N) maps or (B, N, N) batches, numpy or torch, CPU or CUDA; see
docs/statistics.md for the exact definitions and units (kappa dimensionless,
ell in radians^-1, map sides in degrees).
"""

from .inputs import StatsInputError
from .kernels import MOMENT_NAMES
from .combined import all_statistics
from .minkowski import minkowski_functionals
from .moments import moments
from .pdf import pixel_pdf
from .peaks import peak_counts
from .spectrum import mode_counts, power_spectrum

__all__ = [
    "power_spectrum", "mode_counts", "minkowski_functionals", "peak_counts", "pixel_pdf",
    "moments", "MOMENT_NAMES", "all_statistics", "StatsInputError",
]

"""The physical model S(sigma, r): CCL convergence spectra and flat-sky map synthesis.

cosmology: C_ell and the empty-beam convergence from CCL.
fields: Gaussian and shifted-lognormal periodic maps (LensTools normalisation)
and MapModel, which the data layer calls. See docs/physics.md.
"""

from pipeline.physics.cosmology import CosmoParams, convergence_cl, empty_beam_convergence
from pipeline.physics.fields import LognormalSpectrum, MapModel, ell_grid

__all__ = ["CosmoParams", "LognormalSpectrum", "MapModel", "convergence_cl",
           "empty_beam_convergence", "ell_grid"]

"""Unit tests of pipeline.physics: determinism, caching, shapes, options."""

import dataclasses
import math

import numpy as np
import pytest

from pipeline.config import CosmologyConfig, PhysicsConfig, SourceConfig
from pipeline.errors import ConfigError
from pipeline.physics import CosmoParams, MapModel, convergence_cl, empty_beam_convergence, ell_grid
from pipeline.physics import cosmology as cosmology_module
from pipeline.physics.fields import gaussian_beam, noise_cl, noise_pixel_sigma

POINT = (0.3, 0.8)


def _model(**physics) -> MapModel:
    physics.setdefault("map_size", 32)
    return MapModel(PhysicsConfig(**physics), CosmologyConfig())


# --- CosmoParams ---------------------------------------------------------------


def test_cosmo_params_from_point_is_hashable_and_complete():
    cosmology = CosmologyConfig(Omega_b=0.05, h=0.68, n_s=0.97, matter_power_spectrum="linear")
    params = CosmoParams.from_point((0.31, 0.82), cosmology)
    assert (params.Omega_m, params.sigma_8, params.Omega_b, params.h, params.n_s) == (
        0.31, 0.82, 0.05, 0.68, 0.97)
    assert params.matter_power_spectrum == "linear"
    assert params.Omega_c == pytest.approx(0.26)
    assert {params: 1}[CosmoParams.from_point((0.31, 0.82), cosmology)] == 1


def test_cosmo_params_rejects_baryons_above_matter():
    with pytest.raises(ValueError, match="Omega_b"):
        CosmoParams(Omega_m=0.04, sigma_8=0.8)


# --- convergence_cl ------------------------------------------------------------


def test_convergence_cl_shape_zero_and_positivity():
    params = CosmoParams(0.3, 0.8)
    ell = np.array([[0.0, 50.0], [500.0, 5000.0]])
    cl = convergence_cl(ell, params, SourceConfig())
    assert cl.shape == ell.shape and cl.dtype == np.float64
    assert cl[0, 0] == 0.0
    assert np.all(cl.ravel()[1:] > 0)
    assert np.all(np.diff(cl.ravel()[1:]) < 0)  # falls with ell on these scales
    assert convergence_cl(100.0, params, SourceConfig()).shape == ()


def test_convergence_cl_rejects_negative_ell():
    with pytest.raises(ValueError, match="ell"):
        convergence_cl([-1.0], CosmoParams(0.3, 0.8), SourceConfig())


def test_convergence_cl_power_law_beyond_table_is_continuous():
    params = CosmoParams(0.3, 0.8)
    top = cosmology_module.ELL_TABLE[-1]
    below, at, above = convergence_cl([top * 0.999, top, top * 1.001], params, SourceConfig())
    # A power law continuing the last table segment: equal log-slopes either side.
    assert math.log(above / at) == pytest.approx(math.log(at / below), rel=1e-2)


def test_convergence_cl_is_cached_per_parameters_and_source():
    params = CosmoParams(0.3, 0.77)  # a point no other test uses
    source = SourceConfig(z=1.3)
    cosmology_module._cl_table.cache_clear()
    first = convergence_cl([100.0], params, source)
    misses = cosmology_module._cl_table.cache_info().misses
    assert convergence_cl([100.0], params, source) == first
    info = cosmology_module._cl_table.cache_info()
    assert (info.misses, info.hits) == (misses, 1)
    convergence_cl([100.0], CosmoParams(0.3, 0.78), source)
    convergence_cl([100.0], params, SourceConfig(z=1.4))
    assert cosmology_module._cl_table.cache_info().misses == misses + 2


def test_convergence_cl_grows_with_source_redshift_and_sigma8():
    ell = [300.0]
    near = convergence_cl(ell, CosmoParams(0.3, 0.8), SourceConfig(z=0.5))
    far = convergence_cl(ell, CosmoParams(0.3, 0.8), SourceConfig(z=1.5))
    strong = convergence_cl(ell, CosmoParams(0.3, 0.9), SourceConfig(z=0.5))
    assert far > near and strong > near


# --- empty beam ----------------------------------------------------------------


def test_empty_beam_is_negative_and_deepens_with_redshift():
    params = CosmoParams(0.3, 0.8)
    values = [empty_beam_convergence(params, SourceConfig(z=z)) for z in (0.5, 1.0, 2.0)]
    assert values[0] < 0 and values[0] > values[1] > values[2]
    # kappa_empty is proportional to Omega_m at fixed distances: more matter, deeper.
    assert empty_beam_convergence(CosmoParams(0.4, 0.8), SourceConfig()) < values[1]


def test_smail_source_path():
    params = CosmoParams(0.3, 0.8)
    smail = SourceConfig(kind="smail", z0=0.64, alpha=2.0, beta=1.5, z_max=4.0)
    kappa = empty_beam_convergence(params, smail)
    # The n(z) average lies between the planes bracketing most sources.
    assert empty_beam_convergence(params, SourceConfig(z=3.0)) < kappa
    assert kappa < empty_beam_convergence(params, SourceConfig(z=0.3))
    cl = convergence_cl([100.0, 1000.0], params, smail)
    assert np.all(cl > 0)
    plane = convergence_cl([100.0, 1000.0], params, SourceConfig())
    assert np.all(np.abs(cl / plane - 1.0) > 0.1)
    kmap = _model(source=smail).synthesize(POINT, (1, 0, 0))
    assert np.all(np.isfinite(kmap)) and kmap.min() >= empty_beam_convergence(params, smail)


# --- grids and helpers ---------------------------------------------------------


def test_ell_grid_layout():
    ell = ell_grid(8, 2.0)
    assert ell.shape == (8, 5)
    fundamental = 2 * math.pi / math.radians(2.0)
    assert ell[0, 0] == 0.0
    assert ell[0, 1] == pytest.approx(fundamental) and ell[1, 0] == pytest.approx(fundamental)
    assert ell[-1, 0] == pytest.approx(fundamental)  # negative k_y wraps to the end
    assert ell[4, 4] == pytest.approx(fundamental * 4 * math.sqrt(2))


def test_beam_and_noise_conventions():
    fwhm = 3.0
    # B_ell = exp(-ell^2 sigma^2 / 2) with sigma = FWHM / sqrt(8 ln 2), in radians.
    one_over_sigma = math.sqrt(8 * math.log(2)) / math.radians(fwhm / 60)
    assert gaussian_beam(np.array([0.0]), fwhm)[0] == 1.0
    assert gaussian_beam(np.array([one_over_sigma]), fwhm)[0] == pytest.approx(math.exp(-0.5))
    # White pixel noise of variance s^2 has C = s^2 * pixel area (sr).
    sigma = noise_pixel_sigma(0.3, 20.0, 64, 2.0)
    pixel_sr = math.radians(2.0 / 64) ** 2
    assert sigma**2 * pixel_sr == pytest.approx(noise_cl(0.3, 20.0), rel=1e-12)


# --- MapModel ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["gaussian", "lognormal"])
def test_synthesize_shape_dtype_and_determinism(field):
    model = _model(field=field)
    a = model.synthesize(POINT, (5, 1, 3))
    assert a.shape == (32, 32) and a.dtype == np.float64 and a.flags.c_contiguous
    # A fresh model (same configs) gives the bit-identical map.
    b = _model(field=field).synthesize(POINT, (5, 1, 3))
    assert np.array_equal(a, b)
    for other in [(5, 1, 4), (5, 2, 3), (6, 1, 3)]:
        assert not np.allclose(a, model.synthesize(POINT, other))
    assert not np.allclose(a, model.synthesize((0.3, 0.85), (5, 1, 3)))


def test_gaussian_map_has_zero_mean():
    kmap = _model(field="gaussian").synthesize(POINT, (1, 0, 0))
    # The k = 0 mode is zero, so the mean vanishes up to rounding (~1e-16 std).
    assert abs(kmap.mean()) < 1e-12 * kmap.std()
    assert kmap.std() > 0


def test_smoothing_reduces_and_noise_increases_variance():
    seed = (2, 0, 0)
    plain = _model(field="gaussian").synthesize(POINT, seed)
    smooth = _model(field="gaussian", smoothing_arcmin=10.0).synthesize(POINT, seed)
    noisy = _model(field="gaussian", shape_noise_sigma_e=0.3).synthesize(POINT, seed)
    assert smooth.var() < 0.9 * plain.var()
    assert noisy.var() > plain.var()


def test_explicit_shift_is_honoured():
    model = _model(field="lognormal", lognormal_shift=0.03)
    assert model.shift(POINT) == 0.03
    spectrum = model.lognormal_spectrum(POINT)
    assert spectrum.shift == 0.03
    maps = np.stack([model.synthesize(POINT, (3, 0, i)) for i in range(8)])
    assert maps.min() >= -0.03


def test_auto_shift_is_empty_beam():
    model = _model(field="lognormal")
    params = CosmoParams.from_point(POINT, CosmologyConfig())
    assert model.shift(POINT) == -empty_beam_convergence(params, SourceConfig())


def test_too_small_shift_is_a_config_error():
    # With k = 0 removed the pixel correlation sums to zero, so it is negative
    # somewhere; a shift with lambda^2 below that cannot be lognormal.
    with pytest.raises(ConfigError, match="lognormal_shift"):
        _model(field="lognormal", lognormal_shift=1e-5).lognormal_spectrum(POINT)


def test_lognormal_spectrum_is_cached_and_read_only():
    model = _model(field="lognormal", map_size=48)
    first = model.lognormal_spectrum(POINT)
    assert _model(field="lognormal", map_size=48).lognormal_spectrum(POINT) is first
    assert model.lognormal_spectrum((0.3, 0.9)) is not first
    with pytest.raises(ValueError):
        first.amplitude[0, 0] = 1.0
    assert 0.0 <= first.clipped_fraction <= 1.0 and first.sigma_g2 > 0


def test_expected_cl_grid_includes_noise_and_beam():
    plain = _model(field="gaussian")
    assert np.array_equal(plain.expected_cl_grid(POINT), plain.cl_grid(POINT))
    both = _model(field="gaussian", smoothing_arcmin=5.0, shape_noise_sigma_e=0.3)
    expected = both.expected_cl_grid(POINT)
    assert expected[0, 0] == 0.0
    assert expected[0, 1] < plain.cl_grid(POINT)[0, 1] + noise_cl(0.3, 30.0)
    assert np.all(expected.ravel()[1:] > 0)


def test_source_config_changes_the_model():
    a = _model(source=SourceConfig(z=0.8)).synthesize(POINT, (1, 0, 0))
    b = _model(source=dataclasses.replace(SourceConfig(), z=1.2)).synthesize(POINT, (1, 0, 0))
    assert not np.allclose(a, b)

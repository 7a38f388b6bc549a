"""The per-cosmology pixel transform (transform.per_cosmology): shift and scale as smooth
functions of the normalised parameters (pipeline/data/transforms.py, ConditionalPixelTransform)."""

import json

import numpy as np
import pytest
import torch

from pipeline.config import TransformConfig, load_config
from pipeline.data.transforms import (ConditionalPixelTransform, PixelTransform, TransformError, monomials,
                                      transform_from_state)
from pipeline.errors import ConfigError

# log floor(u) = -3 + 0.25 u + 0.2 v - 0.05 u^2 + 0.03 u v - 0.06 v^2: a quadratic, as the fit assumes
TRUE_LOG_FLOOR = np.array([-3.0, 0.25, 0.2, -0.05, 0.03, -0.06])
GRID = np.array([(u, v) for u in np.linspace(-1, 1, 5) for v in np.linspace(-1, 1, 5)])


def features(points):
    return np.stack([np.prod(points[:, list(m)], axis=1) for m in monomials(2, 2)], 1)


def lognormal_samples(points, log_floor, n=20_000, seed=0):
    """Per cosmology, shifted-lognormal pixels kappa = lam (exp(g - s^2/2) - 1) >= -lam, with the
    floor -lam itself among them (so that -min kappa = lam exactly)."""
    rng = np.random.default_rng(seed)
    out = []
    for lam in np.exp(log_floor):
        k = lam * (np.exp(0.5 * rng.standard_normal(n) - 0.125) - 1)
        out.append(np.append(k, -lam))
    return out


def test_monomials_in_order_of_degree():
    assert monomials(2, 2) == [(), (0,), (1,), (0, 0), (0, 1), (1, 1)]
    assert monomials(1, 3) == [(), (0,), (0, 0), (0, 0, 0)]
    assert len(monomials(3, 2)) == 10


def test_fit_recovers_a_floor_that_is_a_quadratic_and_puts_the_margin_on_it():
    samples = lognormal_samples(GRID, features(GRID) @ TRUE_LOG_FLOOR)
    t = ConditionalPixelTransform.fit(samples, GRID, TransformConfig(margin=0.25))
    expected = TRUE_LOG_FLOOR.copy()
    expected[0] += np.log(1.25)
    np.testing.assert_allclose(t.log_shift, expected, atol=1e-9)
    shift, scale = t.shift_scale(GRID, np.zeros((len(GRID), 4, 4)))
    for k, p, s, m in zip(samples, GRID, shift.ravel(), scale.ravel()):
        assert s == pytest.approx(-k.min() * 1.25, rel=1e-9)
        # scale is the fitted median of kappa + shift: each cosmology's median pixel at y ~ 0
        assert m == pytest.approx(np.median(k + s), rel=0.01)
        assert abs(t.forward(np.array([[np.median(k)]]), p[None]).item()) < 0.005


def test_each_cosmology_uses_a_like_part_of_tanhs_range():
    """The floors differ 2.4-fold over the grid; one transform fitted across all of them maps
    the shallowest cosmology's floor far from the deepest one's (-0.16 against -0.65), the
    per-cosmology one maps every floor to the same s(shift / (1 + margin))."""
    samples = lognormal_samples(GRID, features(GRID) @ TRUE_LOG_FLOOR)
    cfg = TransformConfig(margin=0.25)
    per = ConditionalPixelTransform.fit(samples, GRID, cfg)
    one = PixelTransform.fit(np.concatenate(samples), cfg)
    floors = np.array([k.min() for k in samples])
    y_per = np.array([per.forward(np.array([[f]]), p[None]).item() for f, p in zip(floors, GRID)])
    y_one = one.forward(floors)
    assert y_per.max() - y_per.min() < 0.02
    assert y_one.max() - y_one.min() > 0.4


def test_floor_is_lifted_above_every_cosmologys_deepest_pixel():
    """A floor that no quadratic fits (one cosmology's void 30% deeper): the fit is lifted
    until no pixel of any cosmology lies below -shift, even at margin 0."""
    log_floor = features(GRID) @ TRUE_LOG_FLOOR
    log_floor[7] += np.log(1.3)
    samples = lognormal_samples(GRID, log_floor)
    t = ConditionalPixelTransform.fit(samples, GRID, TransformConfig(margin=0.0))
    shift, _ = t.shift_scale(GRID, np.zeros(len(GRID)))
    lows = np.array([k.min() for k in samples])
    assert np.all(lows + shift >= -1e-12)
    assert np.isclose(lows[7] + shift[7], 0, atol=1e-12)  # the deepest one sets the lift
    assert all(np.all(t.forward(k[None], p[None]) >= -1) for k, p in zip(samples, GRID))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_each_map_by_its_own_cosmology_numpy_and_torch_alike(as_tensor):
    samples = lognormal_samples(GRID, features(GRID) @ TRUE_LOG_FLOOR)
    t = ConditionalPixelTransform.fit(samples, GRID, TransformConfig(margin=0.25))
    rng = np.random.default_rng(1)
    params = GRID[[0, 12, 24]]
    kappa = np.stack([rng.choice(samples[i], (8, 8)) for i in (0, 12, 24)]).astype(np.float32)
    if as_tensor:
        y = t.forward(torch.as_tensor(kappa)[:, None], torch.as_tensor(params, dtype=torch.float32))
        assert y.dtype == torch.float32 and y.shape == (3, 1, 8, 8)
        back = t.inverse(y, torch.as_tensor(params))[:, 0].numpy()
        y = y[:, 0].numpy()
    else:
        y = t.forward(kappa, params)
        assert y.dtype == np.float32
        back = t.inverse(y, params)
    for j, i in enumerate((0, 12, 24)):
        alone = PixelTransform(*(float(v) for v in np.ravel(t.shift_scale(GRID[i:i + 1], kappa[:1]))))
        np.testing.assert_allclose(y[j], alone.forward(kappa[j]), atol=2e-6)
    np.testing.assert_allclose(back, kappa, rtol=1e-4, atol=1e-7)
    # -1 is each cosmology's own floor
    floor = t.inverse(-np.ones((3, 1)), params).ravel()
    np.testing.assert_allclose(-floor, np.ravel(t.shift_scale(params, np.zeros(3))[0]), rtol=1e-12)
    assert floor[0] > floor[2]


def test_state_round_trip_and_dispatch():
    samples = lognormal_samples(GRID, features(GRID) @ TRUE_LOG_FLOOR)
    t = ConditionalPixelTransform.fit(samples, GRID, TransformConfig())
    again = transform_from_state(json.loads(json.dumps(t.state_dict())))
    assert again == t and isinstance(again, ConditionalPixelTransform)
    k = np.linspace(-0.03, 0.2, 12).reshape(3, 4)
    np.testing.assert_array_equal(again.forward(k, GRID[:3]), t.forward(k, GRID[:3]))
    plain = PixelTransform(0.1, 0.1)
    assert transform_from_state(plain.state_dict()) == plain
    with pytest.raises(TransformError, match="transform state"):
        ConditionalPixelTransform.from_state_dict({**t.state_dict(), "extra": 1})
    with pytest.raises(TransformError, match="6 finite coefficients"):
        ConditionalPixelTransform(2, 2, [0.0] * 5, [0.0] * 6)


def test_bad_fits_and_params_are_refused():
    samples = lognormal_samples(GRID, features(GRID) @ TRUE_LOG_FLOOR)
    with pytest.raises(TransformError, match="at least 6 training cosmologies, the training split has 4"):
        ConditionalPixelTransform.fit(samples[:4], GRID[:4], TransformConfig())
    assert ConditionalPixelTransform.fit(samples[:4], GRID[:4], TransformConfig(degree=1)).degree == 1
    with pytest.raises(TransformError, match="no negative pixel"):
        ConditionalPixelTransform.fit([np.abs(k) for k in samples], GRID, TransformConfig())
    with pytest.raises(TransformError, match="leave transform.shift"):
        ConditionalPixelTransform.fit(samples, GRID, TransformConfig(shift=0.1))
    t = ConditionalPixelTransform.fit(samples, GRID, TransformConfig())
    with pytest.raises(TransformError, match=r"expected normalised parameters \(B, 2\)"):
        t.forward(np.zeros((3, 4)), None)
    with pytest.raises(TransformError, match=r"got \(3, 1\)"):
        t.inverse(np.zeros((3, 4)), np.zeros((3, 1)))


def test_config_refuses_a_per_cosmology_transform_without_conditioning():
    with pytest.raises(ConfigError, match="transform.per_cosmology: needs a conditional model"):
        load_config(None, ["transform.per_cosmology=true"])
    with pytest.raises(ConfigError, match="leave transform.shift and transform.scale at 'auto'"):
        load_config(None, ["transform.per_cosmology=true", "transform.scale=0.1",
                           "model.condition_on=[Omega_m, sigma_8]"])
    with pytest.raises(ConfigError, match="transform.degree"):
        load_config(None, ["transform.degree=-1"])
    cfg = load_config(None, ["transform.per_cosmology=true", "model.condition_on=[Omega_m, sigma_8]"])
    assert cfg.transform.per_cosmology and cfg.transform.degree == 2

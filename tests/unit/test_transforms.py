"""The pixel transform s(x) = 2x / (x + scale) - 1, x = kappa + shift (pipeline/data/transforms.py)."""

import json

import numpy as np
import pytest
import torch

from pipeline.config import TransformConfig
from pipeline.data.transforms import INVERSE_EPS, PixelTransform, TransformError
from pipeline.errors import ConfigError

KAPPA_MIN = -0.06
KAPPA_MAX = 1.0


def realistic_kappa(n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Lognormal-like convergence: kappa = lam (exp(g - s^2/2) - 1) >= -lam, lam = 0.06,
    with the exact end points -0.06 and +1 appended (tail to +1, as in ray-traced maps)."""
    rng = np.random.default_rng(seed)
    lam, sig = -KAPPA_MIN, 0.7
    k = lam * (np.exp(sig * rng.standard_normal(n) - sig**2 / 2) - 1)
    k = k[k <= KAPPA_MAX]
    return np.concatenate([k, np.linspace(KAPPA_MIN, KAPPA_MAX, 2001)])


@pytest.fixture(scope="module")
def kappa():
    return realistic_kappa()


@pytest.fixture(scope="module")
def fitted(kappa):
    return PixelTransform.fit(kappa, TransformConfig())


def roundtrip_tolerance(t: PixelTransform, kappa: np.ndarray, eps: float) -> np.ndarray:
    """Error bound of inverse(forward(kappa)) from the condition numbers, per pixel.

    With unit roundoff u = eps/2, forward makes x (1 + O(u)) and y with absolute error
    ~ 3u |y| + |dy/dx| x u; inverse amplifies an error in y by dx/dy = (x + s)^2 / (2 s)
    and adds ~3u x, and the final subtraction of shift u |kappa|. Summed:
    |err| <~ u (5 x + 3 (x + s)^2 / (2 s) + |kappa|); we allow 4 eps = 8u per term,
    about twice that bound.
    """
    x = kappa + t.shift
    s = t.scale
    return 4 * eps * (np.abs(x) + (x + s) ** 2 / (2 * s) + np.abs(kappa))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_over_realistic_range(fitted, kappa, dtype):
    k = kappa.astype(dtype)
    back = fitted.inverse(fitted.forward(k))
    assert back.dtype == dtype
    err = np.abs(back.astype(np.float64) - k.astype(np.float64))
    tol = roundtrip_tolerance(fitted, k.astype(np.float64), float(np.finfo(dtype).eps))
    worst = np.argmax(err / tol)
    assert np.all(err <= tol), (k[worst], err[worst], tol[worst])
    # the tolerance is meaningful: it is far below the spacing of the values being checked
    assert tol.max() < (1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_torch(fitted, kappa, dtype):
    k = torch.from_numpy(kappa).to(dtype)
    back = fitted.inverse(fitted.forward(k))
    assert back.dtype == dtype
    ref = k.double().numpy()  # kappa as represented in dtype
    tol = roundtrip_tolerance(fitted, ref, torch.finfo(dtype).eps)
    assert np.all(np.abs(back.double().numpy() - ref) <= tol)


def test_monotone(fitted):
    # float64 on a grid whose steps dwarf rounding: strictly increasing
    k = np.linspace(-fitted.shift, 5.0, 100_001)
    y = fitted.forward(k)
    assert np.all(np.diff(y) > 0)
    # float32 over the realistic range: never decreasing (neighbours may round together)
    k32 = np.linspace(KAPPA_MIN, KAPPA_MAX, 100_001, dtype=np.float32)
    assert np.all(np.diff(fitted.forward(k32)) >= 0)
    # and the inverse is increasing too
    yy = np.linspace(-1, 0.999, 10_001)
    assert np.all(np.diff(fitted.inverse(yy)) > 0)


def test_range_and_fixed_points():
    t = PixelTransform(shift=0.07, scale=0.05)
    assert t.forward(np.float64(-0.07)) == -1.0                      # x = 0
    assert t.forward(np.array([-5.0, -0.5]))[0] == -1.0              # below -shift: clamped to -1
    assert np.all(t.forward(np.array([-5.0, -0.5])) == -1.0)
    assert abs(t.forward(np.float64(0.05 - 0.07))) < 1e-15          # x = scale -> 0
    big = t.forward(np.array([1.0, 1e3, 1e6]))
    assert np.all(big < 1.0) and np.all(np.diff(big) > 0) and big[-1] > 0.9999
    k = np.linspace(-1, 100, 10001)
    y = t.forward(k)
    assert y.min() >= -1 and y.max() < 1
    # the formula itself, at a point computed by hand: x = 0.1, s = 0.05 -> 0.2/0.15 - 1 = 1/3
    assert t.forward(np.float64(0.03)) == pytest.approx(1 / 3, rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_inverse_is_finite_at_and_beyond_one(dtype):
    t = PixelTransform(shift=0.06, scale=0.06)
    y = torch.tensor([-2.0, -1.0, 0.0, 0.98, 1.0, 1.5, float("inf")], dtype=dtype)
    k = t.inverse(y)
    assert k.dtype == dtype
    assert torch.isfinite(k).all(), k
    assert k[0] == k[1] and float(k[1]) == pytest.approx(-0.06, rel=1e-2)  # y <= -1 -> -shift
    eps = max(INVERSE_EPS, torch.finfo(dtype).eps)
    assert float(k[4]) == pytest.approx(0.06 * (2 - eps) / eps - 0.06, rel=2e-2)
    assert k[4] == k[5] == k[6]  # clamped
    assert torch.all(k[1:5].diff() > 0)


def test_inverse_clamp_float32_numpy():
    t = PixelTransform(shift=0.06, scale=0.06)
    k = t.inverse(np.array([1.0, 2.0], dtype=np.float32))
    assert k.dtype == np.float32 and np.isfinite(k).all()
    # 1 - 1e-6 in float32 keeps a gap of ~1e-6: kappa ~ 2e6 * scale, not inf or 1e7 * scale
    assert 1e5 < k[0] < 2e5


def test_numpy_torch_parity(fitted, kappa):
    below = np.array([-1.0, -0.5, -fitted.shift, -fitted.shift * 0.999])  # clamped, edge, just above
    for np_dtype, t_dtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        k = np.concatenate([below, kappa]).astype(np_dtype)
        y_np = fitted.forward(k)
        y_t = fitted.forward(torch.from_numpy(k))
        assert isinstance(y_np, np.ndarray) and isinstance(y_t, torch.Tensor)
        assert y_np.dtype == np_dtype and y_t.dtype == t_dtype
        eps = np.finfo(np_dtype).eps
        np.testing.assert_allclose(y_t.numpy(), y_np, rtol=0, atol=2 * eps)
        assert np.all(y_t.numpy()[:2] == -1) and np.all(y_np[:2] == -1)
        np.testing.assert_allclose(fitted.inverse(torch.from_numpy(y_np)).numpy(), fitted.inverse(y_np),
                                   rtol=4 * eps, atol=4 * eps)


def test_dtype_shape_and_type_preserved(fitted):
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        k = torch.full((2, 1, 4, 4), 0.01, dtype=dtype)
        y = fitted.forward(k)
        assert y.dtype == dtype and y.shape == k.shape
        assert fitted.inverse(y).dtype == dtype
    a = np.zeros((3, 5), dtype=np.float32)
    assert fitted.forward(a).dtype == np.float32 and fitted.forward(a).shape == (3, 5)
    assert fitted.forward(np.zeros(3, dtype=np.int64)).dtype == np.float64  # ints -> float
    assert fitted(a).dtype == np.float32  # __call__ is forward


def test_fit_auto(kappa):
    cfg = TransformConfig(margin=0.05)
    t = PixelTransform.fit(kappa, cfg)
    assert t.shift == pytest.approx(-kappa.min() * 1.05, rel=1e-15)
    assert t.scale == pytest.approx(float(np.median(kappa + t.shift)), rel=1e-15)
    # the sample's minimum maps just above -1, its median to 0
    y_min = t.forward(np.float64(kappa.min()))
    x_min = 0.05 * -kappa.min()  # the margin
    assert y_min == pytest.approx((x_min - t.scale) / (x_min + t.scale), rel=1e-12)
    assert -1 < y_min < -0.5
    assert abs(t.forward(np.float64(np.median(kappa)))) < 1e-12
    # about half the pixels on each side of 0
    y = t.forward(kappa)
    assert abs((y < 0).mean() - 0.5) < 1e-3


def test_fit_is_deterministic_and_order_free(kappa):
    cfg = TransformConfig()
    a = PixelTransform.fit(kappa, cfg)
    b = PixelTransform.fit(kappa.copy(), cfg)
    c = PixelTransform.fit(np.random.default_rng(3).permutation(kappa).reshape(-1, 1), cfg)
    assert a == b == c
    assert a.state_dict() == c.state_dict()
    # float32 and float64 copies of the same values fit the same (computed in float64)
    k32 = kappa.astype(np.float32)
    assert PixelTransform.fit(k32, cfg) == PixelTransform.fit(k32.astype(np.float64), cfg)


def test_fit_numbers_from_config(kappa):
    t = PixelTransform.fit(kappa, TransformConfig(shift=0.1, scale=0.2))
    assert (t.shift, t.scale) == (0.1, 0.2)
    t = PixelTransform.fit(kappa, TransformConfig(shift=0.1, scale="auto"))
    assert t.shift == 0.1 and t.scale == pytest.approx(float(np.median(kappa + 0.1)))
    t = PixelTransform.fit(kappa, TransformConfig(shift="auto", scale=0.3))
    assert t.scale == 0.3 and t.shift == pytest.approx(-kappa.min() * 1.05)


def test_fit_nonnegative_sample():
    k = np.array([[0.0, 0.5], [2.0, 4.0]])
    t = PixelTransform.fit(k, TransformConfig())
    assert t.shift == pytest.approx(1e-3 * 4.0)
    assert t.forward(np.float64(0.0)) > -1
    assert PixelTransform.fit(np.zeros(10), TransformConfig(scale=1.0)).shift == 1e-6


def test_fit_rejects_bad_samples_and_shifts(kappa):
    with pytest.raises(ValueError, match="shift"):
        PixelTransform.fit(kappa, TransformConfig(shift=0.05))  # below -min = 0.06: pixels clamp
    with pytest.raises(ValueError, match="non-finite"):
        PixelTransform.fit(np.array([0.1, np.nan]), TransformConfig())
    with pytest.raises(ValueError, match="empty"):
        PixelTransform.fit(np.array([]), TransformConfig())
    with pytest.raises(ValueError, match="scale"):
        PixelTransform.fit(kappa, TransformConfig(scale=-1.0))


def test_state_dict_round_trip(fitted):
    d = fitted.state_dict()
    assert d == {"kind": "rodriguez", "shift": fitted.shift, "scale": fitted.scale}
    assert all(type(d[key]) is float for key in ("shift", "scale"))
    again = PixelTransform.from_state_dict(json.loads(json.dumps(d)))
    assert again == fitted
    k = np.linspace(-0.06, 1, 101)
    np.testing.assert_array_equal(again.forward(k), fitted.forward(k))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "0.1", None, True])
def test_bad_parameters_raise(bad):
    with pytest.raises(ValueError):
        PixelTransform(shift=bad, scale=0.1)
    with pytest.raises(ValueError):
        PixelTransform(shift=0.1, scale=bad)
    with pytest.raises(ValueError):
        PixelTransform.from_state_dict({"kind": "rodriguez", "shift": bad, "scale": 0.1})


@pytest.mark.parametrize("d", [{"kind": "asinh", "shift": 0.1, "scale": 0.1},
                               {"shift": 0.1, "scale": 0.1},
                               {"kind": "rodriguez", "shift": 0.1, "scale": 0.1, "extra": 1},
                               [0.1, 0.1]])
def test_bad_state_dicts_raise(d):
    with pytest.raises(ValueError, match="transform state"):
        PixelTransform.from_state_dict(d)


def test_errors_are_user_errors():
    # a ConfigError too, so the CLI prints one line instead of a traceback
    with pytest.raises(ConfigError, match="transform.scale"):
        PixelTransform(shift=0.1, scale=0.0)
    assert issubclass(TransformError, ValueError)

"""The fused CPU kernels (stats/fused.py, float64) against the torch kernels (kernels.py).

Two implementations of the same definitions: every count (V0, PDF, peaks) must be equal,
and every sum (V1, V2, moments) equal to 1e-12 of its curve's largest value (the same
float64 terms added in another order: ~1e4 roundings of 1.1e-16 would be 1e-12).
The plain-loop and analytic checks of tests/accuracy run on the fused path, which is
the one the CPU uses in float64.
"""

import numpy as np
import pytest
import torch

from pipeline.stats import fused, kernels

SUM_TOLERANCE = 1e-12


def maps(b=3, n=32, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((b, n, n))
    k = 2 * np.pi * np.fft.fftfreq(n)
    kr = 2 * np.pi * np.fft.rfftfreq(n)
    h = np.exp(-0.5 * 1.5 ** 2 * (k[:, None] ** 2 + kr[None, :] ** 2))
    m = np.fft.irfft2(np.fft.rfft2(w) * h, s=(n, n))
    return 0.02 * np.exp(m / m.std()) - 0.03  # skewed like a convergence map


def plan(edges):
    return kernels.threshold_plan(tuple(float(e) for e in edges))


def both_paths(x, monkeypatch, **plans):
    """compute_chunk through the fused kernels and through the torch kernels."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    fast = kernels.compute_chunk(t, **plans)
    with monkeypatch.context() as m:
        m.setattr(fused, "available", lambda: False)
        slow = kernels.compute_chunk(t, **plans)
    return fast, slow


def assert_agree(fast, slow):
    assert fast.keys() == slow.keys()
    for key in fast:
        a, b = fast[key].numpy(), slow[key].numpy()
        if key == "minkowski":  # V0 counts exactly; V1, V2 are sums
            np.testing.assert_array_equal(a[:, 0], b[:, 0])
            a, b = a[:, 1:], b[:, 1:]
            scale = np.nanmax(np.abs(np.where(np.isfinite(b), b, np.nan)), axis=-1, keepdims=True)
            with np.errstate(invalid="ignore"):
                close = (np.abs(a - b) <= SUM_TOLERANCE * scale) | (a == b)
            both_nan = np.isnan(a) & np.isnan(b)  # a NaN neighbour makes the gradient NaN in both
            assert (close | both_nan).all(), (key, np.abs(a - b).max(), scale.max())
        elif key in ("peaks", "pdf"):
            np.testing.assert_array_equal(a, b)
        else:  # moments
            np.testing.assert_allclose(a, b, rtol=SUM_TOLERANCE, atol=0, equal_nan=True)


def test_numba_is_there_so_the_cpu_runs_the_fused_kernels():
    assert fused.available()


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("edges", [np.linspace(-2, 3, 35), np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 2.5, 4.0])],
                         ids=["even", "uneven"])
def test_every_statistic_agrees(norm, edges, monkeypatch):
    x = maps()
    thresholds = edges if norm else edges * x.std()
    p = plan(thresholds)
    fast, slow = both_paths(x, monkeypatch, mf=p, peaks=p, pdf=p, moments=(False, False), norm=norm)
    assert_agree(fast, slow)


def test_separate_peak_and_pdf_thresholds_agree(monkeypatch):
    x = maps(seed=1)
    s = x.std()
    fast, slow = both_paths(x, monkeypatch, mf=plan(np.linspace(-2, 3, 11) * s),
                            peaks=plan(np.linspace(-1, 5, 7) * s), pdf=plan(np.linspace(-3, 3, 25) * s),
                            moments=(True, True))
    assert_agree(fast, slow)


@pytest.mark.parametrize("case", ["nan", "inf", "constant", "on a threshold"])
def test_awkward_maps_agree(case, monkeypatch):
    """NaN pixels count in no bin and make no peak beside them; a constant map has no
    gradient (the 0/0 limit); values exactly on a threshold go to the bin above."""
    x = maps(seed=2)
    edges = np.linspace(-2, 3, 11) * x.std()
    if case == "nan":
        x[0, 5, 5] = np.nan
        x[1, 0, :] = np.nan
    elif case == "inf":
        x[0, 7, 9] = np.inf
        x[2, 3, 3] = -np.inf
    elif case == "constant":
        x[1] = 0.01
    else:
        x[0, ::3, ::3] = edges[4]
    p = plan(edges)
    for norm in (False, True):
        fast, slow = both_paths(x, monkeypatch, mf=p, peaks=p, pdf=p, norm=norm)
        assert_agree(fast, slow)


def test_float32_maps_widened_late_equal_widened_first():
    """float32 maps (as the datasets store them) are read into float64 map by map, with
    no float64 copy of the whole input: the same numbers, bit for bit."""
    import pipeline.stats as S

    x32 = maps(b=5, seed=3).astype(np.float32)
    edges = np.linspace(-2, 3, 11)
    late = S.all_statistics(x32, 3.5, np.linspace(100.0, 3000.0, 6), edges, norm=True, chunk_size=2)
    first = S.all_statistics(x32.astype(np.float64), 3.5, np.linspace(100.0, 3000.0, 6), edges, norm=True,
                             chunk_size=2)
    for key in ("power_spectrum", "minkowski", "peaks", "pdf", "moments"):
        assert late[key].dtype == np.float64
        np.testing.assert_array_equal(late[key], first[key])


def test_pixel_sums_match_float64_numpy():
    """The stats stage's pooled-sigma sums, read from float32 without a float64 copy."""
    x = maps(b=4, seed=4).astype(np.float32)
    s, ss = fused.pixel_sums(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose([s, ss], [x64.sum(), (x64 * x64).sum()], rtol=SUM_TOLERANCE)

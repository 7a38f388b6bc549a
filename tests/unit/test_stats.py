"""Unit tests of pipeline.stats: shapes, types, batching, norm, argument checks.

The numbers themselves are checked against plain loops and analytic results
in tests/accuracy/test_stats_accuracy.py.
"""

import numpy as np
import pytest
import torch

import pipeline.stats as S
from pipeline.errors import PipelineError
from pipeline.stats import kernels

SIDE = 3.5                                        # degrees
L_EDGES = np.linspace(200.0, 6000.0, 11)          # rad^-1
THR = np.linspace(-3.0, 3.0, 13)                  # 12 bins


def gaussian_maps(b, n=32, seed=0, smooth=1.5):
    """Smoothed white noise (periodic), unit-ish variance."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((b, n, n))
    k = 2 * np.pi * np.fft.fftfreq(n)
    kr = 2 * np.pi * np.fft.rfftfreq(n)
    h = np.exp(-0.5 * smooth ** 2 * (k[:, None] ** 2 + kr[None, :] ** 2))
    m = np.fft.irfft2(np.fft.rfft2(w) * h, s=(n, n))
    return m / m.std()


def all_five(maps, **kw):
    """Every public statistic as a flat list of arrays."""
    ell, cl = S.power_spectrum(maps, SIDE, L_EDGES, **kw)
    nu, v0, v1, v2 = S.minkowski_functionals(maps, THR, **kw)
    _, pk = S.peak_counts(maps, THR, **kw)
    _, p = S.pixel_pdf(maps, THR, **kw)
    m = S.moments(maps, **kw)
    return [ell, cl, nu, v0, v1, v2, pk, p, m]


# ---------------------------------------------------------------- shapes, kinds


def test_shapes_single_map_and_batch():
    one = gaussian_maps(1)[0]
    batch = gaussian_maps(3)
    ell, cl, nu, v0, v1, v2, pk, p, m = all_five(one)
    assert ell.shape == (10,) and cl.shape == (10,)
    assert nu.shape == v0.shape == v1.shape == v2.shape == pk.shape == p.shape == (12,)
    assert m.shape == (9,)
    ell, cl, nu, v0, v1, v2, pk, p, m = all_five(batch)
    assert ell.shape == (10,) and cl.shape == (3, 10)
    assert nu.shape == (12,)
    assert v0.shape == v1.shape == v2.shape == pk.shape == p.shape == (3, 12)
    assert m.shape == (3, 9)


def test_bin_axes_are_midpoints():
    ell, _ = S.power_spectrum(gaussian_maps(1)[0], SIDE, L_EDGES)
    np.testing.assert_array_equal(ell, 0.5 * (L_EDGES[1:] + L_EDGES[:-1]))
    nu, _ = S.pixel_pdf(gaussian_maps(1)[0], THR)
    np.testing.assert_array_equal(nu, 0.5 * (THR[1:] + THR[:-1]))


def test_numpy_in_numpy_out_float64():
    for out in all_five(gaussian_maps(2).astype(np.float32)):
        assert isinstance(out, np.ndarray) and out.dtype == np.float64


def test_torch_in_torch_out_same_device_float64_on_cpu():
    x = torch.from_numpy(gaussian_maps(2)).float()
    for out in all_five(x):
        assert isinstance(out, torch.Tensor)
        assert out.device == x.device and out.dtype == torch.float64


def test_torch_and_numpy_inputs_give_identical_numbers():
    x = gaussian_maps(2)
    for a, b in zip(all_five(x), all_five(torch.from_numpy(x))):
        np.testing.assert_array_equal(a, b.numpy())


def test_float32_working_dtype():
    # mildly smoothed: C_ell spans ~2 decades over L_EDGES (float32 FFTs carry
    # an absolute error ~1e-7 of the largest modes, so bins with 1e-7 of the
    # peak power would have no significant digits; see docs/statistics.md)
    x = gaussian_maps(2, smooth=0.5)
    outs = all_five(x, dtype=torch.float32)
    for out in outs[:-1]:
        assert out.dtype == np.float32
    assert outs[-1].dtype == np.float64             # moments always sum in float64
    ref = all_five(x)
    # float32 vs float64 on smooth unit-variance maps: C_ell and V1 relative
    # 1e-4 (rounding of ~1e3-term sums of float32 values, eps 6e-8, is far
    # below); the histograms (PDF, peaks, V0) can only move a pixel lying
    # within float32 rounding of a threshold, which does not happen here.
    np.testing.assert_allclose(outs[1], ref[1], rtol=1e-4)
    np.testing.assert_allclose(outs[4], ref[4], rtol=1e-4)
    np.testing.assert_array_equal(outs[6], ref[6])
    np.testing.assert_array_equal(outs[7], ref[7])


def test_big_endian_and_float16_inputs():
    x = gaussian_maps(1, seed=16)[0]
    ref = S.pixel_pdf(x, THR)[1]
    np.testing.assert_array_equal(S.pixel_pdf(x.astype(">f8"), THR)[1], ref)
    assert S.pixel_pdf(x.astype(np.float16), THR)[1].dtype == np.float64


def test_integer_maps_are_accepted():
    x = np.random.default_rng(3).integers(-5, 5, size=(16, 16))
    _, p = S.pixel_pdf(x, np.arange(-5.5, 5.0, 1.0))
    assert p.dtype == np.float64 and np.isclose(p.sum(), 1.0)


def test_requires_grad_tensor_is_fine():
    x = torch.from_numpy(gaussian_maps(1)[0]).requires_grad_(True)
    _, cl = S.power_spectrum(x, SIDE, L_EDGES)
    assert not cl.requires_grad


# ---------------------------------------------------------------- batching


def test_single_map_equals_batch_row_bit_for_bit():
    batch = gaussian_maps(5, seed=4)
    whole = all_five(batch)
    for i in range(5):
        one = all_five(batch[i])
        for a, b in zip(whole, one):
            if a.ndim == b.ndim:          # bin axes
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_array_equal(a[i], b)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunk_size_does_not_change_numbers(chunk):
    batch = gaussian_maps(7, seed=5)
    ref = S.all_statistics(batch, SIDE, L_EDGES, THR, norm=True)
    got = S.all_statistics(batch, SIDE, L_EDGES, THR, norm=True, chunk_size=chunk)
    for key in ("power_spectrum", "minkowski", "peaks", "pdf", "moments"):
        np.testing.assert_array_equal(got[key], ref[key])


def test_all_statistics_equals_separate_functions():
    batch = gaussian_maps(3, seed=6)
    for norm in (False, True):
        d = S.all_statistics(batch, SIDE, L_EDGES, THR, norm=norm)
        _, cl = S.power_spectrum(batch, SIDE, L_EDGES)
        _, v0, v1, v2 = S.minkowski_functionals(batch, THR, norm=norm)
        _, pk = S.peak_counts(batch, THR, norm=norm)
        _, p = S.pixel_pdf(batch, THR, norm=norm)
        np.testing.assert_array_equal(d["power_spectrum"], cl)
        np.testing.assert_array_equal(d["minkowski"], np.stack([v0, v1, v2], 1))
        np.testing.assert_array_equal(d["peaks"], pk)
        np.testing.assert_array_equal(d["pdf"], p)
        np.testing.assert_array_equal(d["moments"], S.moments(batch))
        assert d["moment_names"] == S.MOMENT_NAMES


def test_all_statistics_separate_peak_and_pdf_thresholds():
    batch = gaussian_maps(2, seed=7)
    tp, tq = np.linspace(-1, 4, 6), np.linspace(-4, 4, 17)
    d = S.all_statistics(batch, SIDE, L_EDGES, THR, peak_thresholds=tp, pdf_thresholds=tq)
    np.testing.assert_array_equal(d["peaks"], S.peak_counts(batch, tp)[1])
    np.testing.assert_array_equal(d["pdf"], S.pixel_pdf(batch, tq)[1])
    np.testing.assert_array_equal(d["peak_nu"], S.peak_counts(batch, tp)[0])


def test_empty_batch():
    x = np.zeros((0, 16, 16))
    _, cl = S.power_spectrum(x, SIDE, L_EDGES)
    _, v0, v1, v2 = S.minkowski_functionals(x, THR)
    assert cl.shape == (0, 10) and v2.shape == (0, 12)
    assert S.moments(x).shape == (0, 9)


def test_dense_spectrum_path_matches_index_add_path():
    """The accelerator path (one float64 matmul) equals the CPU path."""
    x = torch.from_numpy(gaussian_maps(3, seed=8))
    plan = kernels.spectrum_plan(32, SIDE, tuple(L_EDGES))
    ws = kernels.Workspace()
    a = plan.apply(x, ws, dense=False)
    b = plan.apply(x, ws, dense=True)
    # same sums in another order: relative 1e-12 is ~1e4 float64 roundings
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12)


def test_mode_counts():
    n = S.mode_counts(32, SIDE, L_EDGES)
    assert n.dtype == np.int64 and n.shape == (10,)
    lpix = 360.0 / SIDE
    i = np.minimum(np.arange(32), 32 - np.arange(32)) * lpix
    ell = np.hypot(i[:, None], np.arange(17)[None, :] * lpix)
    assert n.sum() == np.count_nonzero((ell > L_EDGES[0]) & (ell <= L_EDGES[-1]))


# ---------------------------------------------------------------- norm


def test_norm_true_is_thresholds_times_sigma():
    """LensTools' norm=True: bin edges t*sigma, widths in units of t."""
    x = gaussian_maps(2, seed=9) * 0.02 + 0.001
    for i in range(2):
        s = x[i].std()
        ts = THR * s
        nu, v0n, v1n, v2n = S.minkowski_functionals(x[i], THR, norm=True)
        _, v0, v1, v2 = S.minkowski_functionals(x[i], ts)
        np.testing.assert_array_equal(nu, 0.5 * (THR[1:] + THR[:-1]))
        np.testing.assert_array_equal(v0n, v0)
        # V1, V2 carry one power of sigma (divided by dt, not dt*sigma);
        # rtol 1e-12: the widths t*s differences vs s*(t differences) round apart
        np.testing.assert_allclose(v1n, v1 * s, rtol=1e-12)
        np.testing.assert_allclose(v2n, v2 * s, rtol=1e-12, atol=1e-15 * np.abs(v2 * s).max())
        np.testing.assert_allclose(S.peak_counts(x[i], THR, norm=True)[1],
                                   S.peak_counts(x[i], ts)[1] * s, rtol=1e-12)
        np.testing.assert_allclose(S.pixel_pdf(x[i], THR, norm=True)[1],
                                   S.pixel_pdf(x[i], ts)[1] * s, rtol=1e-12)


def test_norm_true_uses_each_maps_own_sigma():
    x = gaussian_maps(2, seed=10)
    x[1] *= 7.0                                          # same shape, other scale
    _, p = S.pixel_pdf(x, THR, norm=True)
    _, pk = S.peak_counts(x, THR, norm=True)
    one = S.pixel_pdf(x[1] / 7.0, THR, norm=True)[1]
    # x[1]/7 is x[1] scaled: same bins up to rounding at edges (none here)
    np.testing.assert_allclose(p[1], one, rtol=1e-12)
    np.testing.assert_allclose(pk[1], S.peak_counts(x[1] / 7.0, THR, norm=True)[1], rtol=1e-12)


def test_constant_map():
    """No gradient anywhere: LensTools' limit for V2, no peaks, sigma 0."""
    x = np.full((16, 16), 0.5)
    _, v0, v1, v2 = S.minkowski_functionals(x, THR)
    np.testing.assert_array_equal(v1, 0.0)
    np.testing.assert_array_equal(v2, 0.0)      # Hessian is 0 too
    np.testing.assert_array_equal(v0, (0.5 >= 0.5 * (THR[1:] + THR[:-1])).astype(float))
    assert S.peak_counts(x, THR)[1].sum() == 0
    # norm=True with sigma = 0: every edge is 0, 0.5 >= 0 everywhere (as LensTools)
    _, v0, v1, _ = S.minkowski_functionals(x, THR, norm=True)
    np.testing.assert_array_equal(v0, 1.0)
    np.testing.assert_array_equal(S.pixel_pdf(x, THR, norm=True)[1], 0.0)


# ---------------------------------------------------------------- moments flags


def test_moments_flags():
    x = gaussian_maps(1, seed=11)[0]
    raw = S.moments(x)
    con = S.moments(x, connected=True)
    dim = S.moments(x, dimensionless=True)
    s0, s1 = raw[0], raw[1]
    np.testing.assert_allclose(con[5], raw[5] - 3 * s0 ** 4, rtol=1e-12)
    np.testing.assert_allclose(con[8], raw[8] - 2 * s1 ** 4, rtol=1e-12)
    np.testing.assert_allclose(dim[:2], [1.0, 1.0])
    np.testing.assert_allclose(dim[2], raw[2] / s0 ** 3, rtol=1e-12)
    np.testing.assert_allclose(dim[4], raw[4] * s0 / s1 ** 4, rtol=1e-12)
    assert S.MOMENT_NAMES[0] == "sigma0" and len(S.MOMENT_NAMES) == 9


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("maps, words", [
    (np.zeros((8, 9)), "square"),
    (np.zeros((2, 8, 9)), "square"),
    (np.zeros(16), "shape"),
    (np.zeros((1, 2, 8, 8)), "shape"),
    (np.zeros((2, 2)), "at least 3"),
    (np.zeros((4, 4), dtype=complex), "real"),
    (torch.zeros(4, 4, dtype=torch.complex64), "real"),
    ([[1, 2], [3]], "array"),
])
def test_bad_maps(maps, words):
    with pytest.raises(ValueError, match=words):
        S.pixel_pdf(maps, THR)


@pytest.mark.parametrize("edges, words", [
    ([200.0, 100.0, 300.0], "strictly increasing"),
    ([200.0, 200.0], "strictly increasing"),
    ([100.0], "at least 2"),
    ([], "at least 2"),
    ([100.0, np.nan], "finite"),
    ([-10.0, 100.0], ">= 0"),
    (np.ones((2, 2)), "1-D"),
])
def test_bad_l_edges(edges, words):
    with pytest.raises(ValueError, match=words):
        S.power_spectrum(np.zeros((8, 8)), SIDE, edges)


@pytest.mark.parametrize("thr, words", [
    ([0.0], "at least 2"),
    ([1.0, 0.0], "strictly increasing"),
    ([0.0, np.inf], "finite"),
])
@pytest.mark.parametrize("func", [S.minkowski_functionals, S.peak_counts, S.pixel_pdf])
def test_bad_thresholds(func, thr, words):
    with pytest.raises(ValueError, match=f"thresholds.*{words}|{words}"):
        func(np.zeros((8, 8)), thr)


@pytest.mark.parametrize("side", [0.0, -1.0, np.nan, "big"])
def test_bad_side_angle(side):
    with pytest.raises(ValueError, match="side_angle_deg"):
        S.power_spectrum(np.zeros((8, 8)), side, L_EDGES)


def test_other_bad_arguments():
    x = np.zeros((8, 8))
    with pytest.raises(ValueError, match="dtype"):
        S.pixel_pdf(x, THR, dtype=torch.int32)
    with pytest.raises(ValueError, match="norm"):
        S.pixel_pdf(x, THR, norm="yes")
    with pytest.raises(ValueError, match="chunk_size"):
        S.pixel_pdf(x, THR, chunk_size=0)
    with pytest.raises(ValueError, match="peak_thresholds"):
        S.all_statistics(x, SIDE, L_EDGES, THR, peak_thresholds=[1.0])


def test_errors_are_pipeline_errors_with_one_line():
    with pytest.raises(PipelineError) as info:
        S.moments(np.zeros((3, 8, 9)))
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert "(3, 8, 9)" in str(info.value)


# ---------------------------------------------------------------- CUDA (skipped without)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_torch_in_torch_out_float32_by_default():
    x = torch.from_numpy(gaussian_maps(3, smooth=0.5)).cuda()
    d = S.all_statistics(x, SIDE, L_EDGES, THR)
    for key in ("power_spectrum", "minkowski", "peaks", "pdf"):
        assert d[key].is_cuda and d[key].dtype == torch.float32, key
    assert d["moments"].is_cuda and d["moments"].dtype == torch.float64


@cuda
def test_cuda_float64_matches_cpu():
    x = gaussian_maps(4, smooth=0.5, seed=12)
    cpu = S.all_statistics(x, SIDE, L_EDGES, THR)
    gpu = S.all_statistics(x, SIDE, L_EDGES, THR, device="cuda", dtype=torch.float64)
    # cuFFT vs MKL and atomic-order sums: float64 rounding only, 1e-10 relative
    np.testing.assert_allclose(gpu["power_spectrum"], cpu["power_spectrum"], rtol=1e-10)
    np.testing.assert_allclose(gpu["minkowski"], cpu["minkowski"], rtol=1e-10,
                               atol=1e-12 * np.abs(cpu["minkowski"]).max())
    np.testing.assert_allclose(gpu["moments"], cpu["moments"], rtol=1e-10, atol=1e-14)
    # binning is exact comparisons against the same edges: identical counts
    np.testing.assert_array_equal(gpu["pdf"], cpu["pdf"])
    np.testing.assert_array_equal(gpu["peaks"], cpu["peaks"])


@cuda
def test_cuda_float32_close_to_cpu_float64():
    x = gaussian_maps(4, smooth=0.5, seed=13)
    cpu = S.all_statistics(x, SIDE, L_EDGES, THR)
    gpu = S.all_statistics(x, SIDE, L_EDGES, THR, device="cuda")
    # float32 work (eps 6e-8) with sums in float32 (V1, V2, C_ell) or
    # float64 (moments): 1e-4 relative leaves a factor ~100 of margin
    np.testing.assert_allclose(gpu["power_spectrum"], cpu["power_spectrum"], rtol=1e-4)
    np.testing.assert_allclose(gpu["minkowski"][:, 1], cpu["minkowski"][:, 1], rtol=1e-4,
                               atol=1e-6 * np.abs(cpu["minkowski"][:, 1]).max())
    np.testing.assert_allclose(gpu["moments"], cpu["moments"], rtol=1e-4, atol=1e-10)
    # a pixel within float32 rounding of an edge may change bin: at most 2 per map
    moved = np.abs(gpu["pdf"] - cpu["pdf"]) * 32 * 32 * np.diff(THR)
    assert np.rint(moved).sum(1).max() <= 2


def test_non_finite_pixels_fall_in_no_bin():
    x = gaussian_maps(1, seed=14)[0]
    x[3, 4], x[10, 2], x[7, 7] = np.nan, np.inf, -np.inf
    _, p = S.pixel_pdf(x, THR)
    counts = np.rint(p * np.diff(THR) * x.size)
    ref = np.histogram(x[np.isfinite(x)], THR)[0]
    np.testing.assert_array_equal(counts, ref)
    _, v0, _, _ = S.minkowski_functionals(x, THR)
    # +inf is above every midpoint, NaN and -inf above none
    mids = 0.5 * (THR[1:] + THR[:-1])
    want = (np.sum(x[np.isfinite(x)][:, None] >= mids, 0) + 1) / x.size
    np.testing.assert_allclose(v0, want, rtol=1e-15)
    # norm=True: the map's sigma is NaN, so every edge is NaN: nothing is binned
    _, p = S.pixel_pdf(x, THR, norm=True)
    np.testing.assert_array_equal(p, 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_sigma", [False, True])
def test_fast_binning_equals_explicit_comparisons(dtype, with_sigma):
    """The arithmetic fast path bins exactly like comparisons with the edges,
    including values on an edge or a midpoint and one ulp either side."""
    t = np.linspace(-0.08, 0.1, 31)
    plan = kernels.ThresholdPlan(t)
    assert plan.uniform
    rng = np.random.default_rng(15)
    sigma = torch.tensor([1.0, 0.7], dtype=dtype) if with_sigma else None
    s = sigma.numpy() if with_sigma else np.ones(2)
    pts = torch.as_tensor(plan.points, dtype=dtype)
    rows = []
    for b in range(2):
        on = (pts * (s[b] if with_sigma else 1.0)).to(dtype)
        near = torch.cat([on, torch.nextafter(on, on + 1), torch.nextafter(on, on - 1)])
        rand = torch.as_tensor(rng.uniform(-0.12, 0.14, 4096 - near.numel()), dtype=dtype)
        rows.append(torch.cat([near, rand]))
    v = torch.stack(rows)
    fast = plan.cells(v, sigma, kernels.Workspace())
    exact = plan.exact_cells(v, sigma, 2)
    assert torch.equal(fast, exact)
    # and the cells are right: P_{j-1} s <= v < P_j s
    j = (exact.view(2, -1) - torch.arange(2)[:, None] * plan.n_cells)
    scaled = pts[None, :] * (sigma[:, None] if with_sigma else torch.ones(2, 1, dtype=dtype))
    lo = torch.cat([torch.full((2, 1), -np.inf, dtype=dtype), scaled], 1).gather(1, j)
    hi = torch.cat([scaled, torch.full((2, 1), np.inf, dtype=dtype)], 1).gather(1, j)
    assert bool(((lo <= v) & (v < hi)).all())

"""Batched torch kernels behind every statistic (CPU and CUDA, one code path).

Everything here works on a chunk of maps ``x`` of shape (B, N, N) in the
working dtype. The public modules (spectrum, minkowski, peaks, pdf, moments,
combined) only validate, chunk and convert; the numbers all come from
:func:`compute_chunk`, so a statistic computed alone and computed by
``all_statistics`` are the same numbers.

Conventions (LensTools' ConvergenceMap; see docs/statistics.md):

* x is the last axis (columns), y the one before (rows); both periodic.
* gradient: central difference, g_x = (k[c+1] - k[c-1]) / 2 (pixel units);
* Hessian: the central difference applied twice,
  h_xx = (k[c+2] + k[c-2] - 2 k[c]) / 4,
  h_xy = (k[r+1,c+1] + k[r-1,c-1] - k[r+1,c-1] - k[r-1,c+1]) / 4.

Speed notes (the CPU target is <= 2.2 ms per 256^2 map for the full set on
one core, 5x LensTools' C code; ~1.5 ms measured):

* Work arrays live in a per-thread :class:`Workspace` reused from chunk to
  chunk, and every full-size operation writes into one with ``out=`` or in
  place: fresh multi-MiB tensors cost page faults that dominate otherwise.
* The derivative stencils are kept *unscaled* (2 g and 4 h); the factors 1/2
  and 1/4 are exact powers of two, so deferring them to the few numbers at
  the end changes no rounding and saves passes over the data.
* Reductions over pixels are done row by row, then over rows
  (``.sum(-1).sum(-1)``): each map is then summed in the same order whatever
  the batch size and thread count, so a map's statistics do not depend on
  which other maps share its chunk (batch-invariance, tested bit for bit).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch

from . import fused

TWO_PI = 2.0 * math.pi

# --------------------------------------------------------------------------
# Reusable work arrays
# --------------------------------------------------------------------------


class Workspace:
    """Named work arrays for one (batch, side, dtype, device), reused."""

    def __init__(self):
        self._bufs: dict = {}

    def get(self, name: str, shape, dtype, device, fill=None) -> torch.Tensor:
        """The array ``name``; (re)allocated if absent or of another shape or
        dtype, and then filled with ``fill`` if given (else uninitialised)."""
        t = self._bufs.get(name)
        shape = tuple(shape)
        if t is None or tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
            t = torch.empty(shape, dtype=dtype, device=device)
            if fill is not None:
                t.fill_(fill)
            self._bufs[name] = t
        return t


_tls = threading.local()


def workspace(key, device: torch.device) -> Workspace:
    """The calling thread's workspace for ``key`` (a few kept, LRU).

    Only CPU workspaces are kept between calls (a few MiB each): on a GPU the
    caching allocator already recycles memory without page faults, and
    holding gigabytes of work arrays after a call would starve the caller.
    """
    if device.type != "cpu":
        return Workspace()
    cache = getattr(_tls, "cache", None)
    if cache is None:
        cache = _tls.cache = OrderedDict()
    ws = cache.get(key)
    if ws is None:
        ws = cache[key] = Workspace()
        while len(cache) > 3:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return ws


def release_workspaces() -> None:
    """Drop this thread's cached work arrays (frees their memory)."""
    _tls.cache = OrderedDict()


def _rowsum(t: torch.Tensor) -> torch.Tensor:
    """Per-map sum of a (B, N, N) array, in a batch-independent order."""
    return t.sum(-1).sum(-1)


# --------------------------------------------------------------------------
# Threshold binning
# --------------------------------------------------------------------------


class ThresholdPlan:
    """Binning of pixel values against thresholds t_0 < ... < t_T.

    The T+1 edges and the T midpoints m_i = (t_i + t_{i+1}) / 2 are merged
    into one increasing list P = (t_0, m_0, t_1, m_1, ..., t_T) of 2T+1
    points, and every value v gets the cell j = #{P_k * s <= v} in [0, 2T+1]
    (s = the map's standard deviation with norm=True, else 1: the
    thresholds are multiplied, as LensTools does). Then, exactly:

    * t_i s <= v < t_{i+1} s  (threshold bin i)  <=>  j in {2i+1, 2i+2};
    * v >= m_i s  (V0's excursion set at the midpoint)  <=>  j >= 2i+2.

    One histogram over j thus gives the PDF, V1, V2 and peak histograms and
    V0. For evenly spaced thresholds j comes from arithmetic, and the rare
    values that lie within rounding error of a point are re-binned by
    explicit comparison; otherwise every value is binned by comparisons
    (a lookup-table guess, then fixes until P_{j-1} s <= v < P_j s).
    """

    def __init__(self, thresholds: np.ndarray):
        t = np.asarray(thresholds, dtype=np.float64)
        self.t = t
        self.n_bins = t.size - 1
        self.widths = np.diff(t)
        # LensTools: nu = 0.5*(t[:-1] + t[1:]); V0 compares against
        # (t_i + t_{i+1}) * sigma / 2 -- the same number times sigma.
        self.nu = 0.5 * (t[:-1] + t[1:])
        pts = np.empty(2 * self.n_bins + 1)
        pts[0::2] = t
        pts[1::2] = (t[:-1] + t[1:]) / 2.0
        self.points = pts
        self.n_cells = 2 * self.n_bins + 2          # possible values of j
        k = pts.size - 1                              # gaps between points
        span = pts[-1] - pts[0]
        gaps = np.diff(pts)
        self.step = span / k
        self.uniform = bool(np.all(gaps > 0) and
                            np.max(np.abs(gaps - self.step)) <= 1e-6 * self.step)
        # deviation of the points from the grid P_0 + k*step, in grid units
        self.grid_dev = float(np.max(np.abs((pts - pts[0]) / self.step - np.arange(pts.size))))
        self.scale_ratio = float(np.max(np.abs(pts)) / self.step)
        # lookup table for the general path: cell of a uniform grid -> first guess
        if self.uniform:
            ncell = k
        else:
            ncell = int(min(4096, max(k, math.ceil(span / max(gaps.min(), 1e-300)))))
        self.lut_cells = ncell
        self.lut_step = span / ncell
        left = pts[0] + self.lut_step * np.arange(ncell)
        self.lut = np.concatenate([[0], np.searchsorted(pts, left, side="right"),
                                   [pts.size]]).astype(np.int64)
        self._cache: dict = {}

    def _points(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = (torch.as_tensor(self.points, dtype=dtype, device=device),
                                torch.as_tensor(self.lut, device=device))
        return self._cache[key]

    def _scaled(self, nb, sigma, device, dtype):
        """(nb, 2T+1) points times each map's sigma (or 1)."""
        pts, _ = self._points(device, dtype)
        if sigma is None:
            return pts.unsqueeze(0).expand(nb, -1)
        return pts.unsqueeze(0) * sigma.to(dtype).unsqueeze(1)

    def exact_cells(self, v: torch.Tensor, sigma, nb: int, batch=None) -> torch.Tensor:
        """Flat cells b*(2T+2) + j by explicit comparisons (any thresholds).

        ``v`` is (nb, M) (one row per map; batch=None) or (n,) with the map
        of each value in ``batch``. ``sigma``: (nb,) or None.
        """
        dev, dt = v.device, v.dtype
        _, lut = self._points(dev, dt)
        L = self.n_cells
        scaled = self._scaled(nb, sigma, dev, dt)
        inf = torch.full((nb, 1), math.inf, dtype=dt, device=dev)
        nan = torch.full((nb, 1), math.nan, dtype=dt, device=dev)
        # lower and upper bounds of cell j; the top cell's upper bound is NaN
        # so that nothing (not even +inf) moves past it; NaN values stay in
        # cell 0, the LUT's guess for them: they count in no bin
        lo = torch.cat([-inf, scaled], 1).reshape(-1)           # P_{j-1} s
        hi = torch.cat([scaled, nan], 1).reshape(-1)            # P_j s
        scale = torch.ones(nb, dtype=dt, device=dev) if sigma is None else sigma.to(dt)
        step = scale * self.lut_step
        r = torch.where(step > 0, 1.0 / step, torch.zeros_like(step))
        b0 = 1.0 - scaled[:, 0] * r
        offs = torch.arange(nb, device=dev) * L
        if batch is None:
            r, b0, offs = r[:, None], b0[:, None], offs[:, None]
        else:
            r, b0, offs = r[batch], b0[batch], offs[batch]
        c = torch.addcmul(b0, v, r)
        c.floor_().nan_to_num_(nan=0.0, posinf=self.lut_cells + 1.0, neginf=0.0)
        c.clamp_(0.0, self.lut_cells + 1.0)
        j = torch.take(lut, c.long()) + offs
        j = j.reshape(-1)
        vf = v.reshape(-1)
        for _ in range(L + 1):            # each step moves j one cell closer
            down = vf < torch.take(lo, j)
            up = vf >= torch.take(hi, j)
            if not bool(down.any()) and not bool(up.any()):
                break
            j += up.long() - down.long()
        return j

    def cells(self, v: torch.Tensor, sigma, ws: Workspace) -> torch.Tensor:
        """Flat cells (B*M,) for a (B, M) chunk, via the fast path if possible."""
        nb, m = v.shape
        dev, dt = v.device, v.dtype
        if not self.uniform or (sigma is not None and not bool((sigma > 0).all())):
            return self.exact_cells(v, sigma, nb)
        L = self.n_cells
        k = self.n_bins * 2
        p0 = float(self.points[0])
        c = ws.get("bin_c", (nb, m), dt, dev)
        fl = ws.get("bin_fl", (nb, m), dt, dev)
        inv = 1.0 / self.step
        if sigma is None:                       # c = (v - P_0) / step
            torch.add(torch.tensor(-p0 * inv, dtype=dt, device=dev), v, alpha=inv, out=c)
        else:                                   # c = (v - P_0 s) / (step s)
            s = sigma.to(dt).unsqueeze(1)
            torch.sub(v, s * p0, out=c).mul_(inv / s)
        torch.floor(c, out=fl)
        c.sub_(fl)                              # fractional part
        # how close to a point rounding can bring c: a few ulps of |c| <= k+1
        # plus those of the (scaled, cast) points |P|/step, with 16x margin
        eps = self.grid_dev + 16.0 * torch.finfo(dt).eps * (k + 2.0 + self.scale_ratio)
        lo_frac, hi_frac = torch.aminmax(c)
        fl.clamp_(-1.0, float(k))
        j = ws.get("bin_j", (nb, m), torch.int64, dev)
        j.copy_(fl)
        offs = ws.get("bin_offs", (nb, 1), torch.int64, dev)
        torch.arange(1, nb * L + 1, L, device=dev, out=offs.view(-1))
        j.add_(offs)                            # j = b*L + floor + 1
        if not (bool(lo_frac >= eps) and bool(hi_frac <= 1.0 - eps)):
            # some value within rounding error of a point (or NaN): compare
            near = ~((c >= eps) & (c <= 1.0 - eps))
            idx = near.nonzero()
            vals = v[idx[:, 0], idx[:, 1]]
            j[idx[:, 0], idx[:, 1]] = self.exact_cells(vals, sigma, nb, batch=idx[:, 0])
        return j.view(-1)

    def bin_sums(self, per_cell: torch.Tensor) -> torch.Tensor:
        """(B, 2T+2) per-cell totals -> (B, T) per threshold bin totals."""
        inner = per_cell[:, 1:2 * self.n_bins + 1]
        return inner.reshape(inner.shape[0], self.n_bins, 2).sum(-1)

    def v0_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """(B, 2T+2) cell counts -> (B, T) number of values >= each midpoint."""
        tail = counts.flip(1).cumsum(1).flip(1)        # tail[:, j] = #{cell >= j}
        return tail[:, 2:2 * self.n_bins + 2:2]


@lru_cache(maxsize=64)
def threshold_plan(key: tuple) -> ThresholdPlan:
    return ThresholdPlan(np.array(key, dtype=np.float64))


# --------------------------------------------------------------------------
# Power spectrum binning
# --------------------------------------------------------------------------


class SpectrumPlan:
    """Which rfft2 modes fall in which ell bin, for one (N, side, l_edges).

    As LensTools' azimuthal_rfft2: every mode of the rfft2 half plane (all N
    rows i, columns j = 0..N/2) counted once, ell = (360/side_deg) *
    sqrt(min(i, N-i)^2 + j^2), in bin k iff l_k < ell <= l_{k+1};
    C_ell = mean |FFT|^2 over the bin times (theta_rad / N^2)^2, 0 for an
    empty bin.
    """

    def __init__(self, n_side: int, side_angle_deg: float, l_edges: np.ndarray):
        n = n_side
        lpix = 360.0 / side_angle_deg
        i = np.arange(n)
        lx = np.minimum(i, n - i) * lpix
        ly = np.arange(n // 2 + 1) * lpix
        ell = np.sqrt(lx[:, None] * lx[:, None] + ly[None, :] * ly[None, :])
        nb = l_edges.size - 1
        idx = np.searchsorted(l_edges, ell, side="left") - 1   # l_k < ell <= l_k+1
        idx[(idx < 0) | (idx >= nb)] = nb                      # overflow cell
        idx = idx.reshape(-1)
        self.n_bins = nb
        self.index = idx.astype(np.int64)
        self.hits = np.bincount(idx, minlength=nb + 1)[:nb]
        norm = (side_angle_deg * math.pi / 180.0 / (n * n)) ** 2
        self.scale = np.where(self.hits > 0, norm / np.maximum(self.hits, 1), 0.0)
        self.ell = 0.5 * (l_edges[1:] + l_edges[:-1])
        self._cache: dict = {}

    def _tables(self, device, dtype, dense: bool):
        key = (str(device), dtype, dense)
        if key not in self._cache:
            if dense:
                # (modes x bins) weights scale/hits, built on the device
                m = self.index.size
                w = torch.zeros(m, self.n_bins + 1, dtype=torch.float64, device=device)
                idx = torch.as_tensor(self.index, device=device)
                w[torch.arange(m, device=device), idx] = 1.0
                scale = torch.as_tensor(self.scale, dtype=torch.float64, device=device)
                self._cache[key] = w[:, :self.n_bins] * scale
            else:
                self._cache[key] = (torch.as_tensor(self.index, device=device),
                                    torch.as_tensor(self.scale, dtype=dtype, device=device))
        return self._cache[key]

    def apply(self, x: torch.Tensor, ws: Workspace, dense: bool | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
        """(B, N, N) maps -> (B, n_bins) C_ell, in ``dtype`` (default x's: on the CPU
        float32 maps are widened map by map)."""
        b, n, _ = x.shape
        if dense is None:
            dense = x.device.type != "cpu"
        dt = dtype or x.dtype
        if x.device.type == "cpu" and not dense:
            # one transform per map: MKL's batched transforms round differently
            # for different batch sizes, and a map's C_ell must not depend on
            # which maps share its chunk (rank invariance); each map's power is
            # binned while it is still in cache
            index, scale = self._tables(x.device, dt, False)
            power = ws.get("ft_power", (n, n // 2 + 1), dt, x.device)
            sums = torch.zeros(b, self.n_bins + 1, dtype=dt, device=x.device)
            wide = ws.get("ft_in", (n, n), dt, x.device) if x.dtype != dt else None
            for i in range(b):
                xi = x[i] if wide is None else wide.copy_(x[i])  # widened into a reused array
                _power(torch.fft.rfft2(xi), power)
                sums[i].index_add_(0, index, power.view(-1))
            return sums[:, :self.n_bins] * scale
        x = x.to(dt)
        power = ws.get("ft_power", (b, n, n // 2 + 1), x.dtype, x.device)
        if x.device.type == "cpu":  # one transform per map, as above
            for i in range(b):
                _power(torch.fft.rfft2(x[i]), power[i])
        else:
            _power(torch.fft.rfft2(x), power)
        power = power.view(b, -1)
        if dense:
            # accelerators: one float64 matmul with the (modes x bins) weights;
            # no atomics, and float64 keeps TF32 settings out of it.
            w = self._tables(x.device, x.dtype, True)
            return (power.to(torch.float64) @ w).to(x.dtype)
        index, scale = self._tables(x.device, x.dtype, False)
        sums = torch.zeros(b, self.n_bins + 1, dtype=x.dtype, device=x.device)
        sums.index_add_(1, index, power)
        return sums[:, :self.n_bins] * scale


def _power(ft: torch.Tensor, out: torch.Tensor) -> None:
    """|ft|^2 = re*re + im*im into out."""
    ri = torch.view_as_real(ft)
    torch.mul(ri[..., 0], ri[..., 0], out=out)
    out.addcmul_(ri[..., 1], ri[..., 1])


@lru_cache(maxsize=64)
def spectrum_plan(n_side: int, side_angle_deg: float, edges_key: tuple) -> SpectrumPlan:
    return SpectrumPlan(n_side, side_angle_deg, np.array(edges_key, dtype=np.float64))


# --------------------------------------------------------------------------
# One chunk, every statistic
# --------------------------------------------------------------------------

MOMENT_NAMES = ("sigma0", "sigma1", "S0", "S1", "S2", "K0", "K1", "K2", "K3")


def _pad(x: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """Periodic padding by 2 pixels on both axes, into a work array."""
    b, n, _ = x.shape
    xp = ws.get("xp", (b, n + 4, n + 4), x.dtype, x.device)
    xp[:, 2:n + 2, 2:n + 2] = x
    xp[:, 0:2, 2:n + 2] = x[:, n - 2:n]
    xp[:, n + 2:, 2:n + 2] = x[:, 0:2]
    xp[:, :, 0:2] = xp[:, :, n:n + 2]
    xp[:, :, n + 2:] = xp[:, :, 2:4]
    return xp


def _moments(ws, x64, sigma0, g2r, lapr, connected, dimensionless):
    """LensTools ConvergenceMap.moments from the map in float64, the unscaled
    g2r = 4|grad k|^2 and lapr = 4 lap k (working dtype) and sigma0."""
    b, n, _ = x64.shape
    f64 = torch.float64
    dev = x64.device
    x = x64
    if g2r.dtype == f64:
        g2, lap = g2r, lapr
    else:  # float32 work: products and sums in float64
        g2 = ws.get("m_g2", x.shape, f64, dev)
        g2.copy_(g2r)
        lap = ws.get("m_lap", x.shape, f64, dev)
        lap.copy_(lapr)
    x2 = ws.get("m_x2", x.shape, f64, dev)
    torch.mul(x64, x64, out=x2)
    xlap = ws.get("m_xlap", x.shape, f64, dev)
    torch.mul(x64, lap, out=xlap)
    tmp = ws.get("m_tmp", x.shape, f64, dev)

    def sum_of(a, c):
        return _rowsum(torch.mul(a, c, out=tmp))

    sums = torch.stack([_rowsum(g2), sum_of(x64, x2), sum_of(x2, lap), sum_of(g2, lap), sum_of(x2, x2),
                        sum_of(x2, xlap), sum_of(g2, xlap), sum_of(g2, g2)], 1)
    return moments_from_sums(sums, sigma0, n * n, connected, dimensionless)


def moments_from_sums(sums: torch.Tensor, sigma0: torch.Tensor, npix: int, connected: bool,
                      dimensionless: bool) -> torch.Tensor:
    """(B, 9) moments from the (B, 8) float64 pixel sums of g2r, x^3, x^2 lapr, g2r lapr,
    x^4, x^3 lapr, g2r x lapr, g2r^2 (g2r = 4|grad k|^2, lapr = 4 lap k) and sigma0."""
    m = sums / float(npix)
    sigma0 = sigma0.to(torch.float64)
    sigma1 = (m[:, 0] * 0.25).sqrt()
    s0 = m[:, 1]                              # <k^3>
    s1 = m[:, 2] * 0.25                       # <k^2 lap k>
    s2 = m[:, 3] * 0.0625                     # <|grad k|^2 lap k>
    k0 = m[:, 4]                              # <k^4>
    k1 = m[:, 5] * 0.25                       # <k^3 lap k>
    k2 = m[:, 6] * 0.0625                     # <k |grad k|^2 lap k>
    k3 = m[:, 7] * 0.0625                     # <|grad k|^4>
    if connected:
        k0 = k0 - 3 * sigma0 ** 4
        k1 = k1 + 3 * sigma0 ** 2 * sigma1 ** 2
        k2 = k2 + sigma1 ** 4
        k3 = k3 - 2 * sigma1 ** 4
    if dimensionless:
        s0 = s0 / sigma0 ** 3
        s1 = s1 / (sigma0 * sigma1 ** 2)
        s2 = s2 * (sigma0 / sigma1 ** 4)
        k0 = k0 / sigma0 ** 4
        k1 = k1 / (sigma0 ** 2 * sigma1 ** 2)
        k2 = k2 / sigma1 ** 4
        k3 = k3 / sigma1 ** 4
        sigma0 = sigma0 / sigma0
        sigma1 = sigma1 / sigma1
    return torch.stack([sigma0, sigma1, s0, s1, s2, k0, k1, k2, k3], 1)


def _minkowski_from(plan: ThresholdPlan, counts, s1, s2, npix: int) -> torch.Tensor:
    """(B, 3, T) V0, V1, V2 from per-cell pixel counts, sums of 2|grad k| and of the
    curvature numerator ratio (-4 x LensTools' ratio)."""
    widths = torch.as_tensor(plan.widths, dtype=counts.dtype, device=counts.device)
    v0 = plan.v0_counts(counts) / npix
    # V1 = sum(|grad|/4) / (N^2 dt) with |grad| = grad/2
    v1 = plan.bin_sums(s1) * 0.125 / (npix * widths)
    # V2 = sum(ratio / 2pi) / (N^2 dt) with ratio = -curv/4
    v2 = plan.bin_sums(s2) * -0.25 / (TWO_PI * npix * widths)
    return torch.stack([v0, v1, v2], 1)


def _pdf_from(plan: ThresholdPlan, counts, npix: int) -> torch.Tensor:
    widths = torch.as_tensor(plan.widths, dtype=counts.dtype, device=counts.device)
    return plan.bin_sums(counts) / (npix * widths)


def _peaks_from(plan: ThresholdPlan, counts) -> torch.Tensor:
    widths = torch.as_tensor(plan.widths, dtype=counts.dtype, device=counts.device)
    return plan.bin_sums(counts) / widths


def _fused_chunk(x: torch.Tensor, mf, peaks, pdf, moments, norm: bool, out: dict) -> dict:
    """compute_chunk's threshold statistics and moments by the fused CPU kernels (float64)."""
    npix = x.shape[1] * x.shape[2]
    t = {k: torch.from_numpy(v) for k, v in
         fused.chunk_totals(x.contiguous().numpy(), mf, peaks, pdf, moments is not None, norm).items()}
    if mf is not None:
        out["minkowski"] = _minkowski_from(mf, t["counts"], t["s1"], t["s2"], npix)
    if pdf is not None:
        out["pdf"] = _pdf_from(pdf, t["pdf"], npix)
    if peaks is not None:
        out["peaks"] = _peaks_from(peaks, t["peaks"])
    if moments is not None:
        out["moments"] = moments_from_sums(t["moment_sums"], t["sigma"], npix, *moments)
    return out


def compute_chunk(x: torch.Tensor, *, spectrum: SpectrumPlan | None = None,
                  mf: ThresholdPlan | None = None, peaks: ThresholdPlan | None = None,
                  pdf: ThresholdPlan | None = None, moments: tuple | None = None,
                  norm: bool = False, dtype: torch.dtype | None = None) -> dict:
    """Statistics of a chunk (B, N, N); only those whose plan is given.

    dtype: the working precision (default x's). Float32 maps worked in float64 on the
    CPU are widened as the fused kernels and the FFT read them, else here, whole.

    Returns a dict of fresh tensors with a leading batch axis:
    ``power_spectrum`` (B, n_ell); ``minkowski`` (B, 3, T); ``peaks`` (B, T);
    ``pdf`` (B, T); ``moments`` (B, 9) float64.
    """
    dt = dtype or x.dtype
    use_fused = fused.available() and x.device.type == "cpu" and dt == torch.float64
    if x.dtype != dt and not use_fused:
        x = x.to(dt)
    b, n, _ = x.shape
    dev = x.device
    npix = n * n
    ws = workspace((b, n, dt, str(dev)), dev)
    out = {}
    if spectrum is not None:
        out["power_spectrum"] = spectrum.apply(x, ws, dtype=dt)
    if mf is None and peaks is None and pdf is None and moments is None:
        return out
    if use_fused:
        return _fused_chunk(x, mf, peaks, pdf, moments, norm, out)

    shape = (b, n, n)

    def buf(name, dtype=dt):
        return ws.get(name, shape, dtype, dev)

    sigma = x64 = None
    if norm or moments is not None:
        # population standard deviation, two passes (as numpy's std), summed
        # in float64 whatever the working dtype
        if dt == torch.float64:
            x64, tmp64 = x, buf("t_a")
        else:
            x64 = ws.get("m_x", shape, torch.float64, dev)
            x64.copy_(x)
            tmp64 = ws.get("m_tmp", shape, torch.float64, dev)
        mean = _rowsum(x64) / npix
        dev_ = torch.sub(x64, mean[:, None, None], out=tmp64)
        sigma = (_rowsum(dev_.mul_(dev_)) / npix).sqrt()
    bin_sigma = sigma if norm else None

    xp = _pad(x, ws)

    def at(dy, dx):                          # view of k[r+dy, c+dx]
        return xp[:, 2 + dy:2 + dy + n, 2 + dx:2 + dx + n]

    need_d = mf is not None or moments is not None
    if need_d:
        # unscaled stencils: gxr = 2 g_x, hxxr = 4 h_xx, ...
        gxr = torch.sub(at(0, 1), at(0, -1), out=buf("gx"))
        gyr = torch.sub(at(1, 0), at(-1, 0), out=buf("gy"))
        hxxr = torch.add(at(0, 2), at(0, -2), out=buf("hxx")).sub_(x, alpha=2.0)
        hyyr = torch.add(at(2, 0), at(-2, 0), out=buf("hyy")).sub_(x, alpha=2.0)
        gx2r = torch.mul(gxr, gxr, out=buf("gx2"))
        gy2r = torch.mul(gyr, gyr, out=buf("gy2"))
        g2r = torch.add(gx2r, gy2r, out=buf("g2"))

    flat = x.reshape(b, npix)
    shared = mf if mf is not None else pdf
    cells = shared.cells(flat, bin_sigma, ws) if shared is not None else None

    if mf is not None:
        L = mf.n_cells
        hxyr = torch.add(at(1, 1), at(-1, -1), out=buf("hxy")).sub_(at(1, -1)).sub_(at(-1, 1))
        grad = buf("t_b")                                 # 2 |grad k|
        if dev.type == "cpu":      # numpy's sqrt is ~2x torch's here; both exact
            np.sqrt(g2r.numpy(), out=grad.numpy())
        else:
            torch.sqrt(g2r, out=grad)
        # curvature numerator, negated and unscaled:
        # gx2r*hyyr + gy2r*hxxr - 2*gxr*gyr*hxyr = -16 (2 gx gy hxy - gx^2 hyy - gy^2 hxx)
        curv = torch.mul(gx2r, hyyr, out=buf("t_c")).addcmul_(gy2r, hxxr)
        cross = torch.mul(gxr, gyr, out=buf("t_a")).mul_(hxyr)
        curv.sub_(cross, alpha=2.0).div_(g2r)            # = -4 x LensTools' ratio
        ones = ws.get("ones", (b * npix,), dt, dev, fill=1.0)
        counts = torch.zeros(b * L, dtype=dt, device=dev).scatter_add_(0, cells, ones)
        s1 = torch.zeros(b * L, dtype=dt, device=dev).scatter_add_(0, cells, grad.view(-1))
        s2 = torch.zeros(b * L, dtype=dt, device=dev).scatter_add_(0, cells, curv.view(-1))
        if not bool(torch.isfinite(s2).all()):
            # a vanishing gradient (0/0) somewhere: there LensTools uses the
            # limit (2 h_xy - h_xx - h_yy) / (4 pi); with V2 = -curv/4/(2 pi)
            # per pixel and h = hr/4 that is curv = (hxxr + hyyr - 2 hxyr)/2
            limit = (hxxr + hyyr - 2.0 * hxyr) * 0.5
            curv = torch.where(g2r == 0, limit, curv)
            s2 = torch.zeros(b * L, dtype=dt, device=dev).scatter_add_(0, cells, curv.view(-1))
        counts = counts.view(b, L)
        out["minkowski"] = _minkowski_from(mf, counts, s1.view(b, L), s2.view(b, L), npix)

    if pdf is not None:
        L = pdf.n_cells
        if pdf is shared and mf is not None:
            pc = counts
        else:
            pcells = cells if pdf is shared else pdf.cells(flat, bin_sigma, ws)
            pc = torch.bincount(pcells, minlength=b * L).view(b, L).to(dt)
        out["pdf"] = _pdf_from(pdf, pc, npix)

    if peaks is not None:
        L = peaks.n_cells
        rows = xp[:, 1:n + 3]                                 # rows r-1 .. r+1
        h = ws.get("pk_h", (b, n + 2, n), dt, dev)
        torch.maximum(rows[:, :, 1:n + 1], rows[:, :, 3:n + 3], out=h)
        h = torch.maximum(h, rows[:, :, 2:n + 2], out=h)     # 3-wide row maxima
        nbr = torch.maximum(h[:, :n], h[:, 2:n + 2], out=buf("t_a"))
        nbr = torch.maximum(nbr, at(0, -1), out=nbr)
        nbr = torch.maximum(nbr, at(0, 1), out=nbr)
        if peaks is shared:      # 1.0 at peaks, 0.0 elsewhere, summed per cell
            is_peak = torch.gt(x, nbr, out=buf("pk_w")).view(-1)
            pc = torch.zeros(b * L, dtype=dt, device=dev).scatter_add_(0, cells, is_peak)
            pc = pc.view(b, L)
        else:                    # few peaks: bin only those
            is_peak = torch.gt(x, nbr, out=buf("pk_mask", torch.bool)).view(b, npix)
            idx = is_peak.nonzero()
            pcells = peaks.exact_cells(flat[idx[:, 0], idx[:, 1]], bin_sigma, b,
                                       batch=idx[:, 0])
            pc = torch.bincount(pcells, minlength=b * L).view(b, L).to(dt)
        out["peaks"] = _peaks_from(peaks, pc)

    if moments is not None:
        connected, dimensionless = moments
        lapr = torch.add(hxxr, hyyr, out=buf("lap"))
        out["moments"] = _moments(ws, x64, sigma, g2r, lapr, connected, dimensionless)
    return out

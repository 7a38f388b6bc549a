"""The compiled loops of stats/fused.py (numba); imported on first use.

Maps come in float64 or float32 (numba compiles each); every sum and product is in
float64 (a float32 pixel widens exactly when it is first read or padded).
"""

from __future__ import annotations

import numba
import numpy as np

from .fused import N_MOMENT_SUMS

LANES = 4  # independent partial sums: break the chains of dependent adds, in a fixed order


def _jit(func):
    """Compiled, cached beside the module (or user-wide, NUMBA_CACHE_DIR); compiled
    per process where no cache directory is writable."""
    options = dict(nogil=True, fastmath=False, error_model="numpy")
    try:
        return numba.njit(cache=True, **options)(func)
    except RuntimeError:  # numba: "cannot cache ... no locator available"
        return numba.njit(**options)(func)

@_jit
def _row_sum(a, shift, square):
    """Sum of (a - shift) (or its square) over a row, in LANES independent partial sums."""
    n = a.size
    s0 = s1 = s2 = s3 = 0.0
    c = 0
    while c + 4 <= n:
        d0, d1, d2, d3 = a[c] - shift, a[c + 1] - shift, a[c + 2] - shift, a[c + 3] - shift
        if square:
            d0, d1, d2, d3 = d0 * d0, d1 * d1, d2 * d2, d3 * d3
        s0 += d0
        s1 += d1
        s2 += d2
        s3 += d3
        c += 4
    while c < n:
        d = a[c] - shift
        s0 += d * d if square else d
        c += 1
    return (s0 + s1) + (s2 + s3)

@_jit
def _mean_sigma(m):
    """Mean and population standard deviation of one (N, N) map: two passes, per row
    then over rows."""
    n0, n1 = m.shape
    total = 0.0
    for r in range(n0):
        total += _row_sum(m[r], 0.0, False)
    mean = total / (n0 * n1)
    total = 0.0
    for r in range(n0):
        total += _row_sum(m[r], mean, True)
    return mean, np.sqrt(total / (n0 * n1))

@_jit
def _pad(m, xp):
    """Periodic padding by 2 pixels on both axes into xp (N + 4, N + 4)."""
    n = m.shape[0]
    xp[2:n + 2, 2:n + 2] = m
    xp[0:2, 2:n + 2] = m[n - 2:n]
    xp[n + 2:, 2:n + 2] = m[0:2]
    xp[:, 0:2] = xp[:, n:n + 2]
    xp[:, n + 2:] = xp[:, 2:4]

@_jit
def _cell(v, pts, p0, inv_step, uniform):
    """#{k: pts[k] <= v} for increasing pts (already times sigma); 0 for NaN.
    A guess from the grid when the points are evenly spaced, binary search otherwise,
    then exact comparisons (the guess only saves time)."""
    k = pts.size
    if v != v:
        return 0
    if uniform:
        c = (v - p0) * inv_step
        if c != c:  # inf times a zero scale (a constant map under norm)
            j = 0
        elif c < 0.0:
            j = 0
        elif c >= k:
            j = k
        else:
            j = int(c) + 1
    else:
        j = np.searchsorted(pts, v, side="right")
    while j > 0 and v < pts[j - 1]:
        j -= 1
    while j < k and v >= pts[j]:
        j += 1
    return j

@_jit
def _mf_pass(xp, n, pts, p0, inv, uni, counts, s1, s2):
    """Pixels, sums of 2|grad k| and of the curvature ratio, per cell of the points."""
    L = counts.size
    # LANES copies of each histogram, by column: neighbouring pixels often share a
    # cell, and one copy would make each add wait for the last
    h = np.zeros((3, LANES, L))
    for r in range(2, n + 2):
        up, mid, dn = xp[r - 1], xp[r], xp[r + 1]
        up2, dn2 = xp[r - 2], xp[r + 2]
        for c in range(2, n + 2):
            lane = c % LANES
            v = mid[c]
            j = _cell(v, pts, p0, inv, uni)
            gx = mid[c + 1] - mid[c - 1]                                    # 2 g_x
            gy = dn[c] - up[c]
            hxx = mid[c + 2] + mid[c - 2] - 2.0 * v                         # 4 h_xx
            hyy = dn2[c] + up2[c] - 2.0 * v
            hxy = dn[c + 1] + up[c - 1] - dn[c - 1] - up[c + 1]             # 4 h_xy
            gx2 = gx * gx
            gy2 = gy * gy
            g2 = gx2 + gy2                                                  # 4 |grad k|^2
            if g2 == 0.0:  # LensTools' limit of 0/0, as in kernels.py
                curv = (hxx + hyy - 2.0 * hxy) * 0.5
            else:
                curv = (gx2 * hyy + gy2 * hxx - 2.0 * (gx * gy * hxy)) / g2
            h[0, lane, j] += 1.0
            h[1, lane, j] += np.sqrt(g2)
            h[2, lane, j] += curv
    for lane in range(LANES):
        counts += h[0, lane]
        s1 += h[1, lane]
        s2 += h[2, lane]

@_jit
def _pdf_pass(xp, n, pts, p0, inv, uni, pdf):
    h = np.zeros((LANES, pdf.size))
    for r in range(2, n + 2):
        mid = xp[r]
        for c in range(2, n + 2):
            h[c % LANES, _cell(mid[c], pts, p0, inv, uni)] += 1.0
    for lane in range(LANES):
        pdf += h[lane]

@_jit
def _mx(a, b):
    return a if a > b else b  # one maxsd: no branch (for maps without NaN)

@_jit
def _peak_pass(xp, n, pts, p0, inv, uni, peaks, finite):
    """Pixels strictly above their 8 neighbours, per cell of the points. The
    neighbours' maximum is taken without branches (a chain of `and`s mispredicts);
    for a map with a NaN, np.maximum passes it on, as torch.maximum does (no peak
    beside a NaN)."""
    for r in range(2, n + 2):
        up, mid, dn = xp[r - 1], xp[r], xp[r + 1]
        for c in range(2, n + 2):
            a, b, d, e = up[c - 1], up[c], up[c + 1], mid[c - 1]
            f, g, h, k = mid[c + 1], dn[c - 1], dn[c], dn[c + 1]
            if finite:  # the same branch for the whole map: predicted
                nbr = _mx(_mx(_mx(a, b), _mx(d, e)), _mx(_mx(f, g), _mx(h, k)))
            else:
                mx = np.maximum
                nbr = mx(mx(mx(a, b), mx(d, e)), mx(mx(f, g), mx(h, k)))
            v = mid[c]
            if v > nbr:
                peaks[_cell(v, pts, p0, inv, uni)] += 1.0


@_jit
def _moment_pass(xp, n, mom):
    """The N_MOMENT_SUMS pixel sums (per row in LANES partial sums, then over rows)."""
    acc = np.zeros(N_MOMENT_SUMS)
    row = np.zeros((N_MOMENT_SUMS, LANES))
    for r in range(2, n + 2):
        up, mid, dn = xp[r - 1], xp[r], xp[r + 1]
        up2, dn2 = xp[r - 2], xp[r + 2]
        row[:, :] = 0.0
        for c in range(2, n + 2):
            lane = c % LANES
            v = mid[c]
            gx = mid[c + 1] - mid[c - 1]
            gy = dn[c] - up[c]
            lap = mid[c + 2] + mid[c - 2] - 2.0 * v + (dn2[c] + up2[c] - 2.0 * v)  # 4 lap k
            g2 = gx * gx + gy * gy
            x2 = v * v
            xlap = v * lap
            row[0, lane] += g2
            row[1, lane] += v * x2
            row[2, lane] += x2 * lap
            row[3, lane] += g2 * lap
            row[4, lane] += x2 * x2
            row[5, lane] += x2 * xlap
            row[6, lane] += g2 * xlap
            row[7, lane] += g2 * g2
        for i in range(N_MOMENT_SUMS):
            acc[i] += (row[i, 0] + row[i, 1]) + (row[i, 2] + row[i, 3])
    mom[:] = acc

@_jit
def _scaled(pts, step, s):
    """The points times sigma, their first and the reciprocal of the scaled step."""
    scaled = pts * s
    inv = 1.0 / (step * s) if step * s > 0 else 0.0
    return scaled, (scaled[0] if scaled.size else 0.0), inv

@_jit
def _chunk_totals(x, norm, do_mf, mf_pts, mf_uni, mf_step,
                  do_pk, pk_pts, pk_uni, pk_step,
                  do_pdf, pdf_same, pdf_pts, pdf_uni, pdf_step,
                  do_mom, sig, counts, s1, s2, peaks, pdf, mom):
    n = x.shape[1]
    xp = np.empty((n + 4, n + 4))
    for b in range(x.shape[0]):
        m = x[b]
        if norm or do_mom:
            mean, sig[b] = _mean_sigma(m)
            finite = np.isfinite(mean)  # no NaN or Inf in the map
        elif do_pk:  # the peak pass must know whether the map holds a NaN or an Inf
            total = 0.0
            for r in range(n):
                total += _row_sum(m[r], 0.0, False)
            finite = np.isfinite(total)
        else:
            finite = True
        s = sig[b] if norm else 1.0
        _pad(m, xp)
        if do_mf:
            pts, p0, inv = _scaled(mf_pts, mf_step, s)
            _mf_pass(xp, n, pts, p0, inv, mf_uni, counts[b], s1[b], s2[b])
        if do_pdf:
            if pdf_same:  # the MF's pixel counts per cell are the PDF's
                pdf[b] += counts[b]
            else:
                pts, p0, inv = _scaled(pdf_pts, pdf_step, s)
                _pdf_pass(xp, n, pts, p0, inv, pdf_uni, pdf[b])
        if do_pk:
            pts, p0, inv = _scaled(pk_pts, pk_step, s)
            _peak_pass(xp, n, pts, p0, inv, pk_uni, peaks[b], finite)
        if do_mom:
            _moment_pass(xp, n, mom[b])


@_jit
def pixel_sums(maps):
    """(sum, sum of squares) of every pixel of a (B, N, N) array, in float64: per row in
    LANES partial sums, then over rows and maps in order."""
    s = ss = 0.0
    for b in range(maps.shape[0]):
        for r in range(maps.shape[1]):
            s += _row_sum(maps[b, r], 0.0, False)
            ss += _row_sum(maps[b, r], 0.0, True)
    return s, ss

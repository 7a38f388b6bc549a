#!/usr/bin/env python
"""pipeline.stats against LensTools 1.2, side by side in one process on one core.

Both codes get the same 64 shifted-lognormal 256x256 float64 maps (bench_stats.py's)
and the same bins: the power spectrum in 50 ell bins, and the Minkowski functionals,
peak counts and pixel PDF at 35 thresholds (34 bins) from -2 to 3 sigma with
norm=True, plus the nine moments. LensTools runs map by map (its API: one
ConvergenceMap per map); pipeline.stats takes the batch. Timed calls of the two
alternate, so a slow spell of a shared machine hits both; each figure is the best
and the median of the repeats, in ms per map, and the ratio LensTools / pipeline
is taken per repeat pair (median and range).

The script also checks that both give the same numbers on those maps (largest
relative difference of C_ell; of V0, V1, V2, peaks and PDF over each curve's peak;
of the moments; LensTools' PDF rescaled to all pixels, the one documented difference)
and exits 1 if they differ by more than 1e-8.

LensTools 1.2 needs its own environment (numpy<2, scipy<1.14, astropy 5.3.4, an old
setuptools for its numpy.distutils build, and torch for this project);
benchmarks/lenstools_venv.sh makes it once and prints its python:

    PY=$(bash benchmarks/lenstools_venv.sh) && $PY benchmarks/bench_vs_lenstools.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

# LensTools 1.2 uses aliases numpy removed in 1.24
np.complex, np.float, np.int = complex, float, int
sys.modules.setdefault("mpi4py", None)  # LensTools' optional MPI: not wanted in a one-core benchmark
warnings.filterwarnings("ignore", message="Could not import mpi4py")

try:
    import astropy.units as u  # noqa: E402
    import lenstools  # noqa: E402
    from lenstools import ConvergenceMap  # noqa: E402
except ImportError as e:
    sys.exit(f"bench_vs_lenstools: LensTools is not importable here ({e}); "
             "run it with the python that benchmarks/lenstools_venv.sh prints")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pipeline.stats as S  # noqa: E402
from pipeline.stats import fused  # noqa: E402
from bench_stats import N_ELL, N_SIDE, SIDE_DEG, realistic_maps  # noqa: E402

THRESHOLDS = np.linspace(-2.0, 3.0, 35)  # sigma units (norm=True)
AGREEMENT = 1e-8  # the same float64 arithmetic in another order: far below any figure's meaning


def l_edges() -> np.ndarray:
    theta = math.radians(SIDE_DEG)
    return np.linspace(2 * math.pi / theta * 1.5, math.pi * N_SIDE / (2 * theta), N_ELL + 1)


def inside_fraction(m: np.ndarray) -> float:
    """LensTools' PDF is normalised by the pixels inside the thresholds (np.histogram's
    density), this project's by all N^2 (docs/statistics.md): the factor between them."""
    s = m.std()
    return float(np.mean((m >= THRESHOLDS[0] * s) & (m <= THRESHOLDS[-1] * s)))


def lenstools_calls(maps: np.ndarray, edges: np.ndarray) -> dict:
    """One callable per statistic, each over every map, returning (B, ...) arrays."""
    cmaps = [ConvergenceMap(m, angle=SIDE_DEG * u.deg) for m in maps]

    def each(fn):
        return lambda: np.stack([fn(c) for c in cmaps])

    return {
        "power_spectrum": each(lambda c: c.powerSpectrum(edges)[1]),
        "minkowski": each(lambda c: np.stack(c.minkowskiFunctionals(THRESHOLDS, norm=True)[1:])),
        "peaks": each(lambda c: c.peakCount(THRESHOLDS, norm=True)[1]),
        "pdf": each(lambda c: c.pdf(THRESHOLDS, norm=True)[1]),
        "moments": each(lambda c: c.moments(connected=False, dimensionless=False)),
    }


def pipeline_calls(maps: np.ndarray, edges: np.ndarray) -> dict:
    x = torch.from_numpy(maps)
    return {
        "power_spectrum": lambda: S.power_spectrum(x, SIDE_DEG, edges)[1].numpy(),
        "minkowski": lambda: torch.stack(S.minkowski_functionals(x, THRESHOLDS, norm=True)[1:], 1).numpy(),
        "peaks": lambda: S.peak_counts(x, THRESHOLDS, norm=True)[1].numpy(),
        "pdf": lambda: S.pixel_pdf(x, THRESHOLDS, norm=True)[1].numpy(),
        "moments": lambda: S.moments(x).numpy(),
        "all_statistics": lambda: S.all_statistics(x, SIDE_DEG, edges, THRESHOLDS, norm=True),
        "all (torch kernels)": lambda: torch_kernels(
            lambda: S.all_statistics(x, SIDE_DEG, edges, THRESHOLDS, norm=True)),
    }


def torch_kernels(call):
    """call() on the torch kernels instead of the fused ones (the CPU path before them)."""
    available = fused.available
    fused.available = lambda: False
    try:
        return call()
    finally:
        fused.available = available


def difference(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    """Largest difference: relative per value (C_ell, moments) or over each curve's peak |value|."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if kind in ("power_spectrum", "moments"):
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))
    peak = np.max(np.abs(a), axis=-1, keepdims=True)
    return float(np.max(np.abs(a - b) / np.where(peak > 0, peak, 1.0)))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maps", type=int, default=64, help="maps (default 64)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each side (default 5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not fused.available():
        print("bench_vs_lenstools: numba is missing: pipeline.stats runs its torch kernels (slower)",
              file=sys.stderr)

    maps = realistic_maps(args.maps)
    edges = l_edges()
    lt, pl = lenstools_calls(maps, edges), pipeline_calls(maps, edges)

    want = {k: f() for k, f in lt.items()}
    want["pdf"] = want["pdf"] * np.array([inside_fraction(m) for m in maps])[:, None]
    agreement = {k: difference(want[k], pl[k](), k) for k in lt}
    everything = pl["all_statistics"]()
    agreement["all_statistics"] = max(difference(want[k], everything[k], k) for k in lt)

    # alternate the two codes, statistic by statistic, repeat by repeat
    lt_s = {k: [] for k in lt}
    pl_s = {k: [] for k in pl}
    for _ in range(args.repeats):
        for k in pl:
            if k in lt:
                lt_s[k].append(timed(lt[k]) / args.maps)
            pl_s[k].append(timed(pl[k]) / args.maps)
    lt_s["all_statistics"] = [sum(lt_s[k][i] for k in lt) for i in range(args.repeats)]
    core = ("power_spectrum", "minkowski", "peaks")  # the set the ratio target names
    lt_s["ps+mf+peaks"] = [sum(lt_s[k][i] for k in core) for i in range(args.repeats)]
    pl_s["ps+mf+peaks"] = [sum(pl_s[k][i] for k in core) for i in range(args.repeats)]
    pl_s["separate calls"] = [sum(pl_s[k][i] for k in lt) for i in range(args.repeats)]
    fused_gain = np.array(pl_s["all (torch kernels)"]) / np.array(pl_s["all_statistics"])

    rows = {}
    print(f"{'statistic':>16} {'LensTools ms/map':>22} {'pipeline ms/map':>22} {'ratio (median, range)':>24}",
          file=sys.stderr)
    for k in ("power_spectrum", "minkowski", "peaks", "pdf", "moments", "ps+mf+peaks", "separate calls",
              "all_statistics", "all (torch kernels)"):
        p = np.array(pl_s[k]) * 1e3
        row = {"pipeline_best_ms": float(p.min()), "pipeline_median_ms": float(np.median(p))}
        text = f"{'':>22}"
        ratio_text = ""
        if k in lt_s:
            t = np.array(lt_s[k]) * 1e3
            r = t / p
            row.update(lenstools_best_ms=float(t.min()), lenstools_median_ms=float(np.median(t)),
                       ratio_median=float(np.median(r)), ratio_min=float(r.min()), ratio_max=float(r.max()))
            text = f"{t.min():10.3f} ({np.median(t):8.3f})"
            ratio_text = f"{np.median(r):7.1f}x ({r.min():.1f}-{r.max():.1f})"
        print(f"{k:>16} {text:>22} {p.min():10.3f} ({np.median(p):8.3f}) {ratio_text:>24}", file=sys.stderr)
        rows[k] = row
    print(f"fused kernels over the torch kernels (all_statistics): {np.median(fused_gain):.2f}x "
          f"({fused_gain.min():.2f}-{fused_gain.max():.2f})", file=sys.stderr)
    worst = max(agreement.values())
    print(f"agreement with LensTools (largest difference): {worst:.1e} "
          f"({'ok' if worst <= AGREEMENT else 'DIFFERENT'}, tolerance {AGREEMENT:g})", file=sys.stderr)
    print(json.dumps({"benchmark": "stats_vs_lenstools", "maps": args.maps, "map_side": N_SIDE, "n_ell": N_ELL,
                      "n_thresholds": THRESHOLDS.size - 1, "norm": True, "threads": 1, "repeats": args.repeats,
                      "lenstools": lenstools.__version__, "fused_cpu_kernels": fused.available(), "numpy": np.__version__, "torch": torch.__version__,
                      "results": rows, "agreement": agreement,
                      "fused_over_torch_kernels_median": float(np.median(fused_gain))}))
    return 0 if worst <= AGREEMENT else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Per-map cost of the full statistics set (pipeline.stats.all_statistics).

The set measured is the one the pipeline's stats stage computes: power
spectrum in 50 ell bins, Minkowski functionals and peak counts in 34
threshold bins, pixel PDF in the same 34 bins, and the nine moments, on
256 x 256 maps. The reference point is LensTools' C code, ~11 ms per map
for this set on one core; the target is 5x faster per core (<= 2.2 ms).

By default: ONE CPU thread (torch.set_num_threads(1), OMP/MKL threads 1),
float64, several batch sizes, median of repeats. ``--device cuda`` runs in
float32 on the GPU (synchronising around each timed call). ``--breakdown``
adds the cost of each statistic computed alone; ``--accuracy`` compares the
float32 path with float64 on the same maps.

Maps are realistic: shifted-lognormal convergence fields (sigma_kappa ~
0.016, skewed like ray-traced maps) built from a power-law Gaussian field;
a pool of 64 distinct maps is tiled up to the batch size.

Prints ONE JSON line on stdout (and a human summary on stderr), e.g.::

    python benchmarks/bench_stats.py                     # CPU, 1 thread
    python benchmarks/bench_stats.py --device cuda --batch-sizes 1024 4096
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

# one thread for every library that reads these, before torch/numpy load
_THREADS = "1"
if "--threads" in sys.argv:
    _THREADS = sys.argv[sys.argv.index("--threads") + 1]
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pipeline.stats as S  # noqa: E402

N_SIDE = 256
SIDE_DEG = 3.5
N_ELL = 50
N_THR = 34


def realistic_maps(n_maps: int, n: int = N_SIDE, side_deg: float = SIDE_DEG,
                   seed: int = 0) -> np.ndarray:
    """Shifted-lognormal convergence maps, float64, (n_maps, n, n)."""
    rng = np.random.default_rng(seed)
    theta = math.radians(side_deg)
    ky = np.fft.fftfreq(n) * n
    kx = np.fft.rfftfreq(n) * n
    ell = 2 * math.pi / theta * np.hypot(ky[:, None], kx[None, :])
    pix = theta / n
    # Gaussian field: C ~ ell^-1.3, smoothed over ~1 pixel; unit-free amplitude
    cl = np.where(ell > 0, np.maximum(ell, 1.0) ** -1.3, 0.0) * np.exp(-(ell * pix) ** 2 / 4)
    white = rng.standard_normal((n_maps, n, n))
    g = np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(cl), s=(n, n))
    g *= 0.5 / g.std()                               # sigma_g = 0.5
    lam = 0.03                                       # lognormal shift
    return lam * (np.exp(g - 0.5 * 0.25) - 1.0)


def bins(maps: np.ndarray):
    theta = math.radians(SIDE_DEG)
    l_edges = np.linspace(2 * math.pi / theta * 1.5, math.pi * N_SIDE / (2 * theta), N_ELL + 1)
    sigma = maps.std()
    thresholds = np.linspace(-2.0, 3.0, N_THR + 1) * sigma      # kappa units
    return l_edges, thresholds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tiled(pool: torch.Tensor, batch: int) -> torch.Tensor:
    reps = -(-batch // pool.shape[0])
    return pool.repeat(reps, 1, 1)[:batch].contiguous()


def accuracy(pool64: np.ndarray, l_edges, thresholds, device) -> dict:
    """Differences from the CPU float64 numbers on the same maps.

    For the CPU float32 path and, with a GPU, the GPU float64 and float32
    paths: C_ell relative differences; V1, V2 differences over each curve's
    peak |value|; for V0, the PDF and the peaks the number of pixels (peaks)
    that changed bin; moments relative differences.
    """
    ref = S.all_statistics(pool64, SIDE_DEG, l_edges, thresholds, dtype=torch.float64)
    npix = pool64.shape[-1] ** 2
    widths = np.diff(thresholds)
    variants = {"cpu_float32": (torch.device("cpu"), torch.float32)}
    if device.type != "cpu":
        variants[f"{device.type}_float64"] = (device, torch.float64)
        variants[f"{device.type}_float32"] = (device, torch.float32)
    out = {}
    for name, (dev, dt) in variants.items():
        x = torch.from_numpy(pool64).to(dev)
        got = {k: (v.double().cpu().numpy() if isinstance(v, torch.Tensor) else v)
               for k, v in S.all_statistics(x, SIDE_DEG, l_edges, thresholds,
                                            dtype=dt).items()}
        r = {}
        d = np.abs(got["power_spectrum"] - ref["power_spectrum"]) / np.abs(ref["power_spectrum"])
        r["power_spectrum_max_rel"] = float(d.max())
        r["power_spectrum_median_rel"] = float(np.median(d))
        for i, v in ((1, "V1"), (2, "V2")):
            a, b = ref["minkowski"][:, i], got["minkowski"][:, i]
            r[f"{v}_max_diff_over_peak"] = float(
                np.max(np.abs(b - a) / np.abs(a).max(axis=1, keepdims=True)))
        moved = {
            "V0": np.abs(got["minkowski"][:, 0] - ref["minkowski"][:, 0]) * npix,
            "pdf": np.abs(got["pdf"] - ref["pdf"]) * npix * widths,
            "peaks": np.abs(got["peaks"] - ref["peaks"]) * widths,
        }
        for k, v in moved.items():
            counts = np.rint(v)
            r[f"{k}_max_moved_per_map_bin"] = int(counts.max())
            r[f"{k}_moved_per_map"] = float(counts.sum() / len(v))
        r["moments_max_rel"] = {
            m: float(np.max(np.abs(got["moments"][:, i] - ref["moments"][:, i])
                            / np.abs(ref["moments"][:, i])))
            for i, m in enumerate(S.MOMENT_NAMES)}
        out[name] = r
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default=None,
                    help="working precision (default: float64 on CPU, float32 on CUDA)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per point")
    ap.add_argument("--chunk-size", type=int, default=None, help="maps per internal chunk")
    ap.add_argument("--breakdown", action="store_true", help="also time each statistic alone")
    ap.add_argument("--accuracy", action="store_true", help="also compare float32 with float64")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_stats: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64, None: None}[args.dtype]
    if args.batch_sizes is None:
        args.batch_sizes = [1, 4, 16, 64] if device.type == "cpu" else [256, 1024, 4096, 8192]
    repeats = args.repeats or (7 if device.type == "cpu" else 10)

    pool64 = realistic_maps(64)
    l_edges, thresholds = bins(pool64)
    work_dtype = dtype or (torch.float64 if device.type == "cpu" else torch.float32)
    # maps arrive in the working dtype (time the statistics, not a cast)
    pool = torch.from_numpy(pool64).to(device=device, dtype=work_dtype)

    def full(x):
        return S.all_statistics(x, SIDE_DEG, l_edges, thresholds, dtype=dtype,
                                chunk_size=args.chunk_size)

    results = []
    for batch in args.batch_sizes:
        x = tiled(pool, batch)
        sec = time_call(lambda: full(x), device, repeats)
        results.append({"batch": batch, "ms_per_map": 1e3 * sec / batch,
                        "maps_per_s": batch / sec})
        print(f"batch {batch:6d}: {1e3 * sec / batch:8.3f} ms/map  "
              f"{batch / sec:10.1f} maps/s", file=sys.stderr)
        del x

    record = {
        "benchmark": "stats", "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": args.threads, "torch": torch.__version__,
        "dtype": str(work_dtype),
        "map_side": N_SIDE, "n_ell": N_ELL, "n_thresholds": N_THR, "repeats": repeats,
        "statistics": "power_spectrum+minkowski+peaks+pdf+moments",
        "reference_lenstools_ms_per_map_one_core": 11.0, "target_ms_per_map_one_core": 2.2,
        "results": results,
        "best_ms_per_map": min(r["ms_per_map"] for r in results),
        "best_maps_per_s": max(r["maps_per_s"] for r in results),
    }

    if args.breakdown:
        cap = 64 if device.type == "cpu" else 4096
        batch = max([b for b in args.batch_sizes if b <= cap] or [min(args.batch_sizes)])
        x = tiled(pool, batch)
        kw = dict(dtype=dtype, chunk_size=args.chunk_size)
        calls = {
            "power_spectrum": lambda: S.power_spectrum(x, SIDE_DEG, l_edges, **kw),
            "minkowski": lambda: S.minkowski_functionals(x, thresholds, **kw),
            "peaks": lambda: S.peak_counts(x, thresholds, **kw),
            "pdf": lambda: S.pixel_pdf(x, thresholds, **kw),
            "moments": lambda: S.moments(x, **kw),
            "all_statistics": lambda: full(x),
        }
        record["breakdown_batch"] = batch
        record["breakdown_ms_per_map"] = {
            k: 1e3 * time_call(f, device, repeats) / batch for k, f in calls.items()}
        for k, v in record["breakdown_ms_per_map"].items():
            print(f"  {k:15s} {v:8.3f} ms/map", file=sys.stderr)

    if args.accuracy:
        record["accuracy_vs_cpu_float64"] = accuracy(pool64, l_edges, thresholds, device)

    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

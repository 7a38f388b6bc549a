"""Seconds per posterior of `cosmogan infer`: from nothing, and with the simulations reused.

    python benchmarks/bench_infer.py --run RUN --observed DATA/test --select Omega_m=0.325,sigma_8=0.75 \
        [--ranks 2] [--grid 41] [--n-sim 128] [--repeats 1] [--simulator emulator] [--device auto]

Each repeat runs, as a user would (`mpirun -n RANKS`, one thread per rank; process start
included), into a fresh directory: (1) the whole inference, simulations included; (2) the
same command again, which reuses the simulations and only measures the survey, evaluates the
likelihood and writes the posterior and report; (3) the same with --sampler emcee
(32 walkers, 3000 steps). Prints median and range of each, and the maps per second
of the simulation part ((1) - (2)).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def timed(cmd, env) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def fmt(xs) -> str:
    return f"{statistics.median(xs):.1f} s ({min(xs):.1f}-{max(xs):.1f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--observed", required=True)
    ap.add_argument("--select")
    ap.add_argument("--n-obs", type=int, default=10)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--grid", type=int, default=41)
    ap.add_argument("--n-sim", type=int, default=128)
    ap.add_argument("--n-cov", type=int, default=1024)
    ap.add_argument("--simulator", default="emulator", choices=("emulator", "physics"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launch = [str(BIN / "mpirun"), "-n", str(args.ranks)] if args.ranks > 1 else []
    base = [*launch, sys.executable, "-m", "pipeline", "infer", "--emulator", args.run, "--observed", args.observed,
            "--n-obs", str(args.n_obs), "--grid", str(args.grid), "--n-sim", str(args.n_sim), "--n-cov",
            str(args.n_cov), "--simulator", args.simulator, "--device", args.device, "--quiet"]
    if args.select:
        base += ["--select", args.select]
    whole, posterior, emcee = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        for k in range(args.repeats):
            out = Path(tmp) / f"r{k}"
            whole.append(timed([*base, "--out", str(out)], env))
            posterior.append(timed([*base, "--out", str(out)], env))
            emcee.append(timed([*base, "--out", str(out), "--sampler", "emcee"], env))
            summary = json.loads((out / "summary.json").read_text())
            shutil.rmtree(out)
    maps = args.grid ** 2 * args.n_sim + args.n_cov
    sim_s = statistics.median(w - p for w, p in zip(whole, posterior))
    print(f"{args.simulator}, {args.grid}x{args.grid} grid, {args.n_sim} maps per point + {args.n_cov} fiducial "
          f"({maps} maps), {args.ranks} rank(s), {args.repeats} repeat(s)")
    print(f"  whole inference:          {fmt(whole)}")
    print(f"  simulations reused, grid: {fmt(posterior)}")
    print(f"  simulations reused, emcee: {fmt(emcee)}")
    print(f"  simulations: {sim_s:.1f} s, {maps / sim_s:.0f} maps/s")
    post = summary["posteriors"][args.simulator]
    print("  last posterior: " + ", ".join(f"{n} {m:.4f} +- {s:.4f}" for n, m, s in
                                          zip(post["parameters"], post["mean"], post["std"])))


if __name__ == "__main__":
    main()

"""Throughput of physical map synthesis (MapModel.synthesize), maps per second.

Single process:  python benchmarks/bench_synthesis.py
Under MPI:       mpirun -n 2 python benchmarks/bench_synthesis.py
Map i of M is made on rank i % size. Each repeat is timed from a barrier to
the slowest rank's finish; rank 0 prints one JSON line with the median.
The one-off CCL spectrum and lognormal set-up (cached afterwards) is timed
separately as setup_s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from pipeline.config import CosmologyConfig, PhysicsConfig
from pipeline.parallel.comm import world  # mpi4py only when launched under MPI
from pipeline.physics import MapModel

POINT = (0.3, 0.8)


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=512, help="maps per repeat, all ranks together")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256, help="pixels per side")
    parser.add_argument("--side-deg", type=float, default=3.5)
    parser.add_argument("--field", choices=("lognormal", "gaussian"), default="lognormal")
    return parser.parse_args()


def _timed_repeat(comm, model: MapModel, n_maps: int, repeat: int) -> float:
    """Seconds from a common start until the slowest rank has made its share."""
    comm.barrier()
    start = time.perf_counter()
    for i in range(comm.rank, n_maps, comm.size):
        model.synthesize(POINT, (repeat, 0, i))
    elapsed = time.perf_counter() - start
    return max(comm.allgather(elapsed))


def main() -> None:
    args = _args()
    comm = world()
    physics = PhysicsConfig(map_size=args.size, side_angle_deg=args.side_deg, field=args.field)
    model = MapModel(physics, CosmologyConfig())
    start = time.perf_counter()
    model.synthesize(POINT, (0, 0, 0))  # fills the CCL and spectrum caches
    setup = time.perf_counter() - start
    walls = [_timed_repeat(comm, model, args.maps, r) for r in range(args.repeats)]
    if comm.rank == 0:
        median = statistics.median(walls)
        print(json.dumps({
            "benchmark": "synthesis", "field": args.field, "map_size": args.size,
            "side_angle_deg": args.side_deg, "ranks": comm.size, "maps": args.maps,
            "repeats": args.repeats, "median_wall_s": round(median, 4),
            "min_wall_s": round(min(walls), 4), "maps_per_s": round(args.maps / median, 1),
            "maps_per_s_per_rank": round(args.maps / median / comm.size, 1),
            "setup_s": round(setup, 3)}))


if __name__ == "__main__":
    main()

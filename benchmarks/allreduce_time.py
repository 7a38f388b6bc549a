"""Run under `mpirun -n N`: time to allreduce one step's gradients (G and D of a model).

    mpirun -n 2 python benchmarks/allreduce_time.py BACKEND [--size 64] [--repeats 20]

Allreduces (averages) one float32 buffer per model, of its parameter count, through the
backend's collective (torch.distributed/gloo for ddp, hvd.allreduce for horovod), the
same volume a training step reduces; rank 0 prints the median in a JSON line.
"""

import argparse
import json
import statistics
import time

import torch

from pipeline.config import ModelConfig
from pipeline.parallel.backend import make_backend
from pipeline.models import ModelArgs, build_models


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backend", choices=("ddp", "horovod"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    backend = make_backend(args.backend, "cpu")
    gen, disc = build_models(ModelArgs.from_config(ModelConfig(), args.size))
    buffers = [torch.zeros(sum(p.numel() for p in m.parameters())) for m in (gen, disc)]
    if args.backend == "ddp":
        import torch.distributed as dist

        def reduce(t, name):
            dist.all_reduce(t)
    else:
        import horovod.torch as hvd

        def reduce(t, name):
            hvd.allreduce_(t, op=hvd.Average, name=name)

    times = []
    for _ in range(args.repeats + 2):
        backend.barrier()
        t = time.perf_counter()
        for name, buf in zip(("g", "d"), buffers):
            reduce(buf, name)
        times.append(time.perf_counter() - t)
    if backend.rank == 0:
        mb = sum(b.numel() for b in buffers) * 4 / 1e6
        print(json.dumps({"backend": args.backend, "ranks": backend.world_size, "size": args.size,
                          "megabytes": round(mb, 1), "median_ms": round(1e3 * statistics.median(times[2:]), 1)}))
    backend.close()


if __name__ == "__main__":
    main()

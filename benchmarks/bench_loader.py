"""Loader throughput (MB/s of maps) from page cache, against a raw sequential read of the same files.

    python benchmarks/bench_loader.py [--maps 1024] [--size 256] [--repeats 5]

Makes a dataset of random float32 maps with the importer in a temporary
directory, reads every shard once to warm the page cache, then alternates
(raw read, loader epoch) `repeats` times and reports medians and their ratio.
The raw read is plain 4 MiB reads into one reused buffer: the ceiling for any reader of
these files.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.importers import import_maps
from pipeline.data.loader import ShardedLoader


def raw_read(paths) -> int:
    """Every byte of every file, 4 MiB readinto one reused buffer: the read ceiling."""
    buf = memoryview(bytearray(1 << 22))
    n = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while got := f.readinto(buf):
                n += got
    return n


def loader_epoch(loader) -> int:
    n = 0
    for batch in loader:
        n += batch["maps"].numel() * 4
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        maps = np.random.default_rng(0).normal(size=(args.maps, args.size, args.size)).astype(np.float32)
        np.save(Path(tmp) / "m.npy", maps)
        del maps
        ds = Path(tmp) / "ds"
        import_maps(np.load(Path(tmp) / "m.npy", mmap_mode="r"), ds, 3.5, Path(tmp) / "m.npy",
                    shard_size=256, progress=False)
        (Path(tmp) / "m.npy").unlink()
        shards = sorted(ds.glob("shard-*.h5"))
        loader = ShardedLoader(ds, batch_size=args.batch, seed=0, shuffle=True, augment=False,
                               num_workers=args.workers)
        raw_read(shards)  # warm the page cache
        raw_s, load_s = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            raw_bytes = raw_read(shards)
            raw_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            map_bytes = loader_epoch(loader)
            load_s.append(time.perf_counter() - t)
        raw_mbs = raw_bytes / statistics.median(raw_s) / 1e6
        load_mbs = map_bytes / statistics.median(load_s) / 1e6
        print(json.dumps({"maps": args.maps, "size": args.size, "batch": args.batch, "workers": args.workers,
                          "raw_MBps": round(raw_mbs), "loader_MBps": round(load_mbs),
                          "ratio": round(load_mbs / raw_mbs, 3), "repeats": args.repeats}))


if __name__ == "__main__":
    main()

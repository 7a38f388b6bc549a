"""The ``stats`` stage: every statistic of every map of a dataset, fanned out over MPI ranks.

The dataset is cut into chunks of stats.chunk_size maps; chunk k is computed
by rank k % size and written atomically to ``OUT.parts/chunk-KKKKK.h5``. When
all chunks exist rank 0 joins them, in map order, into OUT (atomically) and
removes the parts. A rerun after a kill computes only the missing chunks. Each
chunk's numbers depend only on its maps, so the table is the same for any
number of ranks (at the same threads per rank).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from pipeline.config import StatsConfig
from pipeline.data.format import atomic_path, hdf5_write, remove_temporaries
from pipeline.data.loader import MapDataset
from pipeline.locking import output_lock
from pipeline.parallel.comm import from_rank0, progress_bar, rank_local_work, world
from pipeline.errors import DataError
from pipeline.stats import MOMENT_NAMES, all_statistics, fused
from pipeline.stats.bins import Bins, make_bins
from pipeline.stats.table import PER_MAP, TableHeader, read_table, write_table


def pooled_sigma(data: MapDataset, chunks: list[range], buffer: np.ndarray | None = None) -> float:
    """Pixel standard deviation over the whole dataset (kappa), the same for any rank count:
    per-chunk float64 sums, combined in chunk order on rank 0. Non-finite pixels are refused
    (naming the first bad map). buffer: where to read each chunk (see MapDataset.read)."""
    comm = world()
    mine = {}
    with rank_local_work(f"{data.root}: cannot read"):
        for k, rows in enumerate(chunks):
            if k % comm.size == comm.rank:
                maps, _ = data.read(np.arange(rows.start, rows.stop), buffer)
                mine[k] = _finite_sums(maps, data, rows)
    parts = comm.gather(mine, root=0)
    sigma = None
    if comm.rank == 0:
        merged = {k: v for part in parts for k, v in part.items()}
        n, s, ss = (sum(merged[k][i] for k in range(len(chunks))) for i in range(3))
        sigma = float(np.sqrt(max(ss / n - (s / n) ** 2, 0.0)))
    return comm.bcast(sigma, root=0)


def checked_read(data: MapDataset, rows: range, buffer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps and params of rows.start .. rows.stop - 1, refused (naming the first bad map) if
    any pixel is NaN or Inf: it would make NaN rows of statistics, and NaN bins for every
    map when thresholds are in units of the pooled sigma. buffer: see MapDataset.read."""
    maps, params = data.read(np.arange(rows.start, rows.stop), buffer)
    _refuse_non_finite(maps, data, rows)
    return maps, params


def _refuse_non_finite(maps: np.ndarray, data: MapDataset, rows: range) -> None:
    bad = ~np.isfinite(maps).all(axis=(1, 2))
    if bad.any():
        raise DataError(f"{data.root}: map {rows.start + int(np.flatnonzero(bad)[0])} contains NaN or Inf")


def _finite_sums(maps: np.ndarray, data: MapDataset, rows: range) -> tuple[float, float, float]:
    """(pixels, sum, sum of squares) in float64. Both sums are finite exactly when every pixel
    is (a NaN pixel makes the sum NaN, an infinite one the sum of squares infinite; float32
    pixels cannot overflow a float64 sum of squares), so the pixels are checked only then."""
    if fused.available():  # no float64 copy: this pass reads the whole dataset
        s, ss = fused.pixel_sums(maps)
    else:
        x = maps.astype(np.float64)
        s, ss = x.sum(), (x * x).sum()
    if not (np.isfinite(s) and np.isfinite(ss)):
        _refuse_non_finite(maps, data, rows)
    return float(maps.size), float(s), float(ss)


def compute_stats(data_dir: str | Path, out: str | Path, cfg: StatsConfig, like: str | Path | None = None,
                  progress: bool = True) -> Path:
    """Write the stats table of the dataset at data_dir to ``out``; returns ``out``.

    like: an existing stats table whose bins (ell edges, kappa thresholds) to reuse,
    so that two tables can be compared bin by bin.
    """
    comm = world()
    out = Path(out)
    data = MapDataset(data_dir)
    m = data.manifest
    h, w = m.map_shape
    if h != w:
        raise DataError(f"{data_dir}: statistics need square maps, got {h}x{w}")
    like_table = read_table(like) if like is not None else None
    if like_table is not None and (like_table.header.map_shape != (h, w)
                                   or like_table.header.side_angle_deg != m.side_angle_deg):
        lh = like_table.header
        raise DataError(f"{data_dir}: maps are {h}x{w} over {m.side_angle_deg} deg, but {like} was made "
                        f"from {lh.map_shape[0]}x{lh.map_shape[1]} maps over {lh.side_angle_deg} deg")
    recipe = {"source_digest": m.digest(), "stats": cfg.__dict__,
              "like_bins": like_table.header.bins.digest() if like_table else None}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    if out.exists():
        if recipe_of(out) == digest:
            return out  # complete from an earlier run
        raise DataError(f"{out}: already exists and holds other statistics; choose another --out or remove it")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: output directory does not exist")

    with output_lock(out, "stats", comm.rank == 0, from_rank0):
        return _compute(data, Path(data_dir), out, cfg, like_table, digest, progress)


def _compute(data: MapDataset, data_dir: Path, out: Path, cfg: StatsConfig, like_table, digest: str,
             progress: bool) -> Path:
    comm = world()
    m = data.manifest
    h, w = m.map_shape
    chunks = [range(s, min(s + cfg.chunk_size, m.n_maps)) for s in range(0, m.n_maps, cfg.chunk_size)]
    buffer = np.empty((len(chunks[0]), h, w), np.float32)  # every chunk of both passes is read into it
    bins = _bins(cfg, data, chunks, like_table, buffer)
    header = TableHeader(str(data_dir), m.digest(), (h, w), m.side_angle_deg, m.param_names, bins,
                         list(MOMENT_NAMES))
    parts = parts_dir(out)

    mine = [k for k in range(len(chunks)) if k % comm.size == comm.rank]
    bar = progress_bar(sum(len(chunks[k]) for k in mine), "stats", progress)
    reused = 0
    with rank_local_work(f"{parts}: cannot write"):
        for k in mine:
            path = parts / f"chunk-{k:05d}.h5"
            if recipe_of(path) == digest:
                reused += 1
            else:
                try:
                    _write_chunk(path, checked_read(data, chunks[k], buffer), chunks[k], header, digest)
                except DataError:  # a bad map: the parts of this table are no use to a rerun
                    shutil.rmtree(parts, ignore_errors=True)
                    raise
            bar.update(len(chunks[k]))
    bar.close()
    reused = comm.gather(reused, root=0)
    if comm.rank == 0:
        if sum(reused):
            print(f"{out}: reused {sum(reused)} of {len(chunks)} chunks from an earlier run", flush=True)
        with rank_local_work(f"{out}: cannot write"):
            _join(parts, len(chunks), out, header, digest)
    comm.barrier()
    return out


def parts_dir(out: Path) -> Path:
    """OUT.parts, where each chunk's file is written, made ready on rank 0 (what a killed run
    left half-written removed: part files and the joined output); every rank returns it."""
    parts = out.with_name(out.name + ".parts")
    with rank_local_work(f"{parts}: cannot write"):
        if world().rank == 0:
            parts.mkdir(exist_ok=True)
            remove_temporaries(parts)
            remove_temporaries(out.parent, f".{out.name}.")
    world().barrier()
    return parts


def _bins(cfg: StatsConfig, data: MapDataset, chunks: list[range], like_table, buffer: np.ndarray) -> Bins:
    if like_table is not None:
        return like_table.header.bins
    sigma = 1.0
    if cfg.threshold_units == "sigma":
        sigma = pooled_sigma(data, chunks, buffer)
        if not sigma > 0:
            raise DataError(f"{data.root}: every pixel has the same value; thresholds in units "
                            "of sigma are undefined (use stats.threshold_units=kappa)")
    return make_bins(cfg, data.manifest.map_shape[0], data.manifest.side_angle_deg, sigma)


def recipe_of(path: Path) -> str | None:
    """The recipe digest an HDF5 output or part file was made for (None if unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("recipe_digest", ""))
    except (OSError, FileNotFoundError):
        return None


def _write_chunk(path: Path, chunk: tuple[np.ndarray, np.ndarray], rows: range, header: TableHeader,
                 digest: str) -> None:
    """The statistics of one chunk's maps and params (checked finite), written atomically to path."""
    maps, params = chunk
    s = all_statistics(maps, header.side_angle_deg, np.asarray(header.bins.l_edges),
                       np.asarray(header.bins.thresholds))
    columns = {"index": np.arange(rows.start, rows.stop, dtype=np.int64), "params": params,
               **{k: s[k] for k in ("power_spectrum", "minkowski", "peaks", "pdf", "moments")}}
    with atomic_path(path) as tmp, hdf5_write(tmp, sum(np.asarray(c).nbytes for c in columns.values())) as f:
        write_table(f, header, columns)
        f.attrs["recipe_digest"] = digest


def _join(parts: Path, n_chunks: int, out: Path, header: TableHeader, digest: str) -> None:
    columns = {k: [] for k in PER_MAP}
    for k in range(n_chunks):
        with h5py.File(parts / f"chunk-{k:05d}.h5", "r") as f:
            for key in PER_MAP:
                columns[key].append(f[key][:])
    joined = {k: np.concatenate(v) for k, v in columns.items()}
    with atomic_path(out) as tmp, hdf5_write(tmp, sum(c.nbytes for c in joined.values())) as f:
        write_table(f, header, joined)
        f.attrs["recipe_digest"] = digest
    shutil.rmtree(parts)

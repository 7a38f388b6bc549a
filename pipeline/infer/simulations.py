"""The simulations a likelihood is built from: the mean data vector at every point of a
parameter grid, and the data vectors of many maps at one fiducial point (the covariance).

The work is cut into chunks: one per row of the grid (its last parameter varying) and one
per COV_CHUNK fiducial maps. Chunk k is done by rank k % size and written atomically to
``OUT.parts/chunk-KKKKK.h5``; when all exist rank 0 joins them into OUT and removes the
parts. A rerun after a kill does only the missing chunks. Every number depends only on
(simulator, seed, map index, point), so the table is the same for any number of ranks.
Mean maps are indices 0 .. n_sim - 1 at every point (common random numbers); fiducial
maps are n_sim .. n_sim + n_cov - 1, independent of the fiducial point's mean maps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from pipeline.data.format import atomic_path, hdf5_write
from pipeline.errors import DataError
from pipeline.infer.simulators import Simulator
from pipeline.infer.summaries import SummarySpec
from pipeline.parallel.comm import progress_bar, rank_local_work, world
from pipeline.stats.fanout import parts_dir, recipe_of

if TYPE_CHECKING:
    from pipeline.infer.correction import MeanCorrection

COV_CHUNK = 256  # fiducial maps per chunk
FORMAT = "cosmogan-simulation-table/1"


@dataclass(frozen=True)
class GridAxes:
    """The simulation grid: per parameter (names, in the simulator's order) its values."""

    names: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]

    @classmethod
    def spanning(cls, names, low, high, n: int) -> GridAxes:
        return cls(tuple(names), tuple(tuple(np.linspace(lo, hi, n).tolist()) for lo, hi in zip(low, high)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    def points(self) -> np.ndarray:
        """(prod(shape), P): every grid point, the last parameter varying fastest."""
        mesh = np.meshgrid(*[np.asarray(v) for v in self.values], indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)


@dataclass(frozen=True)
class SimulationTable:
    """means: (*axes.shape, d) mean data vector of n_sim maps at each grid point (plus
    ``correction``'s delta(theta) when it holds one); fiducial_vectors: (n_cov, d) data
    vectors of the maps at ``fiducial`` (P,)."""

    simulator: str
    spec: SummarySpec
    axes: GridAxes
    fiducial: np.ndarray
    means: np.ndarray
    fiducial_vectors: np.ndarray
    n_sim: int
    seed: int
    recipe: str
    correction: MeanCorrection | None = None

    @property
    def n_cov(self) -> int:
        return len(self.fiducial_vectors)


def read_table(path: Path) -> SimulationTable:
    with h5py.File(path, "r") as f:
        a = f.attrs
        names = tuple(json.loads(a["param_names"]))
        axes = GridAxes(names, tuple(tuple(f[f"axis_{i}"][:].tolist()) for i in range(len(names))))
        return SimulationTable(str(a["simulator"]), SummarySpec.from_dict(json.loads(a["spec"])), axes,
                               f["fiducial"][:], f["means"][:], f["fiducial_vectors"][:], int(a["n_sim"]),
                               int(a["seed"]), str(a["recipe_digest"]))


def simulation_table(sim: Simulator, spec: SummarySpec, axes: GridAxes, fiducial: np.ndarray, n_sim: int,
                     n_cov: int, seed: int, out: Path, recipe: str, progress: bool = True) -> SimulationTable:
    """The table at ``out`` (HDF5): reused when it holds this recipe, else computed (MPI
    fan-out, resumable). Every rank returns it. The caller holds the output's lock."""
    comm = world()
    out = Path(out)
    if recipe_of(out) != recipe:
        _compute(sim, spec, axes, np.asarray(fiducial, np.float64), n_sim, n_cov, seed, out, recipe, progress)
    comm.barrier()
    table = read_table(out)
    if table.recipe != recipe:
        raise DataError(f"{out}: holds other simulations; remove it")
    return table


def _chunks(axes: GridAxes, n_cov: int) -> list[tuple[str, object]]:
    """("cov", range of fiducial map numbers) chunks, then ("grid", flat point indices) rows."""
    row = axes.shape[-1]
    n_points = int(np.prod(axes.shape))
    cov = [("cov", range(s, min(s + COV_CHUNK, n_cov))) for s in range(0, n_cov, COV_CHUNK)]
    return cov + [("grid", range(s, s + row)) for s in range(0, n_points, row)]


def _compute(sim, spec, axes, fiducial, n_sim, n_cov, seed, out: Path, recipe: str, progress: bool) -> None:
    comm = world()
    chunks = _chunks(axes, n_cov)
    parts = parts_dir(out)
    points = axes.points()
    mine = [k for k in range(len(chunks)) if k % comm.size == comm.rank]

    def n_maps(k):
        kind, r = chunks[k]
        return len(r) if kind == "cov" else len(r) * n_sim

    bar = progress_bar(sum(n_maps(k) for k in mine), f"{sim.name} maps", progress)
    reused = 0
    with rank_local_work(f"{parts}: cannot write"):
        for k in mine:
            path = parts / f"chunk-{k:05d}.h5"
            if recipe_of(path) == recipe:
                reused += 1
            else:
                kind, r = chunks[k]
                if kind == "cov":
                    rows = spec.measure(sim.maps(fiducial, len(r), seed, n_sim + r.start))
                else:
                    rows = np.stack([spec.measure(sim.maps(points[i], n_sim, seed)).mean(axis=0) for i in r])
                _write_part(path, rows, recipe)
            bar.update(n_maps(k))
    bar.close()
    reused = comm.gather(reused, root=0)
    if comm.rank == 0:
        if sum(reused):
            print(f"{out}: reused {sum(reused)} of {len(chunks)} chunks from an earlier run", flush=True)
        with rank_local_work(f"{out}: cannot write"):
            _join(parts, chunks, out, sim, spec, axes, fiducial, n_sim, seed, recipe)


def _write_part(path: Path, rows: np.ndarray, recipe: str) -> None:
    with atomic_path(path) as tmp, hdf5_write(tmp, rows.nbytes) as f:
        f["rows"] = rows
        f.attrs["recipe_digest"] = recipe


def _join(parts: Path, chunks, out: Path, sim, spec: SummarySpec, axes: GridAxes, fiducial, n_sim, seed,
          recipe) -> None:
    cov, grid = [], []
    for k, (kind, _) in enumerate(chunks):
        with h5py.File(parts / f"chunk-{k:05d}.h5", "r") as f:
            (cov if kind == "cov" else grid).append(f["rows"][:])
    means = np.concatenate(grid).reshape(*axes.shape, spec.size)
    vectors = np.concatenate(cov)
    with atomic_path(out) as tmp, hdf5_write(tmp, means.nbytes + vectors.nbytes) as f:
        f["means"], f["fiducial_vectors"], f["fiducial"] = means, vectors, fiducial
        for i, v in enumerate(axes.values):
            f[f"axis_{i}"] = np.asarray(v)
        f.attrs.update({"format": FORMAT, "simulator": sim.name, "spec": json.dumps(spec.to_dict()),
                        "param_names": json.dumps(list(axes.names)), "n_sim": n_sim, "seed": seed,
                        "recipe_digest": recipe})
    shutil.rmtree(parts)

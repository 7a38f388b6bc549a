"""The emulator's mean data vector corrected by its own training maps (``--training-maps``).

A posterior from n_obs maps resolves each mean statistic to about 1/sqrt(n_obs) of one
map's scatter (0.3 sigma_map at 10 maps); an emulator that meets the validation targets
(means within 5-10%) can still be off by 0.4-0.7 sigma_map, which moves posteriors by 1-3
of their widths (docs/inference.md). The simulations it was trained on know its error
where they were run. At each training cosmology theta_k:

    delta_k = mean data vector of the training maps at theta_k
              - mean of the emulator's n_sim maps at theta_k (the grid's latent draws)

and between them delta(theta) is a thin-plate spline with a linear term through every
delta_k (scipy's RBFInterpolator, parameters normalised over the support), so a residual
linear in the parameters is removed exactly. The likelihood's mean becomes
mu(theta) + delta(theta); the covariance stays the emulator's. At theta_k the corrected
mean is the training maps' mean, whose own noise (1/n_k of a map's covariance) moves the
posterior by about sqrt((1/n_k) / (1/n_obs + 1/n_sim)) of its width: ``noise_in_sigma``.

Training cosmologies are split over ranks (cosmology k on rank k % size); every number
depends only on the maps, so the correction is the same for any number of ranks. It is
written to OUT/mean-correction.h5 and reused by a rerun with the same recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.data.format import MANIFEST_NAME, atomic_path, file_sha256, hdf5_write
from pipeline.data.loader import MapDataset
from pipeline.errors import DataError
from pipeline.infer.simulations import COV_CHUNK, SimulationTable
from pipeline.infer.simulators import Simulator
from pipeline.infer.summaries import SummarySpec
from pipeline.models.conditioning import ParamSupport, distinct_rows, point_label
from pipeline.parallel.comm import progress_bar, rank_local_work, world
from pipeline.stats.fanout import recipe_of

MIN_MAPS_PER_POINT = 16  # their mean's noise, 1/4 of a map's sigma, stays below the 0.4-0.7 errors it corrects
FILE_NAME = "mean-correction.h5"


@dataclass(frozen=True)
class TrainingMaps:
    """A dataset of maps at known cosmologies, checked against the emulator before any
    work: ``points`` (K, P) its distinct cosmologies in the run's parameter order, ``rows``
    the map indices at each."""

    path: Path
    points: np.ndarray
    rows: tuple[np.ndarray, ...]

    @property
    def n_maps(self) -> list[int]:
        return [len(r) for r in self.rows]


@dataclass(frozen=True)
class MeanCorrection:
    """delta_k (K, d) at the training cosmologies ``points`` (K, P), from ``n_maps`` (K,)
    training maps and the emulator's n_sim maps at each."""

    source: str
    points: np.ndarray
    residuals: np.ndarray
    n_maps: list[int]

    def at(self, points: np.ndarray, support: ParamSupport) -> np.ndarray:
        """delta (n, d) at ``points`` (n, P): the thin-plate spline through every delta_k."""
        from scipy.interpolate import RBFInterpolator

        def normalised(p):
            return support.normalise(torch.as_tensor(np.asarray(p, np.float64))).numpy()

        spline = RBFInterpolator(normalised(self.points), self.residuals, kernel="thin_plate_spline", degree=1)
        return spline(normalised(points))

    def applied_to(self, table: SimulationTable, support: ParamSupport) -> SimulationTable:
        """The table with delta(theta) added to its mean at every grid point (and this
        correction noted in it)."""
        delta = self.at(table.axes.points(), support).reshape(table.means.shape)
        return dataclasses.replace(table, means=table.means + delta, correction=self)

    def noise_in_sigma(self, n_obs: int, n_sim: int) -> float:
        """How far the training means' own noise can move a posterior, in its widths (the
        median training cosmology's maps)."""
        return float(np.sqrt((1 / np.median(self.n_maps)) / (1 / n_obs + 1 / n_sim)))

    def summary(self, n_obs: int, n_sim: int) -> dict:
        return {"training_maps": self.source, "points": len(self.points), "maps_per_point": self.n_maps,
                "noise_in_sigma": self.noise_in_sigma(n_obs, n_sim)}


def training_maps(path, support: ParamSupport, map_size: int, side_angle_deg: float) -> TrainingMaps:
    """Open and check ``--training-maps``: the emulator's geometry, its parameters named, every
    cosmology inside the support with MIN_MAPS_PER_POINT maps, enough cosmologies for a
    spline with a linear term (P + 2)."""
    from pipeline.infer.observed import check_map_geometry

    path = Path(path)
    where = f"--training-maps {path}"
    data = MapDataset(path)
    try:
        m = data.manifest
        check_map_geometry(where, m.map_shape, m.side_angle_deg, map_size, side_angle_deg)
        params = np.asarray(support.select(m.param_names, data.all_params(), where), np.float64)
    finally:
        data.close()
    outside = support.check(params, True, where)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise DataError(f"{where}: map {i} is at {point_label(support.names, params[i])}, outside the emulator's "
                        "training support; the correction is made from the maps it was trained on")
    points, which = distinct_rows(params)
    rows = tuple(np.flatnonzero(which == k) for k in range(len(points)))
    if len(points) < len(support.names) + 2:
        raise DataError(f"{where}: {len(points)} cosmologies; a correction over {len(support.names)} parameters "
                        f"needs at least {len(support.names) + 2}")
    few = [k for k, r in enumerate(rows) if len(r) < MIN_MAPS_PER_POINT]
    if few:
        k = few[0]
        raise DataError(f"{where}: {len(rows[k])} maps at {point_label(support.names, points[k])}; the correction "
                        f"needs at least {MIN_MAPS_PER_POINT} per cosmology")
    return TrainingMaps(path, points, rows)


def correction_recipe(table: SimulationTable, maps: TrainingMaps) -> str:
    recipe = {"table": table.recipe, "training_maps": file_sha256(maps.path / MANIFEST_NAME)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def mean_correction(sim: Simulator, table: SimulationTable, maps: TrainingMaps, out: Path,
                    progress: bool = True) -> MeanCorrection:
    """The correction at OUT/mean-correction.h5: reused when it holds this recipe, else
    computed over the ranks. Every rank returns it. The caller holds the output's lock."""
    comm = world()
    path = Path(out) / FILE_NAME
    recipe = correction_recipe(table, maps)
    if recipe_of(path) != recipe:
        mine = range(comm.rank, len(maps.points), comm.size)
        residuals = {}
        bar = progress_bar(sum(maps.n_maps[k] + table.n_sim for k in mine), "training maps", progress)
        with rank_local_work(f"--training-maps {maps.path}"):
            data = MapDataset(maps.path)
            try:
                for k in mine:
                    residuals[k] = (_mean_vector(data, maps.rows[k], table.spec)
                                    - table.spec.measure(sim.maps(maps.points[k], table.n_sim, table.seed)).mean(0))
                    bar.update(maps.n_maps[k] + table.n_sim)
            finally:
                data.close()
        bar.close()
        gathered = comm.gather(residuals, root=0)
        if comm.rank == 0:
            merged = {k: v for part in gathered for k, v in part.items()}
            with rank_local_work(f"{path}: cannot write"):
                _write(path, np.stack([merged[k] for k in range(len(maps.points))]), maps, recipe)
    comm.barrier()
    with h5py.File(path, "r") as f:
        return MeanCorrection(str(maps.path), f["points"][:], f["residuals"][:], [int(n) for n in f["n_maps"][:]])


def _mean_vector(data: MapDataset, rows: np.ndarray, spec: SummarySpec) -> np.ndarray:
    """The mean data vector (d,) of a dataset's maps ``rows``, read COV_CHUNK at a time."""
    total = np.zeros(spec.size)
    for s in range(0, len(rows), COV_CHUNK):
        maps, _ = data.read(rows[s:s + COV_CHUNK])
        if not np.isfinite(maps).all():
            raise DataError(f"{data.root}: a map among indices {rows[s]}..{rows[min(s + COV_CHUNK, len(rows)) - 1]} "
                            "has non-finite pixels")
        total += spec.measure(maps).sum(axis=0)
    return total / len(rows)


def _write(path: Path, residuals: np.ndarray, maps: TrainingMaps, recipe: str) -> None:
    with atomic_path(path) as tmp, hdf5_write(tmp, residuals.nbytes) as f:
        f["residuals"], f["points"], f["n_maps"] = residuals, maps.points, np.asarray(maps.n_maps)
        f.attrs["recipe_digest"] = recipe

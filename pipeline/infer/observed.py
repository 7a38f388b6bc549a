"""The observed maps an inference starts from: a dataset directory, a .npy file or a FITS file.

The n_obs maps are one survey: their data vectors are averaged. A dataset may hold maps of
many cosmologies (a test split); ``select`` picks the maps of one ("Omega_m=0.325,
sigma_8=0.75"), and the parameters they carry become the truth the report marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

ANGLE_RTOL = 1e-6  # relative: side angles this close are the same field (float32 manifests)


@dataclass(frozen=True)
class Observed:
    """maps: (n_obs, H, W) float32 kappa; truth: (P,) in the emulator's parameter order when
    every map carries the same parameters, else None; side_angle_deg: None when the file
    does not say (a .npy)."""

    maps: np.ndarray
    truth: np.ndarray | None
    source: str
    side_angle_deg: float | None

    @property
    def n_obs(self) -> int:
        return len(self.maps)


def load_observed(path: str | Path, param_names: tuple[str, ...], select: np.ndarray | None = None,
                  n_obs: int | None = None, hdu=None, side_angle_deg: float | None = None) -> Observed:
    """Read the survey at ``path``. select: (P,) a cosmology of the dataset to take the maps
    of; n_obs: keep the first n_obs maps; side_angle_deg: the field's side (degrees) when
    the file does not give it (or to check it against what it gives)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        maps, truth, side = _dataset(path, param_names, select, n_obs)
    elif path.is_dir():
        raise DataError(f"{path}: a directory without manifest.json is not a dataset")
    elif select is not None:
        raise DataError(f"--select {path}: only a dataset records the parameters of its maps")
    elif path.suffix.lower() == ".npy":
        from pipeline.data.importers import load_npy_maps

        maps, truth, side = np.asarray(load_npy_maps(path), np.float32), None, None
    elif path.suffix.lower() in (".fits", ".fit", ".fts") or path.name.lower().endswith((".fits.gz", ".fits.fz")):
        from pipeline.data.fits import read_fits_maps

        f = read_fits_maps(path, hdu)
        maps, truth, side = np.asarray(f.maps[:], np.float32), None, f.side_angle_deg
    elif not path.exists():
        raise DataError(f"{path}: no such file or directory")
    else:
        raise DataError(f"{path}: not a dataset directory, a .npy or a FITS file")
    if side is not None and side_angle_deg is not None and not _same_angle(side, side_angle_deg):
        raise DataError(f"{path}: the maps cover {side:g} deg, but --side-angle-deg says {side_angle_deg:g}")
    side = side if side is not None else side_angle_deg
    if n_obs is not None:
        if n_obs > len(maps):
            raise DataError(f"--n-obs {n_obs}: {path} holds {len(maps)} maps")
        maps = maps[:n_obs]
    bad = ~np.isfinite(maps).all(axis=(1, 2))
    if bad.any():
        raise DataError(f"{path}: map {int(np.flatnonzero(bad)[0])} contains NaN or Inf")
    return Observed(np.ascontiguousarray(maps), truth, str(path), side)


def check_geometry(observed: Observed, map_size: int, side_angle_deg: float) -> None:
    """The survey's maps must be the emulator's: the same pixels and field."""
    check_map_geometry(observed.source, observed.maps.shape[1:], observed.side_angle_deg, map_size, side_angle_deg)


def check_map_geometry(where: str, shape, side: float | None, map_size: int, side_angle_deg: float) -> None:
    """Maps of ``shape`` (H, W) covering ``side`` degrees (None: unknown) must be the
    emulator's map_size pixels a side and side_angle_deg."""
    h, w = shape
    if (h, w) != (map_size, map_size):
        raise DataError(f"{where}: maps are {h}x{w}, the emulator's are {map_size}x{map_size}")
    if side is not None and not _same_angle(side, side_angle_deg):
        raise DataError(f"{where}: maps cover {side:g} deg, the emulator's {side_angle_deg:g} deg")


def _same_angle(a: float, b: float) -> bool:
    return abs(a - b) <= ANGLE_RTOL * max(abs(a), abs(b))


def _dataset(path: Path, param_names, select, n_obs):
    from pipeline.data.loader import MapDataset
    from pipeline.models.conditioning import distinct_rows, rows_at

    data = MapDataset(path)
    try:
        m = data.manifest
        have = all(n in m.param_names for n in param_names)
        params = (data.all_params()[:, [m.param_names.index(n) for n in param_names]].astype(np.float64)
                  if have else np.zeros((m.n_maps, 0)))
        rows = np.arange(m.n_maps)
        if select is not None:
            if not have:
                raise DataError(f"--select: {path} does not record {', '.join(param_names)} for its maps")
            rows = rows_at(params, select)
            if not len(rows):
                raise DataError(f"--select: {path} holds no map at "
                                + ", ".join(f"{n}={v:g}" for n, v in zip(param_names, select)))
        if n_obs is not None:
            if n_obs > len(rows):
                raise DataError(f"--n-obs {n_obs}: {path} holds {len(rows)} maps" + (" there" if select is not None
                                                                                      else ""))
            rows = rows[:n_obs]
        truth = None
        if have and len(rows):
            points, _ = distinct_rows(params[rows])
            if len(points) > 1:
                raise DataError(f"{path}: holds maps of {len(points)} cosmologies; a survey is of one "
                                "(--select NAME=VALUE,... picks one)")
            truth = params[rows[0]]
        maps, _ = data.read(rows)
        return maps, truth, m.side_angle_deg
    finally:
        data.close()

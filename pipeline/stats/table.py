"""The stats table: one HDF5 file of per-map statistics plus the bin definitions.

Datasets (n = maps, ordered by map index): ``index`` (n,) int64, ``params``
(n, P), ``power_spectrum`` (n, n_ell), ``minkowski`` (n, 3, T) (V0, V1, V2),
``peaks`` (n, T), ``pdf`` (n, T), ``moments`` (n, 9); bins: ``ell`` (n_ell,)
centres and ``l_edges`` (n_ell+1,) in rad^-1, ``thresholds`` (T+1,) edges in
kappa and ``nu`` (T,) their midpoints. Attributes name the source dataset (its
manifest digest), the map shape and side angle, and the threshold scale sigma.
Statistics are float64 and in the conventions of docs/statistics.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import DataError
from pipeline.stats.bins import Bins

FORMAT_NAME = "cosmogan-stats"
FORMAT_VERSION = 1
PER_MAP = ("index", "params", "power_spectrum", "minkowski", "peaks", "pdf", "moments")


@dataclass
class TableHeader:
    """What a table describes: its source dataset and geometry, and the bins."""

    source: str
    source_digest: str
    map_shape: tuple
    side_angle_deg: float
    param_names: list
    bins: Bins
    moment_names: list

    def attrs(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "source": self.source,
                "source_manifest_digest": self.source_digest, "map_shape": list(self.map_shape),
                "side_angle_deg": self.side_angle_deg, "param_names": json.dumps(self.param_names),
                "threshold_sigma": self.bins.sigma, "moment_names": json.dumps(self.moment_names),
                "bins_digest": self.bins.digest()}


def write_table(f: h5py.File, header: TableHeader, columns: dict) -> None:
    """Write the bins, the header attributes and the per-map columns into an open file."""
    f.attrs.update(header.attrs())
    f["l_edges"] = np.asarray(header.bins.l_edges)
    f["ell"] = header.bins.ell
    f["thresholds"] = np.asarray(header.bins.thresholds)
    f["nu"] = header.bins.nu
    for key in PER_MAP:
        f[key] = columns[key]


@dataclass
class StatsTable:
    """A stats table read into memory (tables are small: ~1 kB per map)."""

    path: str
    header: TableHeader
    columns: dict

    @property
    def n_maps(self) -> int:
        return len(self.columns["index"])


def read_table(path: str | Path) -> StatsTable:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such stats table")
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("format") != FORMAT_NAME:
                raise DataError(f"{path}: not a stats table (format {a.get('format')!r})")
            if a.get("format_version") != FORMAT_VERSION:
                raise DataError(f"{path}: stats format_version {a.get('format_version')} is not readable")
            missing = [k for k in PER_MAP + ("l_edges", "thresholds") if k not in f]
            if missing:
                raise DataError(f"{path}: missing dataset {missing[0]!r}")
            bins = Bins(tuple(f["l_edges"][:].tolist()), tuple(f["thresholds"][:].tolist()),
                        float(a["threshold_sigma"]))
            header = TableHeader(str(a["source"]), str(a["source_manifest_digest"]),
                                 tuple(int(x) for x in a["map_shape"]), float(a["side_angle_deg"]),
                                 json.loads(a["param_names"]), bins, json.loads(a["moment_names"]))
            columns = {k: f[k][:] for k in PER_MAP}
    except OSError:
        raise DataError(f"{path}: not a readable HDF5 file") from None
    n = len(columns["index"])
    if n == 0:
        raise DataError(f"{path}: stats table holds no maps")
    for k in PER_MAP:
        if len(columns[k]) != n:
            raise DataError(f"{path}: {k!r} has {len(columns[k])} rows, 'index' has {n}")
    return StatsTable(str(path), header, columns)


def write_rows(table: StatsTable, rows, path: str | Path) -> Path:
    """A new table at ``path`` (atomically) holding the given rows (indices into ``table``) of
    ``table``, with its header and bins: e.g. the maps of one cosmology of a reference."""
    from pipeline.data.format import atomic_path, hdf5_write

    rows = np.asarray(rows, np.int64)
    if not len(rows):
        raise DataError(f"{path}: no rows to write")
    columns = {k: table.columns[k][rows] for k in PER_MAP}
    with atomic_path(Path(path)) as tmp, hdf5_write(tmp, sum(c.nbytes for c in columns.values())) as f:
        write_table(f, table.header, columns)
    return Path(path)

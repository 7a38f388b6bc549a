"""Checking a dataset: manifest, checksums, shapes, dtypes, finite values.

``check_shard_layout`` is the cheap check every reader runs when it opens a
shard; ``verify_dataset`` adds checksums and a scan of every value. Each
problem raises DataError naming the file (and map index or key).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.data.format import MAP_DTYPE, Manifest, ShardInfo, file_sha256, read_manifest
from pipeline.errors import DataError

# Maps scanned per read when checking values: bounds memory at 256x256 to 16 MiB.
_SCAN_BLOCK = 64


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only, turning HDF5's errors into one line."""
    if not path.is_file():
        raise DataError(f"{path}: shard file is missing")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?)") from None


def check_shard_layout(f: h5py.File, path: Path, info: ShardInfo, manifest: Manifest) -> None:
    """Datasets present, dtypes, ranks and shapes agree with the manifest entry."""
    n, (h, w), p = info.n_maps, manifest.map_shape, len(manifest.param_names)
    for key in ("maps", "params", "index"):
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DataError(f"{path}: missing dataset {key!r}")
    maps, params, index = f["maps"], f["params"], f["index"]
    if maps.dtype != MAP_DTYPE:
        raise DataError(f"{path}: 'maps' has dtype {maps.dtype}, expected float32")
    if maps.ndim != 3:
        raise DataError(f"{path}: 'maps' has rank {maps.ndim} (shape {maps.shape}), expected (n, H, W)")
    if maps.shape[0] == 0:
        raise DataError(f"{path}: shard is empty (0 maps)")
    if maps.shape[1:] != (h, w):
        raise DataError(f"{path}: maps are {maps.shape[1]}x{maps.shape[2]}, the manifest says {h}x{w}")
    if maps.shape[0] != n:
        raise DataError(f"{path}: holds {maps.shape[0]} maps, the manifest says {n}")
    if params.shape != (n, p) or params.dtype != MAP_DTYPE:
        raise DataError(f"{path}: 'params' is {params.dtype} {params.shape}, expected float32 {(n, p)}")
    if index.shape != (n,) or index.dtype.kind != "i":
        raise DataError(f"{path}: 'index' is {index.dtype} {index.shape}, expected int64 {(n,)}")


def verify_dataset(dataset_dir: str | Path, check_values: bool = True) -> Manifest:
    """Full check of a dataset; returns its manifest or raises DataError at the first problem."""
    root = Path(dataset_dir)
    manifest = read_manifest(root)
    for info in manifest.shards:
        path = root / info.path
        if not path.is_file():
            raise DataError(f"{path}: shard named in the manifest is missing")
        if file_sha256(path) != info.sha256:
            raise DataError(f"{path}: sha256 does not match the manifest (file changed or corrupt)")
        with open_shard(path) as f:
            check_shard_layout(f, path, info, manifest)
            _check_index(f, path, info)
            if check_values:
                _check_values(f, path, info)
    return manifest


def _check_index(f: h5py.File, path: Path, info: ShardInfo) -> None:
    index = f["index"][:]
    expected = np.arange(info.first_index, info.first_index + info.n_maps)
    if not np.array_equal(index, expected):
        bad = int(np.flatnonzero(index != expected)[0])
        raise DataError(f"{path}: index[{bad}] is {index[bad]}, expected {expected[bad]}")


def _check_values(f: h5py.File, path: Path, info: ShardInfo) -> None:
    maps, params = f["maps"], f["params"]
    try:
        for start in range(0, info.n_maps, _SCAN_BLOCK):
            block = maps[start:start + _SCAN_BLOCK]
            finite = np.isfinite(block).all(axis=(1, 2))
            if not finite.all():
                local = start + int(np.flatnonzero(~finite)[0])
                raise DataError(f"{path}: map {info.first_index + local} (maps[{local}]) "
                                "contains NaN or Inf")
        if not np.isfinite(params[:]).all():
            raise DataError(f"{path}: 'params' contains NaN or Inf")
    except OSError:
        raise DataError(f"{path}: read error in 'maps' (truncated or corrupt shard)") from None

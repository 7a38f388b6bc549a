"""Bringing users' own maps into the dataset format: .npy files and HDF5 datasets.

Sources are read in blocks (np.load with mmap_mode="r", or h5py slicing), so a
file far larger than memory streams through. The dataset is built in a
temporary sibling directory and renamed into place only when every map has
been checked finite, so a bad input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from pipeline import __version__
from pipeline.data.format import Manifest, ShardWriter, shard_name, write_manifest
from pipeline.errors import DataError

# Maps converted per block: bounds memory (256x256 float64: 64 blocks of 32 MiB).
_BLOCK = 64


def load_npy_maps(path: str | Path):
    """Memory-map a .npy file of maps (n, H, W), (n, 1, H, W) or (n, H, W, 1) without reading it."""
    return _as_map_stack(load_npy(path), str(path))


def load_npy(path: str | Path) -> np.ndarray:
    """Memory-map any .npy array (e.g. per-map parameters (n, P))."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def open_h5_maps(path: str | Path, key: str):
    """Open an HDF5 dataset of maps (n, H, W), (n, 1, H, W) or (n, H, W, 1); returns (file, dataset)."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError:
        raise DataError(f"{path}: not a readable HDF5 file") from None
    if key not in f or not isinstance(f[key], h5py.Dataset):
        f.close()
        raise DataError(f"{path}: no dataset {key!r}")
    try:
        return f, _as_map_stack(f[key], f"{path}:{key}")
    except DataError:
        f.close()
        raise


def _as_map_stack(arr, where: str):
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{where}: dtype {arr.dtype} is not numeric")
    if arr.ndim == 4 and arr.shape[1] == 1:
        return _Squeezed(arr, channel_axis=1)
    if arr.ndim == 4 and arr.shape[3] == 1:
        return _Squeezed(arr, channel_axis=3)
    if arr.ndim != 3:
        raise DataError(f"{where}: shape {tuple(arr.shape)} is not (n, H, W), (n, 1, H, W) or (n, H, W, 1)")
    if min(arr.shape) == 0:
        raise DataError(f"{where}: shape {tuple(arr.shape)} holds no maps")
    return arr


class _Squeezed:
    """View (n, 1, H, W) or (n, H, W, 1) as (n, H, W) while keeping block reads lazy."""

    def __init__(self, arr, channel_axis: int):
        self._arr, self._axis = arr, channel_axis
        self.shape = tuple(d for i, d in enumerate(arr.shape) if i != channel_axis)
        self.dtype = arr.dtype
        self.ndim = 3

    def __getitem__(self, s):
        return np.take(self._arr[s], 0, axis=self._axis)


def import_maps(maps, out_dir: str | Path, side_angle_deg: float, source_path: str | Path,
                source_key: str | None = None, shard_size: int = 256, params=None, param_names: list[str] | None = None,
                progress: bool = True) -> Manifest:
    """Stream ``maps`` (n, H, W) into a dataset at out_dir; ``params`` (n, P) is optional.

    side_angle_deg: the field's side in degrees. Maps are stored as float32
    kappa; values are not transformed.
    """
    out = Path(out_dir)
    source = f"{source_path}:{source_key}" if source_key else str(source_path)
    if not side_angle_deg > 0:
        raise DataError(f"--side-angle-deg must be positive, got {side_angle_deg}")
    if shard_size <= 0:
        raise DataError(f"--shard-size must be positive, got {shard_size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose another --out or remove it")
    n, h, w = maps.shape
    param_names = list(param_names or [])
    if params is not None:
        if params.ndim != 2 or params.shape[0] != n or params.shape[1] != len(param_names):
            raise DataError(f"{source}: params have shape {tuple(params.shape)}, expected "
                            f"({n}, {len(param_names)}) to match the maps and --param-names")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        shards = []
        with tqdm(total=n, desc=f"import {Path(source_path).name}", unit="map", disable=not progress) as bar:
            for k, first in enumerate(range(0, n, shard_size)):
                count = min(shard_size, n - first)
                attrs = {"side_angle_deg": side_angle_deg, "units": "kappa (dimensionless)",
                         "source": source}
                with ShardWriter(tmp / shard_name(k), count, (h, w), param_names, first, attrs) as wr:
                    for start in range(first, first + count, _BLOCK):
                        stop = min(start + _BLOCK, first + count)
                        block = np.asarray(maps[start:stop], dtype=np.float32)
                        bad = ~np.isfinite(block).all(axis=(1, 2))
                        if bad.any():
                            raise DataError(f"{source}: map {start + int(np.flatnonzero(bad)[0])} "
                                            "contains NaN or Inf (or overflows float32)")
                        p = (np.zeros((stop - start, 0), np.float32) if params is None
                             else np.asarray(params[start:stop], np.float32))
                        wr.write(start - first, block, p)
                        bar.update(stop - start)
                    shards.append(wr.commit())
        manifest = Manifest(n_maps=n, map_shape=(h, w), side_angle_deg=float(side_angle_deg),
                            param_names=param_names, shards=shards,
                            provenance={"generator": "import", "source": _describe(source_path),
                                        "source_key": source_key,
                                        "pipeline_version": __version__})
        write_manifest(tmp, manifest)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
        return manifest
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


def _describe(path: str | Path) -> dict:
    """Name, size and mtime of the source: cheap provenance, no second read of a huge file."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}

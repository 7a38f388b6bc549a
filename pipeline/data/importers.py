"""Bringing users' own maps into the dataset format: .npy files and HDF5 datasets.

Sources are read in blocks (np.load with mmap_mode="r", or h5py slicing), so a
file far larger than memory streams through. The dataset is built in a
hidden sibling directory and renamed into place only when every map has
been checked finite, so a bad input leaves nothing behind; a killed import
resumes from its complete shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from pipeline import __version__
from pipeline.data.format import (MANIFEST_NAME, Manifest, ShardInfo, ShardWriter, file_sha256, note_hdf5_failure,
                                  raised_by_hdf5, read_manifest, shard_name, write_manifest)
from pipeline.errors import DataError, os_error_text
from pipeline.locking import output_lock

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
        arr = _Squeezed(arr, channel_axis=1)
    elif arr.ndim == 4 and arr.shape[3] == 1:
        arr = _Squeezed(arr, channel_axis=3)
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


def import_maps(maps, out_dir: str | Path, side_angle_deg: float, source_path: str | Path | list[str | Path],
                source_key: str | None = None, shard_size: int = 256, params=None, param_names: list[str] | None = None,
                progress: bool = True, params_path: str | Path | None = None) -> Manifest:
    """Stream ``maps`` (n, H, W) into a dataset at out_dir; ``params`` (n, P) is optional.

    source_path: the file the maps come from, or a list of files whose maps were
    concatenated in that order (provenance then lists them). side_angle_deg: the field's
    side in degrees. Maps are stored as float32 kappa; values are not transformed. The
    shards are written into a hidden sibling ``.NAME.import``, which is renamed to out_dir
    when every map and parameter was found finite. A bad value removes it (nothing is
    left); a killed import leaves it, and the same command run again keeps its complete
    shards and writes only the rest. Run again after it finished, it returns the manifest
    there and writes nothing.
    """
    out = Path(out_dir)
    source = _source_text(source_path)
    source = f"{source}:{source_key}" if source_key else source
    if not (math.isfinite(side_angle_deg) and side_angle_deg > 0):
        raise DataError(f"--side-angle-deg must be a positive number of degrees, got {side_angle_deg}")
    if shard_size <= 0:
        raise DataError(f"--shard-size must be positive, got {shard_size}")
    n, h, w = maps.shape
    param_names = list(param_names or [])
    repeated = sorted({p for p in param_names if param_names.count(p) > 1})
    if repeated:
        raise DataError(f"--param-names: {', '.join(repeated)} given more than once")
    if params is not None:
        if params.ndim != 2 or params.shape[0] != n or params.shape[1] != len(param_names):
            raise DataError(f"{source}: params have shape {tuple(params.shape)}, expected "
                            f"({n}, {len(param_names)}) to match the maps and --param-names")
    recipe = {"source": _describe_sources(source_path), "source_key": source_key, "shard_size": shard_size,
              "side_angle_deg": float(side_angle_deg), "param_names": param_names,
              "params": _describe(params_path) if params_path is not None else None}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out.parent}: cannot create the output's directory ({os_error_text(e)})") from None
    with output_lock(out, "import"):
        finished = _finished_import(out, digest)
        if finished is not None:
            return finished
        try:
            return _import(maps, out, source, source_path, source_key, side_angle_deg, shard_size, params,
                           param_names, digest, progress)
        except OSError as e:
            if raised_by_hdf5(e):
                note_hdf5_failure()
            raise DataError(f"{out}: cannot write the dataset ({os_error_text(e)}); run the same command "
                            "again to finish it") from None


def _import(maps, out: Path, source: str, source_path, source_key, side_angle_deg, shard_size, params,
            param_names, digest: str, progress: bool) -> Manifest:
    n, h, w = maps.shape
    tmp = out.with_name(f".{out.name}.import")
    done = _resumable_shards(tmp, digest)
    try:
        shards = []
        with tqdm(total=n, desc=f"import {Path(_source_text(source_path)).name}", unit="map",
                  disable=not progress) as bar:
            for k, first in enumerate(range(0, n, shard_size)):
                count = min(shard_size, n - first)
                if k in done:  # complete from a killed run of the same import
                    shards.append(done[k])
                    bar.update(count)
                    continue
                attrs = {"side_angle_deg": side_angle_deg, "units": "kappa (dimensionless)",
                         "source": source, "recipe_digest": digest}
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
                        bad = ~np.isfinite(p).all(axis=1)
                        if bad.any():
                            raise DataError(f"--params: row {start + int(np.flatnonzero(bad)[0])} contains NaN or "
                                            "Inf (or overflows float32)")
                        wr.write(start - first, block, p)
                        bar.update(stop - start)
                    shards.append(wr.commit())
        manifest = Manifest(n_maps=n, map_shape=(h, w), side_angle_deg=float(side_angle_deg),
                            param_names=param_names, shards=shards,
                            provenance={"generator": "import", "source": _describe_sources(source_path),
                                        "source_key": source_key, "recipe_digest": digest,
                                        "pipeline_version": __version__})
        write_manifest(tmp, manifest)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
        return manifest
    except DataError:  # bad input: nothing is left behind
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


def _finished_import(out: Path, digest: str) -> Manifest | None:
    """The manifest at ``out`` if the same import (same recipe digest) already finished there,
    so that running the command again is a no-op (as make-data's is); None if ``out`` is
    missing or empty. Anything else at ``out`` is refused: an import never writes over it."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if (out / MANIFEST_NAME).is_file():
        with contextlib.suppress(DataError):
            manifest = read_manifest(out)
            if manifest.provenance.get("recipe_digest") == digest:
                return manifest
    raise DataError(f"{out}: already exists and is not empty; choose another --out or remove it")


def _resumable_shards(tmp: Path, digest: str) -> dict[int, ShardInfo]:
    """The complete shards a killed run of the same import left in ``tmp`` (created if
    missing, mode per umask); anything else there (partial files, another import's shards)
    is removed."""
    if tmp.exists() and not tmp.is_dir():
        tmp.unlink()
    tmp.mkdir(exist_ok=True)
    done = {}
    for f in sorted(tmp.iterdir()):
        k = _shard_number(f.name)
        info = _complete_shard(f, digest) if k is not None else None
        if info is None:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        else:
            done[k] = info
    return done


def _shard_number(name: str) -> int | None:
    if name.startswith("shard-") and name.endswith(".h5") and name[6:-3].isdigit():
        return int(name[6:-3])
    return None


def _complete_shard(path: Path, digest: str) -> ShardInfo | None:
    try:
        with h5py.File(path, "r") as f:
            if str(f.attrs.get("recipe_digest", "")) != digest:
                return None
            first, count = int(f["index"][0]), len(f["index"])
    except (OSError, KeyError, IndexError):
        return None
    return ShardInfo(path.name, first, count, file_sha256(path))


def _source_text(source_path) -> str:
    """The source for messages and shard attributes: the file, or the first of a list and a count."""
    if isinstance(source_path, (str, Path)):
        return str(source_path)
    paths = [str(p) for p in source_path]
    return paths[0] + (f" (+{len(paths) - 1} more files)" if len(paths) > 1 else "")


def _describe_sources(source_path) -> dict | list[dict]:
    """_describe of the source file, or a list of them for a list of files."""
    if isinstance(source_path, (str, Path)):
        return _describe(source_path)
    return [_describe(p) for p in source_path]


def _describe(path: str | Path) -> dict:
    """Name, size and mtime of the source: cheap provenance, no second read of a huge file."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}

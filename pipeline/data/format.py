"""The dataset format: ``manifest.json`` plus HDF5 shards (docs/data-format.md).

A dataset directory holds ``manifest.json`` and shard files ``shard-NNNNN.h5``.
Each shard has ``maps`` float32 (n, H, W) chunked one map per chunk (kappa,
dimensionless, physical units), ``params`` float32 (n, P) and ``index`` int64
(n,) global map indices. The manifest is written last: a directory without one
is incomplete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import DataError

FORMAT_NAME = "cosmogan-dataset"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
MAP_DTYPE = np.dtype("float32")


def shard_name(shard_number: int) -> str:
    return f"shard-{shard_number:05d}.h5"


@dataclass
class ShardInfo:
    """One shard's entry in the manifest: maps first_index .. first_index + n_maps - 1."""

    path: str
    first_index: int
    n_maps: int
    sha256: str


@dataclass
class DesignRecord:
    """The cosmologies a dataset was made from. kind: "grid", "latin_hypercube", "points" (the
    config's design kinds) or "requested" (generated maps at asked-for parameters);
    points: the resolved cosmologies, one row per point in ``param_names`` order (map i of
    make-data's splits has point i % len(points)); spec: the settings that produced them;
    matched_seeds: map i drew realisation i // len(points) of the random fields, the same
    at every point (else realisation i)."""

    kind: str
    param_names: list[str]
    points: list[list[float]]
    spec: dict = field(default_factory=dict)
    matched_seeds: bool = False

    def realisations(self, index) -> np.ndarray:
        """The realisation of the random fields each map index drew (int64, like index):
        index // len(points) with matched_seeds (shared by every point), else the index
        itself (each map its own, so no two cosmologies share one)."""
        index = np.asarray(index, np.int64)
        return index // len(self.points) if self.matched_seeds else index


@dataclass
class Manifest:
    """What a dataset holds. side_angle_deg: field side in degrees; map_shape: (H, W) pixels;
    design: the cosmologies it was made from (None for imported maps)."""

    n_maps: int
    map_shape: tuple[int, int]
    side_angle_deg: float
    param_names: list[str]
    provenance: dict
    shards: list[ShardInfo] = field(default_factory=list)
    design: DesignRecord | None = None
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = asdict(self)
        d["map_shape"] = list(self.map_shape)
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Manifest":
        if not isinstance(d, dict):
            raise DataError(f"{where}: manifest must be a JSON object")
        if d.get("format") != FORMAT_NAME:
            raise DataError(f"{where}: format is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        version = d.get("format_version")
        if version not in READABLE_VERSIONS:
            raise DataError(f"{where}: format_version {version!r} is not readable by this version "
                            f"(reads {', '.join(map(str, READABLE_VERSIONS))})")
        try:
            shards = [ShardInfo(path=str(s["path"]), first_index=_int(s["first_index"]),
                                n_maps=_int(s["n_maps"]), sha256=str(s["sha256"]))
                      for s in d["shards"]]
            shape = tuple(_int(x) for x in d["map_shape"])
            design = d.get("design")
            if design is not None:
                design = DesignRecord(kind=str(design["kind"]), param_names=[str(p) for p in design["param_names"]],
                                      points=[[float(v) for v in row] for row in design["points"]],
                                      spec=dict(design.get("spec", {})),
                                      matched_seeds=bool(design.get("matched_seeds", False)))
            m = cls(n_maps=_int(d["n_maps"]), map_shape=shape,
                    side_angle_deg=float(d["side_angle_deg"]),
                    param_names=[str(p) for p in d["param_names"]],
                    provenance=dict(d.get("provenance", {})), shards=shards, design=design)
        except KeyError as e:
            raise DataError(f"{where}: missing key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed entry ({e})") from None
        if len(shape) != 2 or min(shape) <= 0:
            raise DataError(f"{where}: map_shape must be two positive sizes, got {list(shape)}")
        if not (math.isfinite(m.side_angle_deg) and m.side_angle_deg > 0):
            raise DataError(f"{where}: side_angle_deg must be a positive number, got {m.side_angle_deg}")
        expected_first = 0
        for s in shards:
            if Path(s.path).name != s.path:
                raise DataError(f"{where}: shard path {s.path!r} must be a plain file name in the dataset directory")
            if s.first_index != expected_first or s.n_maps <= 0:
                raise DataError(f"{where}: shard {s.path} covers maps {s.first_index}.."
                                f"{s.first_index + s.n_maps - 1}, expected to start at {expected_first} "
                                "with at least one map")
            expected_first += s.n_maps
        if expected_first != m.n_maps:
            raise DataError(f"{where}: shards hold {expected_first} maps, n_maps says {m.n_maps}")
        return m

    def digest(self) -> str:
        """sha256 of the canonical manifest: names this exact dataset (stats tables record it)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _int(x) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"expected an integer, got {x!r}")
    return x


def read_manifest(dataset_dir: str | Path) -> Manifest:
    """Read and check the structure of ``dataset_dir/manifest.json`` (no shard I/O)."""
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        what = "is not a directory" if not Path(dataset_dir).is_dir() else f"has no {MANIFEST_NAME}"
        raise DataError(f"{dataset_dir}: {what} (not a dataset, or an incomplete one)")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None
    return Manifest.from_dict(d, str(path))


def write_manifest(dataset_dir: str | Path, manifest: Manifest) -> None:
    atomic_write_bytes(Path(dataset_dir) / MANIFEST_NAME, manifest.to_json().encode())


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# atomic writes: temporary name in the same directory, flush, fsync, rename

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def remove_temporaries(directory: Path, prefix: str = ".") -> int:
    """Delete the temporary files ``atomic_path`` leaves in ``directory`` (those whose names
    start with ``prefix``) when a process is killed mid-write: never complete, so never
    needed; returns how many. Call it only while holding the output's lock: another
    writer's in-flight files look the same."""
    n = 0
    for stale in Path(directory).glob(f"{prefix}*.tmp") if Path(directory).is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            n += 1
    return n


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it into place on success, remove it on error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; datasets are shared with a group
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- HDF5 writes that fail -------------------------------------------------------------
# A file HDF5 could not flush (a full disk) stays open in the library in a failed state:
# its handles print "Exception ignored" tracebacks when freed, and HDF5's own clean-up at
# interpreter exit then crashes (a segmentation fault). So a failed write is noted, the
# handles' messages are silenced (the error is reported once, by the stage), and the
# process leaves with os._exit once it has said so (``exit_after_error``).
_hdf5_failed = False


def ensure_space(directory: Path, nbytes: int, what: str) -> None:
    """Refuse, with ENOSPC, a write of ``nbytes`` (plus 1 MiB for HDF5's metadata) into a
    directory whose file system has less free: HDF5 must never meet a full disk, since it
    keeps a file it could not flush in a failed state (see note_hdf5_failure)."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < nbytes + (1 << 20):
        raise OSError(errno.ENOSPC, f"{what} needs {nbytes + (1 << 20)} bytes, {free} free")


@contextlib.contextmanager
def hdf5_write(path: Path, nbytes: int):
    """h5py.File(path, "w") for about ``nbytes`` of data, the space checked first
    (ensure_space) and a failure noted for ``exit_after_error``."""
    ensure_space(Path(path).parent, nbytes, Path(path).name)
    try:
        f = h5py.File(path, "w")
    except (OSError, RuntimeError):
        note_hdf5_failure()
        raise
    try:
        yield f
        f.close()
    except BaseException as e:
        if isinstance(e, (OSError, RuntimeError)):
            note_hdf5_failure()
        with contextlib.suppress(Exception):
            f.close()
        raise


def note_hdf5_failure() -> None:
    global _hdf5_failed
    _hdf5_failed = True


def raised_by_hdf5(e: BaseException) -> bool:
    """Whether h5py (hence HDF5) raised ``e``: a frame of its traceback is in h5py."""
    tb = e.__traceback__
    while tb is not None:
        if "/h5py/" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def quiet_hdf5_handles() -> None:
    """Silence the "Exception ignored" reports of h5py handles freed after a failed write
    (the failure itself is reported by the call that raised it); other ones still print."""
    default = sys.unraisablehook

    def quiet(unraisable):
        if not (isinstance(unraisable.exc_value, (OSError, RuntimeError))
                and "h5py" in f"{unraisable.object!r} {unraisable.err_msg}"):
            default(unraisable)
    sys.unraisablehook = quiet


def exit_after_error(code: int) -> None:
    """End the process with ``code``: os._exit after an HDF5 write failed (see above), else
    a normal exit."""
    if _hdf5_failed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def hdf5_failed() -> bool:
    return _hdf5_failed


class ShardWriter:
    """Writes one shard under a temporary name; ``commit`` renames it into place.

    Used as a context manager: leaving it by an exception removes the
    temporary file, so a crash never leaves a shard that looks complete.
    """

    def __init__(self, path: Path, n_maps: int, map_shape: tuple[int, int], param_names: list[str],
                 first_index: int, attrs: dict):
        self.path = Path(path)
        self.n_maps = n_maps
        self.first_index = first_index
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        h, w = map_shape
        try:
            ensure_space(self.path.parent, n_maps * (4 * h * w + 4 * len(param_names) + 8), self.path.name)
            self._file = h5py.File(self._tmp, "w")
        except BaseException as e:
            if raised_by_hdf5(e):
                note_hdf5_failure()
            self._ctx.__exit__(type(e), e, None)
            raise
        self.maps = self._file.create_dataset("maps", (n_maps, h, w), dtype=MAP_DTYPE, chunks=(1, h, w))
        self.params = self._file.create_dataset("params", (n_maps, len(param_names)), dtype=MAP_DTYPE)
        self._file.create_dataset("index", data=np.arange(first_index, first_index + n_maps, dtype=np.int64))
        for key, value in {**attrs, "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                           "param_names": json.dumps(param_names)}.items():
            self._file.attrs[key] = value

    def write(self, offset: int, maps: np.ndarray, params: np.ndarray) -> None:
        """Write maps[offset : offset + len(maps)] (float32 kappa) and their params."""
        self.maps[offset:offset + len(maps)] = maps
        self.params[offset:offset + len(maps)] = params

    def commit(self) -> ShardInfo:
        self._file.flush()
        self._file.close()
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        sha = file_sha256(self._tmp)
        self._ctx.__exit__(None, None, None)
        return ShardInfo(self.path.name, self.first_index, self.n_maps, sha)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            if issubclass(exc_type, (OSError, RuntimeError)):
                note_hdf5_failure()
            with contextlib.suppress(Exception):
                self._file.close()
            self._ctx.__exit__(exc_type, exc, tb)
        return False

"""Reading users' maps from FITS images (astropy.io.fits), e.g. LensTools ConvergenceMap files.

A FITS image is a 2-D map (H, W) or a 3-D cube (n, H, W) (numpy axis order: NAXIS3 is n).
LensTools writes one map per file: the image in the primary HDU and its side angle, in
degrees, in the header keyword ``ANGLE``. Nothing is loaded when a file is opened: the maps
are read a block at a time through astropy's ``section`` (memory-mapped where the pixels are
stored raw; it also applies BSCALE/BZERO and decompresses the tiles of a compressed image),
converted from FITS's big-endian bytes to native float32 and checked finite.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from pipeline.errors import DataError, os_error_text

# Two side angles (degrees) closer than this, relatively, are the same field.
ANGLE_RTOL = 1e-9


@dataclass(frozen=True)
class FitsMaps:
    """The maps of one image HDU of a FITS file.

    maps: (n, H, W) array-like, read on demand; every slice of it is a native float32
    ndarray (a 2-D image is one map, n = 1). side_angle_deg: the header's ``ANGLE`` in
    degrees (from the primary header when the image's own has none), or None.
    hdu: the index of the HDU read. path: the file.
    """

    maps: FitsCube
    side_angle_deg: float | None
    hdu: int
    path: Path


def read_fits_maps(path: str | Path, hdu: int | str | None = None) -> FitsMaps:
    """Open the maps of a FITS file without reading them.

    hdu: an HDU index or EXTNAME; by default the first HDU holding image data (the
    primary HDU if it has data, else the first ImageHDU or CompImageHDU). Raises DataError
    (one line naming the file and HDU) for a file that is not FITS, no or a missing HDU,
    a table, an image that is not 2-D or 3-D or holds no pixels, a truncated file, or an
    ``ANGLE`` that is not a positive finite number of degrees.
    """
    path = Path(path)
    try:
        with _quiet(), _open(path) as hdul:
            k = _hdu_index(hdul, hdu, path)
            h = hdul[k]
            where = f"{path}: HDU {k}" + (f" ({h.name})" if h.name and h.name != "PRIMARY" else "")
            if not getattr(h, "is_image", False):
                raise DataError(f"{where} is a {type(h).__name__}, not an image")
            shape = tuple(int(d) for d in h.shape)
            if not shape:
                raise DataError(f"{where} holds no image data (NAXIS = 0)")
            if len(shape) not in (2, 3):
                raise DataError(f"{where}: image has {len(shape)} dimensions (shape {shape}); expected a "
                                "2-D map (H, W) or a 3-D cube (n, H, W)")
            if min(shape) == 0:
                raise DataError(f"{where}: shape {shape} holds no maps")
            _check_complete(h, shape, where, path)
            angle = _side_angle(hdul, k, where, path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        raise DataError(f"{path}: not a readable FITS file ({_first_sentence(e)})") from None
    return FitsMaps(FitsCube(path, k, shape, where), angle, k, path)


class _LazyMaps:
    """An (n, H, W) array-like whose reads (``x[i]``, ``x[a:b]``, ``np.asarray(x)``) give
    native float32 ndarrays; subclasses read a contiguous run of maps in ``_read``."""

    ndim = 3
    dtype = np.dtype(np.float32)
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        picked = range(self.shape[0])[key]  # an int or a range; IndexError past the end
        if isinstance(picked, int):
            return self._read(picked, picked + 1)[0]
        if picked.step == 1 or len(picked) == 0:
            return self._read(picked.start, max(picked.start, picked.stop))
        return np.stack([self[i] for i in picked])

    def __array__(self, dtype=None, copy=None):
        maps = self[:]
        return maps if dtype is None else maps.astype(dtype, copy=False)

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError


class FitsCube(_LazyMaps):
    """(n, H, W) maps of one image HDU, read on demand: ``cube[a:b]`` opens the file, reads
    maps a..b-1 (memory-mapped when stored unscaled), converts them to native float32 and
    raises DataError naming the file, HDU and map index if one holds NaN or Inf."""

    def __init__(self, path: Path, hdu: int, shape: tuple[int, ...], where: str):
        self._path, self._hdu, self._flat, self._where = path, hdu, len(shape) == 2, where
        self.shape = (1, *shape) if self._flat else shape

    def _read(self, start: int, stop: int) -> np.ndarray:
        if start == stop:
            return np.empty((0, *self.shape[1:]), np.float32)
        try:
            with _quiet(), _open(self._path) as hdul:
                section = hdul[self._hdu].section
                raw = section[:, :][None] if self._flat else section[start:stop]
                maps = np.array(raw, dtype=np.float32)  # a copy: native byte order, no tie to the mmap
        except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
            raise DataError(f"{self._where}: cannot read maps {start}..{stop - 1} ({_first_sentence(e)})") from None
        bad = ~np.isfinite(maps).all(axis=(1, 2))
        if bad.any():
            raise DataError(f"{self._where}: map {start + int(np.flatnonzero(bad)[0])} contains NaN or Inf "
                            "(or overflows float32)")
        return maps


def stack_fits_maps(items: list[FitsMaps], side_angle_deg: float | None = None):
    """Concatenate several files' maps, in order, into one (N, H, W) array-like read on demand.

    Every file must hold maps of the same shape and the same ``ANGLE`` (degrees). The side
    angle returned is ``side_angle_deg`` (the user's, degrees) when given, else the headers';
    both given and differing by more than ANGLE_RTOL relatively, or neither, is a DataError.
    Returns (maps, side_angle_deg).
    """
    first = items[0]
    for it in items[1:]:
        if it.maps.shape[1:] != first.maps.shape[1:]:
            raise DataError(f"{it.path}: maps are {_hxw(it)}, but {first.path}'s are {_hxw(first)}; "
                            "all files must hold maps of one shape")
    with_angle = [it for it in items if it.side_angle_deg is not None]
    for it in with_angle[1:]:
        if not math.isclose(it.side_angle_deg, with_angle[0].side_angle_deg, rel_tol=ANGLE_RTOL):
            raise DataError(f"{it.path}: ANGLE is {it.side_angle_deg} deg, but {with_angle[0].path}'s is "
                            f"{with_angle[0].side_angle_deg} deg; all files must cover one field size")
    if side_angle_deg is not None:
        if with_angle and not math.isclose(side_angle_deg, with_angle[0].side_angle_deg, rel_tol=ANGLE_RTOL):
            raise DataError(f"--side-angle-deg {side_angle_deg} disagrees with the ANGLE of "
                            f"{with_angle[0].path} ({with_angle[0].side_angle_deg} deg); leave it out or fix it")
        side = side_angle_deg
    else:
        missing = next((it for it in items if it.side_angle_deg is None), None)
        if missing is not None:
            headers = "its header" + (" or the primary header" if missing.hdu else "")
            raise DataError(f"{missing.path}: HDU {missing.hdu}: no ANGLE keyword in {headers}; "
                            "pass --side-angle-deg (the field's side in degrees)")
        side = first.side_angle_deg
    maps = first.maps if len(items) == 1 else _Concatenated([it.maps for it in items])
    return maps, float(side)


class _Concatenated(_LazyMaps):
    """Several files' (n_i, H, W) maps seen as one (sum n_i, H, W); a read opens only the
    files it covers."""

    def __init__(self, parts: list[FitsCube]):
        self._parts = parts
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self._starts[-1]), *parts[0].shape[1:])

    def _read(self, start: int, stop: int) -> np.ndarray:
        blocks = [np.empty((0, *self.shape[1:]), np.float32)]
        for p, first in zip(self._parts, self._starts[:-1]):
            a, b = max(start, first), min(stop, first + len(p))
            if a < b:
                blocks.append(p[a - first:b - first])
        return np.concatenate(blocks)


def _hdu_index(hdul, hdu: int | str | None, path: Path) -> int:
    if hdu is None:
        for k, h in enumerate(hdul):
            if _has_pixels(h):
                return k
        raise DataError(f"{path}: no HDU holds image data ({len(hdul)} HDUs: "
                        f"{', '.join(type(h).__name__ for h in hdul)})")
    if isinstance(hdu, str):
        try:
            return hdul.index_of(hdu)
        except KeyError:
            raise DataError(f"{path}: no HDU with EXTNAME {hdu!r}") from None
    if not 0 <= hdu < len(hdul):
        raise DataError(f"{path}: no HDU {hdu} (the file has {len(hdul)}, numbered from 0)")
    return hdu


def _has_pixels(h) -> bool:
    return getattr(h, "is_image", False) and len(h.shape) > 0 and min(h.shape) > 0


def _check_complete(h, shape: tuple[int, ...], where: str, path: Path) -> None:
    """Refuse an uncompressed image whose pixels the file does not hold in full."""
    if isinstance(h, fits.CompImageHDU):  # its pixels are in a table's heap, checked when read
        return
    need = h.fileinfo()["datLoc"] + math.prod(shape) * abs(int(h.header["BITPIX"])) // 8
    have = os.path.getsize(path)
    if have < need:
        raise DataError(f"{where}: file truncated ({have} bytes, the header declares {need})")


def _side_angle(hdul, k: int, where: str, path: Path) -> float | None:
    """The ANGLE keyword (degrees) of HDU k, else of the primary header; None if neither has it."""
    for i in dict.fromkeys((k, 0)):
        header = hdul[i].header
        if "ANGLE" in header:
            v = header["ANGLE"]
            place = where if i == k else f"{path}: HDU 0"
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise DataError(f"{place}: header keyword ANGLE is {v!r}; expected the side angle as a "
                                "positive number of degrees")
            return float(v)
    return None


def _hxw(it: FitsMaps) -> str:
    return f"{it.maps.shape[1]}x{it.maps.shape[2]}"


def _first_sentence(e: Exception) -> str:
    """astropy's reason, short: its messages go on with advice about its own options."""
    text = os_error_text(e) if isinstance(e, OSError) else (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text.split(". ")[0].rstrip(".")


def _open(path: Path):
    """Open lazily (headers only). memmap=None: pixels stored raw are memory-mapped; scaled ones
    (BZERO/BSCALE/BLANK), which a map of the file cannot give, are read (only the part asked
    for) instead of refused, as memmap=True would."""
    return fits.open(path, memmap=None)


@contextlib.contextmanager
def _quiet():
    """astropy reports damaged headers and short files as warnings; the errors raised here say it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        yield

"""Input checking and numpy/torch dispatch shared by every statistic.

Every public statistic accepts a single map ``(N, N)`` or a batch ``(B, N, N)``
as a numpy array (or anything ``numpy.asarray`` accepts) or a torch tensor, and
answers in kind: numpy in gives numpy out, torch in gives torch out on the
device the computation ran on; a batch in gives a leading batch axis out, a
single map gives none.

The working precision is chosen by ``dtype``: ``None`` means float64 on the
CPU and float32 on an accelerator (CUDA); ``torch.float32``/``torch.float64``
(or the numpy / string spellings) force it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import PipelineError

__all__ = ["StatsInputError", "Prepared", "prepare_maps", "finish", "check_edges",
           "check_side_angle", "default_chunk_size"]


class StatsInputError(PipelineError, ValueError):
    """Bad arguments to a statistic (wrong map shape, bad bin edges, ...).

    It is a ``ValueError`` (what callers of a numerical function expect) and a
    ``PipelineError`` (so the CLI reports it as one line, never a traceback).
    """


_DTYPES = {
    "float32": torch.float32, "float64": torch.float64,
    "single": torch.float32, "double": torch.float64,
}


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float64 if device.type == "cpu" else torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
        out = _DTYPES.get(name)
    if out not in (torch.float32, torch.float64):
        raise StatsInputError(
            f"dtype must be None, float32 or float64; got {dtype!r}")
    return out


@dataclass
class Prepared:
    """Maps as a (B, N, N) tensor plus what is needed to answer in kind."""

    x: torch.Tensor          # (B, N, N), working device; working dtype or float32 (below)
    single: bool             # the input was one (N, N) map
    as_numpy: bool           # the input was not a torch tensor
    dtype: torch.dtype       # the working dtype: x's, or float64 for float32 maps on the CPU,
                             # which the kernels widen chunk by chunk (no float64 copy of all)

    @property
    def n_side(self) -> int:
        return int(self.x.shape[-1])


def prepare_maps(maps, dtype=None, device=None, name: str = "maps") -> Prepared:
    """Validate ``maps`` and return them as a (B, N, N) tensor.

    Raises StatsInputError for anything that is not a real 2-D square map or
    a batch of them (N >= 3, so that the 8 neighbours of a pixel are distinct).
    """
    as_numpy = not isinstance(maps, torch.Tensor)
    if as_numpy:
        try:
            arr = np.asarray(maps)
        except Exception as exc:  # ragged lists and the like
            raise StatsInputError(f"{name} cannot be read as an array: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise StatsInputError(
                f"{name} must be real numbers; got dtype {arr.dtype}")
        shape = arr.shape
    else:
        if maps.is_complex() or maps.dtype == torch.bool:
            raise StatsInputError(
                f"{name} must be real numbers; got dtype {maps.dtype}")
        shape = tuple(maps.shape)

    if len(shape) not in (2, 3):
        raise StatsInputError(
            f"{name} must have shape (N, N) or (B, N, N); got shape {tuple(shape)}")
    if shape[-1] != shape[-2]:
        raise StatsInputError(
            f"{name} must be square (N, N); got {shape[-2]} x {shape[-1]} "
            f"(shape {tuple(shape)})")
    if shape[-1] < 3:
        raise StatsInputError(
            f"{name} must be at least 3 x 3 pixels; got {shape[-2]} x {shape[-1]}")

    if device is None:
        dev = torch.device("cpu") if as_numpy else maps.device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise StatsInputError(f"device {device!r} is not a torch device: {exc}") from None
    wdtype = _resolve_dtype(dtype, dev)

    if as_numpy:
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
            arr = arr.astype(np.float64)
        elif not arr.dtype.isnative:          # e.g. big-endian FITS data
            arr = arr.astype(arr.dtype.newbyteorder("="))
        x = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        x = maps.detach()
    widen_late = dev.type == "cpu" and wdtype == torch.float64 and x.dtype == torch.float32
    x = x.to(device=dev, dtype=x.dtype if widen_late else wdtype)
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    return Prepared(x=x.contiguous(), single=single, as_numpy=as_numpy, dtype=wdtype)


def finish(prep: Prepared, t: torch.Tensor, batched: bool = True):
    """Convert a result tensor to what the caller gave us.

    ``batched`` results carry the batch axis first; it is dropped for a single
    map. Bin axes (ell, nu) are passed with ``batched=False``.
    """
    if batched and prep.single:
        t = t[0]
    if prep.as_numpy:
        return t.detach().cpu().numpy()
    return t


def check_edges(values, name: str, min_len: int = 2, nonneg: bool = False) -> np.ndarray:
    """Validate a 1-D array of bin edges: finite, strictly increasing, >= min_len."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatsInputError(f"{name} must be a 1-D array of numbers: {exc}") from None
    if arr.ndim != 1:
        raise StatsInputError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size < min_len:
        raise StatsInputError(
            f"{name} needs at least {min_len} edges (one bin); got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise StatsInputError(f"{name} must be finite; got {arr.tolist()}")
    if not np.all(np.diff(arr) > 0):
        bad = int(np.argmin(np.diff(arr) > 0))
        raise StatsInputError(
            f"{name} must be strictly increasing; edge {bad + 1} ({float(arr[bad + 1])!r}) "
            f"is not above edge {bad} ({float(arr[bad])!r})")
    if nonneg and arr[0] < 0:
        raise StatsInputError(f"{name} must be >= 0; got first edge {float(arr[0])!r}")
    return arr


def check_side_angle(side_angle_deg) -> float:
    try:
        val = float(side_angle_deg)
    except (TypeError, ValueError):
        raise StatsInputError(
            f"side_angle_deg must be a number of degrees; got {side_angle_deg!r}") from None
    if not np.isfinite(val) or val <= 0:
        raise StatsInputError(f"side_angle_deg must be positive and finite; got {val!r}")
    return val


def default_chunk_size(n_side: int, device: torch.device, dtype: torch.dtype = torch.float64) -> int:
    """Maps per internal chunk.

    CPU, float64 (the fused kernels, stats/fused.py): 2**20 pixels (16 maps of
    256^2): they keep no chunk-sized work arrays, so a larger chunk only spreads
    the per-chunk Python work (measured 1.9 ms/map at 16 or 64 maps per chunk
    against 2.4 at one).
    CPU, torch kernels (float32, or no numba): 2**16 pixels (one 256^2 map): the
    ~25 work arrays of a chunk (0.5 MiB each in float64) then stay in the
    last-level cache; measured 1.47 ms/map at one 256^2 map per chunk vs 1.6 at
    two and 1.8 at four.
    GPU: 2**26 pixels (1024 maps of 256^2): ~20 float32 and 6 float64 work
    arrays of 256/512 MiB, ~8 GiB, enough to fill the device.
    """
    from .fused import available

    pixels = n_side * n_side
    if device.type != "cpu":
        budget = 2 ** 26
    elif dtype == torch.float64 and available():
        budget = 2 ** 20
    else:
        budget = 2 ** 16
    return max(1, budget // pixels)

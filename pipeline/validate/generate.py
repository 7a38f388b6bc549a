"""generate: a dataset of maps from a trained generator, in the format make-data writes.

Map i is the Emulator's map i of the stream generate.seed (pipeline/emulator.py): G(z_i)
with z_i seeded by (generate.seed, i) (or by i mod latent_period: see generate), G the
checkpoint's moving average of the generator's weights when it has one
(train.ema_decay), in eval mode, mapped back to kappa by the run's pixel transform.
Batches start at fixed offsets within fixed shards, so the output is the same (bit for
bit on CPU) for any number of ranks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.data.format import DesignRecord, Manifest, file_sha256
from pipeline.data.sharded import DatasetPlan, write_sharded
from pipeline.emulator import Emulator
from pipeline.errors import DataError


def generate(emulator: Emulator, cfg: Config, n_maps: int, out_dir: str | Path, run_dir: str | Path,
             progress: bool = True, params=None, allow_extrapolation: bool = False,
             latent_period: int | None = None) -> Manifest:
    """Write n_maps maps of ``emulator`` to out_dir with the generate section of ``cfg``
    (seed, batch and shard sizes: stage settings, see pipeline/validate/validate.py).

    params: for a conditional run, the values of emulator.param_names (physical units) the
    maps are made at, recorded as each map's parameters: one row (P,) for every map, or one
    row per map (n_maps, P) (``--like``: a dataset's design mirrored); None for an
    unconditional run. Parameters outside the training support are refused unless
    allow_extrapolation. latent_period: map i renders z_(i mod latent_period) instead of
    z_i, so that every block of that many maps (one cosmology each, in validate) sees the
    same noise, and ratios between the blocks little of its sample variance.
    """
    if n_maps <= 0:
        raise DataError(f"--n must be positive, got {n_maps}")
    rows = per_map_params(emulator, params, n_maps, allow_extrapolation)
    gen_cfg = cfg.generate
    size = emulator.map_size
    names = list(emulator.param_names) if rows.size else []
    requested = {}
    design = None
    if names:
        points = np.unique(rows, axis=0)
        design = DesignRecord("requested", names, points.tolist(), {"allow_extrapolation": allow_extrapolation})
        requested = ({"params": dict(zip(names, rows[0].tolist()))} if len(points) == 1 else
                     {"params_sha256": hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()})
    plan = DatasetPlan(
        out=Path(out_dir), n_maps=n_maps, shard_size=gen_cfg.shard_size, map_shape=(size, size),
        side_angle_deg=emulator.side_angle_deg, param_names=names, design=design,
        recipe={"checkpoint_sha256": file_sha256(emulator.source), "generate": cfg.to_dict()["generate"],
                "n_maps": n_maps, **requested, **({"latent_period": latent_period} if latent_period else {})},
        provenance={"generator": "pipeline.models.Generator", "run": str(Path(run_dir).resolve()),
                    "checkpoint": str(emulator.source), "step": emulator.step, "weights": emulator.weights,
                    "seed_words": (f"(generate.seed, map_index % {latent_period})" if latent_period
                                   else "(generate.seed, map_index)")})

    def produce(first: int, count: int):
        block = rows[first:first + count]
        indices = range(first, first + count)
        if latent_period:
            indices = [i % latent_period for i in indices]
        maps = emulator.sample_indices(indices, block if names else None, seed=gen_cfg.seed,
                                       batch_size=gen_cfg.batch_size, allow_extrapolation=True)  # checked above
        return maps, block.astype(np.float32)

    return write_sharded(plan, produce, block=gen_cfg.batch_size, desc="generate", progress=progress)


def per_map_params(emulator: Emulator, params, n_maps: int, allow_extrapolation: bool) -> np.ndarray:
    """(n_maps, P) float64: each map's parameters ((n_maps, 0) for an unconditional run),
    from one row (P,) or one per map (n_maps, P); refused as Emulator.check_params does."""
    if params is None:
        return emulator.check_params(None, n_maps, allow_extrapolation)
    p = np.asarray(params, np.float64)
    if p.ndim == 1:
        return np.repeat(emulator.check_params([p], 1, allow_extrapolation), n_maps, axis=0)
    if p.ndim != 2 or len(p) != n_maps:
        raise DataError(f"params: expected one row or {n_maps} rows, got an array of shape {p.shape}")
    return emulator.check_params(p, n_maps, allow_extrapolation)

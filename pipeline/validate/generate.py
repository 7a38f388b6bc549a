"""generate: a dataset of maps from a trained generator, in the format make-data writes.

Map i is the Emulator's map i of the stream generate.seed (pipeline/emulator.py): G(z_i)
with z_i seeded by (generate.seed, i), G the checkpoint's moving average of the
generator's weights when it has one (train.ema_decay), in eval mode, mapped back to
kappa by the run's pixel transform. Batches start at fixed offsets within fixed shards,
so the output is the same (bit for bit on CPU) for any number of ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.data.format import Manifest, file_sha256
from pipeline.data.sharded import DatasetPlan, write_sharded
from pipeline.emulator import Emulator
from pipeline.errors import DataError


def generate(emulator: Emulator, cfg: Config, n_maps: int, out_dir: str | Path, run_dir: str | Path,
             progress: bool = True, params=None, allow_extrapolation: bool = False) -> Manifest:
    """Write n_maps maps of ``emulator`` to out_dir with the generate section of ``cfg``
    (seed, batch and shard sizes: stage settings, see pipeline/validate/validate.py).

    params: for a conditional run, the values (P,) of emulator.param_names every map is
    made at (physical units), recorded as each map's parameters; None for an unconditional run.
    """
    if n_maps <= 0:
        raise DataError(f"--n must be positive, got {n_maps}")
    row = emulator.check_params(None if params is None else [params], 1, allow_extrapolation)[0]
    gen_cfg = cfg.generate
    size = emulator.map_size
    names = list(emulator.param_names) if row.size else []
    plan = DatasetPlan(
        out=Path(out_dir), n_maps=n_maps, shard_size=gen_cfg.shard_size, map_shape=(size, size),
        side_angle_deg=emulator.side_angle_deg, param_names=names,
        recipe={"checkpoint_sha256": file_sha256(emulator.source), "generate": cfg.to_dict()["generate"],
                "n_maps": n_maps, **({"params": dict(zip(names, row.tolist()))} if names else {})},
        provenance={"generator": "pipeline.models.Generator", "run": str(Path(run_dir).resolve()),
                    "checkpoint": str(emulator.source), "step": emulator.step, "weights": emulator.weights,
                    "seed_words": "(generate.seed, map_index)"})

    def produce(first: int, count: int):
        rows = np.repeat(row[None], count, axis=0)
        maps = emulator.sample(count, rows if names else None, seed=gen_cfg.seed, batch_size=gen_cfg.batch_size,
                               first_index=first, allow_extrapolation=allow_extrapolation)
        return maps, rows.astype(np.float32)

    return write_sharded(plan, produce, block=gen_cfg.batch_size, desc="generate", progress=progress)

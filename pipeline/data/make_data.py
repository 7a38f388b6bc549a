"""make-data: synthesise the train / validation / test datasets from the physical model.

Map ``i`` of split ``s`` comes from the random stream seeded by
(data.seed, split number, i) and the cosmology ``grid_points[i % n_points]``,
so its pixels depend on nothing else: not on the rank count, not on the order
of work. Shards, ranks and resume are those of pipeline.data.sharded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import PARAM_NAMES, Config
from pipeline.data.format import Manifest
from pipeline.data.sharded import DatasetPlan, is_complete, write_sharded
from pipeline.physics import MapModel

SPLITS = ("train", "validation", "test")


def split_plan(cfg: Config, out: Path, split: str) -> DatasetPlan:
    recipe = {
        "physics": cfg.to_dict()["physics"],
        "cosmology": cfg.to_dict()["cosmology"],
        "seed": cfg.data.seed,
        "split": split,
        "split_number": SPLITS.index(split),
        "n_maps": cfg.data.split_sizes()[split],
        "shard_size": cfg.data.shard_size,
    }
    size = cfg.physics.map_size
    return DatasetPlan(out=out / split, n_maps=recipe["n_maps"], shard_size=cfg.data.shard_size,
                       map_shape=(size, size), side_angle_deg=cfg.physics.side_angle_deg,
                       param_names=list(PARAM_NAMES), recipe=recipe,
                       provenance={"generator": f"pipeline.physics.MapModel ({cfg.physics.field})",
                                   "seed_words": "(data.seed, split_number, map_index)"})


def make_all_splits(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Manifest]:
    """Write out_dir/{train,validation,test}; returns their manifests (on every rank)."""
    model = MapModel(cfg.physics, cfg.cosmology)
    points = cfg.cosmology.points()
    for point in points:  # settings the model refuses fail here, on every rank alike
        if cfg.physics.field == "lognormal":
            model.lognormal_spectrum(point)
    plans = [split_plan(cfg, Path(out_dir), split) for split in SPLITS]
    for plan in plans:  # a foreign dataset in any split fails before anything is written
        is_complete(plan)

    manifests = {}
    for plan in plans:
        seed, split_number = plan.recipe["seed"], plan.recipe["split_number"]

        def produce(first: int, count: int):
            idx = range(first, first + count)
            maps = np.stack([model.synthesize(points[i % len(points)], (seed, split_number, i)) for i in idx])
            params = np.array([points[i % len(points)] for i in idx], np.float32)
            return maps.astype(np.float32), params

        manifests[plan.recipe["split"]] = write_sharded(plan, produce, block=16,
                                                        desc=f"make-data {plan.recipe['split']}", progress=progress)
    return manifests

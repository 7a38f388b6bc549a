"""make-data: synthesise the train / validation / test datasets from the physical model.

Map ``i`` of split ``s`` comes from the random stream seeded by
(data.seed, split number, i) and the cosmology ``points[i % n_points]`` of that
split's design (``Config.split_points``), so its pixels depend on nothing else: not
on the rank count, not on the order of work. Shards, ranks and resume are those of
pipeline.data.sharded. Each split's manifest lists its design.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.config import PARAM_NAMES, Config
from pipeline.data.format import DesignRecord, Manifest
from pipeline.data.sharded import DatasetPlan, is_complete, write_sharded
from pipeline.physics import MapModel

SPLITS = ("train", "validation", "test")


def split_plan(cfg: Config, out: Path, split: str) -> DatasetPlan:
    points = cfg.split_points(split)
    cosmology = {k: v for k, v in cfg.to_dict()["cosmology"].items() if k != "design"}  # the fixed parameters
    recipe = {
        "physics": cfg.to_dict()["physics"],
        "cosmology": cosmology,
        "points": [list(p) for p in points],
        "seed": cfg.data.seed,
        "split": split,
        "split_number": SPLITS.index(split),
        "n_maps": cfg.data.split_sizes()[split],
        "shard_size": cfg.data.shard_size,
    }
    design = cfg.split_design(split)
    record = DesignRecord(kind=design.kind, param_names=list(PARAM_NAMES), points=[list(p) for p in points],
                          spec={"design": dataclasses.asdict(design),
                                "extra_points": getattr(cfg.data.splits, split).extra_points})
    size = cfg.physics.map_size
    return DatasetPlan(out=out / split, n_maps=recipe["n_maps"], shard_size=cfg.data.shard_size,
                       map_shape=(size, size), side_angle_deg=cfg.physics.side_angle_deg,
                       param_names=list(PARAM_NAMES), recipe=recipe, design=record,
                       provenance={"generator": f"pipeline.physics.MapModel ({cfg.physics.field})",
                                   "seed_words": "(data.seed, split_number, map_index)"})


def make_all_splits(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Manifest]:
    """Write out_dir/{train,validation,test}; returns their manifests (on every rank)."""
    model = MapModel(cfg.physics, cfg.cosmology)
    plans = [split_plan(cfg, Path(out_dir), split) for split in SPLITS]
    for plan in plans:  # settings the model refuses fail here, on every rank alike
        for point in plan.recipe["points"]:
            if cfg.physics.field == "lognormal":
                model.lognormal_spectrum(tuple(point))
    for plan in plans:  # a foreign dataset in any split fails before anything is written
        is_complete(plan)

    manifests = {}
    for plan in plans:
        seed, split_number = plan.recipe["seed"], plan.recipe["split_number"]
        points = [tuple(p) for p in plan.recipe["points"]]

        def produce(first: int, count: int):
            idx = range(first, first + count)
            maps = np.stack([model.synthesize(points[i % len(points)], (seed, split_number, i)) for i in idx])
            params = np.array([points[i % len(points)] for i in idx], np.float32)
            return maps.astype(np.float32), params

        manifests[plan.recipe["split"]] = write_sharded(plan, produce, block=16,
                                                        desc=f"make-data {plan.recipe['split']}", progress=progress)
    return manifests

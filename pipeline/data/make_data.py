"""make-data: synthesise the train / validation / test datasets from the physical model.

Map ``i`` of split ``s`` comes from the random stream seeded by
(data.seed, split number, i) and the cosmology ``points[i % n_points]`` of that
split's design (``Config.split_points``), so its pixels depend on nothing else: not
on the rank count, not on the order of work. With the split's ``matched_seeds`` the
stream is (data.seed, split number, i // n_points): realisation r of the random fields
is drawn at every cosmology. Shards, ranks and resume are those of
pipeline.data.sharded. Each split's manifest lists its design.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.config import PARAM_NAMES, Config
from pipeline.data.format import DesignRecord, Manifest
from pipeline.errors import ConfigError, DataError
from pipeline.locking import output_lock
from pipeline.parallel.comm import from_rank0, world
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
    matched = getattr(cfg.data.splits, split).matched_seeds
    if matched:  # only when set, so that the datasets made before the option keep their digest
        recipe["matched_seeds"] = True
    design = cfg.split_design(split)
    record = DesignRecord(kind=design.kind, param_names=list(PARAM_NAMES), points=[list(p) for p in points],
                          spec={"design": dataclasses.asdict(design),
                                "extra_points": getattr(cfg.data.splits, split).extra_points},
                          matched_seeds=matched)
    size = cfg.physics.map_size
    return DatasetPlan(out=out / split, n_maps=recipe["n_maps"], shard_size=cfg.data.shard_size,
                       map_shape=(size, size), side_angle_deg=cfg.physics.side_angle_deg,
                       param_names=list(PARAM_NAMES), recipe=recipe, design=record,
                       provenance={"generator": f"pipeline.physics.MapModel ({cfg.physics.field})",
                                   "seed_words": ("(data.seed, split_number, map_index // n_points)" if matched
                                                  else "(data.seed, split_number, map_index)")})


BLOCK = 16  # maps synthesised per call of produce (and held in memory at once)


def memory_needed(map_size: int, n_points: int) -> int:
    """Bytes one rank needs to synthesise maps of map_size^2 pixels at n_points cosmologies:
    per cosmology ~3 cached half-plane float64 spectra (12 N^2); per block of BLOCK maps the
    float64 maps and their float32 copy (12 BLOCK N^2); the FFT temporaries of one map (~40 N^2)."""
    n2 = map_size * map_size
    return n2 * (12 * n_points + 12 * BLOCK + 40)


def memory_available() -> int | None:
    """Bytes this machine can still give a process (MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(cfg: Config, n_points: int) -> None:
    need, have = memory_needed(cfg.physics.map_size, n_points), memory_available()
    if have is not None and need > have:
        raise ConfigError(f"physics.map_size: {cfg.physics.map_size}-pixel maps need about {_size(need)} per rank "
                          f"to synthesise; this machine has {_size(have)} available")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def make_all_splits(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Manifest]:
    """Write out_dir/{train,validation,test}; returns their manifests (on every rank)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    plans = [split_plan(cfg, out, split) for split in SPLITS]
    check_memory(cfg, len({tuple(p) for plan in plans for p in plan.recipe["points"]}))
    model = MapModel(cfg.physics, cfg.cosmology)
    for plan in plans:  # settings the model refuses fail here, on every rank alike
        for point in plan.recipe["points"]:
            if cfg.physics.field == "lognormal":
                model.lognormal_spectrum(tuple(point))
    for plan in plans:  # a foreign dataset in any split fails before anything is written
        is_complete(plan)

    with output_lock(out, "make-data", world().rank == 0, from_rank0):
        return _write_splits(plans, model, progress)


def _write_splits(plans: list[DatasetPlan], model: MapModel, progress: bool) -> dict[str, Manifest]:
    manifests = {}
    for plan in plans:
        seed, split_number = plan.recipe["seed"], plan.recipe["split_number"]
        points = [tuple(p) for p in plan.recipe["points"]]
        design = plan.design

        def produce(first: int, count: int):
            idx = range(first, first + count)
            realisation = design.realisations(np.arange(first, first + count))
            maps = np.stack([model.synthesize(points[i % len(points)], (seed, split_number, int(r)))
                             for i, r in zip(idx, realisation)])
            params = np.array([points[i % len(points)] for i in idx], np.float32)
            return maps.astype(np.float32), params

        manifests[plan.recipe["split"]] = write_sharded(plan, produce, block=BLOCK,
                                                        desc=f"make-data {plan.recipe['split']}", progress=progress)
    return manifests

"""make-data: synthesise the train / validation / test datasets from the physical model.

Map ``i`` of split ``s`` comes from the random stream seeded by
(data.seed, split number, i) and the cosmology ``grid_points[i % n_points]``,
so its pixels depend on nothing else: not on the rank count, not on the order
of work. Shard boundaries are fixed by data.shard_size; under MPI, shard k is
written by rank k % size, and rank 0 writes the manifest once all shards exist.
A rerun reuses every complete shard made from the same settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np

from pipeline import __version__
from pipeline.config import PARAM_NAMES, Config
from pipeline.data.format import (MANIFEST_NAME, Manifest, ShardInfo, ShardWriter, file_sha256,
                                  read_manifest, shard_name, write_manifest)
from pipeline.dist.comm import progress_bar, rank_local_work, world
from pipeline.errors import DataError
from pipeline.physics import MapModel

SPLITS = ("train", "validation", "test")


def split_recipe(cfg: Config, split: str) -> dict:
    """Everything that determines a split's maps; its digest tags every shard and the manifest."""
    return {
        "physics": cfg.to_dict()["physics"],
        "cosmology": cfg.to_dict()["cosmology"],
        "seed": cfg.data.seed,
        "split": split,
        "split_number": SPLITS.index(split),
        "n_maps": cfg.data.split_sizes()[split],
        "shard_size": cfg.data.shard_size,
    }


def recipe_digest(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def make_all_splits(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Manifest]:
    """Write out_dir/{train,validation,test}; returns their manifests (on every rank)."""
    out = Path(out_dir)
    model = MapModel(cfg.physics, cfg.cosmology)
    for point in cfg.cosmology.points():  # settings the model refuses fail here, on every rank alike
        if cfg.physics.field == "lognormal":
            model.lognormal_spectrum(point)
    plans = {split: _preflight(cfg, out / split, split) for split in SPLITS}
    return {split: _make_split(cfg, out / split, split, plans[split], progress) for split in SPLITS}


def _preflight(cfg: Config, split_dir: Path, split: str) -> dict:
    """Decide, identically on every rank, what there is to do. Raises for a foreign dataset."""
    recipe = split_recipe(cfg, split)
    digest = recipe_digest(recipe)
    if split_dir.exists() and not split_dir.is_dir():
        raise DataError(f"{split_dir}: exists and is not a directory")
    if (split_dir / MANIFEST_NAME).exists():
        existing = read_manifest(split_dir)
        if existing.provenance.get("recipe_digest") != digest:
            raise DataError(f"{split_dir}: already holds a different dataset "
                            "(made with other settings); choose another --out or remove it")
        return {"recipe": recipe, "digest": digest, "complete": True}
    for shard in sorted(split_dir.glob("shard-*.h5")) if split_dir.is_dir() else ():
        if _shard_digest(shard) != digest:
            raise DataError(f"{shard}: left by a run with other settings; "
                            "choose another --out or remove the directory")
    return {"recipe": recipe, "digest": digest, "complete": False}


def _shard_digest(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("recipe_digest", ""))
    except OSError:
        return None


def _make_split(cfg: Config, split_dir: Path, split: str, plan: dict, progress: bool) -> Manifest:
    comm = world()
    if plan["complete"]:
        return read_manifest(split_dir)
    if comm.rank == 0:
        split_dir.mkdir(parents=True, exist_ok=True)
        for stale in split_dir.glob(".shard-*.tmp"):  # left by a killed run; never complete
            stale.unlink()
    comm.barrier()

    n_maps, shard_size = plan["recipe"]["n_maps"], cfg.data.shard_size
    n_shards = math.ceil(n_maps / shard_size)
    mine = range(comm.rank, n_shards, comm.size)
    model = MapModel(cfg.physics, cfg.cosmology)
    points = cfg.cosmology.points()
    bar = progress_bar(sum(min(shard_size, n_maps - k * shard_size) for k in mine), f"make-data {split}",
                       progress)
    with rank_local_work(f"{split_dir}: cannot write shard"):
        infos = [_make_shard(model, points, cfg, split_dir, plan, k, n_maps, bar) for k in mine]
    bar.close()

    gathered = comm.gather(infos, root=0)
    manifest = None
    if comm.rank == 0:
        shards = sorted((i for part in gathered for i in part), key=lambda s: s.first_index)
        manifest = Manifest(
            n_maps=n_maps, map_shape=(cfg.physics.map_size, cfg.physics.map_size),
            side_angle_deg=cfg.physics.side_angle_deg, param_names=list(PARAM_NAMES),
            provenance={"generator": f"pipeline.physics.MapModel ({cfg.physics.field})",
                        "pipeline_version": __version__, "recipe": plan["recipe"],
                        "recipe_digest": plan["digest"],
                        "seed_words": "(data.seed, split_number, map_index)"},
            shards=shards)
        write_manifest(split_dir, manifest)
    return comm.bcast(manifest, root=0)


def _make_shard(model, points, cfg: Config, split_dir: Path, plan: dict, k: int, n_maps: int,
                bar) -> ShardInfo:
    first = k * cfg.data.shard_size
    n = min(cfg.data.shard_size, n_maps - first)
    path = split_dir / shard_name(k)
    if path.exists() and _shard_digest(path) == plan["digest"]:
        bar.update(n)  # complete from an earlier run: shards only appear by atomic rename
        return ShardInfo(path.name, first, n, file_sha256(path))
    seed, split_number = plan["recipe"]["seed"], plan["recipe"]["split_number"]
    attrs = {"side_angle_deg": cfg.physics.side_angle_deg, "units": "kappa (dimensionless)",
             "recipe_digest": plan["digest"], "split": plan["recipe"]["split"]}
    size = cfg.physics.map_size
    with ShardWriter(path, n, (size, size), list(PARAM_NAMES), first, attrs) as writer:
        for j in range(n):
            i = first + j
            point = points[i % len(points)]
            kappa = model.synthesize(point, (seed, split_number, i))
            writer.write(j, kappa[None].astype(np.float32), np.asarray([point], np.float32))
            bar.update(1)
        return writer.commit()

"""Writing a dataset of maps made by a function, in fixed shards, over any number of ranks.

The stages that create maps (make-data from the physical model, generate from a
trained GAN) describe the dataset in a ``DatasetPlan`` and give a function
``produce(first_index, count) -> (maps, params)``. Shard k (plan.shard_size
maps) is written by rank k % size, in blocks of ``block`` maps that start at
fixed offsets, so what each call of ``produce`` sees never depends on the rank
count. Rank 0 writes the manifest last. A rerun keeps every complete shard of
the same recipe and refuses a directory that holds another recipe's data.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py

from pipeline import __version__
from pipeline.data.format import (MANIFEST_NAME, DesignRecord, Manifest, ShardInfo, ShardWriter, file_sha256, read_manifest,
                                  remove_temporaries,
                                  shard_name, write_manifest)
from pipeline.locking import output_lock
from pipeline.parallel.comm import from_rank0, progress_bar, rank_local_work, world
from pipeline.errors import DataError


@dataclass
class DatasetPlan:
    """A dataset to write. recipe: everything that determines the maps (its sha256 tags every
    shard and the manifest); provenance: more for the manifest; side_angle_deg in degrees;
    design: the cosmologies the maps were made at, for the manifest."""

    out: Path
    n_maps: int
    shard_size: int
    map_shape: tuple
    side_angle_deg: float
    param_names: list
    recipe: dict
    provenance: dict = field(default_factory=dict)
    design: DesignRecord | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe, sort_keys=True).encode()).hexdigest()


def is_complete(plan: DatasetPlan) -> bool:
    """True if plan.out already holds this dataset; raises if it holds another. Run on every rank."""
    out = plan.out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if (out / MANIFEST_NAME).exists():
        if read_manifest(out).provenance.get("recipe_digest") != plan.digest:
            raise DataError(f"{out}: already holds a different dataset (made with other settings); "
                            "choose another --out or remove it")
        return True
    for shard in sorted(out.glob("shard-*.h5")) if out.is_dir() else ():
        if _shard_digest(shard) != plan.digest:
            raise DataError(f"{shard}: left by a run with other settings; choose another --out or remove it")
    return False


def _shard_digest(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("recipe_digest", ""))
    except OSError:
        return None


def write_sharded(plan: DatasetPlan, produce: Callable, block: int, desc: str, progress: bool = True) -> Manifest:
    """Write the dataset (all ranks call this); returns its manifest on every rank."""
    comm = world()
    if is_complete(plan):
        return read_manifest(plan.out)
    with output_lock(plan.out, desc.split()[0], comm.rank == 0, from_rank0):
        return _write_all(plan, produce, block, desc, progress)


def _write_all(plan: DatasetPlan, produce: Callable, block: int, desc: str, progress: bool) -> Manifest:
    comm = world()
    with rank_local_work(f"{plan.out}: cannot write"):
        if comm.rank == 0:
            plan.out.mkdir(parents=True, exist_ok=True)
            remove_temporaries(plan.out)  # shards and a manifest a killed run left half-written
    comm.barrier()

    n_shards = math.ceil(plan.n_maps / plan.shard_size)
    mine = range(comm.rank, n_shards, comm.size)
    bar = progress_bar(sum(_shard_len(plan, k) for k in mine), desc, progress)
    with rank_local_work(f"{plan.out}: cannot write shard"):
        infos = [_write_shard(plan, k, produce, block, bar) for k in mine]
    bar.close()

    gathered = comm.gather(infos, root=0)
    manifest = None
    if comm.rank == 0:
        manifest = Manifest(
            n_maps=plan.n_maps, map_shape=tuple(plan.map_shape), side_angle_deg=plan.side_angle_deg,
            param_names=list(plan.param_names),
            provenance={**plan.provenance, "pipeline_version": __version__, "recipe": plan.recipe,
                        "recipe_digest": plan.digest},
            shards=sorted((i for part in gathered for i in part), key=lambda s: s.first_index),
            design=plan.design)
        with rank_local_work(f"{plan.out}: cannot write the manifest"):
            write_manifest(plan.out, manifest)
    return comm.bcast(manifest, root=0)


def _shard_len(plan: DatasetPlan, k: int) -> int:
    return min(plan.shard_size, plan.n_maps - k * plan.shard_size)


def _write_shard(plan: DatasetPlan, k: int, produce: Callable, block: int, bar) -> ShardInfo:
    first, n = k * plan.shard_size, _shard_len(plan, k)
    path = plan.out / shard_name(k)
    if path.exists() and _shard_digest(path) == plan.digest:
        bar.update(n)  # complete from an earlier run: shards only appear by atomic rename
        return ShardInfo(path.name, first, n, file_sha256(path))
    attrs = {"side_angle_deg": plan.side_angle_deg, "units": "kappa (dimensionless)",
             "recipe_digest": plan.digest}
    with ShardWriter(path, n, tuple(plan.map_shape), list(plan.param_names), first, attrs) as writer:
        for start in range(0, n, block):
            count = min(block, n - start)
            maps, params = produce(first + start, count)
            writer.write(start, maps, params)
            bar.update(count)
        return writer.commit()

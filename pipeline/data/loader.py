"""Rank-aware reading of a dataset for training.

Each epoch has one global order of maps, a permutation drawn from
(seed, epoch), and one dihedral transform per map (flip / rot90, valid for
statistically isotropic fields) drawn from the same pair. The order is cut into
global batches of batch_size x world_size maps; rank r takes the r-th slice
of each. Every rank therefore runs the same number of steps (the incomplete
tail is dropped), the shares are disjoint, and the batches do not depend on how
fast anyone reads. The position (epoch, step) is the loader's whole state, so
training can resume in the middle of an epoch.

HDF5 files are opened lazily in the process that reads (DataLoader workers
included), never inherited across a fork.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.format import Manifest, read_manifest
from pipeline.data.verify import check_shard_layout, open_shard
from pipeline.errors import DataError


class MapDataset(Dataset):
    """All maps of one dataset directory; items are (map (1, H, W) float32, params (P,), index)."""

    def __init__(self, dataset_dir: str | Path):
        self.root = Path(dataset_dir)
        self.manifest: Manifest = read_manifest(self.root)
        if self.manifest.n_maps == 0:
            raise DataError(f"{self.root}: dataset holds no maps")
        self._starts = np.array([s.first_index for s in self.manifest.shards], dtype=np.int64)
        self._files: dict[int, object] = {}
        self._pid = None
        # Check every shard's layout once here, in the parent, so a bad shard fails
        # before training starts and not inside a worker.
        for k in range(len(self.manifest.shards)):
            self._shard(k)
        self.close()

    def __len__(self) -> int:
        return self.manifest.n_maps

    def _shard(self, k: int) -> "_OpenShard":
        if self._pid != os.getpid():  # first use in this process, or a forked worker
            self._files, self._pid = {}, os.getpid()
        shard = self._files.get(k)
        if shard is None:
            shard = self._files[k] = _OpenShard(self.root, self.manifest, k)
        return shard

    def close(self) -> None:
        for shard in self._files.values():
            shard.close()
        self._files = {}

    def read(self, indices, buffer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Maps (n, H, W) float32 and params (n, P) for global indices, in the order given.
        buffer: a float32 array of at least n maps to read into (the maps returned are a view
        of it): reused from call to call, its pages stay mapped, where a fresh array of a
        chunk's size costs a page fault per 4 KiB page on first touch."""
        idx = np.asarray(indices, dtype=np.int64)
        h, w = self.manifest.map_shape
        if buffer is None:
            maps = np.empty((len(idx), h, w), np.float32)
        elif buffer.dtype != np.float32 or buffer.shape[1:] != (h, w) or len(buffer) < len(idx):
            raise ValueError(f"read: a buffer {buffer.dtype} {buffer.shape} cannot hold {len(idx)} maps "
                             f"{h}x{w} float32")
        else:
            maps = buffer[:len(idx)]
        params = np.empty((len(idx), len(self.manifest.param_names)), np.float32)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        local = idx - self._starts[shard_of]
        # In file order: sequential access is what the page cache serves best.
        order = np.lexsort((local, shard_of))
        for row, k, off in zip(order.tolist(), shard_of[order].tolist(), local[order].tolist()):
            shard = self._shard(k)
            shard.read_map(off, maps[row])
            params[row] = shard.params[off]
        return maps, params

    def all_params(self) -> np.ndarray:
        """Every map's parameters (n, P) float32, in index order (shards keep them in memory)."""
        parts = [self._shard(k).params for k in range(len(self.manifest.shards))]
        width = len(self.manifest.param_names)
        return np.concatenate(parts).reshape(self.manifest.n_maps, width) if parts else np.zeros((0, width), np.float32)

    def __getitem__(self, index: int):
        maps, params = self.read([index])
        return torch.from_numpy(maps), torch.from_numpy(params[0]), index

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None  # h5py handles never cross processes
        return state


class _OpenShard:
    """One shard opened in this process: layout checked, params in memory, file mapped.

    The shard writer stores each map as one uncompressed chunk, so a map is one
    contiguous byte range at an offset looked up once per shard. The file is
    memory-mapped and each map is a single memcpy from it: no HDF5 call and no
    system call per map. Shards of any other layout (compressed, other chunking)
    are read through h5py.
    """

    def __init__(self, root: Path, manifest: Manifest, k: int):
        info = manifest.shards[k]
        self.path = root / info.path
        self.file = open_shard(self.path)
        check_shard_layout(self.file, self.path, info, manifest)
        self.maps = self.file["maps"]
        self.params = self.file["params"][:]
        self.offsets = _chunk_offsets(self.maps)
        self.mapped = None
        if self.offsets is not None:
            h, w = manifest.map_shape
            if self.offsets.max() + h * w * 4 > self.path.stat().st_size:
                raise DataError(f"{self.path}: file ends before its maps do (truncated shard?)")
            self.mapped = np.memmap(self.path, dtype=np.uint8, mode="r")

    def read_map(self, offset: int, out: np.ndarray) -> None:
        """Copy map number ``offset`` of this shard into ``out`` (H, W) float32."""
        if self.mapped is None:
            self.maps.read_direct(out, np.s_[offset], np.s_[...])
        else:
            start = self.offsets[offset]
            out.reshape(-1).view(np.uint8)[:] = self.mapped[start:start + out.nbytes]

    def close(self) -> None:
        self.mapped = None  # the mapping closes with its last view
        self.file.close()


def _chunk_offsets(maps) -> np.ndarray | None:
    """Byte offset of each map's chunk, or None unless every map is one raw little-endian chunk."""
    n, h, w = maps.shape
    if (maps.chunks != (1, h, w) or maps.dtype != np.dtype("<f4")
            or maps.id.get_create_plist().get_nfilters() or not hasattr(maps.id, "chunk_iter")):
        return None
    offsets = np.full(n, -1, np.int64)

    def visit(chunk):
        if chunk.size == h * w * 4 and chunk.filter_mask == 0:
            offsets[chunk.chunk_offset[0]] = chunk.byte_offset

    maps.id.chunk_iter(visit)
    return offsets if (offsets >= 0).all() else None


def epoch_plan(n_maps: int, seed: int, epoch: int, shuffle: bool, augment: bool):
    """The epoch's global order of map indices and each position's dihedral op (0..7)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    order = rng.permutation(n_maps) if shuffle else np.arange(n_maps)
    ops = rng.integers(0, 8, n_maps) if augment else np.zeros(n_maps, np.int64)
    return order, ops


def dihedral(maps: torch.Tensor, ops) -> torch.Tensor:
    """Apply op = 4*flip + quarter_turns to each map of (n, ..., H, W); needs H == W if turning."""
    out = maps.clone()
    for j, op in enumerate(ops):
        m = maps[j]
        if op >= 4:
            m = torch.flip(m, dims=(-1,))
        out[j] = torch.rot90(m, int(op) % 4, dims=(-2, -1))
    return out


class _RankBatches(Dataset):
    """Item s = this rank's batch number s of the epoch (so DataLoader workers fetch whole batches)."""

    def __init__(self, data: MapDataset, order, ops, rank: int, world_size: int, batch_size: int):
        self.data, self.order, self.ops = data, order, ops
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size

    def __len__(self):
        return len(self.order) // (self.batch_size * self.world_size)

    def __getitem__(self, step: int):
        start = (step * self.world_size + self.rank) * self.batch_size
        sl = slice(start, start + self.batch_size)
        idx = self.order[sl]
        maps, params = self.data.read(idx)
        x = torch.from_numpy(maps).unsqueeze(1)
        if self.ops[sl].any():
            x = dihedral(x, self.ops[sl])
        return {"maps": x, "params": torch.from_numpy(params), "index": torch.from_numpy(idx)}


class ShardedLoader:
    """Iterates this rank's batches, epoch after epoch; ``state_dict`` resumes mid-epoch.

    batch_size is per rank; the global batch is batch_size * world_size.
    Iterating yields the rest of the current epoch, then moves to the next.
    Batches are dicts: maps (B, 1, H, W) float32 kappa, params (B, P), index (B,).
    """

    def __init__(self, dataset_dir: str | Path, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, augment: bool = False, num_workers: int = 0):
        if batch_size <= 0:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.data = MapDataset(dataset_dir)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.augment, self.num_workers = seed, shuffle, augment, num_workers
        h, w = self.data.manifest.map_shape
        if augment and h != w:
            raise DataError(f"{dataset_dir}: rot90 augmentation needs square maps, got {h}x{w}")
        if self.steps_per_epoch == 0:
            raise DataError(f"{dataset_dir}: {len(self.data)} maps make no full global batch of "
                            f"{batch_size} x {world_size} ranks")
        self.epoch, self.step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        """Batches left in the current epoch."""
        return self.steps_per_epoch - self.step

    def __iter__(self):
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        order, ops = epoch_plan(len(self.data), self.seed, self.epoch, self.shuffle, self.augment)
        batches = _RankBatches(self.data, order, ops, self.rank, self.world_size, self.batch_size)
        remaining = torch.utils.data.Subset(batches, range(self.step, self.steps_per_epoch))
        # its own generator: a DataLoader iterator otherwise draws its workers' base seed from
        # torch's global RNG, once per epoch started, so a mid-epoch resume (one iterator more)
        # would leave the global RNG elsewhere than the uninterrupted run's
        loader = DataLoader(remaining, batch_size=None, shuffle=False, num_workers=self.num_workers,
                            persistent_workers=False, generator=torch.Generator().manual_seed(self.epoch))
        for batch in loader:
            self.step += 1  # counted when handed out, so a checkpoint taken now resumes after it
            yield batch
        self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed,
                "global_batch": self.batch_size * self.world_size, "n_maps": len(self.data)}

    def load_state_dict(self, state: dict) -> None:
        """Resume at (epoch, step). The global batch and dataset size must match: the epoch's
        order is cut into global batches, so another global batch would replay or skip maps."""
        for key in ("global_batch", "n_maps", "seed"):
            mine = self.state_dict()[key]
            if state[key] != mine:
                raise DataError(f"cannot resume the loader: {key} was {state[key]}, now {mine}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

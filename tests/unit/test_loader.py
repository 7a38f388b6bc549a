"""The rank-aware loader: disjoint shares, equal steps, global shuffle, augmentation, resume."""

import numpy as np
import pytest
import torch

from conftest import rewrite_checksum, run_cli
from pipeline.data.loader import ShardedLoader, dihedral, epoch_plan
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """37 maps 6x6 whose every pixel holds the map's index: content names the map."""
    tmp = tmp_path_factory.mktemp("numbered")
    maps = np.repeat(np.arange(37, dtype=np.float32), 36).reshape(37, 6, 6)
    np.save(tmp / "m.npy", maps)
    run_cli("import-npy", tmp / "m.npy", "--out", tmp / "ds", "--side-angle-deg", 1, "--shard-size", 10,
            "--quiet", check=True)
    return tmp / "ds"


def epoch_indices(loader):
    return [b["index"].tolist() for b in loader]


def test_ranks_take_disjoint_shares_with_equal_steps(numbered):
    loaders = [ShardedLoader(numbered, batch_size=4, rank=r, world_size=3, seed=5) for r in range(3)]
    shares = [epoch_indices(ld) for ld in loaders]
    assert [len(s) for s in shares] == [3, 3, 3]  # 37 // (4 * 3) steps each, tail dropped
    flat = [i for s in shares for b in s for i in b]
    assert len(flat) == len(set(flat)) == 36


def test_global_order_does_not_depend_on_world_size(numbered):
    """The same global batch (8) over 1 or 2 ranks covers the same maps in the same steps."""
    one = epoch_indices(ShardedLoader(numbered, batch_size=8, seed=3))
    two = [epoch_indices(ShardedLoader(numbered, batch_size=4, rank=r, world_size=2, seed=3)) for r in (0, 1)]
    assert one == [a + b for a, b in zip(*two)]


def test_batches_hold_the_maps_they_name(numbered):
    for batch in ShardedLoader(numbered, batch_size=5, seed=1):
        assert batch["maps"].shape == (5, 1, 6, 6) and batch["maps"].dtype == torch.float32
        assert torch.equal(batch["maps"][:, 0, 0, 0], batch["index"].float())


def test_shuffle_differs_per_epoch_and_is_reproducible(numbered):
    ld = ShardedLoader(numbered, batch_size=9, seed=2)
    e0, e1 = epoch_indices(ld), epoch_indices(ld)
    assert e0 != e1
    assert epoch_indices(ShardedLoader(numbered, batch_size=9, seed=2)) == e0
    assert epoch_indices(ShardedLoader(numbered, batch_size=9, seed=2, shuffle=False))[0] == list(range(9))


def test_resume_mid_epoch_continues_exactly(numbered):
    ref = ShardedLoader(numbered, batch_size=4, seed=9, augment=True)
    full = [b for _ in range(2) for b in ref]
    ld = ShardedLoader(numbered, batch_size=4, seed=9, augment=True)
    it = iter(ld)
    head = [next(it) for _ in range(5)]
    state = ld.state_dict()
    resumed = ShardedLoader(numbered, batch_size=4, seed=9, augment=True)
    resumed.load_state_dict(state)
    tail = list(resumed) + list(resumed)
    got = head + tail
    assert len(got) == len(full) == 18  # rest of epoch 0, then all of epoch 1
    for a, b in zip(full, got):
        assert torch.equal(a["maps"], b["maps"]) and torch.equal(a["index"], b["index"])


def test_resume_refuses_another_global_batch(numbered):
    state = ShardedLoader(numbered, batch_size=4, seed=9).state_dict()
    with pytest.raises(DataError, match="global_batch was 4, now 8"):
        ShardedLoader(numbered, batch_size=4, world_size=2, seed=9).load_state_dict(state)


def test_workers_give_the_same_batches(numbered):
    a = [b["maps"] for b in ShardedLoader(numbered, batch_size=4, seed=4, augment=True)]
    b = [b["maps"] for b in ShardedLoader(numbered, batch_size=4, seed=4, augment=True, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 9


def test_dihedral_ops_are_the_eight_symmetries():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = {tuple(dihedral(x, [op]).flatten().tolist()) for op in range(8)}
    assert len(images) == 8
    assert torch.equal(dihedral(x, [0]), x)
    assert torch.equal(dihedral(x, [4]), torch.flip(x, dims=(-1,)))


def test_augmentation_draws_every_op():
    _, ops = epoch_plan(4000, seed=0, epoch=0, shuffle=True, augment=True)
    counts = np.bincount(ops, minlength=8)
    assert counts.min() > 400  # 500 expected each; 400 is > 4 sigma below


def test_too_few_maps_for_one_global_batch(numbered):
    with pytest.raises(DataError, match="make no full global batch"):
        ShardedLoader(numbered, batch_size=20, world_size=2)


def test_fast_path_and_h5py_path_read_the_same(numbered, tmp_path):
    """Our shards are read by a memcpy per map from a memory map of the file; a compressed
    shard written by another tool goes through h5py. Both must give the same maps."""
    import shutil

    import h5py

    from pipeline.data.loader import MapDataset

    ds = tmp_path / "ds"
    shutil.copytree(numbered, ds)
    fast = MapDataset(ds)
    assert fast._shard(0).mapped is not None
    expected = fast.read(np.arange(37)[::-1])[0]
    fast.close()
    with h5py.File(ds / "shard-00000.h5", "r+") as f:
        data = f["maps"][:]
        del f["maps"]
        f.create_dataset("maps", data=data, chunks=(1, 6, 6), compression="gzip")
    rewrite_checksum(ds, "shard-00000.h5")
    slow = MapDataset(ds)
    assert slow._shard(0).mapped is None
    np.testing.assert_array_equal(slow.read(np.arange(37)[::-1])[0], expected)

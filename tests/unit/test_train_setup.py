"""What training fits from data is drawn from the whole split, never from its first maps."""

import numpy as np

from pipeline.config import load_config
from pipeline.data.importers import import_maps
from pipeline.data.loader import MapDataset
from pipeline.data.transforms import PixelTransform
from pipeline.models.conditioning import ParamSupport
from pipeline.train.setup import FIT_SAMPLE, fit_transform, sample_indices, seed_from


def test_sample_indices_are_a_seeded_sample_of_the_whole_range():
    idx = sample_indices(10_000, 256, seed=5)
    assert len(idx) == 256 == len(set(idx.tolist())) and np.all(np.diff(idx) > 0)  # distinct, in file order
    assert idx.min() < 1000 and idx.max() > 9000  # from the whole range, not its start
    assert np.array_equal(sample_indices(10_000, 256, seed=5), idx)
    assert not np.array_equal(sample_indices(10_000, 256, seed=6), idx)
    assert np.array_equal(sample_indices(100, 256, seed=5), np.arange(100))  # all when asked for more


def test_transform_of_a_dataset_written_in_parameter_order_sees_every_cosmology(tmp_path):
    """600 maps imported cosmology by cosmology: the first 300 shallow (kappa >= -0.01), the rest
    deep (down to -0.05). A fit on the first fit_maps maps would set the shift from -0.01 and
    clamp the deep maps' voids; the fit on a sample of the whole split covers both."""
    rng = np.random.default_rng(0)
    maps = np.concatenate([rng.uniform(-0.01, 0.05, (300, 16, 16)), rng.uniform(-0.05, 0.05, (300, 16, 16))])
    np.save(tmp_path / "x.npy", maps.astype(np.float32))
    import_maps(np.load(tmp_path / "x.npy"), tmp_path / "train", 1.0, tmp_path / "x.npy", progress=False)
    data = MapDataset(tmp_path / "train")
    cfg = load_config(None, ["transform.fit_maps=64", "train.seed=3"])
    fitted = fit_transform(cfg, data, ParamSupport())
    sample = maps.astype(np.float32)[sample_indices(600, 64, seed_from(3, FIT_SAMPLE))]
    assert fitted == PixelTransform.fit(sample, cfg.transform)
    assert fitted.shift > 0.045 * 1.05  # set by a deep map's void, not by the first cosmology's -0.01


def test_precision_auto_is_bf16_only_where_the_device_has_it(monkeypatch):
    """A CPU without AVX512-BF16 or AMX emulates bf16 (22x slower than fp32 on an AVX2 EPYC,
    docs/benchmarks.md), so "auto" takes fp32 there; explicit choices are kept."""
    import torch

    from pipeline.train import setup

    cpu = torch.device("cpu")
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(setup, "native_bf16", lambda device, native=native: native)
        assert setup.resolve_precision("auto", cpu) == expected
        assert setup.resolve_precision("bf16", cpu) == "bf16" and setup.resolve_precision("fp32", cpu) == "fp32"

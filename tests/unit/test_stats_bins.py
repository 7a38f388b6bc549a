"""Default bins of the stats stage."""

import numpy as np
import pytest

from pipeline.config import StatsConfig
from pipeline.errors import DataError
from pipeline.physics import ell_grid
from pipeline.stats import mode_counts
from pipeline.stats.bins import ell_edges


@pytest.mark.parametrize("angle", [1.75, 3.5, 5.0, 10.0])
def test_default_ell_bins_cover_every_mode_from_the_fundamental(angle):
    """Every rfft half-plane mode with 0 < ell <= half Nyquist is in exactly one default bin,
    the fundamental modes included (they sit at 2 pi/theta, inside the first bin)."""
    n = 64
    edges = ell_edges(StatsConfig(), n, angle)
    ell = ell_grid(n, angle)
    expected = int(((ell > 0) & (ell <= edges[-1])).sum())
    assert mode_counts(n, angle, edges).sum() == expected
    assert edges[0] < 2 * np.pi / np.deg2rad(angle) <= edges[1]
    np.testing.assert_allclose(edges[-1], np.pi * n / (2 * np.deg2rad(angle)), rtol=1e-8)


def test_log_bins_without_modes_are_refused():
    with pytest.raises(DataError, match="holds no Fourier mode"):
        ell_edges(StatsConfig(ell_spacing="log", n_ell=30), 32, 1.75)


def test_sigma_pass_keeps_chunks_up_to_its_budget_and_matches_numpy(tiny_data):
    """pooled_sigma keeps each chunk it reads that fits in what is left of keep_bytes
    (whole chunks), hands back exactly what a fresh read gives, and its sigma is numpy's."""
    from pipeline.data.loader import MapDataset
    from pipeline.stats.fanout import pooled_sigma

    data = MapDataset(tiny_data / "train")
    chunks = [range(s, min(s + 50, 192)) for s in range(0, 192, 50)]  # 50, 50, 50, 42 maps
    one = 50 * 32 * 32 * 4
    for budget, expect in ((0, []), (one - 1, [3]), (one, [0]), (2.5 * one, [0, 1]), (4 * one, [0, 1, 2, 3])):
        kept = {}
        sigma = pooled_sigma(data, chunks, kept, int(budget))
        assert sorted(kept) == expect, budget
    for k, (maps, params) in kept.items():
        fresh = data.read(np.arange(chunks[k].start, chunks[k].stop))
        np.testing.assert_array_equal(maps, fresh[0])
        np.testing.assert_array_equal(params, fresh[1])
    all_maps = data.read(np.arange(192))[0].astype(np.float64)
    np.testing.assert_allclose(sigma, all_maps.std(), rtol=1e-12)


def test_keep_read_mib_is_checked_and_changes_no_recipe():
    from pipeline.errors import ConfigError

    assert StatsConfig(keep_read_mib=0).numbers() == StatsConfig().numbers()
    assert StatsConfig(chunk_size=7).numbers() != StatsConfig().numbers()
    with pytest.raises(ConfigError, match="stats.keep_read_mib"):
        StatsConfig(keep_read_mib=-1).validate("stats")

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


def test_sigma_pass_through_one_buffer_matches_numpy(tiny_data):
    """pooled_sigma reading every chunk (the last one short) into one reused buffer gives
    numpy's float64 standard deviation of all maps; a read into a buffer is a fresh read."""
    from pipeline.data.loader import MapDataset
    from pipeline.stats.fanout import pooled_sigma

    data = MapDataset(tiny_data / "train")
    chunks = [range(s, min(s + 50, 192)) for s in range(0, 192, 50)]  # 50, 50, 50, 42 maps
    buffer = np.full((50, 32, 32), np.nan, np.float32)
    sigma = pooled_sigma(data, chunks, buffer)
    all_maps = data.read(np.arange(192))[0]
    np.testing.assert_allclose(sigma, all_maps.astype(np.float64).std(), rtol=1e-12)
    maps, params = data.read(np.arange(150, 192), buffer)
    assert np.shares_memory(maps, buffer)
    np.testing.assert_array_equal(maps, all_maps[150:])
    np.testing.assert_array_equal(params, data.read(np.arange(150, 192))[1])
    with pytest.raises(ValueError, match="cannot hold 51 maps"):
        data.read(np.arange(51), buffer)

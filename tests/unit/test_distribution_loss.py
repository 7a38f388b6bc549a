"""The per-map distribution term: its energy distance against scipy's, zero in expectation
for two samples of one model and clearly positive for a shifted spread, summaries as
defined, gradients reach G, the config refuses what it cannot do."""

import numpy as np
import pytest
import torch
from scipy import stats as sps

from pipeline.data.transforms import PixelTransform
from pipeline.train.distribution_loss import THRESHOLDS_SIGMA, PerMapDistributionLoss

# a large shift keeps every kappa above -shift (no clamping), so inverse(forward(k)) = k
WIDE = PixelTransform(shift=1.0, scale=1.0)


def lognormal_like(n, size, seed, amplitude=1.0):
    """Maps (n, size, size) of a mean-zero lognormal field of white noise; each map's
    amplitude drawn around ``amplitude`` so that the per-map sigma varies."""
    g = np.random.default_rng(seed)
    a = amplitude * (1 + 0.05 * g.standard_normal((n, 1, 1)))
    return ((np.exp(0.5 * g.standard_normal((n, size, size))) - np.exp(0.125)) * 0.02 * a).astype(np.float32)


def as_fake(maps):
    return WIDE.forward(torch.as_tensor(maps))[:, None]


def test_energy_distance_matches_scipy_less_the_diagonal_terms():
    """scipy.stats.energy_distance is sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) with the means over
    all n^2 pairs (V-statistics); ours takes the distinct pairs (U-statistics): the two differ
    by exactly (1/n) x the pair means, so D = scipy^2 - E_U|X-X'|/n_x - E_U|Y-Y'|/n_y."""
    bank = lognormal_like(300, 16, 0)
    loss = PerMapDistributionLoss(16, [bank[:100], bank[100:]], WIDE, torch.device("cpu"))
    fake = lognormal_like(40, 16, 1, amplitude=1.1)
    d = loss.distances(as_fake(fake)).numpy()
    x = loss._standardise(loss.summaries(torch.as_tensor(fake))).numpy()
    y = loss.bank.numpy()
    for k in np.flatnonzero(loss.used.numpy()):
        def u_pair(s):
            return np.abs(s[:, None] - s[None, :]).sum() / (len(s) * (len(s) - 1))
        expected = sps.energy_distance(x[:, k], y[:, k]) ** 2 - u_pair(x[:, k]) / len(x) - u_pair(y[:, k]) / len(y)
        assert d[k] == pytest.approx(expected, abs=1e-4), loss.names[k]


def test_the_cross_term_by_binary_search_is_the_mean_over_all_pairs_value_and_gradient():
    """E|X - Y| from the sorted bank and its prefix sums equals the (B, n, K) mean of
    |x - y| (what it replaces, for speed), and so does its gradient (sign(x - y) averaged)."""
    loss = PerMapDistributionLoss(16, [lognormal_like(300, 16, 3)], WIDE, torch.device("cpu"))
    x = loss._standardise(loss.summaries(torch.as_tensor(lognormal_like(40, 16, 4, 1.1))))
    fast, slow = x.clone().requires_grad_(), x.clone().requires_grad_()
    value = loss._cross(fast)
    weights = torch.linspace(0.5, 1.5, len(value))
    (value * weights).sum().backward()
    expected = (slow[:, None, :] - loss.bank[None, :, :]).abs().mean((0, 1))
    (expected * weights).sum().backward()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-5, atol=1e-7)
    assert slow.grad.abs().max() > 0


def test_zero_in_expectation_for_the_same_model_and_positive_for_a_wider_one():
    """Averaged over 30 batches of 32: two samples of one model give D ~ 0 within 4 standard
    errors (the U-statistics make it unbiased); maps 10% brighter (sigma 10% up, ~0.8 of
    the per-map sigma of these 16x16 maps: D ~ 0.5 for two normals so far apart) give a
    sigma distance far above that noise."""
    loss = PerMapDistributionLoss(16, [lognormal_like(1024, 16, 2)], WIDE, torch.device("cpu"))
    sigma = loss.names.index("sigma")
    same = torch.stack([loss.distances(as_fake(lognormal_like(32, 16, 10 + i))) for i in range(30)])
    wide = torch.stack([loss.distances(as_fake(lognormal_like(32, 16, 100 + i, 1.1))) for i in range(30)])
    se = same[:, sigma].std() / np.sqrt(30)
    assert abs(same[:, sigma].mean()) < 4 * se
    assert abs(same.mean(0)[loss.used]).max() < 0.05
    assert wide[:, sigma].mean() > 0.25 and wide[:, sigma].mean() > 20 * se


def test_summaries_are_the_moments_the_soft_v0_and_the_ring_powers():
    maps = lognormal_like(8, 16, 3)
    loss = PerMapDistributionLoss(16, [lognormal_like(64, 16, 4)], WIDE, torch.device("cpu"))
    s = loss.summaries(torch.as_tensor(maps)).numpy()
    x = maps.reshape(8, -1).astype(np.float64)
    np.testing.assert_allclose(s[:, 0], x.mean(1), atol=1e-7)
    np.testing.assert_allclose(s[:, 1], x.std(1), rtol=1e-4)
    np.testing.assert_allclose(s[:, 2], sps.skew(x, axis=1), rtol=1e-3)
    hard = np.stack([(x > loss.center + t * loss.scale).mean(1) for t in THRESHOLDS_SIGMA], 1)
    assert np.abs(s[:, 3:3 + len(THRESHOLDS_SIGMA)] - hard).max() < 0.05  # the logistic step's width
    width = 0.1 * loss.scale  # SOFTNESS_SIGMA
    grad = np.hypot((np.roll(maps, -1, 2) - np.roll(maps, 1, 2)) / 2,
                    (np.roll(maps, -1, 1) - np.roll(maps, 1, 1)) / 2).reshape(8, -1)
    v1 = []
    for t in THRESHOLDS_SIGMA:
        u = (x - (loss.center + t * loss.scale)) / width
        kernel = np.exp(-u) / (1 + np.exp(-u)) ** 2 / width  # the logistic's density
        v1.append((kernel * grad).mean(1) / 4)
    n_t = len(THRESHOLDS_SIGMA)
    np.testing.assert_allclose(s[:, 3 + n_t:3 + 2 * n_t], np.stack(v1, 1), rtol=1e-3, atol=1e-9)
    power = np.abs(np.fft.rfft2(maps)) ** 2  # the half plane of modes, as the term takes them
    ring = np.round(np.hypot(np.fft.fftfreq(16, 1 / 16)[:, None], np.fft.rfftfreq(16, 1 / 16)[None, :]))
    np.testing.assert_allclose(np.exp(s[:, loss.names.index("log P(|k|=2)")]), power[:, ring == 2].mean(1),
                               rtol=1e-3)


def test_each_group_of_summaries_weighs_the_same():
    """mean, sigma, skewness, the V0s, the V1s and the rings: 1/6 each, so the map mean weighs
    as much as all eleven V0 thresholds together; the loss is the weighted sum of the distances."""
    loss = PerMapDistributionLoss(16, [lognormal_like(64, 16, 5)], WIDE, torch.device("cpu"))
    w = loss.weight.numpy()
    v0 = slice(3, 3 + len(THRESHOLDS_SIGMA))
    v1 = slice(v0.stop, v0.stop + len(THRESHOLDS_SIGMA))
    np.testing.assert_allclose([w[0], w[1], w[2], w[v0].sum(), w[v1].sum(), w[v1.stop:].sum()], [1 / 6] * 6,
                               rtol=1e-6)
    fake = as_fake(lognormal_like(8, 16, 6))
    assert float(loss(fake)) == pytest.approx(float((loss.distances(fake) * loss.weight).sum()))


def test_the_fundamental_group_weighs_ring_1_as_much_as_all_other_rings():
    """With fundamental_group the ring-1 summary is a seventh group: 1/7, as much as the
    map mean or the other rings together (three here: a 16-pixel map's rings run 1-4),
    against 1/24 among the rings without it; the distances themselves do not change."""
    bank = lognormal_like(64, 16, 5)
    plain = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"))
    own = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"), fundamental_group=True)
    ring1 = own.names.index("log P(|k|=1)")
    assert float(plain.weight[ring1]) == pytest.approx(1 / 24)
    w = own.weight.numpy()
    v0 = slice(3, 3 + len(THRESHOLDS_SIGMA))
    v1 = slice(v0.stop, v0.stop + len(THRESHOLDS_SIGMA))
    np.testing.assert_allclose([w[0], w[1], w[2], w[v0].sum(), w[v1].sum(), w[ring1], w[ring1 + 1:].sum()],
                               [1 / 7] * 7, rtol=1e-6)
    fake = as_fake(lognormal_like(8, 16, 6))
    torch.testing.assert_close(own.distances(fake), plain.distances(fake))


def test_a_fixed_map_mean_is_skipped_not_divided_by_zero():
    """Its weight goes to the five other groups, 1/5 each."""
    bank = lognormal_like(64, 16, 5)
    bank -= bank.mean((1, 2), keepdims=True)
    loss = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"))
    assert not loss.used[loss.names.index("mean")]
    assert float(loss.weight[0]) == 0 and float(loss.weight[1]) == pytest.approx(0.2)
    assert torch.isfinite(loss(as_fake(lognormal_like(8, 16, 6))))


def test_gradient_flows_to_the_generated_maps():
    loss = PerMapDistributionLoss(16, [lognormal_like(64, 16, 7)], WIDE, torch.device("cpu"))
    fake = as_fake(lognormal_like(8, 16, 8, 1.2)).clone().requires_grad_()
    loss(fake).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_training_with_the_term_logs_it(tiny_data, tmp_path):
    import json

    from conftest import CONFIGS, run_main

    run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", tmp_path / "run",
             "--quiet", "--set", "train.steps=4", "--set", "train.distribution_weight=1",
             "--set", "train.distribution_spread_weight=1",
             "--set", "train.distribution_correlation_weight=1", check=True)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["loss_aux"] > 0


def test_negative_weight_is_refused(tmp_path):
    from conftest import CONFIGS, run_main

    r = run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tmp_path, "--run", tmp_path / "run",
                 "--set", "train.distribution_weight=-1")
    assert r.returncode != 0 and "train.distribution_weight" in r.stderr


def test_a_conditional_config_is_accepted():
    from pipeline.config import load_config

    cfg = load_config(None, ["train.distribution_weight=1", "model.condition_on=[Omega_m, sigma_8]"])
    assert cfg.train.distribution_weight == 1


def test_one_cosmology_given_per_cosmology_is_the_plain_term():
    bank = lognormal_like(128, 16, 5)
    plain = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"), spread_weight=1.0, correlation_weight=1.0)
    per = PerMapDistributionLoss(16, [], WIDE, torch.device("cpu"), spread_weight=1.0, correlation_weight=1.0,
                                 per_cosmology=[[bank]], points=torch.zeros(1, 2))
    fake = as_fake(lognormal_like(16, 16, 6))
    assert float(per(fake, torch.zeros(16, 2))) == pytest.approx(float(plain(fake)), rel=1e-6)


def test_a_conditional_term_judges_each_map_by_its_own_cosmology():
    """Two cosmologies 1.5x apart in amplitude (at normalised -1 and +1): maps of each
    labelled with their own parameters are as close to the pooled, per-cosmology
    standardised bank as another sample of the model; the same maps labelled with the other
    cosmology's are far off (the sigma's distance alone > 1, as for normals ~5 spreads
    apart). Each cosmology's standardised bank has mean 0 and spread 1 per summary."""
    a, b = lognormal_like(512, 16, 1), lognormal_like(512, 16, 2, amplitude=1.5)
    points = torch.tensor([[-1.0], [1.0]])
    loss = PerMapDistributionLoss(16, [], WIDE, torch.device("cpu"), per_cosmology=[[a], [b]], points=points)
    assert loss.scales[1] / loss.scales[0] == pytest.approx(1.5, rel=0.05)
    used = loss.used
    for half in (loss.bank[:512], loss.bank[512:]):
        np.testing.assert_allclose(half.mean(0)[used], 0, atol=1e-4)
        np.testing.assert_allclose(half.std(0)[used], 1, rtol=1e-4)
    fake = as_fake(np.concatenate([lognormal_like(32, 16, 3), lognormal_like(32, 16, 4, amplitude=1.5)]))
    own = torch.cat([points[:1].expand(32, 1), points[1:].expand(32, 1)])
    sigma = loss.names.index("sigma")
    right, swapped = loss.distances(fake, own), loss.distances(fake, -own)
    assert float(right[used].max()) < 0.15
    assert float(swapped[sigma]) > 1.0
    assert float(loss(fake, -own)) > 100 * float(loss(fake, own))


def test_soft_v1_matches_the_statistics_minkowski_v1():
    """The term's soft V1 at each threshold against pipeline.stats' binned V1 (the
    validation's own code) in a 0.2 sigma bin about it, on smooth Gaussian maps (32 of
    64x64, coherence ~6 pixels), mean over maps: both estimate the boundary length per unit
    threshold; they differ by the kernel's shape (second order in its ~0.2 sigma width, ~1%
    where V1 is curved most) and the bin's few pixels. Within 4% at |t| <= 1 sigma, where
    each bin holds ~1,000 pixels over the maps; a kernel without its 1/width is off ~500x,
    a missing /2 or /4 by 2x or 4x."""
    from pipeline.stats.minkowski import minkowski_functionals

    g = np.random.default_rng(0)
    n, size = 32, 64
    k2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
    f = np.fft.ifft2(np.fft.fft2(g.standard_normal((n, size, size))) * np.exp(-k2 * (size / 6) ** 2 / 2)).real
    f = (f / f.std() * 0.02).astype(np.float32)
    loss = PerMapDistributionLoss(size, [f], WIDE, torch.device("cpu"))
    n_t = len(THRESHOLDS_SIGMA)
    soft = loss.summaries(torch.as_tensor(f)).numpy()[:, 3 + n_t:3 + 2 * n_t].mean(0)
    for i, t in enumerate(THRESHOLDS_SIGMA):
        if abs(t) <= 1:
            c = loss.center + t * loss.scale
            _, _, v1, _ = minkowski_functionals(f, np.array([c - 0.1 * loss.scale, c + 0.1 * loss.scale]))
            assert soft[i] == pytest.approx(float(v1.mean()), rel=0.04), t


def test_spread_errors_are_the_squared_log_ratio_of_the_scatters():
    """Per summary, (log(s_batch / s_bank))^2 with both standard deviations over maps (ddof
    1), computed by hand from the summaries; maps given 15% more amplitude scatter (the
    bank's per-map pixel sigma scatters 10%, so ~1.8x as spread: (log 1.8)^2 ~ 0.3) score
    far above two samples of one model (~0.01 over 64 maps); the loss adds the errors with
    their weight, and weight 0 leaves the distances alone."""
    bank = lognormal_like(1024, 16, 11)
    loss = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"), spread_weight=2.0)
    fake = lognormal_like(64, 16, 12)
    fake *= (1 + 0.15 * np.random.default_rng(16).standard_normal((64, 1, 1))).astype(np.float32)
    s = loss.summaries(torch.as_tensor(fake)).numpy().astype(np.float64)
    ref = loss.summaries(torch.as_tensor(bank)).numpy().astype(np.float64)
    expected = np.log(s.std(0, ddof=1) / ref.std(0, ddof=1)) ** 2
    e = loss.spread_errors(as_fake(fake)).numpy()
    used = loss.used.numpy()
    np.testing.assert_allclose(e[used], expected[used], rtol=2e-3, atol=1e-6)
    same = loss.spread_errors(as_fake(lognormal_like(64, 16, 13)))
    sigma = loss.names.index("sigma")
    assert e[sigma] > 0.15 and e[sigma] > 5 * float(same[sigma])
    x = as_fake(fake)
    d = float((loss.distances(x) * loss.weight).sum())
    assert float(loss(x)) == pytest.approx(d + 2.0 * float((loss.spread_errors(x) * loss.weight).sum()), rel=1e-5)
    plain = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"))
    assert float(plain(x)) == pytest.approx(d, rel=1e-5)


@pytest.mark.parametrize("part", ["spread_weight", "correlation_weight"])
def test_optional_parts_have_finite_gradients_when_a_summary_is_fixed(part):
    """A bank with a fixed map mean (the summary not used) and a batch whose means are all
    equal too: the masked summary must not turn the gradient into NaN (the spread part
    divides by a standard deviation, the correlation part by two)."""
    bank = lognormal_like(64, 16, 14)
    bank -= bank.mean((1, 2), keepdims=True)
    loss = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"), **{part: 1.0})
    maps = lognormal_like(8, 16, 15)
    maps -= maps.mean((1, 2), keepdims=True)
    fake = as_fake(maps).clone().requires_grad_()
    loss(fake).backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def coupled(n, size, seed, shuffle=False):
    """lognormal_like maps plus a per-map offset that follows the amplitude (mean and sigma
    correlated ~0.95, as a lognormal map's mean follows its realised variance); with
    ``shuffle`` the offsets go to other maps: each marginal as before, the coupling gone."""
    g = np.random.default_rng(seed)
    a = 1 + 0.2 * g.standard_normal((n, 1, 1))
    maps = (np.exp(0.5 * g.standard_normal((n, size, size))) - np.exp(0.125)) * 0.02 * a
    offset = 0.02 * (a - 1)
    if shuffle:
        offset = g.permutation(offset)
    return (maps + offset).astype(np.float32)


def test_correlation_errors_are_the_squared_differences_of_the_correlation_matrices():
    """Per pair of used summaries, (z_batch - z_bank)^2, z = atanh(0.999 r) of numpy's Pearson
    correlations r of the summaries, 0 on the diagonal; the pair weights are the products
    of the summaries' weights off the diagonal, summing to 1; the loss adds the errors with
    their weight. Shuffling which map gets which offset keeps every marginal and breaks the
    mean-sigma coupling (0.95 -> 0 +- 0.13): its error (2.8 here) is far above that of a
    fresh sample of the model (about 1 / (64 - 3) ~ 0.016, z's sampling variance)."""
    bank = coupled(1024, 16, 20)
    loss = PerMapDistributionLoss(16, [bank], WIDE, torch.device("cpu"), correlation_weight=3.0)
    fake = coupled(64, 16, 21, shuffle=True)
    used = loss.used.numpy()
    s = loss.summaries(torch.as_tensor(fake)).numpy().astype(np.float64)[:, used]
    ref = loss.summaries(torch.as_tensor(bank)).numpy().astype(np.float64)[:, used]
    expected = (np.arctanh(0.999 * np.corrcoef(s.T)) - np.arctanh(0.999 * np.corrcoef(ref.T))) ** 2
    np.fill_diagonal(expected, 0)
    e = loss.correlation_errors(as_fake(fake)).numpy()
    np.testing.assert_allclose(e[np.ix_(used, used)], expected, rtol=2e-3, atol=2e-4)
    w = loss.pair_weight.numpy()
    assert w.sum() == pytest.approx(1) and np.diag(w).max() == 0 and (w[~used] == 0).all()
    i, j = loss.names.index("mean"), loss.names.index("sigma")
    assert w[i, j] == pytest.approx(float(loss.weight[i] * loss.weight[j]) / (1 - float((loss.weight ** 2).sum())))
    assert np.corrcoef(ref[:, 0], ref[:, 1])[0, 1] > 0.9
    same = loss.correlation_errors(as_fake(coupled(64, 16, 22))).numpy()
    assert e[i, j] > 2 and e[i, j] > 20 * same[i, j]
    x = as_fake(fake)
    d = float((loss.distances(x) * loss.weight).sum())
    assert float(loss(x)) == pytest.approx(d + 3.0 * float((loss.correlation_errors(x) * loss.pair_weight).sum()),
                                           rel=1e-5)


@pytest.mark.parametrize("key", ["distribution_spread_weight", "distribution_correlation_weight"])
def test_a_negative_part_weight_is_refused(key):
    from pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"train.{key}"):
        load_config(None, [f"train.{key}=-1"])

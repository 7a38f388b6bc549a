"""The conditional emulator's parts: FiLM generator, projection discriminator, the support's
parsing and categories, the per-cosmology spectral term and fidelity check."""

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.data.transforms import PixelTransform
from pipeline.errors import DataError
from pipeline.models.args import ModelArgs, ModelArgsError
from pipeline.models.conditioning import ParamSupport, distinct_rows
from pipeline.models.dcgan import build_models
from pipeline.train.aux_losses import SpectralLoss

WIDE = PixelTransform(shift=1.0, scale=1.0)
OPTIONS = [("film", "projection"), ("concat", "planes"), ("film+concat", "projection+planes")]


def conditional_args(g="film", d="projection", **kw):
    return ModelArgs(image_size=32, z_dim=8, g_channels=4, d_channels=4, kernel_size=4,
                     condition_on=["Omega_m", "sigma_8"], g_conditioning=g, d_conditioning=d, **kw)


@pytest.mark.parametrize("g,d", OPTIONS)
def test_conditional_models_take_parameters(g, d):
    torch.manual_seed(0)
    G, D = build_models(conditional_args(g, d))
    z, p = torch.randn(6, 8), torch.rand(6, 2) * 2 - 1
    x = G(z, p)
    assert x.shape == (6, 1, 32, 32) and D(x, p).shape == (6,)
    # D's logit depends on the parameters it is told, for the same maps
    assert not torch.allclose(D(x, p), D(x, -p))
    # channels_last inputs give the same logits
    D2 = D.to(memory_format=torch.channels_last)
    torch.testing.assert_close(D2(x.contiguous(memory_format=torch.channels_last), p), D(x, p))


def test_film_starts_as_the_identity_and_then_conditions():
    """FiLM's heads start at zero: at initialisation G(z, p) does not depend on p; once a head
    is non-zero, it does."""
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    G, _ = build_models(conditional_args("film", "projection"))
    torch.testing.assert_close(G(z, torch.full((4, 2), -1.0)), G(z, torch.full((4, 2), 1.0)))
    with torch.no_grad():
        G.film.heads["bn1"].bias[:4] += 0.5  # a gain change on bn1
        G.film.heads["bn1"].weight.normal_()
    assert not torch.allclose(G(z, torch.full((4, 2), -1.0)), G(z, torch.full((4, 2), 1.0)))


def test_unconditional_models_keep_their_parameter_names():
    """Checkpoints of unconditional runs made before conditioning existed still load."""
    G, D = build_models(ModelArgs(image_size=32, z_dim=8, g_channels=4, d_channels=4))
    assert not any("film" in k for k in G.state_dict()) and not any("projection" in k for k in D.state_dict())
    assert G.main.fc.in_features == 8 and D.main.conv1.in_channels == 1
    Gc, Dc = build_models(conditional_args("concat", "planes"))
    assert Gc.main.fc.in_features == 10 and Dc.main.conv1.in_channels == 3


def test_model_conditioning_options_are_checked():
    with pytest.raises(ModelArgsError, match="condition_on"):
        conditional_args().__class__(image_size=32, condition_on=["Omega_m", "Omega_m"])
    with pytest.raises(ConfigError, match="g_conditioning"):
        load_config(None, ["model.g_conditioning=cbn"])
    with pytest.raises(ConfigError, match="fresh_params"):
        load_config(None, ["train.fresh_params=true", "train.spectral_weight=1"])
    with pytest.raises(ConfigError, match="fresh_params"):
        load_config(None, ["train.fresh_params=true", "train.distribution_weight=1"])
    args = conditional_args()
    assert args.n_params == 2 and ModelArgs.from_dict(args.to_dict()) == args


SUPPORT = ParamSupport(("Omega_m", "sigma_8"), (0.2, 0.6), (0.4, 1.0), ((0.2, 0.6), (0.3, 0.8), (0.4, 1.0)))


def test_params_are_parsed_by_name():
    np.testing.assert_array_equal(SUPPORT.parse("sigma_8=0.79, Omega_m=0.31"), [0.31, 0.79])


@pytest.mark.parametrize("text,message", [
    ("Omega_m=0.3", "no value for sigma_8"),
    ("Omega_m=0.3,sigma_8=0.8,w0=-1", "unknown parameter 'w0'; this run takes Omega_m, sigma_8"),
    ("Omega_m=0.3,sigma_8=high", "sigma_8='high' is not a number"),
    ("Omega_m=0.3,sigma_8=nan", "not a finite number"),
    ("Omega_m=0.3,Omega_m=0.2,sigma_8=1", "Omega_m is given twice"),
    ("0.3,0.8", "is not NAME=VALUE"),
])
def test_bad_params_are_refused(text, message):
    with pytest.raises(DataError, match=message):
        SUPPORT.parse(text)
    with pytest.raises(DataError, match="unconditional"):
        ParamSupport().parse("Omega_m=0.3")


def test_categories_of_cosmologies():
    f32 = float(np.float32(0.3))  # as a dataset stores it
    assert SUPPORT.category([f32, float(np.float32(0.8))]) == "training"
    assert SUPPORT.category([0.25, 0.7]) == "held-out"
    assert SUPPORT.category([0.2, 0.7]) == "edge" and SUPPORT.category([0.3, 1.0]) == "edge"
    assert SUPPORT.category([0.45, 0.8]) == "extrapolated"
    assert ParamSupport.from_dict(SUPPORT.to_dict(), "x") == SUPPORT
    old = {"names": ["Omega_m"], "low": [0.2], "high": [0.4]}  # written before points were kept
    assert ParamSupport.from_dict(old, "x").points == ()


def test_distinct_rows_in_order_of_first_appearance():
    points, which = distinct_rows(np.array([[0.3, 0.8], [0.2, 0.6], [0.3, 0.8], [0.4, 1.0], [0.2, 0.6]]))
    np.testing.assert_array_equal(points, [[0.3, 0.8], [0.2, 0.6], [0.4, 1.0]])
    np.testing.assert_array_equal(which, [0, 1, 0, 2, 1])


def scaled_noise(n, size, amp, seed):
    return (np.random.default_rng(seed).standard_normal((n, size, size)) * amp).astype(np.float32)


def test_spectral_term_holds_each_map_to_its_own_cosmology():
    """Two cosmologies whose maps differ 3x in amplitude (9x in power): generated maps that
    match their own cosmology's power cost ~nothing; the same maps told the other
    cosmology's parameters, or one pooled target, cost about log((9 + 1/9) / 2)^2."""
    size = 16
    low, high = scaled_noise(400, size, 0.01, 0), scaled_noise(400, size, 0.03, 1)
    points = torch.tensor([[-1.0], [1.0]])
    loss = SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[low], [high]], points=points)
    kappa = np.concatenate([scaled_noise(200, size, 0.01, 2), scaled_noise(200, size, 0.03, 3)])
    fake = WIDE.forward(torch.from_numpy(kappa)[:, None])  # as G makes them
    right = torch.cat([torch.full((200, 1), -0.9), torch.full((200, 1), 0.8)])  # nearest point decides
    wrong = -right
    assert loss(fake, right).item() < 0.05
    # told the other cosmology, half the maps have 9x and half 1/9x their target's power
    assert loss(fake, wrong).item() > 0.8 * np.log((9 + 1 / 9) / 2) ** 2
    pooled = SpectralLoss(size, [np.concatenate([low, high])], WIDE, torch.device("cpu"))
    assert pooled(fake[:200]).item() > 0.3  # the pooled mean is ~5x the low cosmology's power


def test_one_cosmology_per_cosmology_equals_the_single_target():
    size = 16
    maps = scaled_noise(64, size, 0.02, 4)
    fake = WIDE.forward(torch.from_numpy(scaled_noise(32, size, 0.025, 5))[:, None])
    single = SpectralLoss(size, [maps], WIDE, torch.device("cpu"))
    per = SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[maps]], points=torch.zeros(1, 1))
    torch.testing.assert_close(per(fake, torch.zeros(32, 1)), single(fake), rtol=1e-5, atol=1e-7)


def test_fidelity_scores_the_worst_cosmology():
    from pipeline.config import StatsConfig
    from pipeline.train.fidelity import FidelityCheck

    size = 32
    a, b = scaled_noise(40, size, 0.01, 6), scaled_noise(40, size, 0.03, 7)
    reference = np.concatenate([a, b])
    which = np.repeat([0, 1], 40)
    check = FidelityCheck(reference, 1.75, StatsConfig(n_ell=6), 1, torch.zeros(80, 4),
                          points=np.array([[0.25], [0.35]]), which=which)
    good = check.score(np.concatenate([scaled_noise(40, size, 0.01, 8), scaled_noise(40, size, 0.03, 9)]))
    one_off = check.score(np.concatenate([scaled_noise(40, size, 0.01, 8), scaled_noise(40, size, 0.036, 9)]))
    assert good["fid_ps_max"] < 0.2 and one_off["fid_ps_max"] > 0.3  # 1.2x amplitude: 1.44x power at one
    assert one_off["fid_score"] > good["fid_score"]


@pytest.mark.parametrize("name", ["conditional.yaml", "cosmogan256-conditional.yaml"])
def test_shipped_conditional_configs_hold_out_interior_and_edge_cosmologies(name):
    """25 training cosmologies with >= 512 maps each; the test split holds them plus 4 held-out
    interior and 2 edge cosmologies, none in the training design."""
    from conftest import CONFIGS

    cfg = load_config(CONFIGS / name)
    train = cfg.split_points("train")
    test = cfg.split_points("test")
    assert len(train) == 25 and cfg.data.n_train // len(train) >= 512 and cfg.data.n_train % len(train) == 0
    assert cfg.data.n_test % len(test) == 0 and cfg.data.n_test // len(test) >= 512
    assert set(cfg.split_points("validation")) == set(train)
    lo, hi = np.min(train, 0), np.max(train, 0)
    support = ParamSupport(("Omega_m", "sigma_8"), tuple(lo), tuple(hi), tuple(train))
    cats = [support.category(p) for p in test]
    assert cats.count("training") == 25 and cats.count("held-out") == 4 and cats.count("edge") == 2
    assert cfg.model.condition_on == ["Omega_m", "sigma_8"]
    # the test split's cosmologies share their fields (the response ratios), the training split's do not
    assert cfg.data.splits.test.matched_seeds and not cfg.data.splits.train.matched_seeds


def test_emulator_takes_params_by_name():
    from pipeline.emulator import Emulator

    args = conditional_args()
    G, _ = build_models(args)
    support = ParamSupport(("Omega_m", "sigma_8"), (0.2, 0.6), (0.4, 1.0))
    emu = Emulator(G.eval(), WIDE, args, support, 1.75, load_config(None))
    by_name = emu.sample(3, params={"sigma_8": 0.7, "Omega_m": 0.25}, seed=1)
    np.testing.assert_array_equal(by_name, emu.sample(3, params=[0.25, 0.7], seed=1))
    with pytest.raises(DataError, match="unknown parameter 'w0'"):
        emu.sample(3, params={"w0": -1, "Omega_m": 0.3, "sigma_8": 0.8})


def test_cosmology_term_measures_each_cosmologys_amplitude_bias_not_its_scatter():
    """L_cosmo, averaged over pairs of maps at one cosmology, estimates the squared bias of
    the mean log amplitude: ~0 for maps drawn like the targets, ~log(1.21)^2 for maps 10%
    brighter (21% in power) at one cosmology of two, and still ~0 for maps of the right
    mean amplitude whose amplitudes scatter 3x more (no pull on the scatter)."""
    size = 16
    rng = np.random.default_rng(10)
    low, high = scaled_noise(512, size, 0.01, 11), scaled_noise(512, size, 0.03, 12)
    points = torch.tensor([[-1.0], [1.0]])
    loss = SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[low], [high]], points=points)
    params = torch.tensor([[-1.0]] * 256 + [[1.0]] * 256)

    def term(kappa):
        return loss.cosmology_term(WIDE.forward(torch.from_numpy(kappa.astype(np.float32))[:, None]), params).item()

    right = np.concatenate([scaled_noise(256, size, 0.01, 13), scaled_noise(256, size, 0.03, 14)])
    assert abs(term(right)) < 0.002
    bright = right.copy()
    bright[256:] *= 1.1
    assert term(bright) == pytest.approx(0.5 * np.log(1.21) ** 2, rel=0.25)  # half the pairs biased
    scatter = right * np.exp(rng.normal(0, 0.1, (512, 1, 1)) - 0.01)[...]   # mean log amplitude kept
    assert abs(term(scatter)) < 0.004
    with pytest.raises(ConfigError, match="fresh_params"):
        load_config(None, ["train.fresh_params=true", "train.cosmology_spectral_weight=1"])


def test_linear_cosmology_term_measures_the_mean_power_where_the_log_term_sees_the_scatter():
    """Maps drawn like the targets, each map's power times w = exp(2 e), e ~ N(-s^2, s): the
    mean power is the targets' (E[w] = 1) but the mean log power is 2 s^2 low. The log term
    estimates that squared bias, (2 s^2)^2 at every ring; the linear term, the mean power's,
    stays ~0. Its partner: 10% brighter maps (21% in power) at one cosmology of two cost the
    linear term 0.21^2 in half the pairs."""
    size, s = 16, 0.3
    rng = np.random.default_rng(40)
    low, high = scaled_noise(512, size, 0.01, 41), scaled_noise(512, size, 0.03, 42)
    points = torch.tensor([[-1.0], [1.0]])
    params = torch.tensor([[-1.0]] * 256 + [[1.0]] * 256)
    right = np.concatenate([scaled_noise(256, size, 0.01, 43), scaled_noise(256, size, 0.03, 44)])
    scattered = right * np.exp(rng.normal(-s * s, s, (512, 1, 1)))
    bright = right.copy()
    bright[256:] *= 1.1
    terms = {}
    for scale in ("log", "linear"):
        loss = SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[low], [high]], points=points,
                            cosmology_scale=scale)
        terms[scale] = [loss.cosmology_term(WIDE.forward(torch.from_numpy(m.astype(np.float32))[:, None]),
                                            params).item() for m in (right, scattered, bright)]
    assert abs(terms["log"][0]) < 0.002 and abs(terms["linear"][0]) < 0.002
    assert terms["log"][1] == pytest.approx((2 * s * s) ** 2, rel=0.25)
    assert abs(terms["linear"][1]) < 0.1 * (2 * s * s) ** 2
    assert terms["linear"][2] == pytest.approx(0.5 * 0.21 ** 2, rel=0.25)
    with pytest.raises(ValueError, match="cosmology_scale"):
        SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[low], [high]], points=points,
                     cosmology_scale="sqrt")


def test_cosmology_term_judges_the_map_mean_only_when_asked():
    """White-noise maps (per-map mean sd = amp / size) whose means scatter 4x too much at one
    cosmology of two (16x the ring-0 power, every other ring as the targets'): the term over
    rings 1 .. N/2 stays ~0; with cosmology_mean it sees ring 0 as one ring of N/2 + 1 biased
    by ~log(16) in half the pairs."""
    size = 16
    low, high = scaled_noise(512, size, 0.01, 21), scaled_noise(512, size, 0.03, 22)
    points = torch.tensor([[-1.0], [1.0]])
    params = torch.tensor([[-1.0]] * 256 + [[1.0]] * 256)
    maps = np.concatenate([scaled_noise(256, size, 0.01, 23), scaled_noise(256, size, 0.03, 24)])
    maps[256:] += 3 * maps[256:].mean(axis=(1, 2), keepdims=True)  # the means 4x, the rest untouched
    fake = WIDE.forward(torch.from_numpy(maps)[:, None])
    terms = {}
    for judged in (False, True):
        loss = SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[low], [high]], points=points,
                            cosmology_mean=judged)
        terms[judged] = loss.cosmology_term(fake, params).item()
    assert abs(terms[False]) < 0.002
    assert terms[True] == pytest.approx(0.5 * np.log(16.0) ** 2 / (size // 2 + 1), rel=0.35)


def focus_loss(size=16, focus=0.5, pool=None):
    low, high = scaled_noise(512, size, 0.01, 31), scaled_noise(512, size, 0.03, 32)
    return SpectralLoss(size, [], WIDE, torch.device("cpu"), per_cosmology=[[low], [high]],
                        points=torch.tensor([[-1.0], [1.0]]), focus=focus, pool=pool)


def focus_batch(n, seed, brighter=1.0, size=16):
    """n maps at each of the two cosmologies of focus_loss, cosmology 1's amplitude x brighter."""
    maps = np.concatenate([scaled_noise(n, size, 0.01, seed), scaled_noise(n, size, 0.03 * brighter, seed + 1)])
    return WIDE.forward(torch.from_numpy(maps)[:, None]), torch.tensor([[-1.0]] * n + [[1.0]] * n)


def deviations(loss, fake, params):
    c = loss.cosmology_of(params, len(fake))
    return (loss.ring_amplitude(WIDE.inverse(fake[:, 0]), c) - loss.ring_mu[c])[:, 1:].double().numpy(), c.numpy()


def test_focused_cosmology_term_against_its_formula_by_hand():
    """Two steps by hand: the moving mean m of each (cosmology, ring) cell's deviations
    (decay 0.5: the first step's sums and counts halved, then the second's added), the
    weights max(m^2, FOCUS_FLOOR) over their mean, and the term, the mean of w m x over
    maps and rings; to 1e-6 (float32 deviations)."""
    from pipeline.train.aux_losses import FOCUS_FLOOR

    loss = focus_loss()
    steps = [focus_batch(256, 40, 1.1), focus_batch(128, 50, 1.1)]
    sums, counts = np.zeros((2, 8)), np.zeros(2)
    for fake, params in steps:
        d, c = deviations(loss, fake, params)
        sums = 0.5 * sums + np.stack([d[c == k].sum(0) for k in (0, 1)])
        counts = 0.5 * counts + np.bincount(c, minlength=2)
        m = sums / counts[:, None]
        w = np.maximum(m ** 2, FOCUS_FLOOR)
        w /= w.mean()
        expected = (w[c] * m[c] * d).mean()
        assert loss.cosmology_term(fake, params).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(loss.cell_bias().numpy(), m, rtol=1e-6)
    # cosmology 1, 10% brighter (log 1.21 in power), is the cell the weights favour
    assert m[1].mean() == pytest.approx(np.log(1.21), rel=0.2) and abs(m[0]).max() < 0.05
    assert loss.cell_weights()[1].min() > 5 * loss.cell_weights()[0].max()


def test_focused_term_pulls_a_biased_cosmology_back_and_leaves_a_right_one():
    """The gradient of the focused term with respect to each cosmology's amplitude: positive
    where the maps are too bright (the term falls as they dim), ~0 where they are right."""
    loss = focus_loss()
    fake, params = focus_batch(256, 60, 1.1)
    kappa = WIDE.inverse(fake[:, 0])
    gain = torch.ones(2, requires_grad=True)
    c = loss.cosmology_of(params, len(fake))
    loss.cosmology_term(WIDE.forward(kappa * gain[c][:, None, None])[:, None], params).backward()
    assert gain.grad[1] > 0.05 and abs(gain.grad[0]) < 0.1 * gain.grad[1]


def test_focused_term_pools_over_ranks_like_one_process_over_the_whole_batch():
    """Rank a's sums plus rank b's (what Backend.sum gives both) make the state one process
    gets from both batches together."""
    part_a, part_b = focus_batch(8, 70, 1.2), focus_batch(12, 80, 1.2)
    rank_b = focus_loss()
    rank_b.cosmology_term(*part_b)  # from zero: its state after one step is its sums and counts
    from_b = torch.cat([rank_b.deviation_sum, rank_b.map_count[:, None]], 1)
    rank_a = focus_loss(pool=lambda t: t + from_b)
    rank_a.cosmology_term(*part_a)
    whole = focus_loss()
    whole.cosmology_term(torch.cat([part_a[0], part_b[0]]), torch.cat([part_a[1], part_b[1]]))
    np.testing.assert_allclose(rank_a.cell_bias().numpy(), whole.cell_bias().numpy(), rtol=1e-6)
    np.testing.assert_allclose(rank_a.map_count.numpy(), whole.map_count.numpy())


def test_focus_state_round_trips_and_refuses_another_design():
    loss = focus_loss()
    loss.cosmology_term(*focus_batch(8, 90, 1.1))
    again = focus_loss()
    again.load_state_dict(loss.state_dict())
    np.testing.assert_array_equal(again.cell_bias().numpy(), loss.cell_bias().numpy())
    other = SpectralLoss(16, [], WIDE, torch.device("cpu"), per_cosmology=[[scaled_noise(64, 16, 0.01, 1)]] * 3,
                         points=torch.tensor([[-1.0], [0.0], [1.0]]), focus=0.5)
    with pytest.raises(ValueError, match="deviation_sum of shape"):
        other.load_state_dict(loss.state_dict())
    with pytest.raises(ConfigError, match="cosmology_spectral_focus: must be in"):
        load_config(None, ["train.cosmology_spectral_focus=1"])


def test_large_scale_gain_starts_as_the_identity_and_scales_only_its_rings():
    """LargeScaleGain: zero-initialised, it returns its input (to float32 round-off of an FFT
    pair); with log gain log 2 on ring 1 and -log 2 on ring 3 the power of ring 1 is 4x,
    ring 3's 1/4x, and every other mode's (ring 0, 2 and >= 4) unchanged, at every map."""
    from pipeline.models.dcgan import LargeScaleGain

    size = 32
    gain = LargeScaleGain(2, 3, size)
    h = torch.randn(5, 1, size, size)
    params = torch.rand(5, 2) * 2 - 1
    torch.testing.assert_close(gain(h, params), h, atol=1e-5, rtol=0)
    with torch.no_grad():
        gain.net[-1].bias.copy_(torch.tensor([np.log(2.0), 0.0, -np.log(2.0)]))
    ratio = (torch.fft.rfft2(gain(h, params)).abs() / torch.fft.rfft2(h).abs()).square()
    ky, kx = np.fft.fftfreq(size, 1 / size), np.fft.rfftfreq(size, 1 / size)
    ring = torch.as_tensor(np.rint(np.hypot(ky[:, None], kx[None, :])))
    expected = torch.where(ring == 1, 4.0, torch.where(ring == 3, 0.25, 1.0)).expand_as(ratio[:, 0])
    torch.testing.assert_close(ratio[:, 0], expected.float(), rtol=1e-3, atol=0)
    # unconditional: one learned vector for every map, the same scaling
    plain = LargeScaleGain(0, 3, size)
    torch.testing.assert_close(plain(h, None), h, atol=1e-5, rtol=0)
    with torch.no_grad():
        plain.constant.copy_(torch.tensor([np.log(2.0), 0.0, -np.log(2.0)]))
    ratio = (torch.fft.rfft2(plain(h, torch.zeros(5, 0))).abs() / torch.fft.rfft2(h).abs()).square()
    torch.testing.assert_close(ratio[:, 0], expected.float(), rtol=1e-3, atol=0)


def test_large_scale_rings_start_as_g_does_and_fit_the_map():
    """With the gain, conditional or not, G starts as it does without it; an unconditional
    G's gain is a learned vector (no parameters to read), and R must fit the map."""
    z, params = torch.randn(3, 8), torch.rand(3, 2) * 2 - 1
    plain = ModelArgs(image_size=32, z_dim=8, g_channels=4, d_channels=4, kernel_size=4)
    for args, p in ((conditional_args(), params), (plain, None)):
        torch.manual_seed(0)
        with_gain, _ = build_models(dataclasses.replace(args, g_large_scale_rings=4))
        torch.manual_seed(0)
        without, _ = build_models(args)
        with_gain.eval(), without.eval()
        # G's own layers are drawn before the gain's, so they are the same; the output is the
        # same to the round-off of a float32 FFT pair on pre-tanh values of O(10)
        torch.testing.assert_close(with_gain(z, p), without(z, p), atol=1e-4, rtol=0)
    assert with_gain.large_scale.net is None and with_gain.large_scale.constant.shape == (4,)
    with pytest.raises(ModelArgsError, match="must be in 0 .. 16"):
        conditional_args(g_large_scale_rings=17)

"""The CosmoGAN DCGAN: shapes, init, parameter counts, precision/layout, args, FLOPs."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError
from pipeline.models import Discriminator, Generator, ModelArgs, build_models, weights_init
from pipeline.models.flops import analytic_forward_flops, count_flops


def args_for(image_size, upsample="transposed", z_dim=64, g=64, d=64, k=5, padding="zeros", mbstd=0):
    return ModelArgs(image_size=image_size, z_dim=z_dim, g_channels=g, d_channels=d, kernel_size=k,
                     upsample=upsample, padding=padding, d_minibatch_std=mbstd)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("upsample", ["transposed", "resize_conv"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes(size, upsample):
    torch.manual_seed(0)
    G, D = build_models(args_for(size, upsample, g=16, d=16))
    z = torch.randn(3, 64)
    x = G(z)
    assert x.shape == (3, 1, size, size) and x.dtype == torch.float32
    logits = D(x)
    assert logits.shape == (3,)
    # the intermediate shapes of the shape comments: 8g x s x s after the projection
    h = G.main.unflatten(G.main.fc(z))
    assert h.shape == (3, 8 * 16, size // 16, size // 16)
    assert D.main(x).shape == (3, 8 * 16, size // 16, size // 16)


@pytest.mark.parametrize("k", [3, 4, 6])
def test_shapes_for_odd_and_even_kernels(k):
    G, D = build_models(args_for(32, g=8, d=8, k=k))
    x = G(torch.randn(2, 64))
    assert x.shape == (2, 1, 32, 32) and D(x).shape == (2,)


def test_even_kernel_transposed_convolution_has_no_checkerboard():
    """A stride-2 transposed convolution adds k*k kernel taps onto the 2x grid; every output
    pixel gets (k/2)^2 of them when the stride divides k, but 3x3, 3x2 or 2x2 of them with
    k = 5 (Odena et al. 2016). Constant input and weights show it: a constant output away
    from the borders for k = 4, a periodic pattern with period 2 (the checkerboard) for k = 5."""
    from pipeline.models.dcgan import _upsample

    for k, flat in ((4, True), (5, False)):
        up = _upsample("transposed", 1, 1, k, bias=False)
        nn.init.ones_(up.weight)
        with torch.no_grad():
            out = up(torch.ones(1, 1, 8, 8))[0, 0, 3:-3, 3:-3]
        assert out.shape == (10, 10)
        assert bool((out == out[0, 0]).all()) == flat, (k, out[:2, :2])
    assert out[0::2, 0::2].unique().tolist() != out[1::2, 1::2].unique().tolist()  # k = 5: a period-2 grid


def test_shapes_256_paper_model():
    torch.manual_seed(0)
    G, D = build_models(args_for(256))
    with torch.no_grad():
        x = G(torch.randn(1, 64))
        assert x.shape == (1, 1, 256, 256)
        assert D(x).shape == (1,)
    assert G.main.fc.out_features == 512 * 16 * 16


def test_resize_conv_has_no_transposed_convolution():
    G = Generator(ModelArgs(64, upsample="resize_conv"))
    kinds = {type(m) for m in G.modules()}
    assert nn.Upsample in kinds and nn.ConvTranspose2d not in kinds
    assert nn.ConvTranspose2d in {type(m) for m in Generator(ModelArgs(64)).modules()}


def test_output_is_squashed_by_tanh():
    torch.manual_seed(0)
    G = Generator(ModelArgs(32, g_channels=8))
    with torch.no_grad():
        G.main.up4.weight.mul_(1000)  # pre-activations far outside (-1, 1)
        x = G(torch.randn(4, 64))
    assert x.abs().max() <= 1.0
    assert x.abs().max() > 0.99  # it was really saturating, so without tanh this would fail
    assert isinstance(G.main[-1], nn.Tanh)


def test_discriminator_logits_depend_on_each_input():
    torch.manual_seed(0)
    D = Discriminator(ModelArgs(32, d_channels=8)).eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    logits = D(x)
    assert logits.shape == (4,)
    assert logits.unique().numel() == 4
    x2 = x.clone()
    x2[2] = -x2[2]
    changed = D(x2) != logits
    assert changed.tolist() == [False, False, True, False]  # eval mode: maps are independent


# -- init --------------------------------------------------------------------------------------


@torch.no_grad()
def test_weights_init_statistics():
    torch.manual_seed(0)
    G = Generator(ModelArgs(64))  # pytorch's default init before weights_init
    w = G.main.up1.weight  # 512 x 256 x 5 x 5 = 3.3e6 draws
    default_std = float(w.detach().std())
    G.apply(weights_init)
    w = w.detach()
    n = w.numel()
    # the sample std of n normal draws has relative standard error 1/sqrt(2n) = 4e-4:
    # 2% is 50 standard errors (robust), and far from the default init (std 0.007)
    assert abs(float(w.std()) - 0.02) < 0.02 * 0.02
    assert abs(default_std - 0.02) > 0.02 * 0.02
    assert abs(float(w.mean())) < 5 * 0.02 / math.sqrt(n)
    bn = G.main.bn0.weight.detach()  # 512 draws of N(1, 0.02)
    # mean: standard error 0.02 / sqrt(512) = 9e-4, allow 5.6 of them (0.005);
    # std: relative standard error 1/sqrt(1024) = 3%, allow 20%. Default init (all ones) fails the latter
    assert abs(float(bn.mean()) - 1) < 0.005
    assert abs(float(bn.std()) - 0.02) < 0.2 * 0.02
    for m in G.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
    assert torch.count_nonzero(G.main.fc.bias) == 0 and G.main.fc.bias.numel() == 512 * 16


@torch.no_grad()
def test_weights_init_covers_every_layer_kind_and_skips_others():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(64, 64, 5), nn.ConvTranspose2d(64, 64, 5), nn.Linear(4096, 512),
                        nn.BatchNorm2d(4096), nn.LayerNorm(8))
    net.apply(weights_init)
    for m in net[:3]:
        assert abs(float(m.weight.std()) - 0.02) < 0.02 * 0.02, m
        assert torch.count_nonzero(m.bias) == 0
    assert abs(float(net[3].weight.mean()) - 1) < 0.002 and abs(float(net[3].weight.std()) - 0.02) < 0.002
    assert torch.count_nonzero(net[3].bias) == 0
    assert torch.all(net[4].weight == 1)  # LayerNorm left at its defaults


def test_build_models_is_reproducible_under_a_seed():
    torch.manual_seed(7)
    G1, D1 = build_models(args_for(32, g=8, d=8))
    torch.manual_seed(7)
    G2, D2 = build_models(args_for(32, g=8, d=8))
    torch.manual_seed(8)
    G3, _ = build_models(args_for(32, g=8, d=8))
    for a, b in ((G1, G2), (D1, D2)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(G1.main.fc.weight, G3.main.fc.weight)


# -- parameter counts ------------------------------------------------------------------------


def expected_params(H, z, g, d, k):
    """Analytic parameter counts (docs/models.md): no conv bias before BatchNorm."""
    s = H // 16
    gen = (z * 8 * g * s * s + 8 * g * s * s  # fc weight + per-element bias
           + 2 * 8 * g  # bn0
           + 8 * g * 4 * g * k * k + 2 * 4 * g
           + 4 * g * 2 * g * k * k + 2 * 2 * g
           + 2 * g * g * k * k + 2 * g
           + g * k * k + 1)  # up4 + its bias
    dis = (d * k * k + d  # conv1 + bias
           + d * 2 * d * k * k + 2 * 2 * d
           + 2 * d * 4 * d * k * k + 2 * 4 * d
           + 4 * d * 8 * d * k * k + 2 * 8 * d
           + 8 * d * s * s + 1)  # fc
    return gen, dis


@pytest.mark.parametrize("H,z,g,d,k,upsample", [
    (H, z, g, d, k, up) for H, z, g, d, k in [(256, 64, 64, 64, 5), (64, 64, 64, 64, 5), (32, 16, 8, 12, 3)]
    for up in ("transposed", "resize_conv")] + [(64, 64, 32, 32, 4, "transposed")])  # even k: transposed only
def test_parameter_counts(H, z, g, d, k, upsample):
    args = ModelArgs(H, z, g, d, k, upsample)
    G, D = Generator(args), Discriminator(args)
    assert (n_params(G), n_params(D)) == expected_params(H, z, g, d, k)


def test_parameter_counts_of_the_documented_models():
    assert expected_params(256, 64, 64, 64, 5) == (12_824_001, 4_435_329)
    assert expected_params(64, 64, 64, 64, 5) == (4_836_801, 4_312_449)


# -- precision and layout ---------------------------------------------------------------------


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("upsample", ["transposed", "resize_conv"])
def test_channels_last_bf16_autocast_matches_fp32(upsample):
    torch.manual_seed(0)
    G, D = build_models(args_for(32, upsample, g=16, d=16))
    z = torch.randn(4, 64)
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        x_ref, l_ref = G(z), D(real)
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
        x_cl = G(z)
        assert x_cl.is_contiguous(memory_format=torch.channels_last)
        # same arithmetic, another layout: equal to float32 rounding
        assert rel_err(x_cl, x_ref) < 1e-4
        assert rel_err(D(real.contiguous(memory_format=torch.channels_last)), l_ref) < 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_bf = G(z)
            l_bf = D(real.contiguous(memory_format=torch.channels_last))
    assert x_bf.dtype == torch.bfloat16 and l_bf.dtype == torch.bfloat16
    assert x_bf.shape == (4, 1, 32, 32) and l_bf.shape == (4,)
    # bf16 keeps 8 significant bits (rounding 2^-9 = 0.2% per op); through 5 layers of long
    # sums the outputs drift by ~1% (observed 0.4-1.1% over seeds and both variants); 5%
    # leaves room for other CPUs' kernels and still separates a broken path (errors O(100%))
    assert rel_err(x_bf, x_ref) < 0.05
    assert rel_err(l_bf, l_ref) < 0.05


def test_backward_under_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    G, D = build_models(args_for(32, g=8, d=8))
    G.to(memory_format=torch.channels_last)
    D.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.binary_cross_entropy_with_logits(D(G(torch.randn(2, 64))).float(),
                                                             torch.ones(2))
    loss.backward()
    for m in (G, D):
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert G.main.fc.weight.grad.abs().sum() > 0


# -- args -------------------------------------------------------------------------------------


def test_model_args_round_trip():
    cfg = ModelConfig(z_dim=32, g_channels=16, d_channels=8, kernel_size=3, upsample="resize_conv")
    args = ModelArgs.from_config(cfg, 64)
    assert args.to_dict() == {"image_size": 64, "z_dim": 32, "g_channels": 16, "d_channels": 8,
                              "kernel_size": 3, "upsample": "resize_conv", "padding": "zeros", "d_minibatch_std": 0,
                              "condition_on": [], "g_conditioning": "film", "d_conditioning": "projection",
                              "g_large_scale_rings": 0}
    restored = ModelArgs.from_dict(json.loads(json.dumps(args.to_dict())))
    assert restored == args
    with pytest.raises(dataclasses.FrozenInstanceError):
        restored.z_dim = 8
    G, D = build_models(restored)
    ref = ModelArgs(64, z_dim=32, g_channels=16, d_channels=8, kernel_size=3, upsample="resize_conv")
    for built, reference in ((G, Generator(ref)), (D, Discriminator(ref))):
        assert {k: v.shape for k, v in built.state_dict().items()} == \
               {k: v.shape for k, v in reference.state_dict().items()}
        built.load_state_dict(reference.state_dict())  # strict: a checkpoint loads into a rebuilt model
    # the config's image_size is 0 (from the data) or must agree with the data
    assert ModelArgs.from_config(ModelConfig(image_size=64), 64).image_size == 64
    with pytest.raises(ValueError, match="image_size"):
        ModelArgs.from_config(ModelConfig(image_size=128), 64)


def test_fields_missing_from_a_stored_dict_take_their_defaults():
    """A checkpoint written before a field existed still loads: the field takes its default.
    Only image_size (which has none) must be there."""
    stored = args_for(32, g=8).to_dict()
    del stored["padding"], stored["d_channels"]
    assert ModelArgs.from_dict(stored) == args_for(32, g=8, d=64)
    with pytest.raises(ValueError, match="missing 'image_size'"):
        ModelArgs.from_dict({"z_dim": 16})


@pytest.mark.parametrize("bad", [0, -16, 8, 40, 100, 64.0, True, "64", None])
def test_bad_image_size_raises(bad):
    with pytest.raises(ValueError, match="image_size"):
        ModelArgs(image_size=bad)
    with pytest.raises(ValueError, match="image_size"):
        ModelArgs.from_dict({"image_size": bad})


@pytest.mark.parametrize("change,match", [({"kernel_size": 4, "upsample": "resize_conv"}, "odd kernel"),
                                          ({"kernel_size": 1}, "kernel_size"),
                                          ({"upsample": "pixel_shuffle"}, "upsample"),
                                          ({"padding": "reflect"}, "padding"),
                                          ({"z_dim": 0}, "z_dim"),
                                          ({"g_channels": 2.5}, "g_channels"),
                                          ({"extra": 1}, "unknown"),
                                          ({"image_size": None}, "image_size")])
def test_bad_args_raise(change, match):
    with pytest.raises(ValueError, match=match):
        ModelArgs.from_dict({**args_for(32).to_dict(), **change})
    if "extra" not in change:
        with pytest.raises(ValueError, match=match):
            ModelArgs(**{**args_for(32).to_dict(), **change})


def test_arg_errors_are_user_errors():
    with pytest.raises(ConfigError, match="model.image_size"):
        ModelArgs.from_config(ModelConfig(), 40)
    with pytest.raises(TypeError, match="ModelArgs"):
        build_models(args_for(32).to_dict())


# -- FLOPs -----------------------------------------------------------------------------------


# narrow models (16 channels) keep the counted CPU steps fast on a busy 2-core machine
@pytest.mark.parametrize("size,upsample", [(32, "transposed"), (64, "transposed"), (256, "transposed"),
                                           (64, "resize_conv")])
def test_counted_flops_match_analytic(size, upsample):
    args = args_for(size, upsample, g=16, d=16)
    counted = count_flops(args)
    analytic = analytic_forward_flops(args)
    assert counted["generator_forward"] == pytest.approx(analytic["generator"], rel=0.01)
    assert counted["discriminator_forward"] == pytest.approx(analytic["discriminator"], rel=0.01)
    # one iteration = G fwd + 3 D fwd + their backwards: 3 G - G_fc + 8 D - 2 D_conv1 (docs/models.md)
    # (both sides count the same conv/matmul multiply-adds; 0.1% would absorb a counter that also
    # counted bias additions, and still catches dropping the G_fc or D_conv1 terms, ~0.5% here)
    assert counted["train_iteration"] == pytest.approx(analytic["train_iteration_estimate"], rel=1e-3)


def test_analytic_flops_by_hand():
    # 64 px, widths 64, k 5: D conv1 alone is 2 * 1*64*25 * 32*32 FLOPs; G's up1 2 * 512*256*25 * 4*4
    a = analytic_forward_flops(args_for(64))
    d = 2 * (1 * 64 * 25 * 32**2 + 64 * 128 * 25 * 16**2 + 128 * 256 * 25 * 8**2
             + 256 * 512 * 25 * 4**2 + 512 * 4 * 4)
    g = 2 * (64 * 512 * 16 + 512 * 256 * 25 * 4**2 + 256 * 128 * 25 * 8**2
             + 128 * 64 * 25 * 16**2 + 64 * 1 * 25 * 32**2)
    assert (a["generator"], a["discriminator"]) == (g, d)
    # resize_conv convolves the 2x grid: 4x the transposed stages' FLOPs
    r = analytic_forward_flops(args_for(64, "resize_conv"))
    assert r["generator"] - 2 * 64 * 512 * 16 == 4 * (g - 2 * 64 * 512 * 16)


def test_flops_are_per_image():
    args = args_for(32, "resize_conv", g=8, d=8)
    assert count_flops(args, batch=2) == count_flops(args, batch=4)
    with pytest.raises(ValueError, match="batch"):
        count_flops(args, batch=1)


def test_circular_padding_makes_the_discriminator_features_shift_equivariant():
    """Periodic maps: with circular padding, rolling the input by 16 pixels rolls the last
    conv stage's features by exactly one cell (16 / 2^4); with zero padding it does not."""
    import torch

    from pipeline.models import build_models

    x = torch.randn(2, 1, 32, 32)
    rolled = torch.roll(x, shifts=16, dims=-1)
    for padding, equivariant in (("circular", True), ("zeros", False)):
        _, D = build_models(args_for(32, "resize_conv", g=8, d=8, padding=padding))
        D.eval()
        features = D.main[:-2]  # up to the last LeakyReLU, before flatten and fc
        with torch.no_grad():
            a, b = features(x), features(rolled)
        assert torch.allclose(torch.roll(a, shifts=1, dims=-1), b, atol=1e-5) == equivariant


@pytest.mark.parametrize("k", [3, 4, 5])
def test_periodic_transposed_convolution_is_the_layer_on_a_torus(k):
    """padding: circular with transposed upsampling: the output equals the centre tile of the
    zero-padded layer applied to the input tiled 3 x 3 (a periodic map seen from inside),
    bias included once, and is shift-equivariant (input rolled by 1, output by 2)."""
    from pipeline.models.dcgan import PeriodicConvTranspose2d, _upsample

    torch.manual_seed(k)
    periodic = _upsample("transposed", 3, 2, k, True, "circular")
    assert isinstance(periodic, PeriodicConvTranspose2d)
    nn.init.normal_(periodic.bias)
    plain = _upsample("transposed", 3, 2, k, True, "zeros")
    plain.load_state_dict(periodic.state_dict())  # the same parameter names and shapes
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = periodic(x)
        torch.testing.assert_close(out, plain(x.repeat(1, 1, 3, 3))[..., 16:32, 16:32])
        torch.testing.assert_close(periodic(torch.roll(x, (1, 3), (-2, -1))), torch.roll(out, (2, 6), (-2, -1)))
        assert not torch.allclose(out, plain(x), atol=1e-3)  # the borders differ from zero padding


def test_circular_generator_maps_are_periodic_in_the_shift_sense():
    """A whole circular generator commutes with rolls of its first feature map."""
    G, _ = build_models(args_for(32, "transposed", g=8, d=8, k=4, padding="circular"))
    G.eval()
    h = torch.randn(2, 64, 2, 2)
    stages = G.main[2:]  # after fc and unflatten
    with torch.no_grad():
        torch.testing.assert_close(stages(torch.roll(h, 1, -1)), torch.roll(stages(h), 16, -1))


def test_minibatch_std_channel():
    """D's minibatch standard-deviation channel (model.d_minibatch_std): the value a plain loop
    gives, the same for the maps of a group, other groups' maps do not change it, and a D
    without it loads a checkpoint written before its head was split off."""
    from pipeline.models.dcgan import MinibatchStd

    torch.manual_seed(0)
    x = torch.randn(6, 3, 2, 2)
    out = MinibatchStd(3)(x)
    assert out.shape == (6, 4, 2, 2) and torch.equal(out[:, :3], x)
    for group in ([0, 2, 4], [1, 3, 5]):  # strided groups: map k in group k mod 2
        ref = x[group].std(0, unbiased=False).mean()
        torch.testing.assert_close(out[group, 3], ref.expand(3, 2, 2), rtol=1e-5, atol=1e-6)
    y = x.clone()
    y[1] += 5.0
    assert torch.equal(MinibatchStd(3)(y)[[0, 2, 4], 3], out[[0, 2, 4], 3])
    assert MinibatchStd(4)(x).shape == (6, 4, 2, 2)  # gcd(6, 4) = 2 maps per group

    G, D = build_models(args_for(32, g=8, d=8, mbstd=4))
    logits = D(G(torch.randn(8, 64)))
    assert logits.shape == (8,) and D.head.fc.in_features == (64 + 1) * 2 * 2
    with pytest.raises(ValueError, match="d_minibatch_std"):
        args_for(32, mbstd=1)

    _, plain = build_models(args_for(32, g=8, d=8))
    old = {(k.replace("head.fc", "main.fc")): v for k, v in plain.state_dict().items()}
    _, again = build_models(args_for(32, g=8, d=8))
    again.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), plain.state_dict().values()))

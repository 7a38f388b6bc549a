"""The moving average of the generator's weights: the update rule, standing BatchNorm
statistics, and that checkpoints and generate carry it."""

import numpy as np
import torch
from torch import nn

from conftest import CONFIGS, run_main
from pipeline.models import ModelArgs, build_models
from pipeline.train.checkpoint import read_checkpoint, step_checkpoints
from pipeline.train.ema import GeneratorEMA

ARGS = ModelArgs(image_size=32, z_dim=16, g_channels=8, d_channels=8)


def generator(seed):
    torch.manual_seed(seed)
    return build_models(ARGS)[0]


def test_update_is_the_ramped_exponential_average():
    live = generator(0)
    ema = GeneratorEMA(live, 0.9, torch.randn(8, 16), 4)
    start = [p.detach().clone() for p in live.parameters()]
    expected = [p.clone() for p in start]
    for n in range(1, 31):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
        ema.update(live)
        decay = min(0.9, (1 + n) / (10 + n))  # 2/11 first: the random initial weights fade fast
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, live.parameters())]
    for e, m in zip(expected, ema.model.parameters()):
        torch.testing.assert_close(m, e, rtol=1e-5, atol=1e-6)
    # the average is its own copy: the live generator's weights are untouched by it
    assert not any(m.data_ptr() == p.data_ptr() for m, p in zip(ema.model.parameters(), live.parameters()))
    assert all(not p.requires_grad for p in ema.model.parameters())


def test_batchnorm_statistics_are_recomputed_for_the_averaged_weights():
    """Standing statistics: each BatchNorm's running mean and (unbiased) variance equal those
    of its input over all calibration maps, computed here with hooks on a plain copy."""
    live = generator(1)
    z = torch.randn(24, 16)
    ema = GeneratorEMA(live, 0.99, z, batch_size=8)
    with torch.no_grad():
        for p in live.parameters():
            p.mul_(1.5)
    ema.update(live)
    model = ema.generator()
    assert not model.training

    inputs = {}
    plain = build_models(ARGS)[0]
    plain.load_state_dict(model.state_dict())
    plain.eval()  # eval: the hooks see inputs without touching any statistics
    norms = {name: m for name, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for name, m in norms.items():
        m.register_forward_hook(lambda mod, args, out, name=name: inputs.setdefault(name, []).append(args[0]))
    with torch.no_grad():
        for chunk in z.split(8):  # BatchNorm in eval mode is per-channel affine: later layers differ,
            plain(chunk)          # so compare only the first BatchNorm exactly ...
    first = next(iter(norms))
    x = torch.cat(inputs[first])
    bn = dict(model.named_modules())[first]
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
    # the cumulative average of per-batch unbiased variances (equal batches): what momentum=None gives
    per_batch = torch.stack([c.var((0, 2, 3), unbiased=True) for c in x.split(8)])
    torch.testing.assert_close(bn.running_var, per_batch.mean(0), rtol=1e-4, atol=1e-6)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # ... and every BatchNorm's statistics changed from those of the live generator
    live_bn = dict(live.named_modules())
    for name in norms:
        assert not torch.allclose(dict(model.named_modules())[name].running_mean, live_bn[name].running_mean)


def test_calibration_is_deterministic_and_invalidated_by_updates():
    live = generator(2)
    ema = GeneratorEMA(live, 0.99, torch.randn(16, 16), batch_size=8)
    a = {k: v.clone() for k, v in ema.generator().state_dict().items()}
    assert ema.calibrated
    ema._calibrate()
    assert all(torch.equal(a[k], v) for k, v in ema.model.state_dict().items())
    ema.update(live)
    assert not ema.calibrated


def test_training_saves_the_average_and_generate_uses_it(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
             "--set", "train.steps=16", "--set", "train.ema_decay=0.9", check=True)
    ckpt = read_checkpoint(step_checkpoints(run)[-1])
    assert ckpt.parts["generator_ema"]["updates"] == 16
    averaged, live = ckpt.parts["generator_ema"]["weights"], ckpt.parts["generator"]
    assert averaged.keys() == live.keys()
    assert not torch.equal(averaged["main.fc.weight"], live["main.fc.weight"])

    out = tmp_path / "gen"
    run_main("generate", "--run", run, "--checkpoint", "last", "--n", 4, "--out", out, "--quiet", check=True)
    from pipeline.data.loader import MapDataset
    from pipeline.emulator import latent

    G = build_models(ckpt.model_args)[0]
    G.load_state_dict(averaged)
    G.eval()
    z = torch.stack([latent(0, i, ckpt.model_args.z_dim) for i in range(4)])
    with torch.no_grad():
        expected = ckpt.transform.inverse(G(z))[:, 0].numpy()
    written = MapDataset(out)
    np.testing.assert_array_equal(written.read(np.arange(4))[0], expected)
    assert written.manifest.provenance["weights"] == "generator_ema"


def test_standing_statistics_keep_the_live_weights_and_recompute_batchnorm(tiny_data, tmp_path):
    """train.standing_stats without an average: the generator used has the live weights
    exactly, and BatchNorm means that are the cumulative average of G's batch statistics
    over the calibration noise, not the live generator's running (momentum) ones."""
    run = tmp_path / "run"
    run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
             "--set", "train.steps=8", "--set", "train.ema_decay=0", "--set", "train.standing_stats=true",
             check=True)
    ckpt = read_checkpoint(step_checkpoints(run)[-1])
    used, live = ckpt.parts["generator_ema"]["weights"], ckpt.parts["generator"]
    G = build_models(ckpt.model_args)[0]
    names = {n for n, _ in G.named_parameters()}
    assert all(torch.equal(used[n], live[n]) for n in names)
    stats = [n for n in used if n.endswith("running_mean")]
    assert stats and any(not torch.equal(used[n], live[n]) for n in stats)
    # the standing means: G in train mode over the calibration noise, averaged by hand
    from pipeline.train.setup import EMA_CALIBRATION, seed_from
    G.load_state_dict(live)
    bn = next(m for m in G.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].mean((0, 2, 3))))
    z = torch.randn(8 * ckpt.config.loader.batch_size, ckpt.model_args.z_dim,
                    generator=torch.Generator().manual_seed(seed_from(ckpt.config.train.seed, EMA_CALIBRATION)))
    G.train()
    with torch.no_grad():
        for chunk in z.split(ckpt.config.loader.batch_size):
            G(chunk, torch.zeros(len(chunk), 0))
    hook.remove()
    key = next(n for n, m in G.named_modules() if m is bn) + ".running_mean"
    torch.testing.assert_close(used[key], torch.stack(seen).mean(0), rtol=1e-5, atol=1e-7)


def test_switched_on_at_a_resume_the_average_starts_from_the_restored_weights(tiny_data, tmp_path):
    run = tmp_path / "run"
    common = ("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet")
    run_main(*common, "--set", "train.steps=8", "--set", "train.ema_decay=0", check=True)
    assert "generator_ema" not in read_checkpoint(step_checkpoints(run)[-1]).parts
    run_main(*common, "--set", "train.steps=9", "--set", "train.ema_decay=0.9", check=True)
    ckpt = read_checkpoint(step_checkpoints(run)[-1])
    assert ckpt.step == 9 and ckpt.parts["generator_ema"]["updates"] == 1
    # one update with the ramped decay 2/11 from the step-8 weights towards the step-9 weights
    before = read_checkpoint(run / "checkpoints" / "step-00000008.pt").parts["generator"]["main.fc.weight"]
    after = ckpt.parts["generator"]["main.fc.weight"]
    torch.testing.assert_close(ckpt.parts["generator_ema"]["weights"]["main.fc.weight"],
                               before * 2 / 11 + after * 9 / 11, rtol=1e-5, atol=1e-7)

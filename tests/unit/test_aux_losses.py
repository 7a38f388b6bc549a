"""The auxiliary spectral loss: zero for equal spectra, positive otherwise, gradients reach G."""

import torch

from pipeline.train.aux_losses import SpectralLoss


def test_zero_for_the_same_maps_and_positive_for_others():
    loss = SpectralLoss(32, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 1, 32, 32, generator=g)
    assert loss(a, a).item() == 0.0
    # twice the amplitude: every bin's power x4, so each log differs by log 4
    assert abs(loss(2 * a, a).item() - torch.log(torch.tensor(4.0)).item() ** 2) < 1e-5


def test_bins_cover_the_modes_from_the_fundamental_to_nyquist():
    loss = SpectralLoss(16, torch.device("cpu"))
    assert loss.n_bins == 8 and loss.counts.min() > 0
    assert int(loss.counts.sum()) == int(loss.keep.sum())


def test_gradient_flows_to_the_generated_maps():
    loss = SpectralLoss(16, torch.device("cpu"))
    fake = torch.randn(4, 1, 16, 16, requires_grad=True)
    real = torch.randn(4, 1, 16, 16) * 3
    loss(fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_training_with_the_spectral_term_logs_it(tiny_data, tmp_path):
    import json

    from conftest import CONFIGS, run_main

    run_main("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", tmp_path / "run",
             "--quiet", "--set", "train.steps=4", "--set", "train.spectral_weight=0.1", check=True)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["loss_aux"] > 0

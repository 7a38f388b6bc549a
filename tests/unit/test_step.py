"""The GAN step's inputs: the noise it draws and the batch bundle."""

import torch

from pipeline.train.step import StepNoise


def test_unconditional_noise_is_the_stream_it_always_was():
    """z, then the two rows of label flips, from one generator seeded per step: the draws the
    step made before it could draw parameters (so unconditional runs are unchanged)."""
    g = torch.Generator().manual_seed(1234)
    z = torch.randn(6, 8, generator=g)
    flips = torch.rand(2, 6, generator=g) < 0.3
    noise = StepNoise.draw(1234, 6, 8, 0.3)
    assert torch.equal(noise.z, z)
    assert torch.equal(noise.real_labels, torch.where(flips[0], 0.0, 1.0))
    assert torch.equal(noise.fake_labels, torch.where(flips[1], 1.0, 0.0))
    assert noise.params.shape == (6, 0)
    with_empty = StepNoise.draw(1234, 6, 8, 0.3, real_params=torch.zeros(6, 0), fresh_params=True)
    assert torch.equal(with_empty.z, z) and with_empty.params.shape == (6, 0)


def test_generated_maps_are_drawn_at_the_real_batchs_or_fresh_parameters():
    real = torch.tensor([[-0.5, 0.2], [0.9, -1.0], [0.0, 0.3]])
    same = StepNoise.draw(7, 3, 4, 0.0, real_params=real)
    assert torch.equal(same.params, real)
    fresh = StepNoise.draw(7, 3, 4, 0.0, real_params=real, fresh_params=True)
    assert torch.equal(fresh.z, same.z) and torch.equal(fresh.real_labels, same.real_labels)  # drawn after
    assert fresh.params.shape == (3, 2) and not torch.equal(fresh.params, real)
    assert fresh.params.abs().max() <= 1  # uniform over the normalised support
    assert torch.equal(StepNoise.draw(7, 3, 4, 0.0, real_params=real, fresh_params=True).params, fresh.params)

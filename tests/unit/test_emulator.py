"""The Emulator API: loading a run, deterministic sampling, and what a run can be asked for."""

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_main
from pipeline.data.loader import MapDataset
from pipeline.emulator import Emulator, latent
from pipeline.errors import DataError
from pipeline.models import Generator
from pipeline.models.conditioning import ParamSupport
from pipeline.train.checkpoint import read_checkpoint


def test_load_describes_the_run(trained_tiny):
    emu = Emulator.load(trained_tiny, "last")
    assert emu.map_size == 32 and emu.side_angle_deg == 1.75 and emu.z_dim == 16
    assert emu.param_names == () and emu.param_ranges == {}  # unconditional
    assert emu.config.physics.map_size == 32 and emu.step == 8
    assert emu.weights == "generator_ema"  # tiny.yaml keeps the weight average
    best = Emulator.load(trained_tiny)  # "best" by default
    assert best.source.name == "best.pt"
    by_path = Emulator.load(trained_tiny, str(trained_tiny / "checkpoints" / "step-00000008.pt"))
    np.testing.assert_array_equal(by_path.sample(3), emu.sample(3))


def test_samples_are_kappa_from_the_averaged_generator(trained_tiny):
    """sample() is the checkpoint's weight average in eval mode on the per-map latent streams,
    mapped back to kappa: rebuilt here by hand from the checkpoint."""
    ckpt = read_checkpoint(trained_tiny / "checkpoints" / "step-00000008.pt")
    gen = Generator(ckpt.model_args)
    gen.load_state_dict(ckpt.parts["generator_ema"]["weights"])
    gen.eval()
    z = torch.stack([latent(5, i, 16) for i in range(6)])
    with torch.no_grad():
        expected = ckpt.transform.inverse(gen(z))[:, 0].numpy()
    maps = Emulator.from_checkpoint(ckpt).sample(6, seed=5)
    assert maps.dtype == np.float32 and maps.shape == (6, 32, 32)
    np.testing.assert_array_equal(maps, expected)
    assert maps.min() >= -ckpt.transform.shift


def test_map_i_depends_only_on_seed_and_index(trained_tiny):
    """Bit for bit when the batches hold the same maps (generate keeps them at fixed offsets);
    with other batches, to float32 rounding (CPU convolution kernels sum in an order that
    depends on the batch size: differences ~1e-8 in kappa ~1e-2 here, i.e. relative 1e-6)."""
    emu = Emulator.load(trained_tiny, "last")
    whole = emu.sample(10, seed=3, batch_size=4)
    np.testing.assert_array_equal(emu.sample(4, seed=3, first_index=4, batch_size=4), whole[4:8])
    np.testing.assert_allclose(emu.sample(4, seed=3, first_index=6, batch_size=3), whole[6:], rtol=0, atol=1e-6)
    np.testing.assert_allclose(emu.sample(10, seed=3, batch_size=10), whole, rtol=0, atol=1e-6)
    assert np.abs(emu.sample(10, seed=4) - whole).max() > 1e-3
    assert emu.sample(0).shape == (0, 32, 32)


def test_generate_writes_the_emulators_maps(trained_tiny, tmp_path):
    run_main("generate", "--run", trained_tiny, "--checkpoint", "best", "--n", 5, "--out", tmp_path / "g",
             "--quiet", "--set", "generate.seed=2", check=True)
    np.testing.assert_array_equal(MapDataset(tmp_path / "g").read(np.arange(5))[0],
                                  Emulator.load(trained_tiny, "best").sample(5, seed=2))


def test_an_unconditional_run_takes_no_parameters(trained_tiny):
    emu = Emulator.load(trained_tiny, "last")
    with pytest.raises(DataError, match="unconditional; it takes no parameters"):
        emu.sample(2, params=[0.3, 0.8])


def test_a_conditional_support_refuses_what_it_cannot_take():
    """The checks a conditional run applies to asked-for parameters (ParamSupport.check)."""
    support = ParamSupport(("Omega_m", "sigma_8"), (0.2, 0.6), (0.4, 1.0))
    p = np.array([[0.3, 0.8], [0.45, 0.8]])
    with pytest.raises(DataError, match=r"Omega_m = 0.45 is outside the training support \[0.2, 0.4\]"):
        support.check(p, False, "--params")
    assert support.check(p, True, "--params").tolist() == [False, True]  # extrapolation asked for: marked
    # the edges as a dataset stores them (float32) are on the support; a step of 1e-5 beyond is not
    edges = np.array([[np.float32(0.2), np.float32(1.0)], [np.float32(0.4), np.float32(0.6)]], np.float64)
    assert support.check(edges, False, "--params").tolist() == [False, False]
    assert support.check(np.array([[0.2 - 1e-5, 0.8], [0.3, 1.0 + 1e-5]]), True, "--params").tolist() == [True, True]
    with pytest.raises(DataError, match="sigma_8 of row 0 is nan"):
        support.check(np.array([[0.3, np.nan]]), True, "--params")
    with pytest.raises(DataError, match="expected values of"):
        support.check(np.array([[0.3]]), False, "--params")
    n = support.normalise(torch.tensor([[0.2, 0.6], [0.3, 0.8], [0.4, 1.0]]))
    torch.testing.assert_close(n, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]))
    assert ParamSupport.from_dict(support.to_dict(), "x") == support
    fitted = ParamSupport.fit(["sigma_8"], ["Omega_m", "sigma_8"], np.array([[0.3, 0.7], [0.25, 0.9]]), "data")
    assert fitted.ranges == {"sigma_8": (0.7, 0.9)}
    with pytest.raises(DataError, match="has no parameter 'w0'"):
        ParamSupport.fit(["w0"], ["Omega_m", "sigma_8"], np.zeros((2, 2)), "data/train")


def test_generate_refuses_an_unknown_checkpoint_format(trained_tiny, tmp_path):
    d = torch.load(trained_tiny / "checkpoints" / "best.pt", weights_only=True)
    d["format_version"] = 99
    torch.save(d, tmp_path / "future.pt")
    proc = run_main("generate", "--run", trained_tiny, "--checkpoint", tmp_path / "future.pt", "--n", 2,
                    "--out", tmp_path / "g")
    assert_one_line_error(proc, "future.pt", "format_version 99 is not readable")
    assert not (tmp_path / "g").exists()

import dataclasses
import re

import numpy as np

import pytest

from conftest import CONFIGS
from pipeline.config import Config, config_from_dict, load_config
from pipeline.errors import ConfigError


def test_defaults_validate():
    cfg = load_config(None)
    assert cfg == Config().validate()


@pytest.mark.parametrize("name", ["tiny.yaml", "quickstart.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.physics.map_size > 0 and cfg.data.n_train > 0


def test_overrides_are_typed():
    cfg = load_config(CONFIGS / "tiny.yaml", ["physics.map_size=16", "physics.lognormal_shift=0.05",
                                              "cosmology.design.grid.sigma_8=[0.7, 0.9]"])
    assert cfg.physics.map_size == 16
    assert cfg.physics.lognormal_shift == 0.05
    assert cfg.split_points("train") == [(0.25, 0.7), (0.25, 0.9), (0.35, 0.7), (0.35, 0.9)]


def test_int_is_accepted_where_float_expected():
    cfg = load_config(None, ["physics.side_angle_deg=2"])
    assert isinstance(cfg.physics.side_angle_deg, float)


@pytest.mark.parametrize("override, message", [
    ("nope.x=1", "unknown key 'nope'"),
    ("physics.source.kind=sheet", "physics.source.kind"),
    ("physics.source=3", "physics.source: expected a mapping"),
    ("loader.shuffle=yes please", "loader.shuffle: expected true or false"),
    ("physics.map_size=33", "must be even"),
    ("physics.lognormal_shift=guess", "physics.lognormal_shift"),
    ("cosmology.design.grid={Omega_m: [0.3]}", "must list exactly"),
    ("cosmology.Omega_b=0.5", "Omega_b: must be below"),
    ("physics", "expected section.key=value"),
    ("train.lr_decay=step", "train.lr_decay"),
    ("train.lr_final_fraction=1.5", "train.lr_final_fraction: must be in [0, 1]"),
    ("train.ema_decay=1.0", "train.ema_decay: must be in [0, 1)"),
    ("model.kernel_size=1", "model.kernel_size: must be an integer >= 2"),
    ("model.padding=reflect", "model.padding: must be one of zeros, circular; got 'reflect'"),
    ("train.precision=true", "train.precision: must be one of fp32, bf16, fp16, auto; got True"),
    ("cosmology.design.kind=sobol", "cosmology.design.kind: must be one of grid, latin_hypercube, points"),
    ("cosmology.design.kind=latin_hypercube", "cosmology.design.n_points: must be positive"),
    ("data.splits.test.extra_points=[{Omega_m: 0.3}]", "data.splits.test.extra_points[0]: expected a mapping of"),
    ("data.splits.test.extra_points=[{Omega_m: 0.3, sigma_8: -1}]",
     "data.splits.test.extra_points[0].sigma_8: must be positive"),
    ("data.splits.validation.design={kind: points, points: []}",
     "data.splits.validation.design.points: expected a non-empty list"),
    ("data.splits.test.extra_points=[{Omega_m: 0.04, sigma_8: 0.8}]", "Omega_b: must be below every Omega_m of the test"),
    ("data.splits.tests.design={}", "unknown key 'data.splits.tests'"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_round_trip_through_dict():
    cfg = load_config(CONFIGS / "tiny.yaml")
    assert config_from_dict(dataclasses.asdict(cfg)) == cfg


def test_digest_names_the_settings():
    a = load_config(CONFIGS / "tiny.yaml")
    b = load_config(CONFIGS / "tiny.yaml", ["data.seed=99"])
    assert a.digest("physics") == b.digest("physics")
    assert a.digest() != b.digest()


def test_exponent_without_a_dot_is_a_number():
    """PyYAML reads 1e-4 as the string '1e-4'; a float field takes it as the number."""
    cfg = load_config(None, ["train.lr_g=1e-4"])
    assert cfg.train.lr_g == 1e-4
    with pytest.raises(ConfigError, match="train.lr_g: expected a number"):
        load_config(None, ["train.lr_g=fast"])


def test_even_kernels_only_with_transposed_upsampling():
    load_config(None, ["model.kernel_size=4", "model.upsample=transposed"])
    with pytest.raises(ConfigError, match="resize_conv needs an odd kernel"):
        load_config(None, ["model.kernel_size=4", "model.upsample=resize_conv"])


def test_latin_hypercube_design_stratifies_each_parameter():
    """n points over the ranges: each parameter's range cut into n equal strata holds exactly
    one point per stratum; the same seed gives the same points, another seed others."""
    lhs = ["cosmology.design.kind=latin_hypercube", "cosmology.design.n_points=25",
           "cosmology.design.ranges={Omega_m: [0.2, 0.4], sigma_8: [0.6, 1.0]}"]
    points = np.array(load_config(None, lhs).split_points("train"))
    assert points.shape == (25, 2)
    for j, (lo, hi) in enumerate(((0.2, 0.4), (0.6, 1.0))):
        strata = np.floor((points[:, j] - lo) / (hi - lo) * 25).astype(int)
        assert sorted(strata) == list(range(25))
    assert np.array_equal(load_config(None, lhs).split_points("test"), points)  # the shared design
    other = np.array(load_config(None, lhs + ["cosmology.design.seed=1"]).split_points("train"))
    assert not np.array_equal(other, points)


def test_each_split_may_have_its_own_cosmologies():
    cfg = load_config(CONFIGS / "tiny.yaml", [
        "data.splits.test.extra_points=[{Omega_m: 0.3, sigma_8: 0.7}, {Omega_m: 0.4, sigma_8: 0.9}]",
        "data.splits.validation.design={kind: points, points: [{sigma_8: 0.85, Omega_m: 0.27}]}"])
    train = [(0.25, 0.8), (0.35, 0.8)]
    assert cfg.split_points("train") == train
    assert cfg.split_points("test") == train + [(0.3, 0.7), (0.4, 0.9)]
    assert cfg.split_points("validation") == [(0.27, 0.85)]

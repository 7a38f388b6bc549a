"""The conda environment and setup.cfg name the same dependencies with the same bounds."""

import configparser
import re

import yaml

from conftest import REPO

# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}


def requirement(line: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", line.strip())
    return m.group(1).lower(), m.group(2).replace(" ", "")


def setup_cfg_requirements() -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in cfg["options.extras_require"].values():
        lines += extra.splitlines()
    return dict(requirement(ln) for ln in lines if ln.strip())


def environment_requirements() -> dict:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    reqs = dict(requirement(d) for d in deps)
    reqs = {CONDA_TO_PYPI.get(k, k): v for k, v in reqs.items() if k not in ("python", "pip")}
    return reqs


def test_environment_yml_matches_setup_cfg():
    assert environment_requirements() == setup_cfg_requirements()


def test_python_floor_agrees():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert f"python{cfg['options']['python_requires']}" in env["dependencies"]


def test_console_script_runs():
    """The installed `cosmogan` entry point and `python -m pipeline` are the same CLI."""
    import subprocess

    import pipeline
    from conftest import BIN, run_cli

    script = subprocess.run([BIN / "cosmogan", "--version"], capture_output=True, text=True, check=True)
    assert script.stdout.strip() == run_cli("--version", check=True).stdout.strip() \
        == f"cosmogan {pipeline.__version__}"

"""Cheap checks of containers/build_horovod.sh (the real build is run by hand: ~2-5 min)."""

import os
import shutil
import subprocess

import pytest
from conftest import REPO

SCRIPT = REPO / "containers" / "build_horovod.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_script_is_executable_and_parses():
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_missing_python_fails_clearly(tmp_path):
    r = run(
        str(tmp_path / "no-such-python"), HOROVOD_WHEEL_CACHE=str(tmp_path / "cache")
    )
    assert r.returncode != 0
    assert "not found" in r.stderr


def test_python_without_torch_fails_clearly(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'No module named torch' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = run(str(fake), HOROVOD_WHEEL_CACHE=str(tmp_path / "cache"))
    assert r.returncode != 0
    assert "torch is not importable" in r.stderr
    assert not (tmp_path / "cache").exists()  # nothing half-made

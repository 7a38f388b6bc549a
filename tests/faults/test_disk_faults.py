"""A full and a read-only file system under every stage, on 1 and 2 ranks (root only:
small tmpfs mounts; CI runs as root). After the fault: an error line per rank that saw it
and no traceback, a non-zero exit within seconds, nothing that looks complete, no
temporary files (one rank; under MPI the rerun removes the other ranks' in-flight ones);
after space is freed, the same command ends with exactly the uninterrupted output.
"""

import os
import shutil
import subprocess
import time

import pytest

from faultlib import assert_user_error, leftovers, run, stage_inputs

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                 reason="mounting a small tmpfs needs root")]
STAGES = ("make-data", "import-npy", "stats", "train", "generate", "validate")


def mount_tmpfs(path, *options):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], check=True)


def unmount(path):
    subprocess.run(["umount", "-l", str(path)], check=False)


def size_of(root) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else root.stat().st_size


@pytest.fixture(scope="module")
def inputs(tiny_data, trained_tiny, tmp_path_factory):
    return stage_inputs(tiny_data, trained_tiny, tmp_path_factory.mktemp("disk-inputs"), seed=1)


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory):
    """(fingerprint, bytes written) of each stage's uninterrupted output, one rank."""
    root = tmp_path_factory.mktemp("disk-references")
    refs = {}
    for name in STAGES:
        out = root / name
        proc = run(inputs[name].args(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        refs[name] = (inputs[name].fingerprint(out), size_of(out))
    return refs


@pytest.fixture
def mnt(tmp_path):
    path = tmp_path / "mnt"
    yield path
    unmount(path)


@pytest.mark.parametrize("ranks", [0, 2])
@pytest.mark.parametrize("name", STAGES)
def test_full_disk_then_freed(name, ranks, inputs, references, mnt):
    stage = inputs[name]
    reference, nbytes = references[name]
    if name == "train" and ranks:
        pytest.skip("two ranks train another global batch: their output is compared in test_kill_and_rerun")
    mount_tmpfs(mnt, f"size={max(64, nbytes // 2048)}k")  # half of what the output needs
    out = mnt / "out"
    t0 = time.time()
    proc = run(stage.args(out), ranks, timeout=120)
    assert time.time() - t0 < 90
    assert_user_error(proc)
    assert not stage.complete(out)
    if not ranks:
        assert leftovers(mnt) == [], leftovers(mnt)
    subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
    proc = run(stage.args(out), ranks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stage.fingerprint(out) == reference
    assert leftovers(mnt) == []


@pytest.mark.parametrize("ranks", [0, 2])
@pytest.mark.parametrize("name", STAGES)
def test_read_only_file_system(name, ranks, inputs, mnt):
    mount_tmpfs(mnt, "size=1m", "ro")
    t0 = time.time()
    proc = run(inputs[name].args(mnt / "out"), ranks, timeout=120)
    assert time.time() - t0 < 60
    assert_user_error(proc)
    assert list(mnt.iterdir()) == []

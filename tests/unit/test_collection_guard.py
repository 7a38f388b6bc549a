"""The collection guard (tests/collection_guard.py) fails a run that leaves a test file out."""

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def make_tree(root: Path) -> Path:
    tests = root / "tests"
    for folder in ("ok", "dist"):
        (tests / folder).mkdir(parents=True)
        (tests / folder / f"test_{folder}.py").write_text("def test_passes():\n    assert True\n")
    shutil.copy(HERE / "collection_guard.py", tests)
    (tests / "conftest.py").write_text("from collection_guard import pytest_collect_file, pytest_configure, "
                                       "pytest_sessionfinish  # noqa: F401\n")
    (root / "pytest.ini").write_text("[pytest]\n")
    return tests


def pytest_in(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_a_file_in_a_norecursedirs_folder_fails_the_run(tmp_path):
    make_tree(tmp_path)
    proc = pytest_in(tmp_path, "tests")
    assert proc.returncode == 1, proc.stdout
    assert "1 passed" in proc.stdout  # tests/ok ran; tests/dist (in norecursedirs) never did
    assert "never collected" in proc.stdout and "tests/dist/test_dist.py" in proc.stdout


def test_a_run_that_collects_every_file_passes(tmp_path):
    tests = make_tree(tmp_path)
    shutil.move(tests / "dist", tests / "parallel")
    proc = pytest_in(tmp_path, "tests")
    assert proc.returncode == 0, proc.stdout
    assert "2 passed" in proc.stdout and "never collected" not in proc.stdout
    # a run of one folder or one test expects only what it names
    assert pytest_in(tmp_path, "tests/ok").returncode == 0
    assert pytest_in(tmp_path, "tests/ok/test_ok.py::test_passes").returncode == 0

"""Fail the run when a test file under the paths pytest was given is never collected.

pytest silently skips folders matched by ``norecursedirs`` (``dist``, ``build``, ``venv``,
dot-folders, ...), so a test file there protects nothing. This plugin records every
``test_*.py`` file pytest visits and, at the end of the session, compares them with the
``test_*.py`` files that exist under the folders (or files) named on the command line
(``testpaths`` when none were). Any file never visited fails the run (exit status 1),
named on the terminal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_VISITED = pytest.StashKey[set]()


def pytest_configure(config):
    config.stash[_VISITED] = set()


def pytest_collect_file(file_path: Path, parent):
    if file_path.name.startswith("test_") and file_path.suffix == ".py":
        parent.config.stash[_VISITED].add(file_path.resolve())


def expected_files(config) -> set[Path]:
    """The test_*.py files under the invocation's paths (node ids reduced to their file)."""
    out = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path.is_dir():
            out.update(p.resolve() for p in path.rglob("test_*.py") if "__pycache__" not in p.parts)
        elif path.name.startswith("test_") and path.suffix == ".py":
            out.add(path)
    return out


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        return  # interrupted (-x on a collection error, Ctrl-C): the rest was never meant to be visited
    missing = sorted(expected_files(config) - config.stash[_VISITED])
    if not missing:
        return
    root = config.rootpath
    names = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in missing)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    line = (f"collection guard: {len(missing)} test file(s) were never collected "
            f"(a norecursedirs folder such as dist/ or build/?): {names}")
    if reporter is not None:
        reporter.write_line(line, red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

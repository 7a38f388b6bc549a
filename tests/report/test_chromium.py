"""The validation report in a real browser: headless Chromium renders index.html from disk.

Checks that the page loads with no console message (the page logs nothing, so any
message, "Uncaught ..." errors included, is a failure), that every figure loaded
(the page's inline script sets <body data-images="ok:N"> on the load event; read
from --dump-dom), that it needs no network (host resolution is disabled), and takes
a screenshot: kept in the test's tmp dir and copied to /tmp/report_screenshot.png
(the top of the page) and /tmp/report_screenshot_full.png (all of it).

Chromium comes from the Debian package `chromium`; when it is missing and the tests
run as root (CI), the session fixture installs it with apt-get; otherwise the tests
skip, saying why.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import lognormal_maps
from pipeline.config import StatsConfig, ValidationConfig
from pipeline.data.importers import import_maps
from pipeline.stats.compare import compare_tables, write_summary
from pipeline.stats.fanout import compute_stats
from pipeline.validate.report import write_report
from pipeline.validate.summary import RunInfo, ValidationSummary
from pipeline.validate.verdicts import judge

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
N_FIGURES = 10
SCREENSHOT = Path("/tmp/report_screenshot.png")
SCREENSHOT_FULL = Path("/tmp/report_screenshot_full.png")


def _find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find_browser()
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("headless Chromium is not installed and, not being root, the test cannot apt-get install "
                    "it (apt-get install chromium)")
    if not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and there is no apt-get to install it with")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:  # as root this must work: fail, do not hide it behind a skip
            pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    found = _find_browser()
    assert found, "apt-get installed chromium but no chromium executable is on PATH"
    return found


def run_browser(browser: str, tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    """One headless run on a fresh profile, offline, with the renderer's console logged to stderr."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *extra, url]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=tmp)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def console_messages(stderr: str) -> list[str]:
    """The page's console output as Chromium logs it ("...:CONSOLE(12)] "message", source: ...")."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]



@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report with verdicts (a mix of PASS and FAIL): a 5%-too-strong emulator at a 10% threshold."""
    root = tmp_path_factory.mktemp("browser-report")
    for name, seed, n, amp in (("ref", 0, 256, 1.0), ("emu", 1, 160, 1.05)):
        np.save(root / f"{name}.npy", lognormal_maps(seed, n, amp=amp))
        import_maps(np.load(root / f"{name}.npy"), root / name, 1.75, root / f"{name}.npy", progress=False)
    cfg = StatsConfig(n_ell=8, n_thresholds=20, chunk_size=128)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        compute_stats(root / "ref", root / "ref.h5", cfg, progress=False)
        compute_stats(root / "emu", root / "emu.h5", cfg, like=root / "ref.h5", progress=False)
    finally:
        torch.set_num_threads(threads)
    comparison = compare_tables(root / "ref.h5", root / "emu.h5")
    criteria = ValidationConfig(max_bias_over_sigma=0, sigma_ratio_max=0, max_corr_diff=0,
                                ps_max_rel_err=0.1, mf_max_err_over_peak=0.1, peaks_max_err_over_peak=0.1,
                                pdf_max_err_over_peak=0.1)
    summary = ValidationSummary(comparison, judge(comparison, criteria),
                                RunInfo("/scratch/runs/demo", "checkpoints/best.pt", 5000))
    out = root / "report"
    out.mkdir()
    write_summary(summary, out)
    return write_report(summary, root / "ref.h5", root / "emu.h5", root / "ref", root / "emu", out,
                        title="Emulator validation (browser test)")


def images_marker(dom: str) -> str:
    m = re.search(r'<body[^>]*\bdata-images="([^"]*)"', dom)
    assert m, "no <body data-images=...> in the rendered DOM"
    return m.group(1)


def test_report_renders_with_every_figure_and_no_console_message(chromium, report, tmp_path):
    proc = run_browser(chromium, tmp_path, report.as_uri(), "--dump-dom")
    dom = proc.stdout
    assert "verdict-table" in dom and 'class="banner fail"' in dom, dom[:2000]
    assert images_marker(dom) == f"ok:{N_FIGURES}", "a figure did not load"
    assert console_messages(proc.stderr) == []


def test_a_missing_figure_is_caught_and_shown(chromium, report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report.parent, broken)
    (broken / "peaks.png").unlink()
    proc = run_browser(chromium, tmp_path, (broken / "index.html").as_uri(), "--dump-dom")
    assert images_marker(proc.stdout) == "missing:peaks.png"
    # the reader sees it too: the warning paragraph is no longer hidden
    warning = re.search(r'<p id="image-warning"[^>]*>([^<]*)</p>', proc.stdout)
    assert warning and "hidden" not in warning.group(0) and "peaks.png" in warning.group(1)


def test_screenshot_of_the_report(chromium, report, tmp_path):
    import matplotlib.image as mpimg

    for path, height in ((tmp_path / "report.png", 2600), (tmp_path / "report_full.png", 6200)):
        run_browser(chromium, tmp_path, report.as_uri(), "--hide-scrollbars", f"--window-size=1300,{height}",
                    f"--screenshot={path}")
        pixels = mpimg.imread(path)
        assert pixels.shape[:2] == (height, 1300)
        # not a blank page: the banner, the table and the figures make the image vary
        assert pixels[..., :3].std() > 0.1
        # the FAIL banner (red, #b3261e) is rendered near the top
        top = pixels[:300, :, :3].reshape(-1, 3)
        assert (np.abs(top - np.array([0xb3, 0x26, 0x1e]) / 255).max(1) < 0.03).sum() > 5000
    shutil.copyfile(tmp_path / "report.png", SCREENSHOT)
    shutil.copyfile(tmp_path / "report_full.png", SCREENSHOT_FULL)


def test_sweep_page_renders_with_both_figures(chromium, report, tmp_path):
    """The sweep's index.html (pipeline/validate/sweep_report.py) over items made from the
    report's summary at three steps of two runs: both figures load, no console message."""
    import json

    from pipeline.validate.summary import ValidationSummary
    from pipeline.validate.sweep_items import SweepItem
    from pipeline.validate.sweep_report import write_sweep_report
    from pipeline.validate.sweep_table import ItemResult

    summary = ValidationSummary.from_json(json.loads((report.parent / "summary.json").read_text()))
    results = [ItemResult(SweepItem(run, f"/runs/{run}", f"/runs/{run}/step-{s}.pt", s, s == 20), "", summary)
               for run in ("a", "b") for s in (10, 20, 30)]
    out = tmp_path / "sweep"
    out.mkdir()
    page = write_sweep_report(results, out, Path("/data/test"), 160, full_reports=False)
    proc = run_browser(chromium, tmp_path, page.as_uri(), "--dump-dom")
    assert 'id="ranked"' in proc.stdout and "0 of 6 checkpoints meet every criterion" in proc.stdout
    assert images_marker(proc.stdout) == "ok:2"
    assert console_messages(proc.stderr) == []


def test_conditional_page_renders_with_every_figure(chromium, tiny_data, tmp_path):
    """A conditional run's validation page (pipeline/validate/conditional_report.py), from a
    run conditioned on Omega_m over the tiny config's two cosmologies: every figure loads,
    no console message, the table lists both cosmologies."""
    from conftest import CONFIGS, LENIENT, run_cli

    run = tmp_path / "run"
    run_cli("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
            "--set", "train.steps=8", "--set", "model.condition_on=[Omega_m]", check=True)
    out = tmp_path / "report"
    run_cli("validate", "--run", run, "--reference", tiny_data / "test", "--n", 16, "--out", out, "--quiet",
            *LENIENT, check=False)
    proc = run_browser(chromium, tmp_path, (out / "index.html").as_uri(), "--dump-dom")
    assert 'id="cosmologies"' in proc.stdout and proc.stdout.count("Omega_m=0.") >= 2
    assert images_marker(proc.stdout) == "ok:4"  # plane, spectra, parameter line, errors (no held-out pair)
    assert console_messages(proc.stderr) == []

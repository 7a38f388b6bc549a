"""The validation report (pipeline/validate/report.py): files, figures, links, the verdict table.

Two small datasets are made in-process (shifted-lognormal 32x32 maps; the "emulator"
has 5% more amplitude, so some statistics fail a 10% threshold and others pass),
their stats tables computed on the same bins and compared, then the report written.
"""

import contextlib
import html.parser
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import lognormal_maps
from pipeline.config import StatsConfig, ValidationConfig
from pipeline.data.importers import import_maps
from pipeline.errors import DataError
from pipeline.stats.compare import compare_tables, write_summary
from pipeline.stats.fanout import compute_stats
from pipeline.validate.report import write_report
from pipeline.validate.summary import ValidationSummary
from pipeline.validate.verdicts import judge

NAMES = ("power_spectrum", "V0", "V1", "V2", "peaks", "pdf")
FIGURES = ("maps.png", "pixel_histogram.png", "power_spectrum.png", "ps_correlation.png", "distributions.png",
           "minkowski_V0.png", "minkowski_V1.png", "minkowski_V2.png", "peaks.png", "pdf.png")



def make_verdicts(comparison, threshold: float, ks_min_frac: float = 0.5):
    """The validate stage's verdicts with every threshold of the means at ``threshold`` (the
    per-map distribution checks off: test_distribution_checks covers them)."""
    return judge(comparison, ValidationConfig(ps_max_rel_err=threshold, mf_max_err_over_peak=threshold,
                                              peaks_max_err_over_peak=threshold, pdf_max_err_over_peak=threshold,
                                              ks_min_frac=ks_min_frac, max_bias_over_sigma=0, sigma_ratio_max=0,
                                              max_corr_diff=0))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-data")
    for name, seed, n, amp in (("ref", 0, 256, 1.0), ("emu", 1, 160, 1.05)):
        np.save(root / f"{name}.npy", lognormal_maps(seed, n, amp=amp))
        import_maps(np.load(root / f"{name}.npy"), root / name, 1.75, root / f"{name}.npy", shard_size=64,
                    progress=False)
    cfg = StatsConfig(n_ell=8, n_thresholds=20, chunk_size=128)
    with one_thread():
        compute_stats(root / "ref", root / "ref.h5", cfg, progress=False)
        compute_stats(root / "emu", root / "emu.h5", cfg, like=root / "ref.h5", progress=False)
    return root


@contextlib.contextmanager
def one_thread():
    """Tiny FFTs on one thread: torch's thread pool only slows them, ten-fold on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build(tables: Path, out: Path, verdicts=None, title="Emulator validation") -> tuple[ValidationSummary, Path]:
    comparison = compare_tables(tables / "ref.h5", tables / "emu.h5")
    summary = ValidationSummary(comparison, verdicts(comparison) if verdicts is not None else None)
    out.mkdir()
    index = write_report(summary, tables / "ref.h5", tables / "emu.h5", tables / "ref", tables / "emu", out,
                         title=title)
    return summary, index


@pytest.fixture(scope="module")
def report(tables, tmp_path_factory):
    """The report with verdicts at a 10% threshold (some statistics pass, some fail)."""
    summary, index = build(tables, tmp_path_factory.mktemp("report") / "out", lambda s: make_verdicts(s, 0.10))
    return summary, index


class Page(html.parser.HTMLParser):
    """Every tag's attributes, the verdict table's rows (cells as text) and the banner text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.rows, self.banner, self.headers = [], [], "", []
        self._row = self._cell = None
        self._in_banner = self._in_th = False
        self._in_table = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id") == "verdict-table":
            self._in_table = True
        elif self._in_table and tag == "tr" and "data-statistic" in a:
            self._row = {"name": a["data-statistic"], "cells": [], "classes": []}
        elif self._in_table and tag == "td" and self._row is not None:
            self._cell = ""
            self._row["classes"].append(a.get("class"))
        elif self._in_table and tag == "th":
            self._in_th = True
            self.headers.append("")
        elif tag == "div" and a.get("id") == "overall":
            self._in_banner = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "td" and self._cell is not None:
            self._row["cells"].append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "th":
            self._in_th = False
        elif tag == "div":
            self._in_banner = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_th:
            self.headers[-1] += data
        if self._in_banner:
            self.banner += data


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_file_is_written_and_every_figure_is_a_sensible_image(report):
    import matplotlib.image as mpimg

    _, index = report
    out = index.parent
    assert index == out / "index.html" and index.is_file() and (out / "report.md").is_file()
    for name in FIGURES:
        w, h = png_size(out / name)
        assert 500 <= w <= 1600 and 300 <= h <= 900, (name, w, h)  # ~6x4 in at ~110 dpi; wide ones ~10 in
        pixels = mpimg.imread(out / name)
        assert pixels.shape[:2] == (h, w)
        assert pixels[..., :3].std() > 0.05, f"{name} looks blank"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_html_is_self_contained_and_references_only_files_that_exist(report):
    _, index = report
    text = index.read_text()
    assert not re.search(r"https?://", text), "the page must not reach the network"
    page = Page(text)
    refs = [a[k] for tag, a in page.tags for k in ("src", "href") if k in a]
    imgs = [a["src"] for tag, a in page.tags if tag == "img"]
    assert sorted(imgs) == sorted(FIGURES)
    for ref in refs:
        assert "/" not in ref and ":" not in ref, f"{ref}: not a file beside index.html"
        assert (index.parent / ref).is_file(), f"{ref}: referenced but not written"
    assert not [t for t, a in page.tags if t == "link" or (t == "script" and "src" in a)], "external resources"
    # the browser test reads this marker; it starts as "pending" and the inline script sets it
    assert ('body', {'data-images': 'pending'}) in page.tags


def test_a_failed_verdict_names_the_checks_that_failed(tables, tmp_path):
    """Means within 1000% but a bias criterion no map can meet: every row fails on its
    distribution only, and says so beside FAIL (its criterion column shows the mean passing)."""
    from pipeline.config import ValidationConfig
    from pipeline.validate.verdicts import judge

    crit = ValidationConfig(ps_max_rel_err=10.0, mf_max_err_over_peak=10.0, peaks_max_err_over_peak=10.0,
                            pdf_max_err_over_peak=10.0, max_bias_over_sigma=1e-9, sigma_ratio_min=0,
                            sigma_ratio_max=0, max_corr_diff=0)
    _, index = build(tables, tmp_path / "bias", lambda s: judge(s, crit))
    page = Page(index.read_text())
    assert page.rows and all(r["cells"][-1] == "FAIL (distribution)" for r in page.rows)


def test_verdict_table_shows_each_statistic_against_its_threshold(report):
    summary, index = report
    page = Page(index.read_text())
    v = summary.verdicts
    assert [r["name"] for r in page.rows] == list(NAMES)
    assert page.headers[-3:] == ["criterion", "value vs threshold", "verdict"]
    col = {h: i for i, h in enumerate(page.headers)}
    for row in page.rows:
        vs = v.statistics[row["name"]]
        assert vs.statistic == row["name"]  # the verdict names its statistic
        cells = row["cells"]
        # make_verdicts judges the means only, so a failure is the mean's
        assert cells[col["verdict"]] == ("PASS" if vs.passed else "FAIL (mean)")
        assert row["classes"][col["verdict"]] == ("ok" if vs.passed else "bad")
        assert cells[col["value vs threshold"]] == (
            f"{vs.value:.2%} {'≤' if vs.value <= 0.1 else '>'} 10.00%")
        assert cells[col["criterion"]] == ("worst |relative error| of the mean" if row["name"] == "power_spectrum"
                                           else "worst |difference| / peak")
        assert cells[col["KS min p"]] == f"{vs.ks_min_p:.3g}"
        # the KS fraction is checked against ks_min_frac = 0.5
        assert cells[col["bins with KS p > α"]].startswith(f"{vs.ks_frac_above:.0%} ")
        assert row["classes"][col["bins with KS p > α"]] == ("ok" if vs.ks_frac_above >= 0.5 else "bad")
        r = summary.comparison.statistics[row["name"]]
        assert cells[col["worst rel. error of the mean (at)"]].startswith(f"{r.worst_rel_diff:+.2%} (")
        assert cells[col["χ²/dof (p)"]].startswith(f"{r.chi2 / r.chi2_dof:.3g}")
        # chi2_max_reduced = 0 means not required: no pass/fail colour on that cell
        assert row["classes"][col["χ²/dof (p)"]] is None
    passed = [n for n in NAMES if v.statistics[n].passed]
    assert 0 < len(passed) < len(NAMES), "the fixture should give a mix of passes and failures"
    assert page.banner.startswith("FAIL") and f"{len(NAMES) - len(passed)} of {len(NAMES)}" in page.banner


def test_overall_banner_follows_the_verdicts(tables, tmp_path):
    _, index = build(tables, tmp_path / "lenient", lambda s: make_verdicts(s, 10.0, ks_min_frac=0.0))
    page = Page(index.read_text())
    assert page.banner.startswith("PASS") and 'class="banner pass"' in index.read_text()
    assert all(r["cells"][-1] == "PASS" for r in page.rows)
    md = (index.parent / "report.md").read_text()
    assert "**PASS: all 6 statistics within their thresholds**" in md


def test_without_verdicts_the_numbers_are_shown_without_pass_or_fail(tables, tmp_path):
    _, index = build(tables, tmp_path / "plain", title="Just numbers <&>")
    text = index.read_text()
    page = Page(text)
    assert page.banner.startswith("NO VERDICT")
    assert "verdict" not in page.headers and len(page.headers) == 7
    assert [r["name"] for r in page.rows] == list(NAMES)
    assert all(c is None for r in page.rows for c in r["classes"])
    assert "<title>Just numbers &lt;&amp;&gt;</title>" in text
    md = (index.parent / "report.md").read_text()
    assert "PASS" not in md and "FAIL" not in md and "NO VERDICT" in md
    for name in FIGURES:
        assert (index.parent / name).is_file()


def test_markdown_has_the_table_and_links_every_figure(report):
    summary, index = report
    md = (index.parent / "report.md").read_text()
    assert not re.search(r"https?://", md)
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(linked) == sorted(FIGURES)
    assert all((index.parent / f).is_file() for f in linked)
    verdicts_md = md.split("## Per-map distributions")[0]
    table = [ln for ln in verdicts_md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(NAMES)  # header + one row per statistic
    for name, line in zip(NAMES, table[1:]):
        expected = "**PASS**" if summary.verdicts.statistics[name].passed else "**FAIL** (mean)"
        assert line.rstrip(" |").endswith(expected), line
        # escaped pipes keep every row at the header's column count
        assert len(re.split(r"(?<!\\)\|", line)) == len(re.split(r"(?<!\\)\|", table[0]))


def test_a_summary_read_back_from_json_gives_the_same_table(tables, tmp_path, report):
    summary, index = report
    write_summary(summary, tmp_path / "s")
    loaded = ValidationSummary.from_json(json.loads((tmp_path / "s" / "summary.json").read_text()))
    assert loaded.to_json() == summary.to_json()
    out = tmp_path / "again"
    out.mkdir()
    again = write_report(loaded, tables / "ref.h5", tables / "emu.h5", tables / "ref", tables / "emu", out)
    assert Page(again.read_text()).rows == Page(index.read_text()).rows


def test_tables_on_other_bins_are_refused(tables, tmp_path):
    other = tmp_path / "other.h5"
    with one_thread():
        compute_stats(tables / "emu", other, StatsConfig(n_ell=8, n_thresholds=10, chunk_size=128), progress=False)
    summary = ValidationSummary(compare_tables(tables / "ref.h5", tables / "ref.h5"))
    with pytest.raises(DataError, match="thresholds differ"):
        write_report(summary, tables / "ref.h5", other, tables / "ref", tables / "emu", tmp_path)
    assert not (tmp_path / "index.html").exists()


def test_a_missing_dataset_is_one_clear_error(tables, tmp_path):
    summary = ValidationSummary(compare_tables(tables / "ref.h5", tables / "emu.h5"))
    with pytest.raises(DataError, match="nowhere"):
        write_report(summary, tables / "ref.h5", tables / "emu.h5", tables / "nowhere", tables / "emu", tmp_path)
    assert not (tmp_path / "index.html").exists()

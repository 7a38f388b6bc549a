"""Validating a conditional emulator: every cosmology of the reference judged on its own.

    REPORT/generated/                      --n maps at each cosmology of the reference
                                           (cosmology c holds maps c*n .. (c+1)*n - 1)
    REPORT/stats/generated.h5              their statistics, on the reference's bins
    REPORT/cosmologies/<COSMOLOGY>/        reference.h5 and generated.h5 (that cosmology's
                                           rows), summary.json; with --cosmology-reports
                                           its own validation report
    REPORT/summary.json, report.md, index.html, *.png

The bins are the whole reference's (one set of ell bins and thresholds in units of the
pooled pixel sigma), so every cosmology is measured on the same axes. Each cosmology is
judged with the validation criteria, its category told by the run's training support:
"training" (a training cosmology), "held-out" (inside the support), "edge" (on its
boundary: the mean criteria times validation.edge_factor) or "extrapolated" (outside).

Two more checks, on the power spectrum, for the cosmologies that are not training ones:
interpolation (the emulator's mean spectrum is closer, in chi^2 under the reference's
covariance at that cosmology, to the physical model's there than to the physical
model's at the nearest training cosmology: the emulator does not snap to the design)
and the response (the ratio of mean spectra and of mean peak counts between two such
cosmologies that differ in one parameter, emulator against physical model).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.data.format import DesignRecord, atomic_write_bytes
from pipeline.data.loader import MapDataset
from pipeline.emulator import Emulator
from pipeline.models.conditioning import ParamSupport, distinct_rows
from pipeline.parallel.comm import rank_local_work, world
from pipeline.stats.compare import compare_tables, statistic_columns
from pipeline.stats.table import read_table, write_rows
from pipeline.validate.summary import RunInfo, ValidationSummary
from pipeline.validate.verdicts import judge

CATEGORIES = ("training", "held-out", "edge", "extrapolated")


def cosmology_label(names, point) -> str:
    """e.g. "Omega_m=0.3_sigma_8=0.8": a directory name."""
    return "_".join(f"{n}={v:.6g}" for n, v in zip(names, point))


@dataclass
class Interpolation:
    """chi2_truth: the emulator's mean power spectrum against the physical model's at this
    cosmology; chi2_nearest: against the physical model's at the nearest training
    cosmology ``nearest`` (both under this cosmology's reference covariance of a mean of
    n_generated maps plus one of n_reference maps); passed: chi2_truth < chi2_nearest."""

    nearest: list[float]
    chi2_truth: float
    chi2_nearest: float

    @property
    def passed(self) -> bool:
        return self.chi2_truth < self.chi2_nearest


@dataclass
class CosmologyResult:
    """One cosmology's validation: point (its values of names), category (CATEGORIES),
    the summary with its verdicts, and the interpolation check (not for training ones)."""

    point: list[float]
    category: str
    summary: ValidationSummary
    interpolation: Interpolation | None = None
    names: tuple = ()

    @property
    def label(self) -> str:
        return cosmology_label(self.names, self.point)

    @property
    def mean_passed(self) -> bool:
        return all(v.mean_passed for v in self.summary.verdicts.statistics.values())

    @property
    def distribution_passed(self) -> bool:
        return all(v.distribution_passed for v in self.summary.verdicts.statistics.values())

    def to_json(self) -> dict:
        return {"point": self.point, "category": self.category, "label": self.label,
                "mean_pass": self.mean_passed, "distribution_pass": self.distribution_passed,
                "interpolation": (None if self.interpolation is None else
                                  {**dataclasses.asdict(self.interpolation), "pass": self.interpolation.passed}),
                "summary": self.summary.to_json()}


@dataclass
class Response:
    """How the statistics move between two cosmologies a and b that differ in ``parameter``
    only: ratio_* of the mean power spectra (b / a, per ell bin) and of the mean peak counts
    (per threshold bin, where the reference's mean counts are at least 5% of their largest
    at both), emulator and physical model; worst: max over bins of |emu / ref - 1|;
    ps_noise: per ell bin, the standard error of emu / ref from the samples' scatter, per
    side the variance of a ratio of two means to first order: with matched realisations
    (the emulator's: the same z at both cosmologies; the reference's when its design has
    matched seeds) var(x_b / mean_b - x_a / mean_a) / n over the pairs, else each mean's
    (sd / sqrt(n) / mean)^2 added; ps_worst_noise that at the worst bin: how much of the
    error sampling alone gives."""

    parameter: str
    a: list[float]
    b: list[float]
    ps_ratio_emulator: list[float]
    ps_ratio_reference: list[float]
    peaks_ratio_emulator: list[float | None]
    peaks_ratio_reference: list[float | None]
    ps_worst: float
    peaks_worst: float | None
    tolerance: float
    ps_noise: list[float] = field(default_factory=list)
    ps_worst_noise: float | None = None

    @property
    def passed(self) -> bool:
        return self.ps_worst <= self.tolerance

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "pass": self.passed}


@dataclass
class Rows:
    """One side's rows of statistics (the reference's or the emulator's): ``stats``, the
    columns by statistic (n, bins); ``cosmology`` (n,), each row's cosmology; and
    ``realisation`` (n,), the random fields or z each row drew, which rows of different
    cosmologies share when their seeds were matched (None where unknown)."""

    stats: dict
    cosmology: np.ndarray
    realisation: np.ndarray | None = None


@dataclass
class ConditionalSummary:
    param_names: list[str]
    support: dict
    n_per_cosmology: int
    results: list[CosmologyResult]
    responses: list[Response] = field(default_factory=list)
    run: RunInfo | None = None

    def group(self, category: str) -> list[CosmologyResult]:
        return [r for r in self.results if r.category == category]

    def group_passed(self, category: str, part: str = "mean") -> bool | None:
        """Whether every cosmology of the category passes its mean (or "distribution")
        checks; None when the reference has none of that category."""
        rs = self.group(category)
        if not rs:
            return None
        return all(r.mean_passed if part == "mean" else r.distribution_passed for r in rs)

    @property
    def interpolation_passed(self) -> bool | None:
        checks = [r.interpolation.passed for r in self.results if r.interpolation is not None]
        return all(checks) if checks else None

    @property
    def passed(self) -> bool:
        """Every cosmology inside the support (training, held-out, edge) passes all its
        checks, the emulator interpolates at every held-out one, and every response holds."""
        inside = [r for r in self.results if r.category != "extrapolated"]
        return (all(r.mean_passed and r.distribution_passed for r in inside)
                and self.interpolation_passed is not False and all(x.passed for x in self.responses))

    def to_json(self) -> dict:
        groups = {c: {"n": len(self.group(c)), "mean_pass": self.group_passed(c, "mean"),
                      "distribution_pass": self.group_passed(c, "distribution")} for c in CATEGORIES}
        return {"conditional": True, "param_names": self.param_names, "support": self.support,
                "n_per_cosmology": self.n_per_cosmology, "pass": self.passed, "groups": groups,
                "interpolation_pass": self.interpolation_passed,
                "run": dataclasses.asdict(self.run) if self.run else None,
                "responses": [x.to_json() for x in self.responses],
                "cosmologies": [r.to_json() for r in self.results]}


def validate_conditional(emulator: Emulator, cfg: Config, run_dir: Path, reference: Path, ref_manifest,
                         n_maps: int, out: Path, stats_cache, progress: bool,
                         cosmology_reports: bool = False) -> ConditionalSummary:
    """Generate n_maps at every cosmology of the reference, then judge each (all ranks call;
    the summary is returned on every rank)."""
    from pipeline.validate.validate import generate_and_measure

    comm = world()
    support = emulator.support
    ref = MapDataset(reference)
    try:
        points, which = distinct_rows(support.select(ref_manifest.param_names, ref.all_params(), str(reference)))
    finally:
        ref.close()
    generated = out / "generated"
    rows = np.repeat(points, n_maps, axis=0)  # cosmology c: generated maps c n .. (c + 1) n - 1
    # the same n z's at every cosmology (map c n + j renders z_j), so that the responses
    # compare matched maps
    _, ref_table, gen_table = generate_and_measure(emulator, cfg, run_dir, reference, ref_manifest, len(rows), out,
                                                   stats_cache, progress, params=rows, latent_period=n_maps)

    summary = None
    if comm.rank == 0:
        with rank_local_work(f"{out}: cannot write the report"):
            summary = _judge_all(emulator, cfg, run_dir, ref_table, gen_table, points, which, n_maps, out,
                                 ref_manifest.design)
            from pipeline.validate.conditional_report import write_conditional_report

            write_conditional_report(summary, emulator, ref_table, gen_table, out)
            if cosmology_reports:
                _cosmology_reports(summary, reference, generated, which, n_maps, out)
    return comm.bcast(summary, root=0)


def _judge_all(emulator: Emulator, cfg: Config, run_dir: Path, ref_table: Path, gen_table: Path,
               points: np.ndarray, which: np.ndarray, n_maps: int, out: Path,
               ref_design: DesignRecord | None) -> ConditionalSummary:
    support = emulator.support
    names = tuple(support.names)
    ref_t, gen_t = read_table(ref_table), read_table(gen_table)
    ref_of = which[ref_t.columns["index"]]             # each reference row's cosmology
    gen_of = gen_t.columns["index"] // n_maps          # generated map i is at cosmology i // n
    # the realisation each row drew (shared between cosmologies with matched seeds; None for
    # a reference without a design, e.g. imported maps)
    ref_real = ref_design.realisations(ref_t.columns["index"]) if ref_design is not None else None
    gen_real = gen_t.columns["index"] % n_maps        # ... and renders z_(i mod n)
    ref_stats, gen_stats = statistic_columns(ref_t), statistic_columns(gen_t)
    run = RunInfo(str(run_dir.resolve()), str(emulator.source), int(emulator.step))
    results = []
    for c, point in enumerate(points):
        category = support.category(point)
        vc = cfg.validation
        if category == "edge":
            f = vc.edge_factor
            vc = dataclasses.replace(vc, ps_max_rel_err=f * vc.ps_max_rel_err,
                                     mf_max_err_over_peak=f * vc.mf_max_err_over_peak,
                                     peaks_max_err_over_peak=f * vc.peaks_max_err_over_peak,
                                     pdf_max_err_over_peak=f * vc.pdf_max_err_over_peak)
        label = cosmology_label(names, point)
        where = out / "cosmologies" / label
        where.mkdir(parents=True, exist_ok=True)
        ref_sub = write_rows(ref_t, np.flatnonzero(ref_of == c), where / "reference.h5")
        gen_sub = write_rows(gen_t, np.flatnonzero(gen_of == c), where / "generated.h5")
        comparison = compare_tables(ref_sub, gen_sub)
        summary = ValidationSummary(comparison, judge(comparison, vc), run)
        atomic_write_bytes(where / "summary.json", (json.dumps(summary.to_json(), indent=1) + "\n").encode())
        results.append(CosmologyResult([float(v) for v in point], category, summary, names=names))
    _interpolation(results, support, points, ref_stats["power_spectrum"], ref_of, gen_stats["power_spectrum"],
                   gen_of)
    responses = _responses(results, names, points, Rows(ref_stats, ref_of, ref_real),
                           Rows(gen_stats, gen_of, gen_real), cfg.validation)
    return ConditionalSummary(list(names), support.to_dict(), n_maps, results, responses, run)


def _interpolation(results, support: ParamSupport, points, ref_ps, ref_of, gen_ps, gen_of) -> None:
    """Set each non-training result's interpolation check (when the reference also holds the
    nearest training cosmology, measured in units of the support's half-ranges)."""
    training = [c for c, r in enumerate(results) if r.category == "training"]
    if not training:
        return
    half = np.maximum((np.array(support.high) - np.array(support.low)) / 2, 1e-12)
    for c, r in enumerate(results):
        if r.category == "training":
            continue
        distance = [float(np.linalg.norm((points[t] - points[c]) / half)) for t in training]
        t = training[int(np.argmin(distance))]
        x_ref, x_gen = ref_ps[ref_of == c], gen_ps[gen_of == c]
        cov = np.cov(x_ref, rowvar=False) * (1 / len(x_gen) + 1 / len(x_ref))
        inverse = np.linalg.pinv(cov)
        gen_mean = x_gen.mean(0)

        def chi2(target):
            d = gen_mean - target
            return float(d @ inverse @ d)

        r.interpolation = Interpolation([float(v) for v in points[t]], chi2(x_ref.mean(0)),
                                        chi2(ref_ps[ref_of == t].mean(0)))


def _responses(results, names, points, ref: Rows, gen: Rows, vc) -> list[Response]:
    """Every pair of non-training cosmologies that differ in exactly one parameter."""
    ref_stats, ref_of, gen_stats, gen_of = ref.stats, ref.cosmology, gen.stats, gen.cosmology
    out = []
    candidates = [c for c, r in enumerate(results) if r.category in ("held-out", "edge")]
    for i, a in enumerate(candidates):
        for b in candidates[i + 1:]:
            differs = np.flatnonzero(~np.isclose(points[a], points[b], rtol=1e-6, atol=0))
            if len(differs) != 1:
                continue
            lo, hi = (a, b) if points[a][differs[0]] < points[b][differs[0]] else (b, a)
            samples = [x["power_spectrum"][of == k] for x, of in ((ref_stats, ref_of), (gen_stats, gen_of))
                       for k in (lo, hi)]
            ps, ps_gen = [x.mean(0) for x in samples[:2]], [x.mean(0) for x in samples[2:]]
            noise = np.sqrt(sum(_ratio_variance(side, lo, hi) for side in (ref, gen)))
            pk = [ref_stats["peaks"][ref_of == k].mean(0) for k in (lo, hi)]
            pk_gen = [gen_stats["peaks"][gen_of == k].mean(0) for k in (lo, hi)]
            ps_ref_ratio, ps_emu_ratio = ps[1] / ps[0], ps_gen[1] / ps_gen[0]
            enough = (pk[0] >= 0.05 * pk[0].max()) & (pk[1] >= 0.05 * pk[1].max()) & (pk_gen[0] > 0)
            pk_ref_ratio = np.where(enough, pk[1] / np.where(enough, pk[0], 1), np.nan)
            pk_emu_ratio = np.where(enough, pk_gen[1] / np.where(enough, pk_gen[0], 1), np.nan)
            pk_err = np.abs(pk_emu_ratio / pk_ref_ratio - 1)[enough]
            ps_err = np.abs(ps_emu_ratio / ps_ref_ratio - 1)
            out.append(Response(
                names[differs[0]], [float(v) for v in points[lo]], [float(v) for v in points[hi]],
                ps_emu_ratio.tolist(), ps_ref_ratio.tolist(), _nan_to_none(pk_emu_ratio), _nan_to_none(pk_ref_ratio),
                float(ps_err.max()), float(pk_err.max()) if pk_err.size else None, vc.response_max_rel_err,
                noise.tolist(), float(noise[int(np.argmax(ps_err))])))
    return out


def _ratio_variance(side: Rows, lo: int, hi: int) -> np.ndarray:
    """The relative variance per ell bin of mean_hi / mean_lo of one side's power spectra,
    to first order: over matched pairs (the rows of the two cosmologies that drew the same
    realisation) when the side has them, else as two independent means."""
    stats, of, real = side.stats, side.cosmology, side.realisation
    x_lo, x_hi = stats["power_spectrum"][of == lo], stats["power_spectrum"][of == hi]
    m_lo, m_hi = x_lo.mean(0), x_hi.mean(0)
    if real is not None:
        r_lo, r_hi = real[of == lo], real[of == hi]
        common, i_lo, i_hi = np.intersect1d(r_lo, r_hi, return_indices=True)
        if len(common) > 1:
            d = x_hi[i_hi] / m_hi - x_lo[i_lo] / m_lo
            return d.var(0, ddof=1) / len(common)
    return sum((x.std(0, ddof=1) / m) ** 2 / len(x) for x, m in ((x_lo, m_lo), (x_hi, m_hi)))


def _nan_to_none(a: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in a]


def _cosmology_reports(summary: ConditionalSummary, reference: Path, generated: Path, which: np.ndarray,
                       n_maps: int, out: Path) -> None:
    """Each cosmology's own validation report, beside its summary.json."""
    from pipeline.validate.report import write_report

    for c, r in enumerate(summary.results):
        where = out / "cosmologies" / r.label
        write_report(r.summary, where / "reference.h5", where / "generated.h5", reference, generated, where,
                     title=f"Emulator validation at {r.label.replace('_', ', ')} ({r.category})",
                     reference_rows=np.flatnonzero(which == c),
                     candidate_rows=np.arange(c * n_maps, (c + 1) * n_maps))

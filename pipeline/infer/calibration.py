"""`cosmogan infer-calibration`: is the emulator's posterior calibrated, and as tight as the
physical model's?

At each chosen cosmology of a reference dataset (the held-out ones by default) the maps are
cut into disjoint mock surveys of n_obs maps; each survey is inferred with every simulator's
likelihood (the same grid, bins and settings as `cosmogan infer`, the simulations computed
once). Per cosmology and simulator: the bias of the posterior mean in units of the
posterior standard deviation (its mean over surveys, and that mean's standard error), the
fraction of surveys whose 68% and 95% intervals cover the truth, and the ratio of posterior
widths emulator / physical model (the median over surveys). Targets (docs/inference.md):
|bias| <= 0.3 sigma, 68% coverage in [0.58, 0.78], widths within 20% of the physical model's.
Beside them, Fisher forecasts at each truth (pipeline/infer/fisher.py) with every simulator's
mean paired with every simulator's covariance, for the statistics together and each alone:
they say whether an emulator's wider posterior comes from its mean's response to the
parameters or from its maps' scatter, and which statistic carries the difference.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.format import atomic_write_bytes
from pipeline.data.loader import MapDataset
from pipeline.errors import DataError
from pipeline.infer.fisher import FisherForecast, forecasts
from pipeline.infer.infer import Solver, prepare, with_simulations
from pipeline.infer.posterior import grid_summary
from pipeline.models.conditioning import distinct_rows, point_label, rows_at
from pipeline.parallel.comm import progress_bar

BIAS_MAX = 0.3
COVERAGE68 = (0.58, 0.78)
WIDTH_RATIO_MAX_DEV = 0.2


@dataclass
class CosmologyCalibration:
    """One cosmology's figures for one simulator (parameters in the run's order)."""

    point: list[float]
    category: str
    simulator: str
    n_surveys: int
    bias: list[float]            # mean over surveys of (posterior mean - truth) / posterior std
    bias_se: list[float]         # its standard error
    coverage68: list[float]
    coverage95: list[float]
    std: list[float]             # median posterior standard deviation
    width_ratio: list[float] | None = None   # emulator / physics, median over surveys

    def passed(self) -> bool:
        ok = all(abs(b) <= BIAS_MAX for b in self.bias)
        ok &= all(COVERAGE68[0] <= c <= COVERAGE68[1] for c in self.coverage68)
        if self.width_ratio is not None:
            ok &= all(abs(r - 1) <= WIDTH_RATIO_MAX_DEV for r in self.width_ratio)
        return bool(ok)


def choose_cosmologies(support, points: np.ndarray, which: str) -> list[int]:
    """Indices of the reference's cosmologies to calibrate at: "held-out", "held-out+edge",
    "all", or points "Omega_m=0.3,sigma_8=0.8;Omega_m=...". """
    cats = [support.category(p) for p in points]
    if which in ("held-out", "held-out+edge", "all"):
        keep = {"held-out": ("held-out",), "held-out+edge": ("held-out", "edge"),
                "all": ("held-out", "edge", "training")}[which]
        chosen = [i for i, c in enumerate(cats) if c in keep]
    else:
        chosen = []
        for text in [t for t in which.split(";") if t.strip()]:
            p = support.parse(text, "--cosmologies")
            hit = rows_at(points, p)
            if not len(hit):
                raise DataError(f"--cosmologies: the reference holds no map at {text.strip()}")
            chosen.append(int(hit[0]))
    if not chosen:
        raise DataError(f"--cosmologies {which}: the reference holds no such cosmology")
    return chosen


def calibrate(run_dir, reference, out_dir, checkpoint: str | None = None, config_path=None, overrides=(),
              simulators=("emulator", "physics"), cosmologies: str = "held-out", surveys: int = 50, n_obs: int = 10,
              device: str = "auto", training_maps_dir=None, progress: bool = True) -> list[CosmologyCalibration] | None:
    out = Path(out_dir)
    if surveys < 2 or n_obs < 1:
        raise DataError(f"--surveys {surveys} --n-obs {n_obs}: calibration needs at least 2 surveys of at least 1 map")
    setup = prepare(run_dir, checkpoint, config_path, overrides, tuple(simulators), device, training_maps_dir)
    support = setup.support
    data = MapDataset(reference)
    try:
        params = np.asarray(support.select(data.manifest.param_names, data.all_params(), str(reference)), np.float64)
        points, which = distinct_rows(params)
        chosen = choose_cosmologies(support, points, cosmologies)
        rows = {}
        for c in chosen:
            idx = np.flatnonzero(which == c)
            if len(idx) < surveys * n_obs:
                raise DataError(f"{reference}: {len(idx)} maps at {point_label(support.names, points[c])}, fewer than "
                                f"{surveys} surveys of {n_obs} maps")
            rows[c] = idx[:surveys * n_obs].reshape(surveys, n_obs)

        def work(tables):
            results, fishers = _calibrate(setup, tables, data, points, rows, progress)
            correction = tables["emulator"].correction if "emulator" in tables else None
            _write(out, results, fishers, setup, surveys, n_obs, str(reference), scatter_ratios(tables),
                   correction and correction.summary(n_obs, setup.cfg.infer.n_sim))
            return results

        return with_simulations(setup, out, "infer-calibration", progress, work)
    finally:
        data.close()


def _calibrate(setup, tables, data, points, rows, progress: bool) -> tuple[list[CosmologyCalibration],
                                                                          list[FisherForecast]]:
    bar = progress_bar(sum(len(b) for b in rows.values()) * len(tables), "surveys", progress, unit="survey")
    solvers = {name: Solver(setup.sims[name], t, setup.cfg, name) for name, t in tables.items()}
    spec = next(iter(tables.values())).spec
    names = setup.support.names
    results, fishers = [], []
    for c, blocks in rows.items():
        truth = points[c]
        maps, _ = data.read(blocks.ravel())
        vectors = spec.measure(maps).reshape(*blocks.shape, spec.size)
        per_sim = {}
        for name, solver in solvers.items():
            per_sim[name] = []
            for x in vectors.mean(axis=1):
                surface, lp, _ = solver.solve(x, blocks.shape[1])
                per_sim[name].append(grid_summary(surface.axes, lp, names, name, blocks.shape[1], truth))
                bar.update(1)
        for name, sums in per_sim.items():
            bias = np.array([s.bias_in_sigma() for s in sums])
            ratio = None
            if name == "emulator" and "physics" in per_sim:
                ratio = np.median([e.std / p.std for e, p in zip(sums, per_sim["physics"])], axis=0).tolist()
            results.append(CosmologyCalibration(
                truth.tolist(), setup.support.category(truth), name, len(sums), bias.mean(0).tolist(),
                (bias.std(0, ddof=1) / np.sqrt(len(sums))).tolist(),
                np.mean([s.covers(68) for s in sums], axis=0).tolist(),
                np.mean([s.covers(95) for s in sums], axis=0).tolist(),
                np.median([s.std for s in sums], axis=0).tolist(), ratio))
        fishers += truth_forecasts(solvers, tables, truth, blocks.shape[1])
    bar.close()
    return results, fishers


def truth_forecasts(solvers: dict, tables, truth: np.ndarray, n_obs: int) -> list[FisherForecast]:
    """Fisher forecasts at the truth for the chosen statistics together and each alone, every
    simulator's mean with every simulator's covariance (its maps at the grid node nearest the
    truth, as a best-fit covariance would draw them)."""
    statistics = next(iter(tables.values())).spec.statistics
    groups = [tuple(statistics)] + ([(s,) for s in statistics] if len(statistics) > 1 else [])
    covariances = {name: solver.vectors_at(solver.nearest_node(truth)) for name, solver in solvers.items()}
    return forecasts(tables, covariances, truth, n_obs, groups)


def scatter_ratios(tables) -> dict[str, float] | None:
    """Per statistic, the median over its bins of the per-map standard deviation at the
    fiducial point, emulator / physical model: what widens (> 1) or narrows the emulator's
    posterior through its covariance."""
    if set(tables) != {"emulator", "physics"}:
        return None
    spec = tables["emulator"].spec
    e, p = (tables[k].fiducial_vectors.std(axis=0, ddof=1) for k in ("emulator", "physics"))
    names = np.array([lab.split("[")[0] for lab in spec.labels()])
    return {s: float(np.median(e[(names == s) & (p > 0)] / p[(names == s) & (p > 0)])) for s in spec.statistics}


def _write(out: Path, results, fishers: list[FisherForecast], setup, surveys: int, n_obs: int, reference: str,
           ratios, correction: dict | None) -> None:
    names = setup.support.names
    doc = {"reference": reference, "surveys": surveys, "n_obs": n_obs, "statistics": list(setup.cfg.infer.statistics),
           "likelihood": setup.cfg.infer.likelihood, "covariance": setup.cfg.infer.covariance, "grid": setup.cfg.infer.grid, "n_sim": setup.cfg.infer.n_sim,
           "n_cov": setup.cfg.infer.n_cov, "targets": {"bias_max": BIAS_MAX, "coverage68": list(COVERAGE68),
                                                       "width_ratio_max_dev": WIDTH_RATIO_MAX_DEV},
           "results": [dict(r.__dict__, passed=r.passed()) for r in results], "scatter_ratio_at_fiducial": ratios,
           "fisher": [dataclasses.asdict(f) for f in fishers], "mean_correction": correction}
    text = markdown(results, names, surveys, n_obs)
    if correction:
        text += (f"\nThe emulator's mean is corrected by its training maps ({correction['training_maps']}: "
                 f"{correction['points']} cosmologies, {min(correction['maps_per_point'])}-"
                 f"{max(correction['maps_per_point'])} maps each), whose own noise can move a posterior by about "
                 f"{correction['noise_in_sigma']:.2f} of its width.\n")
    if ratios:
        text += ("\nPer-map scatter at the fiducial point, emulator / physical model (median over bins): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + ".\n")
    text += fisher_markdown(fishers, names, n_obs)
    atomic_write_bytes(out / "calibration.json", json.dumps(doc, indent=1).encode())
    atomic_write_bytes(out / "calibration.md", text.encode())


def markdown(results, names, surveys: int, n_obs: int) -> str:
    head = ["cosmology", "where", "simulator"] + [f"{k} {n}" for k in ("bias/σ", "68% cover", "95% cover", "σ")
                                                 for n in names] + [f"width ratio {n}" for n in names] + ["meets"]
    lines = [f"{surveys} mock surveys of {n_obs} maps per cosmology. bias/σ: the mean over surveys of (posterior "
             "mean − truth) / posterior std (± its standard error); cover: the fraction of surveys whose central "
             "interval holds the truth; σ: the median posterior std; width ratio: emulator / physical model "
             f"(median over surveys). Targets: |bias| ≤ {BIAS_MAX} σ, 68% coverage in {COVERAGE68[0]:.2f}–"
             f"{COVERAGE68[1]:.2f}, width ratio within {WIDTH_RATIO_MAX_DEV:.0%} of 1.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [point_label(names, r.point), r.category, r.simulator]
        cells += [f"{b:+.2f} ± {se:.2f}" for b, se in zip(r.bias, r.bias_se)]
        cells += [f"{c:.2f}" for c in r.coverage68] + [f"{c:.2f}" for c in r.coverage95]
        cells += [f"{s:.4f}" for s in r.std]
        cells += [f"{w:.2f}" for w in r.width_ratio] if r.width_ratio else ["—"] * len(names)
        cells.append("yes" if r.passed() else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fisher_markdown(fishers: list[FisherForecast], names, n_obs: int) -> str:
    """The forecasts as one table: per cosmology and group of statistics, the physical model's
    widths, the emulator's mean with the physical model's covariance, and the emulator's own."""
    pick = {(tuple(f.point), f.statistics, f.mean_from, f.covariance_from): f.std for f in fishers}
    columns = [("physics", "physics", "physics"), ("emulator", "physics", "emulator mean, physics covariance"),
               ("emulator", "emulator", "emulator")]
    columns = [c for c in columns if any(k[2:] == c[:2] for k in pick)]
    if not columns:
        return ""
    head = ["cosmology", "statistics"] + [f"{label}: σ {n}" for *_, label in columns for n in names]
    lines = ["", f"Fisher forecasts at the truth, {n_obs} maps (the Cramér-Rao widths of the mean's response "
             "through each covariance, at the grid node nearest the truth). Where the emulator's mean with the "
             "physical model's covariance is as wide as the emulator's own, its posterior is wide because its "
             "mean responds less to the parameters, not because its maps scatter more.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point, group in dict.fromkeys((k[0], k[1]) for k in pick):
        cells = [point_label(names, point), "+".join(group)]
        for mean_from, cov_from, _ in columns:
            std = pick.get((point, group, mean_from, cov_from))
            cells += [f"{v:.4f}" for v in std] if std else ["—"] * len(names)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

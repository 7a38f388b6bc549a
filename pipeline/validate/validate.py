"""validate = generate + stats + compare + report, in one job (MPI-aware).

    REPORT/generated/            the emulator's maps (a dataset)
    REPORT/stats/generated.h5    their statistics, on the reference's bins
    REPORT/summary.json, report.md, index.html, *.png

The reference's statistics are cached beside the report's stats
(REPORT/stats/reference-<dataset>-<bins>.h5) and reused by any later validation
of the same dataset with the same bins, wherever it points --stats-cache. Every
stage is rank-count invariant and resumable, so the whole job is too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.config import Config, config_from_dict, with_overrides
from pipeline.data.format import read_manifest
from pipeline.dist.comm import world
from pipeline.errors import DataError
from pipeline.stats.compare import compare_tables, write_summary
from pipeline.stats.fanout import compute_stats
from pipeline.train.checkpoint import load_checkpoint, resolve_checkpoint
from pipeline.validate.generate import generate


def verdicts(summary: dict, cfg: Config) -> dict:
    """Pass/fail of each statistic against the validate section's thresholds."""
    vc = cfg.validation
    rules = {"power_spectrum": ("worst |relative error| of the mean", "worst_rel_diff", vc.ps_max_rel_err),
             "V0": ("worst |difference| / peak", "worst_diff_over_peak", vc.mf_max_err_over_peak),
             "V1": ("worst |difference| / peak", "worst_diff_over_peak", vc.mf_max_err_over_peak),
             "V2": ("worst |difference| / peak", "worst_diff_over_peak", vc.mf_max_err_over_peak),
             "peaks": ("worst |difference| / peak", "worst_diff_over_peak", vc.peaks_max_err_over_peak),
             "pdf": ("worst |difference| / peak", "worst_diff_over_peak", vc.pdf_max_err_over_peak)}
    out = {}
    for name, (metric, key, threshold) in rules.items():
        r = summary["statistics"][name]
        value = abs(r[key]) if r[key] is not None else float("inf")
        reduced = r["chi2"] / r["chi2_dof"] if r["chi2_dof"] else None
        ok = value <= threshold
        if vc.ks_min_frac:
            ok = ok and r["ks_frac_above_alpha"] >= vc.ks_min_frac
        if vc.chi2_max_reduced and reduced is not None:
            ok = ok and reduced <= vc.chi2_max_reduced
        out[name] = {"metric": metric, "value": value, "threshold": threshold, "pass": bool(ok),
                     "ks_frac_above": r["ks_frac_above_alpha"], "ks_min_p": r["ks_min_pvalue"],
                     "chi2_dof": reduced}
    return {"statistics": out, "pass": all(v["pass"] for v in out.values()), "criteria": cfg.to_dict()["validation"]}


def validate(run_dir: str | Path, reference: str | Path, n_maps: int, out_dir: str | Path,
             checkpoint: str | None = None, overrides=(), stats_cache: str | Path | None = None,
             progress: bool = True) -> dict:
    """Run the whole validation; returns the summary (with verdicts) on every rank."""
    comm = world()
    run_dir, reference, out = Path(run_dir), Path(reference), Path(out_dir)
    ref_manifest = read_manifest(reference)
    if checkpoint is None:  # the best by fidelity when training kept one
        checkpoint = "best" if (run_dir / "checkpoints" / "best.pt").is_file() else "last"
    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path)
    cfg = with_overrides(config_from_dict(state["config"]), overrides)
    size, angle = state["model_args"]["image_size"], float(state["data"]["side_angle_deg"])
    if ref_manifest.map_shape != (size, size) or ref_manifest.side_angle_deg != angle:
        h, w = ref_manifest.map_shape
        raise DataError(f"{reference}: maps are {h}x{w} over {ref_manifest.side_angle_deg} deg, but the model "
                        f"in {path} makes {size}x{size} over {angle} deg")
    if n_maps < comm.size:
        raise DataError(f"--n {n_maps} is smaller than the number of ranks ({comm.size})")
    _check_writable(out)

    generated = out / "generated"
    generate(run_dir, str(path), n_maps, generated, overrides, progress=progress)
    cache = Path(stats_cache) if stats_cache else out / "stats"
    if comm.rank == 0:
        cache.mkdir(parents=True, exist_ok=True)
        (out / "stats").mkdir(parents=True, exist_ok=True)
    comm.barrier()
    bins_key = hashlib.sha256(json.dumps(cfg.to_dict()["stats"], sort_keys=True).encode()).hexdigest()[:12]
    ref_table = cache / f"reference-{ref_manifest.digest()[:12]}-{bins_key}.h5"
    compute_stats(reference, ref_table, cfg.stats, progress=progress)
    gen_table = out / "stats" / "generated.h5"
    compute_stats(generated, gen_table, cfg.stats, like=ref_table, progress=progress)

    summary = None
    if comm.rank == 0:
        summary = compare_tables(ref_table, gen_table)
        summary["verdicts"] = verdicts(summary, cfg)
        summary["run"] = {"dir": str(run_dir.resolve()), "checkpoint": str(path), "step": int(state["step"])}
        write_summary(summary, out)
        from pipeline.validate.report import write_report

        write_report(summary, ref_table, gen_table, reference, generated, out)
    return comm.bcast(summary, root=0)


def _check_writable(out: Path) -> None:
    """One line, on every rank alike, when the report directory cannot be written."""
    comm = world()
    problem = None
    if comm.rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            problem = f"{out}: cannot write the report there ({e.strerror or e})"
    problem = comm.bcast(problem, root=0)
    if problem:
        raise DataError(problem)

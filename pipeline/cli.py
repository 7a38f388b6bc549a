"""The ``cosmogan`` command line: one subcommand per stage. The only module that parses argv.

User errors (PipelineError) become one line on stderr and exit status 1; usage errors
exit 2 (argparse); a validation whose verdict is FAIL exits 3. Under MPI only rank 0
prints an error that every rank raised identically (preflight checks run on all ranks);
an error on one rank alone is printed by that rank and aborts the job (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.parallel.comm import one_process

# Exit statuses: 0 done; 1 a user error (one line on stderr); 2 a usage error (argparse);
# 3 validate ran and its verdict is FAIL; 75 train checkpointed on a signal (run it again
# to resume); 130 interrupted.
EXIT_VALIDATION_FAILED = 3


def _make_data(args) -> None:
    from pipeline.config import load_config
    from pipeline.data.make_data import make_all_splits
    from pipeline.parallel.comm import world

    cfg = load_config(args.config, args.set)
    manifests = make_all_splits(cfg, args.out, progress=not args.quiet)
    if world().rank == 0:
        for split, m in manifests.items():
            print(f"{Path(args.out) / split}: {m.n_maps} maps {m.map_shape[0]}x{m.map_shape[1]}, "
                  f"{len(m.shards)} shards")


def _import(args, maps, source_key=None, source_path=None, side_angle_deg=None) -> None:
    """source_path and side_angle_deg (degrees) default to args.file and args.side_angle_deg."""
    from pipeline.data.importers import import_maps, load_npy

    params, names = None, [n for n in (args.param_names or "").split(",") if n]
    if args.params:
        params = load_npy(args.params)
    elif names:
        raise PipelineError("--param-names given without --params")
    side = args.side_angle_deg if side_angle_deg is None else side_angle_deg
    source = args.file if source_path is None else source_path
    m = import_maps(maps, args.out, side, source, source_key=source_key, shard_size=args.shard_size,
                    params=params, param_names=names, progress=not args.quiet, params_path=args.params)
    print(f"{args.out}: {m.n_maps} maps {m.map_shape[0]}x{m.map_shape[1]}, {len(m.shards)} shards")


@one_process
def _import_npy(args) -> None:
    from pipeline.data.importers import load_npy_maps

    _import(args, load_npy_maps(args.file))


@one_process
def _import_h5(args) -> None:
    from pipeline.data.importers import open_h5_maps

    f, maps = open_h5_maps(args.file, args.key)
    with f:
        _import(args, maps, source_key=args.key)


def _hdu(text: str | None):
    """--hdu: an index when it is digits, else an EXTNAME."""
    return int(text) if text is not None and text.isdigit() else text


@one_process
def _import_fits(args) -> None:
    from pipeline.data.fits import read_fits_maps, stack_fits_maps

    items = [read_fits_maps(f, _hdu(args.hdu)) for f in args.files]
    maps, side = stack_fits_maps(items, args.side_angle_deg)
    used = sorted({it.hdu for it in items})
    _import(args, maps, source_key=f"HDU {'/'.join(map(str, used))}", source_path=list(args.files),
            side_angle_deg=side)


@one_process
def _verify_data(args) -> None:
    from pipeline.data.verify import verify_dataset

    for d in args.dirs:
        m = verify_dataset(d, check_values=not args.no_values)
        print(f"{d}: OK ({m.n_maps} maps {m.map_shape[0]}x{m.map_shape[1]}, {len(m.shards)} shards, "
              f"{m.side_angle_deg} deg)")


def _stats(args) -> None:
    from pipeline.config import load_config
    from pipeline.parallel.comm import world
    from pipeline.stats.fanout import compute_stats

    cfg = load_config(args.config, args.set)
    out = compute_stats(args.data, args.out, cfg.stats, like=args.like, progress=not args.quiet)
    if world().rank == 0:
        print(f"{out}: statistics of {args.data}")


@one_process
def _compare(args) -> None:
    from pipeline.stats.compare import compare_tables, write_summary

    summary = compare_tables(args.reference, args.candidate)
    write_summary(summary, args.out)
    for name, r in summary.statistics.items():
        worst = "n/a" if r.worst_rel_diff is None else f"{r.worst_rel_diff:+.2%}"
        print(f"{name:>15}: worst rel diff {worst}, min KS p {r.ks_min_pvalue:.3g}, "
              f"KS p > {summary.ks_alpha} in {r.ks_frac_above_alpha:.0%} of bins")
    print(f"{args.out}/summary.md")


def _train(args) -> int:
    from pipeline.config import load_config
    from pipeline.train.fit import train

    config = args.config
    if config is None:
        saved = Path(args.run) / "config.yaml"
        if not saved.is_file():
            raise PipelineError(f"--config is needed: {args.run} holds no config.yaml to resume with")
        config = saved
    cfg = load_config(config, args.set)
    return train(cfg, args.data, args.run, progress=not args.quiet, allow_data_change=args.allow_data_change)


def _generate(args) -> None:
    from pipeline.emulator import Emulator
    from pipeline.parallel.comm import world
    from pipeline.validate.generate import generate
    from pipeline.validate.validate import stage_config

    emulator = Emulator.load(args.run, args.checkpoint)
    cfg = stage_config(emulator.config, args.config, args.set, stage="generate")
    params, n = _generate_params(args, emulator)
    m = generate(emulator, cfg, n, args.out, args.run, progress=not args.quiet, params=params,
                 allow_extrapolation=args.allow_extrapolation)
    if world().rank == 0:
        print(f"{args.out}: {m.n_maps} generated maps {m.map_shape[0]}x{m.map_shape[1]}, {len(m.shards)} shards")


def _print_conditional(summary, out: Path) -> int:
    from pipeline.parallel.comm import world
    from pipeline.validate.conditional_report import headline

    if world().rank == 0:
        for r in summary.results:
            worst = r.summary.verdicts.statistics
            print(f"{r.label:>34} {r.category:>12}: P(l) {worst['power_spectrum'].value:6.1%}, "
                  f"worst of the others {max(v.value for k, v in worst.items() if k != 'power_spectrum'):6.1%}; "
                  f"means {'pass' if r.mean_passed else 'FAIL'}, distributions "
                  f"{'pass' if r.distribution_passed else 'FAIL'}")
        _, text, lines = headline(summary)
        for line in lines:
            print(f"validate: {line}")
        print(f"validate: {text}; report: {out / 'index.html'}")
    return 0 if summary.passed else EXIT_VALIDATION_FAILED


def _generate_params(args, emulator):
    """(params, n) for generate: from --params (every map at one cosmology) or --like (one
    map at the parameters of each map of a dataset); None for an unconditional run."""
    from pipeline.data.format import read_manifest
    from pipeline.validate.validate import check_geometry

    if args.params is not None and args.like is not None:
        raise PipelineError("--params and --like: give one of them")
    if args.like is None:
        if args.n is None:
            raise PipelineError("--n is needed (the number of maps), unless --like gives one per map of a dataset")
        if args.params is None:
            return None, args.n
        return emulator.support.parse(args.params), args.n
    params = emulator.params_like(args.like)
    check_geometry(emulator, Path(args.like), read_manifest(args.like))
    if args.n is not None and args.n != len(params):
        raise PipelineError(f"--n {args.n} with --like {args.like}: it holds {len(params)} maps, one generated "
                            "map per map; leave --n out")
    return params, len(params)


def _validate(args) -> int:
    from pipeline.parallel.comm import world
    from pipeline.validate.validate import validate

    summary = validate(args.run, args.reference, args.n, args.out, args.checkpoint, args.config, args.set,
                       args.stats_cache, progress=not args.quiet, noise_floor=args.noise_floor,
                       cosmology_reports=args.cosmology_reports)
    if not hasattr(summary, "verdicts"):  # a conditional run: one validation per cosmology
        return _print_conditional(summary, Path(args.out))
    if world().rank == 0:
        v = summary.verdicts
        for name, r in v.statistics.items():
            line = (f"{name:>15}: {r.metric} {r.value:.3%} (threshold {r.threshold:.0%}) "
                    f"{'pass' if r.mean_passed else 'FAIL'}; KS p > 0.05 in {r.ks_frac_above:.0%} of bins")
            if r.bias is not None:
                line += f"; |bias|/sigma {r.bias:.2f}"
            if r.spread_lo is not None:
                line += f", sigma ratio {r.spread_lo:.2f}-{r.spread_hi:.2f}"
            if r.corr_diff is not None:
                line += f", |delta rho| {r.corr_diff:.3f}"
            print(line + ("" if r.distribution_passed else " (distribution FAIL)"))
        print(f"validate: {'PASS' if v.passed else 'FAIL'}; report: {Path(args.out) / 'index.html'}")
    return 0 if summary.verdicts.passed else EXIT_VALIDATION_FAILED


def _sweep(args) -> None:
    from pipeline.parallel.comm import world
    from pipeline.validate.sweep import sweep
    from pipeline.validate.sweep_table import rank_checkpoints

    results = sweep(args.runs, args.reference, args.n, args.out, args.checkpoints, args.groups, args.config,
                    args.set, args.stats_cache, args.full_reports, args.keep_maps, progress=not args.quiet)
    if world().rank == 0:
        ranks = rank_checkpoints(results)
        for i, c in enumerate(ranks, 1):
            print(f"{i:>3}. {c.run_label} step {c.step}{' (best.pt)' if c.best else ''}: worst {c.worst_statistic} "
                  f"uses {c.worst_ratio:.3g}x its allowance; {'PASS' if c.passed else 'FAIL'}"
                  + (f" ({c.n_passed} of {c.n_items} cosmologies)" if c.n_items > 1 else ""))
        print(f"sweep: {sum(c.passed for c in ranks)} of {len(ranks)} checkpoints pass; "
              f"table: {Path(args.out) / 'sweep.csv'}; report: {Path(args.out) / 'index.html'}")


def _infer_overrides(args) -> list[str]:
    """--set items, then the infer flags given (they win)."""
    flags = {"statistics": args.statistics and f"[{args.statistics}]", "n_sim": args.n_sim, "n_cov": args.n_cov,
             "grid": args.grid, "likelihood": args.likelihood, "sampler": getattr(args, "sampler", None)}
    return list(args.set) + [f"infer.{k}={v}" for k, v in flags.items() if v is not None]


def _simulators(args) -> tuple[str, ...]:
    from pipeline.infer.infer import SIMULATORS

    return SIMULATORS if args.simulator == "both" else (args.simulator,)


def _infer(args) -> None:
    from pipeline.infer.infer import infer

    result = infer(args.emulator, args.observed, args.out, args.checkpoint, args.config, _infer_overrides(args),
                   _simulators(args), args.select, args.n_obs, _hdu(args.hdu), args.side_angle_deg, args.device,
                   args.training_maps, progress=not args.quiet)
    if result is None:
        return
    for name, p in result.posteriors.items():
        s = p.summary
        text = ", ".join(f"{n} = {m:.4f} +- {sd:.4f}" for n, m, sd in zip(s.names, s.mean, s.std))
        if s.truth is not None:
            text += " (truth " + ", ".join(f"{t:.4f}" for t in s.truth) + ")"
        print(f"infer: {name}: {text}")
    print(f"infer: report: {Path(args.out) / 'index.html'}")


def _infer_calibration(args) -> None:
    from pipeline.infer.calibration import calibrate

    results = calibrate(args.emulator, args.reference, args.out, args.checkpoint, args.config, _infer_overrides(args),
                        _simulators(args), args.cosmologies, args.surveys, args.n_obs, args.device,
                        args.training_maps, progress=not args.quiet)
    if results is None:
        return
    for r in results:
        text = ", ".join(f"bias {b:+.2f} sigma, 68% coverage {c:.2f}" for b, c in zip(r.bias, r.coverage68))
        if r.width_ratio:
            text += ", width ratio " + "/".join(f"{w:.2f}" for w in r.width_ratio)
        print(f"infer-calibration: {r.point} {r.category} {r.simulator}: {text}; "
              f"{'meets' if r.passed() else 'MISSES'} the targets")
    print(f"infer-calibration: {Path(args.out) / 'calibration.md'}")

def _overrides_and_quiet(s: argparse.ArgumentParser, what: str) -> None:
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=what)
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def _infer_options(s: argparse.ArgumentParser, default_simulator: str) -> None:
    s.add_argument("--checkpoint", help="best (default when the run kept one), last, or a checkpoint path")
    s.add_argument("--statistics", help="comma-separated, of power_spectrum, peaks, V0, V1, V2, pdf "
                                        "(default infer.statistics: power_spectrum,peaks,V0,V1,V2)")
    s.add_argument("--n-sim", type=int, help="maps per grid point for the mean (default infer.n_sim, 128)")
    s.add_argument("--n-cov", type=int, help="maps at the fiducial point for the covariance (default 1024)")
    s.add_argument("--grid", type=int, help="grid points per parameter (default 41)")
    s.add_argument("--likelihood", choices=("t", "hartlap"), help="Sellentin-Heavens t (default) or Hartlap-Gaussian")
    s.add_argument("--simulator", choices=("emulator", "physics", "both"), default=default_simulator,
                   help="whose maps make the likelihood: the emulator, the physical model (the baseline), or both "
                        f"(default {default_simulator})")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the emulator runs (auto: a GPU per local rank when there is one)")
    s.add_argument("--training-maps", metavar="DATASET",
                   help="the run's training maps (DATA/train): the emulator's mean is corrected by its residual "
                        "against them at their cosmologies, interpolated between them (docs/inference.md)")
    s.add_argument("--config", help="YAML whose stats, infer and generate sections override the run's")
    _overrides_and_quiet(s, "override a stats/infer value, e.g. infer.ranges=Omega_m=0.25:0.35")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cosmogan", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("make-data", help="synthesise train/validation/test datasets from the physical model")
    s.add_argument("--config", required=True, help="YAML config (see configs/)")
    s.add_argument("--out", required=True, help="output directory; gets train/, validation/, test/")
    _overrides_and_quiet(s, "override a config value (repeatable)")
    s.set_defaults(func=_make_data)

    for name, func, what in (("import-npy", _import_npy, ".npy array"), ("import-h5", _import_h5, "HDF5 dataset")):
        s = sub.add_parser(name, help=f"stream a {what} of maps (n,H,W), (n,1,H,W) or (n,H,W,1) into a dataset")
        s.add_argument("file", help=f"the {what} file")
        if name == "import-h5":
            s.add_argument("--key", default="maps", help="dataset name inside the file (default: maps)")
        s.add_argument("--out", required=True, help="new dataset directory")
        s.add_argument("--side-angle-deg", type=float, required=True, help="field side in degrees")
        s.add_argument("--shard-size", type=int, default=256, help="maps per shard (default 256)")
        s.add_argument("--params", help=".npy array (n, P) of per-map parameters")
        s.add_argument("--param-names", help="comma-separated names of the P parameters")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.set_defaults(func=func)

    s = sub.add_parser("import-fits", help="stream FITS images of maps (2-D maps or 3-D cubes (n,H,W), e.g. "
                                           "LensTools ConvergenceMap files) into a dataset")
    s.add_argument("files", nargs="+", metavar="FILE", help="FITS files; their maps are concatenated in this order")
    s.add_argument("--out", required=True, help="new dataset directory")
    s.add_argument("--hdu", help="HDU index or EXTNAME (default: the first HDU holding an image)")
    s.add_argument("--side-angle-deg", type=float,
                   help="field side in degrees (default: the header keyword ANGLE, in degrees)")
    s.add_argument("--shard-size", type=int, default=256, help="maps per shard (default 256)")
    s.add_argument("--params", help=".npy array (n, P) of per-map parameters")
    s.add_argument("--param-names", help="comma-separated names of the P parameters")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_import_fits)

    s = sub.add_parser("train", help="train the DCGAN on a dataset; resumes when the run holds a checkpoint")
    s.add_argument("--config", help="YAML config (default when resuming: RUN/config.yaml)")
    s.add_argument("--data", required=True, help="make-data output: DATA/train and DATA/validation")
    # --run-dir: the same; torchrun's own parser mistakes --run for its --run-path
    s.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run directory (checkpoints, metrics, samples)")
    s.add_argument("--allow-data-change", action="store_true",
                   help="resume a checkpoint made on another training dataset (refused without it)")
    _overrides_and_quiet(s, "override a config value (repeatable)")
    s.set_defaults(func=_train)

    s = sub.add_parser("generate", help="write a dataset of maps from a trained generator")
    s.add_argument("--run", required=True, help="run directory")
    s.add_argument("--checkpoint", default="last", help="last (default), best, or a checkpoint path")
    s.add_argument("--n", type=int, help="number of maps (with --like: one per map of that dataset)")
    s.add_argument("--out", required=True, help="new dataset directory")
    s.add_argument("--params", help="a conditional run's cosmology, e.g. Omega_m=0.31,sigma_8=0.79")
    s.add_argument("--like", help="a dataset: one map at the parameters of each of its maps (its design mirrored)")
    s.add_argument("--allow-extrapolation", action="store_true",
                   help="generate outside the training support (refused without it)")
    s.add_argument("--config", help="YAML whose generate section overrides the run's (other sections ignored)")
    _overrides_and_quiet(s, "override a generate/stats/validation value, e.g. generate.seed=1")
    s.set_defaults(func=_generate)

    s = sub.add_parser("validate", help="generate N maps, compute and compare their statistics, write the report")
    s.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory")
    s.add_argument("--reference", required=True, help="held-out dataset, e.g. DATA/test")
    s.add_argument("--n", type=int, help="maps to generate (a conditional run: at each cosmology of the reference); "
                                          "default: as many as the reference holds (per cosmology)")
    s.add_argument("--out", required=True, help="report directory")
    s.add_argument("--checkpoint", help="best (default when the run kept one), last, or a path")
    s.add_argument("--stats-cache", help="where reference statistics are kept and reused (default OUT/stats)")
    s.add_argument("--noise-floor", metavar="DATASET",
                   help="a second held-out sample of the simulations (e.g. DATA/validation): every figure is shown "
                        "beside what two samples of the reference model give")
    s.add_argument("--cosmology-reports", action="store_true",
                   help="a conditional run: write each cosmology's full validation report too")
    s.add_argument("--config", help="YAML whose stats, validation and generate sections override the run's "
                                    "(other sections ignored)")
    _overrides_and_quiet(s, "override a stats/validation/generate value (e.g. validation.ps_max_rel_err=0.05)")
    s.set_defaults(func=_validate)

    s = sub.add_parser("sweep", help="validate many checkpoints of many runs in one (MPI) job; one table and report")
    s.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run directories")
    s.add_argument("--checkpoints", default="all",
                   help="which checkpoints of each run: all (default), last, best, every-K; comma-separated")
    s.add_argument("--reference", required=True, help="held-out dataset, e.g. DATA/test")
    s.add_argument("--n", type=int, help="maps to generate per item (default: as many as the reference holds, "
                                          "per cosmology for a conditional run)")
    s.add_argument("--out", required=True, help="sweep directory (table, report, one directory per item)")
    s.add_argument("--groups", type=int, help="groups of ranks validating items side by side "
                                              "(default: one group per rank)")
    s.add_argument("--full-reports", action="store_true", help="write every item's validation report too")
    s.add_argument("--keep-maps", action="store_true", help="keep every item's generated maps")
    s.add_argument("--stats-cache", help="where reference statistics are kept and reused (default OUT/stats)")
    s.add_argument("--config", help="YAML whose stats, validation and generate sections override the first "
                                    "run's for every item (other sections ignored)")
    _overrides_and_quiet(s, "override a stats/validation/generate value for every item")
    s.set_defaults(func=_sweep)

    s = sub.add_parser("infer", help="the posterior of a conditional run's parameters given observed maps")
    s.add_argument("--emulator", "--run", dest="emulator", required=True, help="run directory (conditional)")
    s.add_argument("--observed", required=True,
                   help="the survey: a dataset directory, a .npy or a FITS file of maps of the run's geometry")
    s.add_argument("--out", required=True, help="output directory (posterior, summary.json, report)")
    _infer_options(s, default_simulator="emulator")
    s.add_argument("--sampler", choices=("grid", "emcee"), help="posterior on the refined grid (default) or by emcee")
    s.add_argument("--select", help="a dataset of many cosmologies: the maps of this one, e.g. "
                                    "Omega_m=0.325,sigma_8=0.75")
    s.add_argument("--n-obs", type=int, help="use the first N observed maps (default: all)")
    s.add_argument("--hdu", help="FITS: the HDU index or EXTNAME (default: the first image)")
    s.add_argument("--side-angle-deg", type=float,
                   help="the observed field's side in degrees, for a .npy (checked against a FITS ANGLE)")
    s.set_defaults(func=_infer)

    s = sub.add_parser("infer-calibration", help="coverage, bias and widths of infer's posteriors over mock surveys "
                                                 "of a reference dataset's cosmologies")
    s.add_argument("--emulator", "--run", dest="emulator", required=True, help="run directory (conditional)")
    s.add_argument("--reference", required=True, help="the physical model's held-out maps, e.g. DATA/test")
    s.add_argument("--out", required=True, help="output directory (calibration.json, calibration.md)")
    s.add_argument("--cosmologies", default="held-out",
                   help="held-out (default), held-out+edge, all, or points 'Omega_m=0.3,sigma_8=0.8;...'")
    s.add_argument("--surveys", type=int, default=50, help="mock surveys per cosmology (default 50)")
    s.add_argument("--n-obs", type=int, default=10, help="maps per survey (default 10)")
    _infer_options(s, default_simulator="both")
    s.set_defaults(func=_infer_calibration)

    s = sub.add_parser("stats", help="compute every statistic of every map of a dataset (MPI fan-out)")
    s.add_argument("data", help="dataset directory")
    s.add_argument("--out", required=True, help="stats table to write (HDF5)")
    s.add_argument("--config", help="YAML config whose `stats` section sets the bins (default: built-in)")
    s.add_argument("--like", help="reuse the bins of this stats table (for a bin-by-bin compare)")
    _overrides_and_quiet(s, "override a config value (repeatable)")
    s.set_defaults(func=_stats)

    s = sub.add_parser("compare", help="compare two stats tables: KS tests, relative errors, chi^2")
    s.add_argument("reference", help="stats table of the reference maps (A)")
    s.add_argument("candidate", help="stats table of the candidate maps (B)")
    s.add_argument("--out", required=True, help="directory for summary.json and summary.md")
    s.set_defaults(func=_compare)

    s = sub.add_parser("verify-data", help="check manifest, checksums, shapes, dtypes and values")
    s.add_argument("dirs", nargs="+", help="dataset directories")
    s.add_argument("--no-values", action="store_true", help="skip the scan for NaN/Inf")
    s.set_defaults(func=_verify_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.data.format import quiet_hdf5_handles

    quiet_hdf5_handles()
    try:
        status = args.func(args)
    except PipelineError as e:
        from pipeline.parallel.comm import process_rank

        if process_rank() == 0:  # every rank raised it alike; one line is enough
            sys.stderr.write(f"cosmogan: error: {e}\n")
        from pipeline.data.format import hdf5_failed

        if hdf5_failed():  # HDF5 would crash at exit over the file it could not write
            from pipeline.data.format import exit_after_error

            exit_after_error(1)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("cosmogan: interrupted\n")
        return 130
    return status or 0

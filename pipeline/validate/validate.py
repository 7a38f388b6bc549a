"""validate = generate + stats + compare + report, in one job (MPI-aware).

    REPORT/generated/            the emulator's maps (a dataset)
    REPORT/stats/generated.h5    their statistics, on the reference's bins
    REPORT/summary.json, report.md, index.html, *.png

The reference's statistics are cached beside the report's stats
(REPORT/stats/reference-<dataset>-<bins>.h5) and reused by any later validation
of the same dataset with the same bins, wherever it points --stats-cache. Every
stage is rank-count invariant and resumable, so the whole job is too.

Settings: generate and validate read the ``stats`` (bins, chunking), ``validation``
(verdict criteria) and ``generate`` (seed, batch and shard sizes) sections, in this
order of precedence, lowest first: built-in defaults, the run's saved config, the
stage's ``--config`` file, its ``--set`` overrides. So a run can be re-validated on
other bins or criteria without retraining; the other sections belong to training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.config import Config, with_sections
from pipeline.data.format import read_manifest, remove_temporaries
from pipeline.emulator import Emulator
from pipeline.errors import DataError, os_error_text
from pipeline.locking import output_lock
from pipeline.models.conditioning import distinct_rows
from pipeline.parallel.comm import from_rank0, rank_local_work, world
from pipeline.stats.compare import compare_tables, write_summary
from pipeline.stats.fanout import compute_stats
from pipeline.train.checkpoint import read_checkpoint, resolve_checkpoint
from pipeline.validate.generate import generate
from pipeline.validate.summary import RunInfo, ValidationSummary
from pipeline.validate.verdicts import judge

STAGE_SECTIONS = ("stats", "validation", "generate")


def stage_config(run_config: Config, config_path=None, overrides=(), stage: str = "validate") -> Config:
    """The settings a generate or validate stage runs with (see the module's docstring)."""
    return with_sections(run_config, STAGE_SECTIONS, config_path, overrides, what=stage)


def validate(run_dir: str | Path, reference: str | Path, n_maps: int | None, out_dir: str | Path,
             checkpoint: str | None = None, config_path: str | Path | None = None, overrides=(),
             stats_cache: str | Path | None = None, progress: bool = True,
             noise_floor: str | Path | None = None, cosmology_reports: bool = False):
    """Run the whole validation; returns the summary (with verdicts) on every rank: a
    ValidationSummary, or for a conditional run a ConditionalSummary (one validation per
    cosmology of the reference, n_maps generated at each; pipeline/validate/conditional.py).

    noise_floor: a second held-out sample of the reference model (e.g. DATA/validation
    beside DATA/test), compared with the reference the same way, so that every figure of
    the report stands beside what two samples of the simulations give (unconditional runs).
    cosmology_reports: a conditional run's report gets each cosmology's full report too."""
    comm = world()
    run_dir, reference, out = Path(run_dir), Path(reference), Path(out_dir)
    ref_manifest = read_manifest(reference)
    floor_manifest = read_manifest(noise_floor) if noise_floor is not None else None
    if floor_manifest is not None:
        if (floor_manifest.map_shape, floor_manifest.side_angle_deg) != (ref_manifest.map_shape,
                                                                         ref_manifest.side_angle_deg):
            h, w = floor_manifest.map_shape
            raise DataError(f"{noise_floor}: maps are {h}x{w} over {floor_manifest.side_angle_deg} deg, unlike the "
                            f"reference {reference}")
        if floor_manifest.digest() == ref_manifest.digest():
            raise DataError(f"--noise-floor {noise_floor}: is the reference itself; give another sample "
                            "(e.g. the validation split)")
    if checkpoint is None:  # the best by fidelity when training kept one
        checkpoint = "best" if (run_dir / "checkpoints" / "best.pt").is_file() else "last"
    emulator = Emulator.from_checkpoint(read_checkpoint(resolve_checkpoint(run_dir, checkpoint)))
    cfg = stage_config(emulator.config, config_path, overrides)
    check_geometry(emulator, reference, ref_manifest)
    if n_maps is None:
        n_maps = maps_like_the_reference(emulator, reference, ref_manifest)
    if n_maps < 2:
        raise DataError(f"--n {n_maps}: the statistics' distributions need at least 2 generated maps")
    if n_maps < comm.size:
        raise DataError(f"--n {n_maps} is smaller than the number of ranks ({comm.size})")
    if emulator.support.conditional:
        if noise_floor is not None:
            raise DataError("--noise-floor: not available for a conditional run (each cosmology would need its "
                            "own second sample)")
        if not ref_manifest.param_names:
            raise DataError(f"{reference}: its maps carry no parameters, but {emulator.source} is conditional on "
                            f"{', '.join(emulator.param_names)}")
        from pipeline.validate.conditional import validate_conditional

        check_writable(out)
        with output_lock(out, "validate", comm.rank == 0, from_rank0):
            return validate_conditional(emulator, cfg, run_dir, reference, ref_manifest, n_maps, out, stats_cache,
                                        progress, cosmology_reports)
    check_writable(out)
    with output_lock(out, "validate", comm.rank == 0, from_rank0):
        return _run(emulator, cfg, run_dir, reference, ref_manifest, n_maps, out, stats_cache, progress,
                    Path(noise_floor) if noise_floor is not None else None, floor_manifest)


def _run(emulator: Emulator, cfg: Config, run_dir: Path, reference: Path, ref_manifest, n_maps: int, out: Path,
         stats_cache, progress: bool, noise_floor: Path | None, floor_manifest) -> ValidationSummary:
    comm = world()
    generated = out / "generated"
    cache, ref_table, gen_table = generate_and_measure(emulator, cfg, run_dir, reference, ref_manifest, n_maps, out,
                                                       stats_cache, progress)
    floor_table = None
    if noise_floor is not None:  # on the reference's bins, cached like it
        floor_table = cache / f"floor-{floor_manifest.digest()[:12]}-on-{ref_table.name}"
        compute_stats(noise_floor, floor_table, cfg.stats, like=ref_table, progress=progress)

    summary = None
    if comm.rank == 0:
        comparison = compare_tables(ref_table, gen_table)
        summary = ValidationSummary(comparison, judge(comparison, cfg.validation),
                                    RunInfo(str(run_dir.resolve()), str(emulator.source), int(emulator.step)),
                                    compare_tables(ref_table, floor_table) if floor_table is not None else None)
        from pipeline.validate.report import write_report

        with rank_local_work(f"{out}: cannot write the report"):
            write_summary(summary, out)
            write_report(summary, ref_table, gen_table, reference, generated, out)
    return comm.bcast(summary, root=0)


def generate_and_measure(emulator: Emulator, cfg: Config, run_dir: Path, reference: Path, ref_manifest, n_maps: int,
                         out: Path, stats_cache, progress: bool, params=None,
                         latent_period: int | None = None) -> tuple[Path, Path, Path]:
    """The stages validate and a conditional validation share: generate n_maps maps into
    OUT/generated (at ``params``: one row per map, for a conditional run; latent_period as
    generate's), then the reference's statistics (cached) and the generated maps' on its
    bins. Returns (the cache directory, the reference's table, the generated maps' table)."""
    comm = world()
    generate(emulator, cfg, n_maps, out / "generated", run_dir, progress=progress, params=params,
             allow_extrapolation=True,  # a conditional reference's cosmologies: validated wherever they are
             latent_period=latent_period)
    cache = Path(stats_cache) if stats_cache else out / "stats"
    with rank_local_work(f"{out}: cannot write"):
        if comm.rank == 0:
            remove_temporaries(out)  # report files a killed run left half-written
            cache.mkdir(parents=True, exist_ok=True)
            (out / "stats").mkdir(parents=True, exist_ok=True)
    comm.barrier()
    ref_table = reference_table_path(cache, ref_manifest, cfg)
    compute_stats(reference, ref_table, cfg.stats, progress=progress)
    gen_table = out / "stats" / "generated.h5"
    compute_stats(out / "generated", gen_table, cfg.stats, like=ref_table, progress=progress)
    return cache, ref_table, gen_table


def maps_like_the_reference(emulator: Emulator, reference: Path, ref_manifest) -> int:
    """The default --n: as many maps as the reference holds, per cosmology for a conditional
    run (the most any of its cosmologies has), so each comparison is as large a side."""
    if not emulator.support.conditional or not ref_manifest.param_names:
        return ref_manifest.n_maps
    from pipeline.data.loader import MapDataset

    data = MapDataset(reference)
    try:
        _, which = distinct_rows(emulator.support.select(ref_manifest.param_names, data.all_params(), str(reference)))
    finally:
        data.close()
    return int(np.bincount(which).max())


def check_geometry(emulator: Emulator, reference: Path, ref_manifest) -> None:
    """Refuse a reference whose maps differ in size or angle from the emulator's."""
    size, angle = emulator.map_size, emulator.side_angle_deg
    if ref_manifest.map_shape != (size, size) or ref_manifest.side_angle_deg != angle:
        h, w = ref_manifest.map_shape
        raise DataError(f"{reference}: maps are {h}x{w} over {ref_manifest.side_angle_deg} deg, but the model "
                        f"in {emulator.source} makes {size}x{size} over {angle} deg")


def reference_table_path(cache: Path, ref_manifest, cfg: Config) -> Path:
    """Where the reference's statistics on cfg's bins are kept: named by the dataset and the
    stats settings, so any validation or sweep with both the same reuses them."""
    bins_key = hashlib.sha256(json.dumps(cfg.to_dict()["stats"], sort_keys=True).encode()).hexdigest()[:12]
    return cache / f"reference-{ref_manifest.digest()[:12]}-{bins_key}.h5"


def check_writable(out: Path) -> None:
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
            problem = f"{out}: cannot write the report there ({os_error_text(e)})"
    problem = comm.bcast(problem, root=0)
    if problem:
        raise DataError(problem)

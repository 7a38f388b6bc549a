"""`cosmogan sweep`: many validations (run x checkpoint [x cosmology]) judged in one MPI job.

    OUT/sweep.json                  the sweep's settings; a rerun with other settings is refused
    OUT/stats/reference-*.h5        the reference's statistics, made once by all ranks
                                    (and one table per cosmology for a conditional run)
    OUT/items/RUN/step-N[/COSMO]/   item.json (the item and its weights' sha256, written first),
                                    result.json (the item and its ValidationSummary),
                                    generated.h5; with --full-reports the validation report;
                                    with --keep-maps the generated maps (generated/)
    OUT/sweep.h5, sweep.csv         one row per item (pipeline/validate/sweep_table.py)
    OUT/index.html, sweep.md, *.png the sweep report

The ranks are split into --groups groups of consecutive ranks (an MPI communicator
split); item k is validated by group k % groups, as `cosmogan validate` does, on that
group's ranks (generate, then stats on the reference's bins, then compare and judge). An
item is done when its result.json names the checkpoint's sha256, so a killed sweep
reruns only the items without one. Each validation is rank-count invariant, so the
table is the same for any rank count and group size. Every item is judged with one set
of settings: the first run's saved stats, validation and generate sections under the
sweep's --config and --set, so that figures compare across runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.data.format import atomic_write_bytes, file_sha256, read_manifest, remove_temporaries
from pipeline.emulator import Emulator
from pipeline.errors import DataError
from pipeline.locking import output_lock
from pipeline.parallel.comm import from_rank0, global_world, rank_local_work, running_on, split_groups
from pipeline.stats.compare import compare_tables
from pipeline.stats.fanout import compute_stats
from pipeline.stats.table import read_table, write_rows
from pipeline.train.checkpoint import read_checkpoint
from pipeline.validate.generate import generate
from pipeline.validate.summary import RunInfo, ValidationSummary
from pipeline.validate.sweep_items import (SweepItem, parse_selectors, pick_checkpoints, reference_cosmologies,
                                           run_labels)
from pipeline.validate.sweep_table import ItemResult
from pipeline.validate.validate import (check_geometry, check_writable, maps_like_the_reference, reference_table_path,
                                        stage_config)
from pipeline.validate.verdicts import judge

RESULT_NAME = "result.json"


def sweep(runs: list[str | Path], reference: str | Path, n_maps: int | None, out_dir: str | Path,
          checkpoints: str = "all", groups: int | None = None, config_path=None, overrides=(),
          stats_cache=None, full_reports: bool = False, keep_maps: bool = False,
          progress: bool = True) -> list[ItemResult]:
    """Validate every item; write the table and the report; returns the results (every rank)."""
    comm = global_world()
    reference, out = Path(reference), Path(out_dir)
    run_dirs = [Path(r) for r in runs]
    if not run_dirs:
        raise DataError("--runs: give at least one run directory")
    labels = run_labels(run_dirs)
    selectors = parse_selectors(checkpoints)
    ref_manifest = read_manifest(reference)
    picked = [pick_checkpoints(r, selectors) for r in run_dirs]
    first = [Emulator.from_checkpoint(read_checkpoint(p[-1].path)) for p in picked]
    for emulator in first:
        check_geometry(emulator, reference, ref_manifest)
        if emulator.support.conditional and not ref_manifest.param_names:
            raise DataError(f"{reference}: its maps carry no parameters, but {emulator.source} is conditional on "
                            f"{', '.join(emulator.param_names)}")
    cfg = stage_config(first[0].config, config_path, overrides, stage="sweep")
    if n_maps is None:  # as many as the reference holds (per cosmology), for the first run
        n_maps = maps_like_the_reference(first[0], reference, ref_manifest)
    n_groups = groups or comm.size
    if not 1 <= n_groups <= comm.size:
        raise DataError(f"--groups {n_groups}: must be between 1 and the number of ranks ({comm.size})")
    largest = -(-comm.size // n_groups)
    if n_maps < max(2, largest):
        raise DataError(f"--n {n_maps}: need at least 2 generated maps, and one per rank of a group ({largest})")
    check_writable(out)
    with output_lock(out, "sweep", comm.rank == 0, from_rank0):
        settings = {"reference_digest": ref_manifest.digest(), "n_maps": n_maps,
                    "settings": {k: cfg.to_dict()[k] for k in ("stats", "validation", "generate")}}
        _check_settings(out, settings)
        cache = Path(stats_cache) if stats_cache else out / "stats"
        with rank_local_work(f"{out}: cannot write"):
            if comm.rank == 0:
                remove_temporaries(out)  # table and report files a killed run left half-written
                cache.mkdir(parents=True, exist_ok=True)
        comm.barrier()
        ref_table = reference_table_path(cache, ref_manifest, cfg)
        compute_stats(reference, ref_table, cfg.stats, progress=progress)
        items, ref_tables, ref_rows = _items(run_dirs, labels, picked, first, ref_table, out / "stats")
        results = _validate_items(items, ref_tables, ref_rows, reference, ref_manifest, cfg, n_maps, out, n_groups,
                                  full_reports, keep_maps, progress)
        if comm.rank == 0:
            from pipeline.validate.sweep_report import write_sweep_report
            from pipeline.validate.sweep_table import write_table

            with rank_local_work(f"{out}: cannot write the sweep table"):
                write_table(results, out, {"reference": str(reference.resolve()), **settings})
                write_sweep_report(results, out, reference, n_maps, full_reports)
        comm.barrier()
    return results


def _check_settings(out: Path, settings: dict) -> None:
    """Write OUT/sweep.json, or refuse an OUT that holds a sweep made with other settings."""
    comm = global_world()
    problem = None
    if comm.rank == 0:
        path = out / "sweep.json"
        if path.is_file():
            try:
                held = json.loads(path.read_text())
            except (OSError, ValueError):
                held = None
            if held != settings:
                problem = (f"{out}: holds a sweep made with other settings (reference, --n, or the stats, "
                           "validation and generate sections); choose another --out or remove it")
        else:
            try:
                atomic_write_bytes(path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())
            except OSError as e:
                problem = f"{path}: cannot write ({e.strerror})"
    problem = comm.bcast(problem, root=0)
    if problem:
        raise DataError(problem)


def _items(run_dirs, labels, picked, first, ref_table: Path, stats_dir: Path):
    """The items in table order (run, step, cosmology), the reference table each is compared
    with, and, for the report's pixel figures, the reference's map indices of its cosmology
    (None: all). A conditional run's per-cosmology tables are written here by rank 0."""
    comm = global_world()
    table = read_table(ref_table)
    cosmologies = {}
    items, tables, rows = [], [], []
    for run_dir, label, chosen, emulator in zip(run_dirs, labels, picked, first):
        names = emulator.param_names
        if names and names not in cosmologies:
            cosmologies[names] = reference_cosmologies(names, table.header.param_names, table.columns["params"],
                                                       str(table.header.source))
        for c in chosen:
            if not names:
                items.append(SweepItem(label, str(Path(run_dir).resolve()), str(c.path.resolve()), c.step, c.best))
                tables.append(ref_table)
                rows.append(None)
                continue
            values, which = cosmologies[names]
            for k, cosmo in enumerate(values):
                outside = bool(emulator.support.check(np.array([cosmo]), True, "reference").any())
                items.append(SweepItem(label, str(Path(run_dir).resolve()), str(c.path.resolve()), c.step, c.best,
                                       tuple(names), cosmo, outside))
                sub = stats_dir / f"{ref_table.stem}-{items[-1].key.split('/')[-1]}.h5"
                member = np.flatnonzero(which == k)
                if comm.rank == 0 and not sub.is_file():
                    with rank_local_work(f"{sub}: cannot write"):
                        write_rows(table, member, sub)
                tables.append(sub)
                rows.append(table.columns["index"][member])
    comm.barrier()
    return items, tables, rows


def _validate_items(items, ref_tables, ref_rows, reference, ref_manifest, cfg, n_maps, out, n_groups, full_reports,
                    keep_maps, progress) -> list[ItemResult]:
    comm = global_world()
    color, group = split_groups(n_groups)
    with running_on(group):
        for k in range(color, len(items), n_groups):
            with rank_local_work(f"{out / 'items' / items[k].key}"):
                _validate_item(items[k], ref_tables[k], ref_rows[k], reference, ref_manifest, cfg, n_maps,
                               out / "items" / items[k].key, full_reports, keep_maps, progress)
    comm.barrier()
    results = None
    if comm.rank == 0:
        with rank_local_work(f"{out}: cannot read the items' results"):
            results = [_read_result(out / "items" / it.key) for it in items]
    return comm.bcast(results, root=0)


def _validate_item(item: SweepItem, ref_table: Path, ref_rows, reference: Path, ref_manifest, cfg: Config, n_maps: int,
                   item_dir: Path, full_reports: bool, keep_maps: bool, progress: bool) -> None:
    """One validation, on the current group's ranks; skipped when its result is already there."""
    from pipeline.parallel.comm import world

    comm = world()
    generated = item_dir / "generated"
    sha = from_rank0(file_sha256(item.checkpoint) if comm.rank == 0 else None)
    done = from_rank0(_is_done(item_dir, item, sha) if comm.rank == 0 else None)
    if not done:
        emulator = Emulator.from_checkpoint(read_checkpoint(Path(item.checkpoint)))
        check_geometry(emulator, reference, ref_manifest)
        if comm.rank == 0:
            _start_item(item_dir, item, sha)
        comm.barrier()
        generate(emulator, cfg, n_maps, generated, item.run_dir, progress=progress,
                 params=item.cosmology or None, allow_extrapolation=True)
        gen_table = item_dir / "generated.h5"
        compute_stats(generated, gen_table, cfg.stats, like=ref_table, progress=progress)
        if comm.rank == 0:
            comparison = compare_tables(ref_table, gen_table)
            summary = ValidationSummary(comparison, judge(comparison, cfg.validation),
                                        RunInfo(item.run_dir, item.checkpoint, int(emulator.step)))
            if full_reports:
                from pipeline.stats.compare import write_summary
                from pipeline.validate.report import write_report

                title = f"{item.run_label}, step {item.step}" + (f", {item.cosmology_label}" if item.cosmology else "")
                write_summary(summary, item_dir)
                write_report(summary, ref_table, gen_table, reference, generated, item_dir,
                             title=f"Emulator validation: {title}", reference_rows=ref_rows)
            result = ItemResult(item, sha, summary)
            atomic_write_bytes(item_dir / RESULT_NAME,
                               (json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n").encode())
    if comm.rank == 0 and not keep_maps and generated.exists():
        shutil.rmtree(generated)  # after the result: a kill in between costs only a regeneration
    comm.barrier()


def _start_item(item_dir: Path, item: SweepItem, sha: str) -> None:
    """Ready item_dir for this item's weights: what an earlier sweep left there for other
    weights under the same checkpoint name (a retrained run) is removed, work left by a
    killed sweep for these weights is kept for the stages to resume."""
    identity = {"item": item.to_json(), "checkpoint_sha256": sha}
    started = item_dir / "item.json"
    try:
        held = json.loads(started.read_text())
    except (OSError, ValueError):
        held = None if not item_dir.exists() else {}
    if held != identity and item_dir.exists():
        shutil.rmtree(item_dir)
    item_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(item_dir)
    atomic_write_bytes(started, (json.dumps(identity, indent=1) + "\n").encode())


def _is_done(item_dir: Path, item: SweepItem, sha: str) -> bool:
    try:
        d = json.loads((item_dir / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return False
    return d.get("checkpoint_sha256") == sha and d.get("item") == item.to_json()


def _read_result(item_dir: Path) -> ItemResult:
    return ItemResult.from_json(json.loads((item_dir / RESULT_NAME).read_text()))

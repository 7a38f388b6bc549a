"""`cosmogan infer`: the posterior of a conditional run's parameters given observed maps.

    observed maps --(statistics)--> x, the survey's mean data vector
    emulator at every grid point --(n_sim maps)--> mu(theta); at the fiducial point
      --(n_cov maps)--> C
    ln L(theta) = Gaussian (t or Hartlap) of x - mu(theta) with C (1/n_obs + 1/n_sim)
    posterior = L x flat prior over the grid's box, on a refined grid or by emcee

OUT holds simulations-<simulator>.h5 (reused by a rerun and resumed after a kill),
posterior.h5, summary.json, contours.png and index.html. ``--simulator physics`` puts the
physical model's maps where the emulator's were, for a baseline on the same observed maps;
``both`` does the two and overlays them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Config, with_sections
from pipeline.data.format import atomic_write_bytes, file_sha256, hdf5_write, atomic_path
from pipeline.emulator import Emulator
from pipeline.errors import DataError
from pipeline.infer.correction import TrainingMaps, mean_correction, training_maps
from pipeline.infer.likelihood import Likelihood
from pipeline.infer.observed import Observed, check_geometry, load_observed
from pipeline.infer.posterior import (LikelihoodSurface, PosteriorSummary, grid_summary, sample_emcee,
                                      samples_summary)
from pipeline.infer.simulations import COV_CHUNK, GridAxes, SimulationTable, simulation_table
from pipeline.infer.simulators import EmulatorSimulator, PhysicsSimulator
from pipeline.infer.summaries import SummarySpec
from pipeline.locking import output_lock
from pipeline.models.conditioning import ParamSupport
from pipeline.parallel.comm import from_rank0, rank_local_work, world

STAGE_SECTIONS = ("stats", "infer", "generate")
SIMULATORS = ("emulator", "physics")


@dataclass
class Posterior:
    """One simulator's posterior: its summary and what the figure draws (the fine grid's
    axes and log posterior; emcee's samples when it sampled)."""

    summary: PosteriorSummary
    axes: tuple[np.ndarray, ...]
    log_post: np.ndarray
    samples: np.ndarray | None = None


@dataclass(frozen=True)
class LikelihoodInfo:
    """How one simulator's likelihood was built (summary.json's "likelihood")."""

    kind: str                      # "t" or "hartlap"
    covariance: str                # "fiducial" or "best-fit"
    covariance_point: list[float]  # where the covariance's maps were drawn
    n_cov: int
    n_sim: int
    components: int                # of the data vector, after dropping
    dropped: list[str]             # constant components
    grid: list[int]
    refine: int
    mean_noise_in_sigma: float     # sqrt((1/n_sim) / (1/n_obs + 1/n_sim)): see mean_noise()
    mean_correction: dict | None = None  # MeanCorrection.summary() when --training-maps corrected the mean


class Solver:
    """One simulator's likelihood over its simulation table. The covariance is the fiducial
    maps', or, for infer.covariance "best-fit", that of n_cov maps drawn at the grid point
    nearest the maximum of the fiducial posterior (fixed, not varying with theta, as Carron
    2013 advises; re-estimated once at the best fit, as surveys iterate theirs). The maps
    are map indices n_sim .. n_sim + n_cov - 1, as the fiducial ones, so the covariance at a
    point changes smoothly with it; surfaces are cached by grid point (a calibration's
    surveys share them)."""

    def __init__(self, sim, table: SimulationTable, cfg: Config, where: str):
        self.sim, self.table, self.ic, self.where = sim, table, cfg.infer, where
        self.fiducial = self._surface(table.fiducial_vectors, "fiducial")
        self._at: dict[tuple[int, ...], LikelihoodSurface] = {}
        self._vectors: dict[tuple[int, ...], np.ndarray] = {}

    def _surface(self, vectors: np.ndarray, what: str) -> LikelihoodSurface:
        like = Likelihood.from_vectors(vectors, self.table.n_sim, self.ic.likelihood, f"{self.where} ({what})")
        return LikelihoodSurface(self.table.axes.values, self.table.means, like, self.ic.refine)

    def node_point(self, node: tuple[int, ...]) -> np.ndarray:
        return np.array([v[i] for v, i in zip(self.table.axes.values, node)])

    def nearest_node(self, point) -> tuple[int, ...]:
        """The grid node nearest ``point`` (P,), parameter by parameter."""
        return tuple(int(np.argmin(np.abs(np.asarray(v) - p))) for v, p in zip(self.table.axes.values, point))

    def vectors_at(self, node: tuple[int, ...]) -> np.ndarray:
        """The data vectors (n_cov, d) of n_cov maps drawn at a grid node (map indices n_sim ..)."""
        if node not in self._vectors:
            point, t = self.node_point(node), self.table
            self._vectors[node] = np.concatenate([
                t.spec.measure(self.sim.maps(point, min(COV_CHUNK, t.n_cov - s), t.seed, t.n_sim + s))
                for s in range(0, t.n_cov, COV_CHUNK)])
        return self._vectors[node]

    def surface_at(self, node: tuple[int, ...]) -> LikelihoodSurface:
        if node not in self._at:
            where = "covariance at " + ", ".join(f"{v:.4g}" for v in self.node_point(node))
            self._at[node] = self._surface(self.vectors_at(node), where)
        return self._at[node]

    def solve(self, x: np.ndarray, n_obs: int) -> tuple[LikelihoodSurface, np.ndarray, np.ndarray]:
        """(surface, log posterior on its fine grid, the covariance's point) for survey vector x."""
        surface, point = self.fiducial, self.table.fiducial
        lp = surface.log_posterior(x, n_obs)
        if self.ic.covariance == "best-fit":
            best = np.unravel_index(int(np.argmax(lp)), lp.shape)
            node = self.nearest_node([a[i] for a, i in zip(surface.axes, best)])
            surface, point = self.surface_at(node), self.node_point(node)
            lp = surface.log_posterior(x, n_obs)
        return surface, lp, point


@dataclass
class InferenceResult:
    posteriors: dict[str, Posterior]
    observed: Observed
    likelihood: dict[str, LikelihoodInfo]
    out: Path


def resolve_device(device: str) -> str:
    """auto: this rank's GPU when there is one (one per local rank), else the CPU."""
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is visible")
    from pipeline.parallel.launch import discover

    return f"cuda:{discover().local_rank % torch.cuda.device_count()}"


def grid_axes(support: ParamSupport, ranges: str, n: int) -> GridAxes:
    """The grid over the support, or over ``ranges`` ("Omega_m=0.25:0.35,..."; unnamed
    parameters keep their support), refused outside the support."""
    low, high = list(support.low), list(support.high)
    for item in [t.strip() for t in ranges.split(",") if t.strip()]:
        name, _, span = item.partition("=")
        name = name.strip()
        if name not in support.names:
            raise DataError(f"infer.ranges: unknown parameter {name!r}; this run takes {', '.join(support.names)}")
        try:
            lo, hi = (float(v) for v in span.split(":"))
        except ValueError:
            raise DataError(f"infer.ranges: {item!r} is not NAME=LOW:HIGH") from None
        j = support.names.index(name)
        if not lo < hi:
            raise DataError(f"infer.ranges: {name} range {lo:g}:{hi:g} is empty")
        if lo < support.low[j] or hi > support.high[j]:
            raise DataError(f"infer.ranges: {name} = {lo:g}:{hi:g} reaches outside the training support "
                            f"[{support.low[j]:g}, {support.high[j]:g}], where the emulator is not trained")
        low[j], high[j] = lo, hi
    return GridAxes.spanning(support.names, low, high, n)


def fiducial_point(support: ParamSupport, text: str) -> np.ndarray:
    if text == "centre":
        return (np.array(support.low) + np.array(support.high)) / 2
    p = support.parse(text, "infer.fiducial")
    support.check(p[None], False, "infer.fiducial")
    return p


@dataclass
class Setup:
    """What an inference or a calibration is run with: the emulator, the resolved config, the
    simulation grid, the fiducial point, the simulators by name and the training maps that
    correct the emulator's mean (None: uncorrected)."""

    emulator: Emulator
    cfg: Config
    axes: GridAxes
    fiducial: np.ndarray
    sims: dict
    training: TrainingMaps | None = None

    @property
    def support(self) -> ParamSupport:
        return self.emulator.support


def prepare(run_dir, checkpoint: str | None, config_path, overrides, simulators: tuple[str, ...],
            device: str, training_maps_dir=None) -> Setup:
    """Load and check everything an inference needs before any work (on every rank alike).
    checkpoint None: best.pt when training kept one, else the last. training_maps_dir: a
    dataset of the run's training maps, to correct the emulator's mean (correction.py)."""
    if checkpoint is None:
        checkpoint = "best" if (Path(run_dir) / "checkpoints" / "best.pt").is_file() else "last"
    emulator = Emulator.load(run_dir, checkpoint, device=resolve_device(device))
    cfg = with_sections(emulator.config, STAGE_SECTIONS, config_path, overrides, what="infer")
    emu_sim = EmulatorSimulator(emulator, cfg.infer.batch_size)
    axes = grid_axes(emulator.support, cfg.infer.ranges, cfg.infer.grid)
    fiducial = fiducial_point(emulator.support, cfg.infer.fiducial)
    sims = {"emulator": emu_sim} if "emulator" in simulators else {}
    if "physics" in simulators:
        sims["physics"] = physics_simulator(cfg, emulator)
    d = SummarySpec.from_config(cfg, emulator.map_size, emulator.side_angle_deg, 1.0).size
    if cfg.infer.n_cov < d + 3:
        raise DataError(f"infer.n_cov: {cfg.infer.n_cov} fiducial maps for a data vector of {d} components; the "
                        f"covariance needs more than d + 2 (set infer.n_cov >= {d + 3}, or use fewer statistics or "
                        "bins)")
    training = None
    if training_maps_dir is not None:
        if "emulator" not in sims:
            raise DataError("--training-maps corrects the emulator's mean; this inference runs the physical model "
                            "alone")
        training = training_maps(training_maps_dir, emulator.support, emulator.map_size, emulator.side_angle_deg)
    return Setup(emulator, cfg, axes, fiducial, sims, training)


def simulation_tables(setup: Setup, out: Path, progress: bool) -> dict[str, SimulationTable]:
    """Every simulator's table in OUT (computed, resumed or reused), the emulator's mean
    corrected by the training maps when the setup has them; the caller holds OUT's lock."""
    emu_sim = setup.sims.get("emulator") or EmulatorSimulator(setup.emulator, setup.cfg.infer.batch_size)
    spec = summary_spec(setup.cfg, setup.emulator, emu_sim, setup.fiducial)
    ic = setup.cfg.infer
    tables = {name: simulation_table(sim, spec, setup.axes, setup.fiducial, ic.n_sim, ic.n_cov, ic.seed,
                                     out / f"simulations-{name}.h5",
                                     table_recipe(setup.cfg, setup.emulator, name, spec, setup.axes, setup.fiducial),
                                     progress)
              for name, sim in setup.sims.items()}
    if setup.training is not None:
        correction = mean_correction(emu_sim, tables["emulator"], setup.training, out, progress)
        tables["emulator"] = correction.applied_to(tables["emulator"], setup.support)
    return tables


def infer(run_dir, observed_path, out_dir, checkpoint: str | None = None, config_path=None, overrides=(),
          simulators: tuple[str, ...] = ("emulator",), select: str | None = None, n_obs: int | None = None,
          hdu=None, side_angle_deg: float | None = None, device: str = "auto", training_maps_dir=None,
          progress: bool = True) -> InferenceResult | None:
    """Write the posterior to out_dir; rank 0 returns it (the others None)."""
    out = Path(out_dir)
    setup = prepare(run_dir, checkpoint, config_path, overrides, simulators, device, training_maps_dir)
    support = setup.support
    chosen = None if select is None else support.parse(select, "--select")
    observed = load_observed(observed_path, support.names, chosen, n_obs, hdu, side_angle_deg)
    check_geometry(observed, setup.emulator.map_size, setup.emulator.side_angle_deg)

    def work(tables):
        result = posterior_of(observed, tables, setup.sims, setup.cfg, out)
        write_outputs(result, setup.emulator, setup.cfg)
        return result

    return with_simulations(setup, out, "infer", progress, work)


def with_simulations(setup: Setup, out: Path, what: str, progress: bool, work):
    """Hold OUT's lock, make every simulator's table (all ranks), then ``work(tables)`` on
    rank 0 (an error there ends every rank). Returns its result on rank 0, None elsewhere;
    the others wait for it before the lock is released."""
    from pipeline.validate.validate import check_writable

    comm = world()
    check_writable(out)
    with output_lock(out, what, comm.rank == 0, from_rank0):
        tables = simulation_tables(setup, out, progress)
        result = None
        if comm.rank == 0:
            with rank_local_work(f"{out}: {what}"):
                result = work(tables)
        comm.barrier()
    return result


def physics_simulator(cfg: Config, emulator: Emulator) -> PhysicsSimulator:
    sim = PhysicsSimulator(cfg, emulator.param_names)
    if (sim.map_size, sim.side_angle_deg) != (emulator.map_size, emulator.side_angle_deg):
        raise DataError(f"--simulator physics: the run's physics section makes {sim.map_size}-pixel maps of "
                        f"{sim.side_angle_deg:g} deg; the emulator's are {emulator.map_size} pixels, "
                        f"{emulator.side_angle_deg:g} deg")
    return sim


def summary_spec(cfg: Config, emulator: Emulator, emu_sim: EmulatorSimulator, fiducial: np.ndarray) -> SummarySpec:
    """The data vector's bins; thresholds scaled by the pixel sigma of the emulator's first
    COV_CHUNK fiducial maps (rank 0's, shared: every simulator uses the same bins)."""
    sigma = None
    if world().rank == 0:
        with rank_local_work("infer: the fiducial maps' sigma"):
            maps = emu_sim.maps(fiducial, min(COV_CHUNK, cfg.infer.n_cov), cfg.infer.seed, cfg.infer.n_sim)
            sigma = float(maps.astype(np.float64).std())
    sigma = from_rank0(sigma)
    return SummarySpec.from_config(cfg, emulator.map_size, emulator.side_angle_deg, sigma)


def table_recipe(cfg: Config, emulator: Emulator, simulator: str, spec: SummarySpec, axes: GridAxes,
                 fiducial: np.ndarray) -> str:
    import hashlib

    source = (file_sha256(emulator.source) if simulator == "emulator"
              else emulator.config.digest("physics", "cosmology"))
    recipe = {"simulator": simulator, "source": source, "spec": spec.digest(), "axes": [list(v) for v in axes.values],
              "names": list(axes.names), "fiducial": [float(v) for v in fiducial], "n_sim": cfg.infer.n_sim,
              "n_cov": cfg.infer.n_cov, "seed": cfg.infer.seed, "batch_size": cfg.infer.batch_size}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def mean_noise(n_sim: int, n_obs: int) -> float:
    """The typical shift of a posterior, in posterior standard deviations, caused by the
    noise of the simulated mean. With common random numbers that noise is the same at every
    grid point, so it moves the posterior as a whole, alike for every survey, rather than
    roughening it: n_sim >> n_obs keeps it small (n_sim = 25 n_obs: 0.2 sigma)."""
    return float(np.sqrt((1 / n_sim) / (1 / n_obs + 1 / n_sim)))


def posterior_of(observed: Observed, tables: dict[str, SimulationTable], sims: dict, cfg: Config,
                 out: Path) -> InferenceResult:
    ic = cfg.infer
    posteriors, info = {}, {}
    x = next(iter(tables.values())).spec.measure(observed.maps).mean(axis=0)  # every table has the same bins
    for name, table in tables.items():
        surface, lp, cov_point = Solver(sims[name], table, cfg, f"{out}: {name}").solve(x, observed.n_obs)
        like = surface.likelihood
        summary = grid_summary(surface.axes, lp, table.axes.names, name, observed.n_obs, observed.truth)
        samples = None
        if ic.sampler == "emcee":
            samples, log_prob = sample_emcee(surface, x, observed.n_obs, summary, ic.walkers, ic.steps, ic.burn,
                                             ic.seed)
            summary = samples_summary(samples, log_prob, table.axes.names, name, observed.n_obs, surface.axes,
                                      observed.truth)
        posteriors[name] = Posterior(summary, surface.axes, lp, samples)
        info[name] = LikelihoodInfo(ic.likelihood, ic.covariance, cov_point.tolist(), table.n_cov, table.n_sim,
                                    like.size, [lab for lab, k in zip(table.spec.labels(), like.keep) if not k],
                                    list(table.axes.shape), ic.refine, mean_noise(table.n_sim, observed.n_obs),
                                    table.correction and table.correction.summary(observed.n_obs, table.n_sim))
    return InferenceResult(posteriors, observed, info, out)


def write_outputs(result: InferenceResult, emulator: Emulator, cfg: Config) -> None:
    from pipeline.infer.report import write_report

    out = result.out
    nbytes = sum(p.log_post.nbytes + (0 if p.samples is None else p.samples.nbytes) for p in result.posteriors.values())
    with atomic_path(out / "posterior.h5") as tmp, hdf5_write(tmp, nbytes) as f:
        for name, p in result.posteriors.items():
            g = f.create_group(name)
            for i, a in enumerate(p.axes):
                g[f"axis_{i}"] = a
            g["log_posterior"] = p.log_post
            if p.samples is not None:
                g["samples"] = p.samples
            g.attrs["param_names"] = json.dumps(list(p.summary.names))
    atomic_write_bytes(out / "summary.json", json.dumps(summary_json(result, emulator, cfg), indent=1).encode())
    write_report(result, emulator)


def summary_json(result: InferenceResult, emulator: Emulator, cfg: Config) -> dict:
    d = {"observed": {"source": result.observed.source, "n_obs": result.observed.n_obs,
                      "truth": None if result.observed.truth is None else result.observed.truth.tolist()},
         "run": {"source": str(emulator.source), "step": emulator.step, "weights": emulator.weights},
         "statistics": list(cfg.infer.statistics),
         "likelihood": {k: dataclasses.asdict(v) for k, v in result.likelihood.items()},
         "posteriors": {k: p.summary.to_json() for k, p in result.posteriors.items()}}
    if set(result.posteriors) == set(SIMULATORS):
        e, p = result.posteriors["emulator"].summary, result.posteriors["physics"].summary
        d["emulator_over_physics"] = {"width_ratio": (e.std / p.std).tolist(),
                                      "mean_shift_in_sigma": ((e.mean - p.mean) / p.std).tolist()}
    return d


"""The train stage: the DCGAN fit loop with checkpoints, resume, signals and metrics.

A run directory holds config.yaml (the resolved config of the latest start),
checkpoints/, metrics.jsonl, samples/ (PNG grids from fixed noise) and
tensorboard/. When it holds a checkpoint, training resumes from the newest one: every
part of the trainer's state (pipeline/train/state.py: models, weight average,
optimizers, scaler, loader position, progress, RNG) is restored, so that on CPU a run
killed and resumed ends with exactly the checkpoint of one never interrupted. SIGTERM
and SIGUSR1 make the loop checkpoint after the current step and exit with status
EXIT_PREEMPTED.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.config import Config
from pipeline.data.format import atomic_write_bytes, remove_temporaries
from pipeline.emulator import Emulator
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.locking import output_lock
from pipeline.models.args import ModelArgs
from pipeline.models.conditioning import ParamSupport, distinct_rows
from pipeline.parallel.backend import Backend, make_backend
from pipeline.parallel.comm import rank_local_work
from pipeline.train import setup
from pipeline.train.checkpoint import Checkpoint, Checkpointer, checkpoint_dir, read_checkpoint
from pipeline.train.fidelity import FidelityCheck
from pipeline.train.loggers import make_logger, sample_grid
from pipeline.train.setup import seed_from
from pipeline.train.state import Progress, RNGState, TrainState
from pipeline.train.step import Batch, GANParts, StepNoise, gan_step

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed on a signal; run the same command again to resume
# Config sections a resumed run must share with its checkpoint (the rest may change, e.g. train.steps).
FROZEN_SECTIONS = ("model", "transform", "loader")


class TrainingDiverged(PipelineError):
    pass


def lr_schedule(step: int, steps: int, kind: str, final_fraction: float) -> float:
    """The learning-rate multiplier for the update after ``step`` updates (train.lr_decay)."""
    if kind == "none":
        return 1.0
    progress = min(step / steps, 1.0)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class _StopFlag:
    """Set by SIGTERM / SIGUSR1 (Slurm's pre-emption warning); checked after every step."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._old[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: Config, data_dir: Path, run_dir: Path, backend: Backend, progress: bool,
                 allow_data_change: bool = False):
        """allow_data_change: resume a checkpoint made on another training dataset (refused
        otherwise); the loader then starts the new dataset at its first epoch."""
        self.cfg, self.run_dir, self.backend, self.show_progress = cfg, Path(run_dir), backend, progress
        self.allow_data_change = allow_data_change
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise DataError(f"{self.run_dir}: exists and is not a directory (--run names the run directory)")
        tc = cfg.train
        self.data = setup.open_training_data(cfg, Path(data_dir), backend)
        self.args = ModelArgs.from_config(cfg.model, self.data.map_size)
        self.checkpointer = Checkpointer(self.run_dir, tc.checkpoint_every, tc.keep_checkpoints, tc.steps)
        resume = self._newest_checkpoint()
        # a conditional run's support spans the training split's parameters (an unconditional
        # run's is empty: (B, 0) values); the pixel transform is fitted across every cosmology,
        # or per cosmology over that support (transform.per_cosmology)
        self.support = resume.support if resume else setup.fit_support(self.args, self.data.loader.data)
        self.transform = resume.transform if resume else setup.fit_transform(cfg, self.data.loader.data,
                                                                             self.support)

        self.memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
        self.gen, self.disc = setup.build_networks(self.args, tc, backend, self.memory_format)
        self.global_batch = cfg.loader.batch_size * backend.world_size
        self.lr_factor = setup.learning_rate_factor(tc, self.global_batch)
        opt_g, opt_d = setup.build_optimizers(self.gen, self.disc, tc, self.lr_factor, backend)
        self.precision = setup.resolve_precision(tc.precision, backend.device)
        scaler = torch.amp.GradScaler(backend.device.type, enabled=self.precision == "fp16")
        self.ema = setup.build_ema(self.gen, tc, cfg.loader.batch_size, self.args.z_dim, self.args.n_params)
        self.progress = Progress()

        self.state = TrainState()  # restored in this order
        for name, part in (("generator", self.gen), ("discriminator", self.disc), ("opt_g", opt_g),
                           ("opt_d", opt_d), ("scaler", scaler), ("loader", self.data.loader),
                           ("progress", self.progress), ("rng", RNGState())):
            self.state.register(name, part)
        if self.ema is not None:
            self.state.register("generator_ema", self.ema, optional=True)
        self.aux = setup.build_auxiliary_loss(cfg, self.data.loader.data, self.transform, self.args.image_size,
                                              backend, self.support)
        if self.aux is not None and self.aux.loss is not None and self.aux.loss.focus > 0:  # on at a resume: uniform
            self.state.register("spectral_focus", self.aux.loss, optional=True)
        self.resumed_from = None
        if resume:
            skip = ("loader",) if self.data_changed else ()
            missing = self.state.load_state_dict(resume.parts, resume.path, skip=skip)
            if "generator_ema" in missing:  # switched on at this resume: it starts from the restored G
                self.ema.restart_from(self.gen)
            self.resumed_from = resume.path
            del resume  # its tensors are in the parts now

        self.autocast = setup.autocast_for(self.precision, backend.device)
        train_gen, train_disc = backend.wrap_model(self.gen, "generator"), backend.wrap_model(self.disc, "discriminator")
        frozen_disc = self.disc  # the generator step's D: no gradients, so no wrapper
        if tc.compile:
            train_gen, train_disc, frozen_disc = (torch.compile(m) for m in (train_gen, train_disc, frozen_disc))
        backend.broadcast_state([self.gen, self.disc], [opt_g, opt_d])
        self.parts = GANParts(train_gen, train_disc, opt_g, opt_d, scaler, self.autocast, self.memory_format,
                              frozen_disc, self.aux)
        self.fixed_z = torch.randn(16, self.args.z_dim, generator=torch.Generator().manual_seed(
            seed_from(tc.seed, setup.SAMPLE_NOISE)))
        self.fixed_params = sample_grid_params(self.support, 16)

    # -- start-up -------------------------------------------------------------------------

    def _newest_checkpoint(self) -> Checkpoint | None:
        self.data_changed = False
        path = self.checkpointer.newest()
        if path is None:
            return None
        ckpt = read_checkpoint(path)
        digest = self.data.loader.data.manifest.digest()
        if ckpt.train_manifest_digest != digest:
            if not self.allow_data_change:
                raise DataError(f"{path}: trained on another dataset than {self.data.loader.data.root} "
                                f"(manifest digest {ckpt.train_manifest_digest[:12]}, now {digest[:12]}); "
                                "--allow-data-change continues on this one")
            self.data_changed = True
        if ckpt.model_args != self.args:
            raise DataError(f"{path}: made for the model {ckpt.model_args.to_dict()}, but the config and "
                            f"data give {self.args.to_dict()}; use another --run or the checkpoint's config")
        saved, mine = ckpt.config.to_dict(), self.cfg.to_dict()
        for section in FROZEN_SECTIONS:
            if saved[section] != mine[section]:
                diff = sorted(k for k in mine[section] if saved[section].get(k) != mine[section][k])
                raise ConfigError(f"{path}: made with other {section} settings "
                                  f"({', '.join(f'{section}.{k}' for k in diff)}); a run resumes only with the "
                                  "settings it started with")
        return ckpt

    def _fidelity_check(self) -> FidelityCheck:
        tc = self.cfg.train
        validation = self.data.validation
        n = min(tc.fidelity_maps, len(validation))
        reference, params = validation.read(setup.sample_indices(len(validation), n,
                                                                 seed_from(tc.seed, setup.FIT_SAMPLE, 2)))
        z = torch.randn(n, self.args.z_dim, generator=torch.Generator().manual_seed(
            seed_from(tc.seed, setup.FIDELITY_NOISE)))
        points = which = None
        if self.support.conditional:
            points, which = distinct_rows(self.support.select(validation.manifest.param_names, params,
                                                              str(validation.root)))
            fewest = int(np.bincount(which).min())
            if fewest < 2:
                raise DataError(f"{validation.root}: train.fidelity_maps={n} maps hold only {fewest} of some "
                                f"cosmology (of {len(points)}); the fidelity check needs several of each")
        return FidelityCheck(reference, self.data.side_angle_deg, self.cfg.stats, tc.fidelity_every, z,
                             points, which, bias_weight=tc.fidelity_bias_weight)

    def checkpoint(self) -> Checkpoint:
        """Everything a resume or a reader needs, as of now."""
        manifest = self.data.loader.data.manifest
        return Checkpoint(step=self.progress.step, config=self.cfg, model_args=self.args, transform=self.transform,
                          support=self.support, side_angle_deg=self.data.side_angle_deg,
                          train_manifest_digest=manifest.digest(), parts=self.state.state_dict())

    def emulator(self) -> Emulator:
        """The generator as it stands (the weight average when there is one), as an Emulator
        in fp32, as ``generate`` runs it: the fidelity check scores the maps a user gets. Under
        training's bf16 the quickstart's check read a 3x worse PDF (bf16's 8-bit mantissa
        combs the pixel values) and picked best.pt by that noise (docs/training-notes.md)."""
        gen = self.ema.generator() if self.ema is not None else self.gen
        return Emulator(gen, self.transform, self.args, self.support, self.data.side_angle_deg, self.cfg,
                        self.backend.device, step=self.progress.step,
                        weights="generator_ema" if self.ema is not None else "generator")

    # -- the loop --------------------------------------------------------------------------

    def fit(self) -> int:
        tc, backend, loader = self.cfg.train, self.backend, self.data.loader
        if backend.is_main:
            with rank_local_work(f"{self.run_dir}: cannot write"):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                for d in (self.run_dir, checkpoint_dir(self.run_dir), self.run_dir / "samples"):
                    remove_temporaries(d)  # half-written files of a killed run
                atomic_write_bytes(self.run_dir / "config.yaml",
                                   yaml.safe_dump(self.cfg.to_dict(), sort_keys=False).encode())
        logger = make_logger(self.run_dir, backend.is_main, self.progress.step)
        fidelity = self._fidelity_check() if backend.is_main else None
        self._announce()
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=self.progress.step, unit="step", desc="train",
                   disable=not self.show_progress or not backend.is_main)
        last_saved = self.progress.step if self.resumed_from else None
        window_start, window_steps = time.perf_counter(), 0
        stopping = False
        with _StopFlag() as stop:
            while self.progress.step < tc.steps:
                for batch in loader:
                    metrics = self._step(batch)
                    self.progress.step += 1
                    step = self.progress.step
                    window_steps += 1
                    bar.update(1)
                    if step % tc.log_every == 0 or step == tc.steps:
                        elapsed = time.perf_counter() - window_start
                        metrics["images_per_s"] = window_steps * self.global_batch / elapsed
                        metrics["epoch"] = loader.epoch
                        logger.scalars(step, metrics)
                        bar.set_postfix(loss_d=f"{metrics['loss_d']:.3f}", loss_g=f"{metrics['loss_g']:.3f}")
                        window_start, window_steps = time.perf_counter(), 0
                    if step % tc.sample_every == 0 and backend.is_main:
                        self._samples(logger)
                    best = self._check_fidelity(fidelity, logger)
                    # every rank must agree on saving (a collective) and on stopping
                    agreed = backend.mean({"best": float(best), "stop": float(stop.signal is not None)})
                    best, stopping = agreed["best"] > 0, agreed["stop"] > 0
                    if self.checkpointer.due(step, stopping, best):
                        self._save(best)
                        last_saved = step
                    if stopping or step >= tc.steps:
                        break
                if stopping:
                    bar.close()
                    logger.close()
                    if backend.is_main:
                        print(f"train: {stop.signal or 'a signal on another rank'} at step {self.progress.step}: "
                              f"checkpointed; exit {EXIT_PREEMPTED} (run the same command to resume)", flush=True)
                    return EXIT_PREEMPTED
        if last_saved != self.progress.step:
            self._save(False)
        bar.close()
        logger.close()
        return 0

    def _announce(self) -> None:
        """Rank 0 says how the run is laid out; the rank map names a dead rank by pid or host."""
        tc, backend = self.cfg.train, self.backend
        places = backend.allgather_object(f"{os.getpid()}@{socket.gethostname()}")
        if backend.is_main:
            start = f"resuming from {self.resumed_from}" if self.resumed_from else "starting"
            print(f"train: {start}; per-rank batch {self.cfg.loader.batch_size}, global batch {self.global_batch} "
                  f"on {backend.world_size} rank(s) ({backend.name}, {backend.device}, {self.precision}); learning rates x"
                  f"{self.lr_factor:.3g} ({tc.lr_scaling} scaling from global batch {tc.lr_reference_batch}); "
                  f"{self.data.loader.steps_per_epoch} steps per epoch", flush=True)
            if self.precision == "bf16" and not setup.native_bf16(backend.device):
                print(f"train: warning: {backend.device} has no native bf16 (AVX512-BF16 or AMX): autocast emulates "
                      "it, many times slower than fp32; train.precision=auto picks fp32 here", flush=True)
            if backend.world_size > 1:
                print("train: ranks (pid@host): " + ", ".join(f"{r}={p}" for r, p in enumerate(places)), flush=True)

    def _step(self, batch: dict) -> dict:
        """One GAN step on a loader batch; the ranks' mean metrics. Stops on non-finite losses."""
        tc, backend = self.cfg.train, self.backend
        self._set_learning_rates()
        params = self.support.normalise(self.support.select(self.data.loader.data.manifest.param_names,
                                                            batch["params"], "training data"))
        real = self.transform.forward(batch["maps"], params).to(backend.device, non_blocking=True)
        real = real.contiguous(memory_format=self.memory_format)
        noise = StepNoise.draw(seed_from(tc.seed, setup.STEP_NOISE, backend.rank, self.progress.step),
                               len(real), self.args.z_dim, tc.label_flip, real_params=params,
                               fresh_params=tc.fresh_params)
        metrics = gan_step(self.parts, Batch(real, params.to(backend.device)), noise)
        if self.ema is not None:
            self.ema.update(self.gen)
        metrics = backend.mean(metrics)
        if not all(np.isfinite([metrics["loss_d"], metrics["loss_g"]])):
            good = self.checkpointer.newest()
            raise TrainingDiverged(
                f"step {self.progress.step + 1}: losses are not finite (D {metrics['loss_d']}, G "
                f"{metrics['loss_g']}); stopped. Last good checkpoint: {good or 'none'}")
        return metrics

    def _check_fidelity(self, fidelity: FidelityCheck | None, logger) -> bool:
        """Run the fidelity check when due; True when this step's score is the best so far
        (rank 0 decides; the others hold no check)."""
        if fidelity is None or not fidelity.due(self.progress.step):
            return False
        scores = fidelity(self.emulator(), self.cfg.loader.batch_size)
        logger.scalars(self.progress.step, scores)
        p = self.progress
        if p.best_score is None or scores["fid_score"] < p.best_score:
            p.best_score, p.best_step = scores["fid_score"], p.step
            return True
        return False

    def _set_learning_rates(self) -> None:
        tc = self.cfg.train
        factor = self.lr_factor * lr_schedule(self.progress.step, tc.steps, tc.lr_decay, tc.lr_final_fraction)
        for opt, lr in ((self.parts.opt_g, tc.lr_g), (self.parts.opt_d, tc.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def _save(self, best: bool) -> None:
        if self.backend.is_main:
            ckpt = self.checkpoint()
            with rank_local_work(f"{checkpoint_dir(self.run_dir)}: cannot write a checkpoint"):
                self.checkpointer.save(ckpt, best)
        self.backend.barrier()

    def _samples(self, logger) -> None:
        maps = self.emulator().maps_from_latent(self.fixed_z, self.fixed_params, batch_size=self.cfg.loader.batch_size)
        logger.image(self.progress.step, "samples", sample_grid(maps),
                     self.run_dir / "samples" / f"step-{self.progress.step:08d}.png")


def sample_grid_params(support: ParamSupport, n: int) -> np.ndarray | None:
    """Where the fixed sample grid's n maps are drawn: for a conditional run a sqrt(n) x
    sqrt(n) grid over the first two parameters' support (the others at their centre), so
    the PNG shows the maps change across the support; None for an unconditional run."""
    if not support.conditional:
        return None
    side = int(round(math.sqrt(n)))
    lo, hi = np.array(support.low), np.array(support.high)
    rows = np.tile((lo + hi) / 2, (n, 1))
    for j in range(min(2, len(lo))):
        steps = np.linspace(lo[j], hi[j], side)
        rows[:, j] = steps[(np.arange(n) // side) % side] if j == 0 else steps[np.arange(n) % side]
    return rows


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, progress: bool = True,
          allow_data_change: bool = False) -> int:
    """Build a trainer (all checks before anything is written) and run it, holding the run
    directory's lock (a second trainer on it is refused); returns the exit status."""
    backend = make_backend(cfg.train.backend, cfg.train.device, cfg.train.collective_timeout_s)
    trainer = Trainer(cfg, Path(data_dir), Path(run_dir), backend, progress, allow_data_change)
    # (every rank sends a string: Horovod matches collectives by the object's type)
    with output_lock(run_dir, "train", backend.is_main, lambda problem: backend.allgather_object(problem or "")[0]):
        status = trainer.fit()
    backend.close()  # not on errors: the launcher ends the other ranks
    return status

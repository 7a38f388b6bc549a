"""The train stage: the DCGAN fit loop with checkpoints, resume, signals and metrics.

A run directory holds config.yaml (the resolved config of the latest start),
checkpoints/, metrics.jsonl, samples/ (PNG grids from fixed noise) and
tensorboard/. When it holds a checkpoint, training resumes from the newest
one: models, optimizers, scaler, loader position, RNG and fidelity record,
so that on CPU a run killed and resumed ends with exactly the weights of one
never interrupted. SIGTERM and SIGUSR1 make the loop checkpoint after the
current step and exit with status EXIT_PREEMPTED.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.config import Config, config_from_dict
from pipeline.data.loader import MapDataset, ShardedLoader
from pipeline.data.transforms import PixelTransform
from pipeline.dist.backend import Backend, make_backend
from pipeline.dist.comm import rank_local_work
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.models import build_models, model_args
from pipeline.train.aux_losses import SpectralLoss
from pipeline.train.checkpoint import (checkpoint_dir, load_checkpoint, rng_state, save_checkpoint,
                                       set_rng_state, step_checkpoints, write_checkpoint)
from pipeline.train.ema import GeneratorEMA
from pipeline.train.fidelity import FidelityCheck
from pipeline.train.loggers import make_logger, sample_grid
from pipeline.train.step import StepNoise, gan_step

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


def seed_from(*words: int) -> int:
    """A torch seed from non-negative words. Streams: (seed, 0, rank, step) for a step's noise,
    the same whenever the step is (re)run; (seed, 1) the fixed sample noise; (seed, 2) the
    fidelity check's noise; (seed, 3) the noise that calibrates the weight average's BatchNorm."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


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
    def __init__(self, cfg: Config, data_dir: Path, run_dir: Path, backend: Backend, progress: bool):
        self.cfg, self.run_dir, self.backend, self.progress = cfg, Path(run_dir), backend, progress
        data_dir = Path(data_dir)
        tc = cfg.train
        self.loader = ShardedLoader(data_dir / "train", cfg.loader.batch_size, backend.rank, backend.world_size,
                                    seed=cfg.loader.seed, shuffle=cfg.loader.shuffle, augment=cfg.loader.augment,
                                    num_workers=cfg.loader.num_workers)
        manifest = self.loader.data.manifest
        h, w = manifest.map_shape
        if h != w or h % 16:
            raise DataError(f"{data_dir / 'train'}: maps are {h}x{w}; the DCGAN needs square maps "
                            "whose side is a multiple of 16")
        if cfg.model.image_size and cfg.model.image_size != h:
            raise ConfigError(f"model.image_size is {cfg.model.image_size} but the maps in "
                              f"{data_dir / 'train'} are {h}x{w}")
        self.side_angle_deg = manifest.side_angle_deg
        self.args = model_args(cfg.model, h)
        self.validation = MapDataset(data_dir / "validation")
        if self.validation.manifest.map_shape != (h, w):
            raise DataError(f"{data_dir / 'validation'}: maps are {self.validation.manifest.map_shape}, "
                            f"the training maps {h}x{w}")

        self.checkpoint = self._newest_checkpoint()
        self.transform = (PixelTransform.from_state_dict(self.checkpoint["transform"]) if self.checkpoint
                          else PixelTransform.fit(self._fit_sample(), cfg.transform))
        torch.manual_seed(tc.seed)
        self.gen, self.disc = (m.to(backend.device) for m in build_models(self.args))
        self.memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
        self.gen.to(memory_format=self.memory_format)
        self.disc.to(memory_format=self.memory_format)
        betas = (tc.beta1, tc.beta2)
        self.global_batch = cfg.loader.batch_size * backend.world_size
        self.lr_factor = {"none": 1.0, "linear": self.global_batch / tc.lr_reference_batch,
                          "sqrt": (self.global_batch / tc.lr_reference_batch) ** 0.5}[tc.lr_scaling]
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=tc.lr_g * self.lr_factor, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=tc.lr_d * self.lr_factor, betas=betas)
        # wrapped before the restore: Horovod's wrapper is a new optimizer that keeps only
        # the param_groups of the one it wraps, not its state
        self.opt_g = backend.wrap_optimizer(self.opt_g, self.gen, "generator")
        self.opt_d = backend.wrap_optimizer(self.opt_d, self.disc, "discriminator")
        self.scaler = torch.amp.GradScaler(backend.device.type, enabled=tc.precision == "fp16")
        self.step = 0
        self.fidelity_record = {"best_score": None, "best_step": None}
        if self.checkpoint:
            self._restore(self.checkpoint)
        self.ema = None
        if tc.ema_decay > 0:  # built from the restored weights: where the average starts if none was saved
            n = 8 * cfg.loader.batch_size
            z = torch.randn(n, self.args["z_dim"], generator=torch.Generator().manual_seed(seed_from(tc.seed, 3)))
            self.ema = GeneratorEMA(self.gen, tc.ema_decay, z, cfg.loader.batch_size)
            if self.checkpoint and "generator_ema" in self.checkpoint:
                self.ema.load_state_dict(self.checkpoint["generator_ema"])
        self.train_gen = backend.wrap_model(self.gen, "generator")
        self.train_disc = backend.wrap_model(self.disc, "discriminator")
        self.frozen_disc = self.disc  # the generator step's D: no gradients, so no wrapper
        if tc.compile:
            self.train_gen, self.train_disc, self.frozen_disc = (
                torch.compile(m) for m in (self.train_gen, self.train_disc, self.frozen_disc))
        backend.broadcast_state([self.gen, self.disc], [self.opt_g, self.opt_d])
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)
        self.autocast = (torch.autocast(backend.device.type, dtype=dtype) if dtype
                         else contextlib.nullcontext())
        self.aux_loss = None
        if tc.spectral_weight > 0:
            data, n = self.loader.data, min(len(self.loader.data), 1024)  # target error ~1/sqrt(n * modes)
            chunks = (data.read(np.arange(i, min(i + 128, n)))[0] for i in range(0, n, 128))
            spectral = SpectralLoss(self.args["image_size"], chunks, self.transform, backend.device)
            self.aux_loss = lambda fake: tc.spectral_weight * spectral(fake)
        self.fixed_z = torch.randn(16, self.args["z_dim"], generator=torch.Generator().manual_seed(
            seed_from(tc.seed, 1)))

    # -- start-up -------------------------------------------------------------------------

    def _newest_checkpoint(self) -> dict | None:
        found = step_checkpoints(self.run_dir)
        if not found:
            return None
        state = load_checkpoint(found[-1])
        if state["model_args"] != self.args:
            raise DataError(f"{found[-1]}: made for the model {state['model_args']}, but the config and "
                            f"data give {self.args}; use another --run or the checkpoint's config")
        saved = config_from_dict(state["config"]).to_dict()
        mine = self.cfg.to_dict()
        for section in FROZEN_SECTIONS:
            if saved[section] != mine[section]:
                diff = sorted(k for k in mine[section] if saved[section].get(k) != mine[section][k])
                raise ConfigError(f"{found[-1]}: made with other {section} settings "
                                  f"({', '.join(f'{section}.{k}' for k in diff)}); a run resumes only with the "
                                  "settings it started with")
        state["path"] = str(found[-1])
        return state

    def _fit_sample(self) -> np.ndarray:
        n = min(self.cfg.transform.fit_maps, len(self.loader.data))
        return self.loader.data.read(np.arange(n))[0]

    def _restore(self, state: dict) -> None:
        self.gen.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.fidelity_record = dict(state["fidelity"])

    def state(self) -> dict:
        return {"step": self.step, "config": self.cfg.to_dict(), "model_args": self.args,
                "transform": self.transform.state_dict(),
                "generator": self.gen.state_dict(), "discriminator": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler": self.scaler.state_dict(), "loader": self.loader.state_dict(),
                "rng": rng_state(), "fidelity": dict(self.fidelity_record),
                **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
                "data": {"train_manifest_digest": self.loader.data.manifest.digest(),
                         "side_angle_deg": self.side_angle_deg}}

    # -- the loop --------------------------------------------------------------------------

    def fit(self) -> int:
        tc, backend = self.cfg.train, self.backend
        if backend.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        logger = make_logger(self.run_dir, backend.is_main, self.step)
        fidelity = self._fidelity_check() if backend.is_main else None
        global_batch = self.global_batch
        # which process is which rank: launchers name a dead rank by its pid or host
        places = backend.allgather_object(f"{os.getpid()}@{socket.gethostname()}")
        if backend.is_main:
            start = "resuming from " + self.checkpoint["path"] if self.checkpoint else "starting"
            print(f"train: {start}; per-rank batch {self.cfg.loader.batch_size}, global batch {global_batch} "
                  f"on {backend.world_size} rank(s) ({backend.name}, {backend.device}); learning rates x"
                  f"{self.lr_factor:.3g} ({tc.lr_scaling} scaling from global batch {tc.lr_reference_batch}); "
                  f"{self.loader.steps_per_epoch} steps per epoch", flush=True)
            if backend.world_size > 1:
                print("train: ranks (pid@host): " + ", ".join(f"{r}={p}" for r, p in enumerate(places)), flush=True)
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=self.step, unit="step", desc="train",
                   disable=not self.progress or not backend.is_main)
        last_saved = self.step if self.checkpoint else None
        window_start, window_steps = time.perf_counter(), 0
        stopping = False
        with _StopFlag() as stop:
            while self.step < tc.steps:
                for batch in self.loader:
                    self._set_learning_rates()
                    real = self.transform.forward(batch["maps"]).to(backend.device, non_blocking=True)
                    real = real.contiguous(memory_format=self.memory_format)
                    noise = StepNoise.draw(seed_from(tc.seed, 0, backend.rank, self.step), len(real),
                                           self.args["z_dim"], tc.label_flip)
                    metrics = gan_step(self.train_gen, self.train_disc, self.opt_g, self.opt_d, self.scaler,
                                       real, noise, self.autocast, self.memory_format, self.frozen_disc,
                                       self.aux_loss)
                    if self.ema is not None:
                        self.ema.update(self.gen)
                    metrics = backend.mean(metrics)
                    if not all(np.isfinite([metrics["loss_d"], metrics["loss_g"]])):
                        bar.close()
                        good = step_checkpoints(self.run_dir)
                        raise TrainingDiverged(
                            f"step {self.step + 1}: losses are not finite (D {metrics['loss_d']}, G "
                            f"{metrics['loss_g']}); stopped. Last good checkpoint: "
                            f"{good[-1] if good else 'none'}")
                    self.step += 1
                    window_steps += 1
                    bar.update(1)
                    if self.step % tc.log_every == 0 or self.step == tc.steps:
                        elapsed = time.perf_counter() - window_start
                        metrics["images_per_s"] = window_steps * global_batch / elapsed
                        metrics["epoch"] = self.loader.epoch
                        logger.scalars(self.step, metrics)
                        bar.set_postfix(loss_d=f"{metrics['loss_d']:.3f}", loss_g=f"{metrics['loss_g']:.3f}")
                        window_start, window_steps = time.perf_counter(), 0
                    if self.step % tc.sample_every == 0 and backend.is_main:
                        self._samples(logger)
                    best = self.step % tc.fidelity_every == 0 and self._check_fidelity(fidelity, logger)
                    # every rank must agree on saving (a collective) and on stopping
                    agreed = backend.mean({"best": float(best), "stop": float(stop.signal is not None)})
                    best, stopping = agreed["best"] > 0, agreed["stop"] > 0
                    if self.step % tc.checkpoint_every == 0 or self.step == tc.steps or stopping or best:
                        self._save(best)
                        last_saved = self.step
                    if stopping or self.step >= tc.steps:
                        break
                if stopping:
                    bar.close()
                    logger.close()
                    if backend.is_main:
                        print(f"train: {stop.signal or 'a signal on another rank'} at step {self.step}: checkpointed; "
                              f"exit {EXIT_PREEMPTED} (run the same command to resume)", flush=True)
                    return EXIT_PREEMPTED
        if last_saved != self.step:
            self._save(False)
        bar.close()
        logger.close()
        return 0

    def _set_learning_rates(self) -> None:
        tc = self.cfg.train
        factor = self.lr_factor * lr_schedule(self.step, tc.steps, tc.lr_decay, tc.lr_final_fraction)
        for opt, lr in ((self.opt_g, tc.lr_g), (self.opt_d, tc.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def _save(self, best: bool) -> None:
        if self.backend.is_main:
            state = self.state()
            with rank_local_work(f"{checkpoint_dir(self.run_dir)}: cannot write a checkpoint"):
                save_checkpoint(self.run_dir, state, self.cfg.train.keep_checkpoints)
                if best:
                    write_checkpoint(checkpoint_dir(self.run_dir) / "best.pt", state)
        self.backend.barrier()

    def generate(self, z: torch.Tensor) -> np.ndarray:
        """kappa maps (n, H, W) float32 from noise z (n, z_dim): the weight average when there
        is one, else the live generator, in eval mode."""
        gen = self.ema.generator() if self.ema is not None else self.gen
        was_training = gen.training
        gen.eval()
        out = []
        with torch.no_grad(), self.autocast:
            for chunk in z.split(self.cfg.loader.batch_size):
                y = gen(chunk.to(self.backend.device)).float()
                out.append(self.transform.inverse(y)[:, 0].cpu().numpy())
        gen.train(was_training)
        return np.concatenate(out)

    def _samples(self, logger) -> None:
        grid = sample_grid(self.generate(self.fixed_z))
        logger.image(self.step, "samples", grid, self.run_dir / "samples" / f"step-{self.step:08d}.png")

    def _fidelity_check(self) -> FidelityCheck:
        n = min(self.cfg.train.fidelity_maps, len(self.validation))
        reference = self.validation.read(np.arange(n))[0]
        self.fidelity_z = torch.randn(n, self.args["z_dim"], generator=torch.Generator().manual_seed(
            seed_from(self.cfg.train.seed, 2)))
        return FidelityCheck(reference, self.side_angle_deg, self.cfg.stats)

    def _check_fidelity(self, fidelity: FidelityCheck | None, logger) -> bool:
        """Log the fidelity scalars; True when this step's score is the best so far (rank 0 decides)."""
        best = False
        if self.backend.is_main:
            scores = fidelity(self.generate(self.fidelity_z))
            logger.scalars(self.step, scores)
            record = self.fidelity_record
            if record["best_score"] is None or scores["fid_score"] < record["best_score"]:
                record.update(best_score=scores["fid_score"], best_step=self.step)
                best = True
        return best


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, progress: bool = True) -> int:
    """Build a trainer (all checks before anything is written) and run it; returns the exit status."""
    backend = make_backend(cfg.train.backend, cfg.train.device, cfg.train.collective_timeout_s)
    status = Trainer(cfg, Path(data_dir), Path(run_dir), backend, progress).fit()
    backend.close()  # not on errors: the launcher ends the other ranks
    return status


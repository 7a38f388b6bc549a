"""One GAN training step: a discriminator update, then a non-saturating generator update.

J_D = BCE(D(x, p), 1) + BCE(D(G(z, p'), p'), 0) on logits, each label flipped with
probability ``label_flip``; J_G = BCE(D(G(z, p'), p'), 1) (the heuristic, non-saturating
loss of Goodfellow et al.), p the real maps' conditioning values and p' those the
generated maps are drawn at (StepNoise). Real and generated batches go through D
separately, so BatchNorm statistics never mix them (as DCGAN does). An unconditional
model gets empty (B, 0) conditioning values and ignores them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Batch:
    """One rank's real batch as the models see it: maps (B, 1, H, W) in the pixel transform's
    range, and their conditioning values (B, P) normalised over the training support
    (P = 0 for an unconditional run)."""

    maps: torch.Tensor
    params: torch.Tensor


@dataclass
class StepNoise:
    """All randomness of one step, drawn on the CPU from a per-step seed: z (B, z_dim), the
    discriminator's labels for real (B,) and generated (B,) maps (flips applied) and the
    conditioning values (B, P) the generated maps are drawn at."""

    z: torch.Tensor
    real_labels: torch.Tensor
    fake_labels: torch.Tensor
    params: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))

    @classmethod
    def draw(cls, seed: int, batch: int, z_dim: int, label_flip: float,
             real_params: Optional[torch.Tensor] = None, fresh_params: bool = False) -> "StepNoise":
        """real_params: the real batch's normalised values (B, P); generated maps are drawn at
        them, or, with fresh_params, at uniform draws over the support ([-1, 1]^P), taken after
        z and the flips so that the other draws do not change."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(batch, z_dim, generator=g)
        flips = torch.rand(2, batch, generator=g) < label_flip
        real = torch.where(flips[0], 0.0, 1.0)
        fake = torch.where(flips[1], 1.0, 0.0)
        params = torch.zeros(batch, 0) if real_params is None else real_params.detach().cpu().float()
        if fresh_params and params.shape[1]:
            params = torch.rand(batch, params.shape[1], generator=g) * 2 - 1
        return cls(z, real, fake, params)


@dataclass
class GANParts:
    """What one step runs and updates. gen / disc: the models as trained (wrapped by the
    data-parallel backend); frozen_disc: the discriminator the generator step runs through
    (data-parallel training passes the unwrapped module: D's weights get no gradient there);
    aux_loss: optional ``f(fake, params) -> weighted scalar`` added to the generator's loss."""

    gen: nn.Module
    disc: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)
    memory_format: torch.memory_format = torch.contiguous_format
    frozen_disc: Optional[nn.Module] = None
    aux_loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    def __post_init__(self):
        if self.frozen_disc is None:
            self.frozen_disc = self.disc


def grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _apply(scaler, opt, module) -> float:
    """Unscale, measure and apply a module's gradients; returns their norm. Optimizers that
    allreduce asynchronously (Horovod's) expose synchronize(): gradients are whole only after it."""
    synchronize = getattr(opt, "synchronize", None)
    if synchronize is not None:
        synchronize()
    scaler.unscale_(opt)
    norm = grad_norm(module)
    with opt.skip_synchronize() if synchronize is not None else contextlib.nullcontext():
        scaler.step(opt)
    return norm


def gan_step(parts: GANParts, batch: Batch, noise: StepNoise) -> dict:
    """Update D then G on one batch. Returns scalar metrics."""
    real = batch.maps
    device = real.device
    z = noise.z.to(device)
    real_params, fake_params = batch.params.to(device), noise.params.to(device)
    real_labels, fake_labels = noise.real_labels.to(device), noise.fake_labels.to(device)
    ones = torch.ones_like(real_labels)

    with parts.autocast:
        fake = parts.gen(z, fake_params).contiguous(memory_format=parts.memory_format)
        logits_real = parts.disc(real, real_params)
        logits_fake = parts.disc(fake.detach(), fake_params)
        loss_d = (F.binary_cross_entropy_with_logits(logits_real.float(), real_labels)
                  + F.binary_cross_entropy_with_logits(logits_fake.float(), fake_labels))
    parts.opt_d.zero_grad()  # (sets to None; Horovod's wrapper takes no arguments)
    parts.scaler.scale(loss_d).backward()
    norm_d = _apply(parts.scaler, parts.opt_d, parts.disc)

    # D's weights need no gradient in the generator step: freezing them saves that work and
    # keeps D's gradients (and any allreduce hooks on them) out of G's backward pass.
    parts.frozen_disc.requires_grad_(False)
    with parts.autocast:
        logits_gen = parts.frozen_disc(fake, fake_params)
        loss_g = F.binary_cross_entropy_with_logits(logits_gen.float(), ones)
    aux = parts.aux_loss(fake, fake_params) if parts.aux_loss is not None else None
    if aux is not None:
        loss_g = loss_g + aux
    parts.opt_g.zero_grad()
    parts.scaler.scale(loss_g).backward()
    parts.frozen_disc.requires_grad_(True)
    norm_g = _apply(parts.scaler, parts.opt_g, parts.gen)
    parts.scaler.update()

    extra = {"loss_aux": aux.item()} if aux is not None else {}
    return {**extra, "loss_d": loss_d.item(), "loss_g": loss_g.item(),
            "d_real": float(torch.sigmoid(logits_real.detach().float()).mean()),
            "d_fake": float(torch.sigmoid(logits_fake.detach().float()).mean()),
            "grad_norm_d": norm_d, "grad_norm_g": norm_g}

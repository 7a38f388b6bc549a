"""One GAN training step: a discriminator update, then a non-saturating generator update.

J_D = BCE(D(x), 1) + BCE(D(G(z)), 0) on logits, each label flipped with
probability ``label_flip``; J_G = BCE(D(G(z)), 1) (the heuristic,
non-saturating loss of Goodfellow et al.). Real and generated batches go
through D separately, so BatchNorm statistics never mix them (as DCGAN does).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class StepNoise:
    """All randomness of one step, drawn on the CPU from a per-step seed: z (B, z_dim) and
    the discriminator's labels for real (B,) and generated (B,) maps (flips applied)."""

    z: torch.Tensor
    real_labels: torch.Tensor
    fake_labels: torch.Tensor

    @classmethod
    def draw(cls, seed: int, batch: int, z_dim: int, label_flip: float) -> "StepNoise":
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(batch, z_dim, generator=g)
        flips = torch.rand(2, batch, generator=g) < label_flip
        real = torch.where(flips[0], 0.0, 1.0)
        fake = torch.where(flips[1], 1.0, 0.0)
        return cls(z, real, fake)


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


def gan_step(gen, disc, opt_g, opt_d, scaler, real: torch.Tensor, noise: StepNoise,
             autocast: contextlib.AbstractContextManager, memory_format=torch.contiguous_format,
             frozen_disc=None, aux_loss=None) -> dict:
    """Update D then G on one batch of real (transformed) maps (B, 1, H, W). Returns scalar metrics.

    frozen_disc: the discriminator the generator step runs through, default ``disc``;
    data-parallel training passes the unwrapped module (D's weights get no gradient there).
    aux_loss: optional ``f(fake) -> scalar`` added to the generator's loss (weighted).
    """
    frozen_disc = disc if frozen_disc is None else frozen_disc
    device = real.device
    z = noise.z.to(device)
    real_labels, fake_labels = noise.real_labels.to(device), noise.fake_labels.to(device)
    ones = torch.ones_like(real_labels)

    with autocast:
        fake = gen(z).contiguous(memory_format=memory_format)
        logits_real = disc(real)
        logits_fake = disc(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(logits_real.float(), real_labels)
                  + F.binary_cross_entropy_with_logits(logits_fake.float(), fake_labels))
    opt_d.zero_grad()  # (sets to None; Horovod's wrapper takes no arguments)
    scaler.scale(loss_d).backward()
    norm_d = _apply(scaler, opt_d, disc)

    # D's weights need no gradient in the generator step: freezing them saves that work and
    # keeps D's gradients (and any allreduce hooks on them) out of G's backward pass.
    frozen_disc.requires_grad_(False)
    with autocast:
        logits_gen = frozen_disc(fake)
        loss_g = F.binary_cross_entropy_with_logits(logits_gen.float(), ones)
    aux = aux_loss(fake) if aux_loss is not None else None
    if aux is not None:
        loss_g = loss_g + aux
    opt_g.zero_grad()
    scaler.scale(loss_g).backward()
    frozen_disc.requires_grad_(True)
    norm_g = _apply(scaler, opt_g, gen)
    scaler.update()

    extra = {"loss_aux": aux.item()} if aux is not None else {}
    return {**extra, "loss_d": loss_d.item(), "loss_g": loss_g.item(),
            "d_real": float(torch.sigmoid(logits_real.detach().float()).mean()),
            "d_fake": float(torch.sigmoid(logits_fake.detach().float()).mean()),
            "grad_norm_d": norm_d, "grad_norm_g": norm_g}

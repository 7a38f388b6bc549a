"""Run under `mpirun -n 2`: GAN steps through a data-parallel backend; rank 0 prints JSON.

    two_rank_steps.py BACKEND MODE
MODE "identical": 4 steps on rank-specific data; reports a checksum of every rank's
    parameters after every step.
MODE "equivalence": BatchNorm in eval mode (per-map, so the global batch splits exactly);
    3 steps of per-rank batch 4 on 2 ranks against 3 steps of batch 8 in one process,
    computed on rank 0 from the same initial weights; reports the largest difference.
MODE "sum": Backend.sum of a float64 tensor that differs by rank; reports every rank's result.
"""

import copy
import json
import sys

import torch

from pipeline.parallel.backend import make_backend
from pipeline.parallel.comm import world
from pipeline.models import ModelArgs, build_models
from pipeline.train.step import Batch, GANParts, StepNoise, gan_step

ARGS = ModelArgs(image_size=32, z_dim=16, g_channels=8, d_channels=8)


def optimizers(gen, disc):
    return (torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999)),
            torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999)))


def checksum(*models):
    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for m in models for i, p in enumerate(m.parameters())))


def batch_of(step, size, offset=0):
    """Rows offset .. offset+size of step's global batch of 8 maps and their noise."""
    g = torch.Generator().manual_seed(1000 + step)
    real = torch.rand(8, 1, 32, 32, generator=g) * 2 - 1
    noise = StepNoise.draw(step, 8, ARGS.z_dim, 0.25)
    sl = slice(offset, offset + size)
    return (Batch(real[sl], torch.zeros(size, 0)),
            StepNoise(noise.z[sl], noise.real_labels[sl], noise.fake_labels[sl], noise.params[sl]))


def main(backend_name, mode):
    torch.set_num_threads(1)
    comm = world()
    backend = make_backend(backend_name, "cpu")
    if mode == "sum":
        mine = torch.tensor([[1.0, 0.5], [10.0, 1e-300]], dtype=torch.float64) * (comm.rank + 1)
        summed = backend.sum(mine)
        out = {"sums": comm.allgather(summed.tolist()), "dtype": str(summed.dtype), "kept": mine[0, 0].item()}
        if comm.rank == 0:
            print(json.dumps(out), flush=True)
        backend.close()
        return
    torch.manual_seed(0)
    gen, disc = build_models(ARGS)
    if mode == "equivalence":
        for m in list(gen.modules()) + list(disc.modules()):
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        ref_gen, ref_disc = copy.deepcopy(gen), copy.deepcopy(disc)
        start = [p.detach().clone() for p in list(gen.parameters()) + list(disc.parameters())]
    opt_g, opt_d = optimizers(gen, disc)
    train_gen, train_disc = backend.wrap_model(gen, "generator"), backend.wrap_model(disc, "discriminator")
    opt_g = backend.wrap_optimizer(opt_g, gen, "generator")
    opt_d = backend.wrap_optimizer(opt_d, disc, "discriminator")
    backend.broadcast_state([gen, disc], [opt_g, opt_d])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    parts = GANParts(train_gen, train_disc, opt_g, opt_d, scaler, frozen_disc=disc)
    out = {}
    if mode == "identical":
        sums = []
        for step in range(4):
            gan_step(parts, *batch_of(step, 4, 4 * comm.rank))
            sums.append(comm.allgather(checksum(gen, disc)))
        out = {"checksums": sums}
    else:
        for step in range(3):
            gan_step(parts, *batch_of(step, 4, 4 * comm.rank))
        if comm.rank == 0:
            ref_parts = GANParts(ref_gen, ref_disc, *optimizers(ref_gen, ref_disc), scaler)
            for step in range(3):
                gan_step(ref_parts, *batch_of(step, 8))
            with torch.no_grad():
                now = list(gen.parameters()) + list(disc.parameters())
                ref = list(ref_gen.parameters()) + list(ref_disc.parameters())
                out = {"max_diff": max(float((a - b).abs().max()) for a, b in zip(now, ref)),
                       "min_moved": min(float((a - b).abs().max()) for a, b in zip(now, start))}
    if comm.rank == 0:
        print(json.dumps(out), flush=True)
    backend.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""FLOPs per map of the DCGAN: counted by torch's FlopCounterMode, and an analytic forward count.

Conventions (those of ``torch.utils.flop_counter``): one multiply-add = 2 FLOPs;
only convolutions (forward and both backward halves) and matrix products
(Linear) are counted. BatchNorm, activations, bias additions, the loss and the
optimizer are not: they are O(activations), under 1% of the total here.
A transposed convolution is counted per *input* pixel (each scatters a
C_out x k x k patch), a convolution per *output* pixel.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models.args import ModelArgs
from pipeline.models.dcgan import build_models


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops(args: ModelArgs, batch: int = 2) -> dict:
    """FLOPs per map (ints) for the models ``build_models(args)`` makes, in training mode.

    Returns ``generator_forward``, ``discriminator_forward`` and ``train_iteration``,
    all divided by ``batch``, where one training iteration is the training loop's own
    ``pipeline.train.step.gan_step``:

        fake = G(z)
        loss_d = BCE(D(real), 1) + BCE(D(fake.detach()), 0); loss_d.backward(); Adam step
        loss_g = BCE(D(fake), 1); loss_g.backward()  # non-saturating, D's weights frozen

    and ``analytic_*`` forward counts (``analytic_forward_flops``) alongside. ``batch`` must be >= 2 (BatchNorm in
    training mode). Counted on the CPU (the counts do not depend on the device).
    """
    if batch < 2:
        raise ValueError(f"batch: must be >= 2 (BatchNorm in training mode), got {batch}")
    G, D = build_models(args)
    G.train()
    D.train()
    H = args.image_size
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch, args.z_dim, generator=gen)
    real = torch.rand(batch, 1, H, H, generator=gen) * 2 - 1

    with torch.no_grad():
        g_fwd = _counted(lambda: G(z))
        d_fwd = _counted(lambda: D(real))

    from pipeline.train.step import Batch, GANParts, StepNoise, gan_step  # the real step: the count cannot drift

    parts = GANParts(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()),
                     torch.amp.GradScaler("cpu", enabled=False))
    noise = StepNoise(z, torch.ones(batch), torch.zeros(batch), torch.zeros(batch, 0))
    step = _counted(lambda: gan_step(parts, Batch(real, torch.zeros(batch, 0)), noise))
    for total in (g_fwd, d_fwd, step):
        assert total % batch == 0, (total, batch)  # every counted op is linear in the batch
    analytic = analytic_forward_flops(args)
    return {
        "generator_forward": g_fwd // batch,
        "discriminator_forward": d_fwd // batch,
        "train_iteration": step // batch,
        "analytic_generator_forward": analytic["generator"],
        "analytic_discriminator_forward": analytic["discriminator"],
    }


def _layer_macs(args: ModelArgs) -> dict:
    """Multiply-adds per map of each conv/linear layer, by layer name, forward only."""
    H, z, g, d, k = args.image_size, args.z_dim, args.g_channels, args.d_channels, args.kernel_size
    s = H // 16
    gen = {"fc": z * 8 * g * s * s}
    chans = [8 * g, 4 * g, 2 * g, g, 1]
    for i in range(4):
        h_in = s * 2 ** i  # side of the stage's input
        # transposed: every input pixel scatters c_out*k*k; resize_conv: a conv on the 2x grid
        pixels = h_in ** 2 if args.upsample == "transposed" else (2 * h_in) ** 2
        gen[f"up{i + 1}"] = chans[i] * chans[i + 1] * k * k * pixels
    dis = {}
    dchans = [1, d, 2 * d, 4 * d, 8 * d]
    for i in range(4):
        h_out = H // 2 ** (i + 1)
        dis[f"conv{i + 1}"] = dchans[i] * dchans[i + 1] * k * k * h_out ** 2
    dis["fc"] = (8 * d + (1 if args.d_minibatch_std else 0)) * s * s
    return {"generator": gen, "discriminator": dis}


def analytic_forward_flops(args: ModelArgs) -> dict:
    """Forward FLOPs per map from the layer shapes: 2 x sum of conv/linear multiply-adds.

    Returns ``generator`` and ``discriminator``, plus ``train_iteration_estimate``:
    3 G_fwd - G_fc + 8 D_fwd - 2 D_conv1, i.e. the iteration of ``count_flops`` with each
    backward = weight gradient (~ forward) + input gradient (~ forward) except where none
    is needed (no input gradient into z, the real maps or fake.detach(); no D weight
    gradient in the generator step): see docs/models.md.
    """
    macs = _layer_macs(args)
    g = 2 * sum(macs["generator"].values())
    d = 2 * sum(macs["discriminator"].values())
    g_fc = 2 * macs["generator"]["fc"]
    d_conv1 = 2 * macs["discriminator"]["conv1"]
    return {"generator": g, "discriminator": d,
            "train_iteration_estimate": 3 * g - g_fc + 8 * d - 2 * d_conv1}

"""Soft Minkowski functionals V0 and V1 of each map at a few thresholds, with a fused gradient.

The distribution term (pipeline/train/distribution_loss.py) needs, per map and threshold t,
the area fraction above t and the boundary length of that excursion set, as smooth
functions of the pixels so that they have a gradient:

    V0_t = mean_p s_tp,    V1_t = mean_p d_tp g_p / 4,
    s_tp = sigmoid((x_p - t) / w),    d_tp = s_tp (1 - s_tp) / w,

x_p a map's pixels, g_p its |grad kappa| and w the logistic step's width (d is the step's
derivative, a kernel of unit area about the threshold). Written with broadcast tensors,
autograd kept several (B, T, N^2) arrays and their products, 2/3 of the term's time
(docs/benchmarks.md).
Here the forward and backward passes go one threshold at a time over (B, N^2) arrays and
the backward pass recomputes s from x instead of storing it; the values are the same
formula's, and tests/unit/test_soft_excursions.py checks both against plain autograd.
"""

from __future__ import annotations

import torch


class SoftExcursions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, g: torch.Tensor, thresholds: torch.Tensor, width: float):
        """x, g: (B, P) pixels and |grad| (any float dtype); thresholds (T,), in x's units;
        width w > 0, in x's units -> (V0, V1), each (B, T)."""
        u, cuts = x / width, (thresholds / width).tolist()  # the step's argument is u - t / w
        ctx.save_for_backward(u, g)
        ctx.width, ctx.cuts = float(width), cuts
        v0 = x.new_empty(len(x), len(cuts))
        v1 = torch.empty_like(v0)
        for i, cut in enumerate(cuts):
            s = torch.sigmoid(u - cut)
            v0[:, i] = s.mean(1)
            v1[:, i] = (s - s * s).mul_(g).mean(1)
        return v0, v1.div_(4 * width)

    @staticmethod
    def backward(ctx, grad_v0: torch.Tensor, grad_v1: torch.Tensor):
        """With a = dL/dV0, b = dL/dV1 and q = s (1 - s) = w d (d as in the module's docstring;
        dq/dx = q (1 - 2 s) / w): dL/dx_p = sum_t q_tp (a_t / w + b_t (1 - 2 s_tp) g_p / (4 w^2)) / P
        and dL/dg_p = sum_t b_t q_tp / (4 w P)."""
        u, g = ctx.saved_tensors
        w, n = ctx.width, u.shape[1]
        a = grad_v0 / (w * n)                   # (B, T)
        b = grad_v1 / (4 * w * w * n)
        grad_x = torch.zeros_like(u)
        grad_g = torch.zeros_like(g)
        for i, cut in enumerate(ctx.cuts):
            s = torch.sigmoid(u - cut)
            q = s - s * s
            grad_g.addcmul_(q, b[:, i:i + 1])
            # q (a + b (1 - 2 s) g) = q a + q b g - 2 q b g s
            qbg = q * g
            qbg.mul_(b[:, i:i + 1])
            grad_x.addcmul_(q, a[:, i:i + 1]).add_(qbg).addcmul_(qbg, s, value=-2)
        return grad_x, grad_g.mul_(w), None, None


def soft_excursions(x: torch.Tensor, g: torch.Tensor, thresholds: torch.Tensor,
                    width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft V0 and V1 (B, T) of maps' pixels x (B, P) with |grad| g (B, P) at thresholds (T,),
    through a logistic step of width ``width`` (x's units); see the module docstring."""
    return SoftExcursions.apply(x, g, thresholds, width)

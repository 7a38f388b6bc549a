"""An exponential moving average (EMA) of the generator's weights, the generator that is used.

GAN training does not converge to a point: the generator keeps circling the equilibrium,
and its statistics swing from one check to the next (docs/training-notes.md). Averaging
its weights over the last ~1/(1 - decay) steps (Yazici et al. 2019, arXiv:1806.04498;
ProGAN, BigGAN) lands nearer the centre of that orbit. The average is what the fidelity
check scores, what best.pt is chosen by and what ``generate`` loads.

BatchNorm's running statistics belong to the live generator's weights, not to the
average, so the averaged generator gets its own ("standing statistics", BigGAN): before
each use, its running means and variances are recomputed as exact averages over a fixed
set of noise batches in training mode. They then depend only on the averaged weights and
that fixed noise, so a resumed run reproduces them.

With decay 0 (train.standing_stats) the "average" is the live weights, copied at every
update, and only the statistics are its own. The running statistics (momentum 0.1) lag
the weights; in the quickstart they put each map's mean 0.5-1 reference standard
deviations higher than standing statistics do (docs/training-notes.md, t2 and ss_a1).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    def __init__(self, gen: nn.Module, decay: float, calibration_z: torch.Tensor, batch_size: int,
                 calibration_params: torch.Tensor | None = None):
        """gen: the live generator (unwrapped); decay in [0, 1), 0 for a copy of the live
        weights with standing statistics; calibration_z (n, z_dim) on CPU;
        calibration_params (n, P): normalised parameters for a conditional G (uniform over
        the support), else None."""
        self.decay = decay
        self.model = copy.deepcopy(gen).eval().requires_grad_(False)
        self.calibration_z = calibration_z
        self.calibration_params = (calibration_params if calibration_params is not None
                                   else torch.zeros(len(calibration_z), 0))
        self.batch_size = batch_size
        self.updates = 0
        self.calibrated = False

    def restart_from(self, gen: nn.Module) -> None:
        """Start the average again from the live weights (a run that switches it on at a resume)."""
        self.model.load_state_dict(gen.state_dict())
        self.updates = 0
        self.calibrated = False

    def update(self, gen: nn.Module) -> None:
        """Fold the live weights in after an optimizer step. The decay ramps up as
        (1 + n) / (10 + n) over the first updates (TensorFlow's num_updates rule), so the
        random initial weights are forgotten quickly."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for mine, live in zip(self.model.parameters(), gen.parameters()):
                if decay == 0:
                    mine.copy_(live.detach())
                else:
                    mine.lerp_(live.detach(), 1.0 - decay)
        self.calibrated = False

    def generator(self) -> nn.Module:
        """The averaged generator in eval mode, its BatchNorm statistics recomputed if stale."""
        if not self.calibrated:
            self._calibrate()
        return self.model

    def _calibrate(self) -> None:
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        device = next(self.model.parameters()).device
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        self.model.train()
        with torch.no_grad():
            for z, p in zip(self.calibration_z.split(self.batch_size), self.calibration_params.split(self.batch_size)):
                self.model(z.to(device), p.to(device))
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        self.model.eval()
        self.calibrated = True

    def state_dict(self) -> dict:
        """Weights with calibrated statistics (loadable into a plain Generator) and the count."""
        return {"weights": self.generator().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
        self.calibrated = True

"""Auxiliary generator loss: match the mean power of every Fourier mode to the training set's.

The GAN loss alone learns the spectrum imprecisely: power on the generator's upsampling
grid (a pattern that repeats every 16 pixels puts 2.5-3.3x the power on the axis modes
|k| = 4, 8, 12, 16 of 64-pixel maps) and broadband offsets of 10-40%
(docs/training-notes.md). NERSC's PyTorch port of CosmoGAN added spectral and histogram
terms for that reason. This term is

    L_spec = mean over rings r of  mean over shells s in r of  mean over modes k in s of
             (log <|F[kappa_fake](k)|^2> - log P_s)^2

with kappa_fake the generated batch mapped back to kappa by the pixel transform (the
spectrum users measure: the transform is nonlinear, and matching the transformed maps'
spectrum left the kappa spectrum 20-40% high at low ell), F the 2D FFT, <> the mean over
the batch, and P_s the training maps' mean power over the modes of shell s, computed once.
A shell is the set of modes with the same |k|^2 = kx^2 + ky^2 (integer wave numbers,
|k| <= N/2): an isotropic field has the same power at every mode of a shell, so the term
sees anisotropic artefacts (grids, stripes) that a radial average would hide. A ring is
the shells whose |k| rounds to the same integer; every ring weighs the same, like the
linear ell bins the statistics use (weighing every shell the same gave the few shells of
the largest scales ~1/300 of the loss each, and the fundamental modes stayed 7-11% low).
Shell 0 is the map mean: the generator's means varied ~150x more (in variance) than the
physical model's, whose maps have a near-fixed mean, which shifts each map's PDF and
Minkowski curves. It is scale-free (logs) and differentiable; a floor of
1e-3 x the median shell power is added inside both logs.

A conditional run has one target per training cosmology c (P_{c,s}, from that
cosmology's own training maps: the pooled mean of all cosmologies would pull every
cosmology's power to the middle of the design). Each generated map b is drawn at a
training cosmology c_b (the real batch's), and the term compares, per mode,

    log < (|F[kappa_b](k)|^2 + f_c) / (P_{c_b,s(k)} + f_c) >_b

with 0: the batch mean of each map's power relative to its own cosmology's target
(f_c that cosmology's floor). For one cosmology this is the formula above exactly; with
many, the mean still runs over the whole batch (2-3 maps per cosmology in a batch of 64
would make a log of each cosmology's own mean biased by -0.3 to -0.6).

That pooled mean cannot see a cosmology whose power is 20% high while another's is 20%
low (the first conditional run had exactly that: docs/training-notes.md). The
per-cosmology term (``cosmology_term``, train.cosmology_spectral_weight) measures each
map's broadband amplitude per ring r, x_b,r = log(mean over the ring's modes of
(|F[kappa_b](k)|^2 + f_c) / (P_{c,s(k)} + f_c)), against the same quantity's mean over
that cosmology's training maps, mu_{c,r}, and averages, over every pair of distinct maps
(b, b') of the batch at the same cosmology,

    L_cosmo = mean over rings r of  mean over pairs of  (x_b,r - mu_{c,r}) (x_b',r - mu_{c,r})

over rings 1 .. N/2, or 0 .. N/2 with ``cosmology_mean`` (train.cosmology_spectral_mean):
ring 0 is the map mean, whose variance the pooled per-mode term judges only over all
cosmologies together; a generator can then move one cosmology's large-scale variance
from the fundamental ring into the maps' means (docs/training-notes.md, C6).

an unbiased estimate of the squared bias of the mean amplitude (the two maps are
independent given c), with no pull on the scatter of the amplitudes from map to map:
the square of one map's or one cosmology's deviation would shrink that scatter too,
which the per-map distributions need kept.

The log's mean is not the log of the mean: a generator whose per-map amplitudes scatter
more than the physical model's, at the right mean log, has its mean power too high by
about half the difference of the variances of x (too low where they scatter less). The
mean power is what the validation criteria judge, and at the conditional runs' high-Omega_m
cosmologies the fundamental ring's per-map scatter was 1.10-1.15x the physical model's
with its mean power 6-11% high, ring 2's 0.88x with its mean 6% low (docs/training-notes.md,
C18). With ``cosmology_scale="linear"`` (train.cosmology_spectral_scale) x_b,r is the
ratio itself, mean over the ring's modes of (|F[kappa_b](k)|^2 + f_c) / (P_{c,s(k)} + f_c),
and mu_{c,r} its mean over the training maps (~1). Each map's deviation enters as
d_b,r = min(x_b,r / mu_{c,r} - 1, 4) with the gradient of log x_b,r: the pair term's value
then estimates the squared relative bias of each cosmology's mean power per ring (the
criteria's own quantity), each map is pulled by its partners' relative deviations (zero in
expectation only when the mean power is right), and its own response stays scale-free as
in the log form (the plain ratio's gradient grows with the map's power: at weight 200 that
run's generator lost to its discriminator, C18).

Two things make that term weak where one cell is biased (the fundamental ring at the
design's low-Omega_m corner, 20% low, in docs/training-notes.md): every (cosmology, ring)
cell weighs 1/(C R) of it, 1/800 for 25 cosmologies and 32 rings; and each map's
gradient is its ~1.5 partners' deviations, whose scatter at ring 1 (sd ~0.55 per map)
is ~4x that bias. Neither 10x the weight nor the auxiliary terms alone moved it in 300
steps (C7). With ``focus`` (train.cosmology_spectral_focus, a per-step decay in (0, 1)),
the term keeps, per cell, a moving mean of the deviations over steps (pooled over
ranks), m_{c,r} = sum_t focus^(T-t) sum_b d_b,r / sum_t focus^(T-t) n_{c,t}, and is

    L_focus = mean over maps b, rings r of  w_{c_b,r} m_{c_b,r} x_b,r
    w_{c,r} = max(m_{c,r}^2, FOCUS_FLOOR) / mean over cells of max(m^2, FOCUS_FLOOR)

(m and w held constant): each map is pulled by its cosmology's bias as ~1/(1 - focus)
steps of maps measure it rather than by its partners in the batch, and a cell biased
well above the floor gets weight ~ m^2 / floor, so the pull grows like the cube of a
bias that persists (the criteria judge every ell bin alone, a worst case). Its value is
a weighted estimate of the squared biases; the sums are saved in checkpoints and are
the same on every rank.

L_spec weighs each mode by 1 / (its ring's shells x its shell's modes x the rings): a
mode of ring 6 of a 64-pixel map ~1/900 of the term, one of ring 14 ~1/1,500. The
conditional generator put 2-3x the power on single modes of its 16-pixel grid ((4, 4),
(8, -4), (12, 8), (16, 0): harmonics of a pattern repeated every 16 pixels) at every
cosmology, a different set at each checkpoint, and the ell bins holding them 10-20% high
(docs/training-notes.md, g_s2, g_s3); such a mode costs L_spec little. The anisotropy
term (train.spectral_anisotropy_weight) weighs every mode alike, and only its departure
from the other modes of its ring (e_k the log ratio of the batch's mean power to the
target at mode k, e_r its mean over the modes of k's ring r):

    L_aniso = mean over modes k in rings of 2 or more modes of  (e_k - e_r)^2

The ring, not the shell: the shells |k|^2 = 144 and 256 hold only the axis modes (12, 0),
(0, 12) and (16, 0), (0, 16), which the generator raised 1.6-2x together, and e_k has
the target's radial shape divided out already. An isotropic field has the same power at
every mode of a shell, so a right generator makes this 0 in expectation but for the noise
of the batch's mean power (for 64 maps, (e_k - e_r)^2 ~ 1/64 per mode); a 2x mode costs
0.48 of it, over the ~1,600 modes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from pipeline.data.transforms import PixelTransform
from pipeline.models.conditioning import nearest_points
from pipeline.models.fourier import rfft_k2, rfft_rings

#: The largest relative deviation of a map's ring power that the linear per-cosmology term
#: counts (5x its cosmology's mean; none of configs/conditional.yaml's 12,800 training maps
#: reaches it, the largest is 4.2x at ring 1): a generator's first steps sit far off the
#: targets, and uncapped such maps drove the pair term to ~4e3 (C18).
LINEAR_DEVIATION_CAP = 4.0

#: Squared log bias below which the focus weighs cells alike: (5%)^2, half the 10%
#: criterion; below it a cell's bias is within what a 512-map test split resolves.
FOCUS_FLOOR = 0.05 ** 2


class SpectralLoss:
    def __init__(self, size: int, target_chunks: Iterable[np.ndarray], transform: PixelTransform,
                 device: torch.device, per_cosmology: list[Iterable[np.ndarray]] | None = None,
                 points: torch.Tensor | None = None, cosmology_mean: bool = False, focus: float = 0.0,
                 pool: Callable[[torch.Tensor], torch.Tensor] | None = None, cosmology_scale: str = "log"):
        """size: pixels per side N; target_chunks: training maps in kappa, as arrays (n_i, N, N),
        whose mean power per shell is the target; transform: the run's pixel transform.
        Conditional: per_cosmology, each training cosmology's chunks in place of
        target_chunks (give []), and points (C, P), those cosmologies' normalised parameters;
        cosmology_mean: the per-cosmology term judges ring 0 (the map mean) too; focus: the
        per-step decay of the moving means of the focused term (0: the pair term);
        pool: sums a tensor over ranks (data-parallel training; None: one process);
        cosmology_scale: the per-cosmology term's amplitude, "log" (the log of each map's ring
        power ratio) or "linear" (the ratio: the bias of the mean power)."""
        if cosmology_scale not in ("log", "linear"):
            raise ValueError(f"spectral loss: cosmology_scale must be 'log' or 'linear', got {cosmology_scale!r}")
        self.cosmology_scale = cosmology_scale
        k2 = rfft_k2(size, device)
        self.keep = k2 <= (size // 2) ** 2  # the modes used, on the rfft2 grid, the mean (k = 0) included
        self.k2 = k2[self.keep]
        shells, self.shell = torch.unique(self.k2, return_inverse=True)  # shell index of each mode
        self.n_shells = len(shells)
        self.counts = torch.bincount(self.shell, minlength=self.n_shells).to(torch.float32)
        # every ring of integer |k| weighs the same (as linear ell bins do), every shell in a
        # ring the same, every mode in a shell the same
        ring_of_shell = torch.round(torch.sqrt(shells.to(torch.float64))).long()
        _, ring_index = torch.unique(ring_of_shell, return_inverse=True)
        shells_per_ring = torch.bincount(ring_index).to(torch.float32)
        shell_weight = 1.0 / (shells_per_ring[ring_index] * len(shells_per_ring))
        self.weights = shell_weight[self.shell] / self.counts[self.shell]
        self.transform = transform
        groups = per_cosmology if per_cosmology is not None else [target_chunks]
        self._map_shells: list[list[torch.Tensor]] = []  # each target map's shell powers, for mu below
        target = torch.stack([self._mean_shell_power(chunks, device) for chunks in groups])  # (C, n_shells)
        # a floor far below any shell's power keeps the logs finite for data whose maps all
        # have mean exactly 0 (shell k = 0 empty): a generated mean then costs log(P / floor)
        self.floors = 1e-3 * target.median(1).values  # (C,)
        self.floor = float(self.floors[0])
        self.targets = target + self.floors[:, None]  # (C, n_shells), floors included
        self.log_target = torch.log(self.targets[0])
        self.points = points.to(device) if points is not None else None
        # rings |k| = 0 or 1 .. N/2 for the per-cosmology amplitude term
        self.first_ring = 0 if cosmology_mean else 1
        self.ring = rfft_rings(size, device)[self.keep]
        self.n_rings = int(self.ring.max()) + 1
        self.ring_counts = torch.bincount(self.ring, minlength=self.n_rings).to(torch.float32)
        self.in_shared_ring = self.ring_counts[self.ring] > 1  # the modes the anisotropy term compares
        self.ring_mu = torch.stack([self._mean_amplitude(shells, c) for c, shells in enumerate(self._map_shells)])
        del self._map_shells
        self.focus = focus
        self.pool = pool
        # the moving sums of each cell's deviations and of each cosmology's maps (float64, so
        # that a long average does not drift): a state that checkpoints keep
        n_cells = (len(self.targets), self.n_rings - self.first_ring)
        self.deviation_sum = torch.zeros(n_cells, dtype=torch.float64, device=device)
        self.map_count = torch.zeros(n_cells[0], dtype=torch.float64, device=device)

    def state_dict(self) -> dict:
        return {"deviation_sum": self.deviation_sum.cpu(), "map_count": self.map_count.cpu()}

    def load_state_dict(self, state: dict) -> None:
        for name in ("deviation_sum", "map_count"):
            mine, saved = getattr(self, name), state[name]
            if saved.shape != mine.shape:
                raise ValueError(f"spectral focus: {name} of shape {tuple(saved.shape)} saved, {tuple(mine.shape)} here")
            setattr(self, name, saved.to(mine))

    def cell_bias(self) -> torch.Tensor:
        """m (C, R'): each (cosmology, ring) cell's moving mean deviation (0 where no map was seen)."""
        return self.deviation_sum / self.map_count.clamp(min=1e-300)[:, None]

    def cell_weights(self, bias: torch.Tensor | None = None) -> torch.Tensor:
        """w (C, R'): each cell's weight in the focused term, mean 1, from ``bias`` (cell_bias())."""
        w = (self.cell_bias() if bias is None else bias).square().clamp(min=FOCUS_FLOOR)
        return w / w.mean()

    def _update_focus(self, d: torch.Tensor, c: torch.Tensor) -> None:
        """Fold this step's deviations d (B, R') at cosmologies c (B,) into the moving sums."""
        sums = torch.zeros_like(self.deviation_sum).index_add(0, c, d.detach().double())
        counts = torch.zeros_like(self.map_count).index_add(0, c, torch.ones_like(c, dtype=torch.float64))
        if self.pool is not None:
            pooled = self.pool(torch.cat([sums, counts[:, None]], 1))
            sums, counts = pooled[:, :-1], pooled[:, -1]
        self.deviation_sum = self.focus * self.deviation_sum + sums
        self.map_count = self.focus * self.map_count + counts

    def _mean_shell_power(self, chunks: Iterable[np.ndarray], device) -> torch.Tensor:
        total, n = torch.zeros(self.n_shells, device=device), 0
        kept = []
        self._map_shells.append(kept)
        for maps in chunks:
            per_map = self.map_shell_power(torch.as_tensor(np.asarray(maps, np.float32), device=device))
            kept.append(per_map)
            total += per_map.sum(0)
            n += len(maps)
        if n == 0:
            raise ValueError("spectral target: no maps")
        return total / n

    def cosmology_of(self, params: torch.Tensor | None, n: int) -> torch.Tensor:
        """The training cosmology (n,) nearest each generated map's normalised parameters."""
        return nearest_points(self.points, params, n, self.targets.device)

    def mode_power(self, kappa: torch.Tensor) -> torch.Tensor:
        """Mean power over the maps (B, N, N) of each mode used, float32."""
        return self.map_mode_power(kappa).mean(0)

    def _mean_amplitude(self, shells: list[torch.Tensor], c: int) -> torch.Tensor:
        """mu_{c,r}: the mean over cosmology c's target maps of their ring amplitudes x (R,),
        from each map's shell powers (the ratio's sum over a shell's modes is the shell's)."""
        per_map = torch.cat(shells)                                          # (n, n_shells)
        ratio = (per_map + self.floors[c]) / self.targets[c]                 # per shell, each mode's mean
        ring_of_shell = torch.zeros(self.n_shells, dtype=torch.long, device=per_map.device)
        ring_of_shell[self.shell] = self.ring
        sums = torch.zeros(len(per_map), self.n_rings, device=per_map.device).index_add(
            1, ring_of_shell, ratio * self.counts)
        return self._amplitude(sums / self.ring_counts).mean(0)

    def _amplitude(self, ring_ratio: torch.Tensor) -> torch.Tensor:
        """x from each map's mean power ratio per ring: its log, or the ratio (cosmology_scale)."""
        return torch.log(ring_ratio) if self.cosmology_scale == "log" else ring_ratio

    def ring_amplitude(self, kappa: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, R): each map's mean power relative to its cosmology's target, per ring, or its log."""
        ratio = (self.map_mode_power(kappa) + self.floors[c, None]) / self.targets[c][:, self.shell]
        sums = torch.zeros(len(kappa), self.n_rings, device=kappa.device).index_add(1, self.ring, ratio)
        return self._amplitude(sums / self.ring_counts)

    def cosmology_term(self, fake: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """L_cosmo of the generated maps (B, 1, N, N) at their normalised params (B, P); 0 when
        no two maps of the batch share a cosmology."""
        kappa = self.transform.inverse(fake[:, 0].float(), params)
        c = self.cosmology_of(params, len(fake))
        first = self.first_ring
        x, mu = self.ring_amplitude(kappa, c)[:, first:], self.ring_mu[c][:, first:]
        if self.cosmology_scale == "linear":
            # the value: each map's relative deviation of its ring power, capped; the gradient:
            # its log's, so that a map's pull does not grow with its own brightness
            log_x = torch.log(x)
            d = (x / mu - 1).clamp(max=LINEAR_DEVIATION_CAP).detach() + (log_x - log_x.detach())
        else:
            d = x - mu
        if self.focus > 0:
            self._update_focus(d, c)
            bias = self.cell_bias()
            pull = (self.cell_weights(bias) * bias)[c].to(d.dtype)
            return (pull * d).sum() / d.numel()
        pairs = (c[:, None] == c[None, :]) & ~torch.eye(len(c), dtype=torch.bool, device=c.device)
        n_pairs = pairs.sum()
        if n_pairs == 0:
            return d.sum() * 0.0
        return ((pairs.to(d.dtype) @ d) * d).sum() / (n_pairs * d.shape[1])

    def map_mode_power(self, kappa: torch.Tensor) -> torch.Tensor:
        """Each map's power (B, M) at each mode used, float32."""
        return torch.fft.rfft2(kappa.float()).abs().square()[:, self.keep]

    def shell_power(self, kappa: torch.Tensor) -> torch.Tensor:
        """Mean power over the maps (B, N, N) and the modes of each shell."""
        return self.map_shell_power(kappa).mean(0)

    def map_shell_power(self, kappa: torch.Tensor) -> torch.Tensor:
        """Each map's mean power over the modes of each shell (B, n_shells)."""
        power = self.map_mode_power(kappa)
        sums = torch.zeros(len(kappa), self.n_shells, device=kappa.device, dtype=power.dtype).index_add(
            1, self.shell, power)
        return sums / self.counts

    def mode_errors(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """The log ratio (M,) of the batch's mean power to the target at each mode used.
        fake: generated maps (B, 1, N, N) as the generator makes them (transformed); params:
        their normalised parameters (B, P) (conditional runs)."""
        kappa = self.transform.inverse(fake[:, 0].float(), params)
        if self.points is None or len(self.points) == 1:  # one target: the mean power, then the ratio
            return torch.log(self.mode_power(kappa) + self.floor) - self.log_target[self.shell]
        c = self.cosmology_of(params, len(fake))
        ratio = (self.map_mode_power(kappa) + self.floors[c, None]) / self.targets[c][:, self.shell]
        return torch.log(ratio.mean(0))

    def spectral_term(self, errors: torch.Tensor) -> torch.Tensor:
        """L_spec from ``mode_errors``."""
        return (self.weights * errors.square()).sum()

    def anisotropy_term(self, errors: torch.Tensor) -> torch.Tensor:
        """L_aniso from ``mode_errors``: the mean over modes of the squared difference of
        each mode's log ratio from its ring's mean, every mode alike."""
        ring_mean = torch.zeros(self.n_rings, device=errors.device, dtype=errors.dtype).index_add(
            0, self.ring, errors) / self.ring_counts
        return (errors - ring_mean[self.ring]).square()[self.in_shared_ring].mean()

    def __call__(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """L_spec of generated maps (B, 1, N, N) as the generator makes them (transformed);
        params: their normalised parameters (B, P) (conditional runs)."""
        return self.spectral_term(self.mode_errors(fake, params))

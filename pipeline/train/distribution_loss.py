"""Auxiliary generator loss: match the distribution over maps of per-map summaries.

The spectral term matches the mean power of every mode, but a scientist's covariance or
likelihood needs each map's statistics distributed as the simulations' are. The
quickstart run's maps had the right mean spectrum while each map's pixel skewness sat
1.6 reference standard deviations too high and its pixel sigma 0.6 too high with 12%
too little spread (docs/training-notes.md, benchmarks/per_map_moments.py). This term
compares, one summary at a time, the generated batch's values with those of a bank of
training maps by the energy distance (Szekely & Rizzo 2013), in 1D

    D = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,

X a generated map's summary, Y a training map's, each in units of the training maps'
per-map standard deviation of that summary. D is 0 only when the two distributions are
equal (it is twice the integrated squared difference of their CDFs), so it pulls means,
spreads and shapes alike; E|X - X'| is estimated over the batch's distinct pairs (a
U-statistic) and E|X - Y| over the whole bank, so the estimate is unbiased and its
gradient does not favour a narrower or wider batch. The summaries, all in kappa: each
map's pixel mean, sigma and skewness; the area fraction above thresholds at
THRESHOLDS_SIGMA x the bank's pixel sigma about its mean (V0, through a logistic step
of width SOFTNESS_SIGMA sigma, so that it has a gradient); the boundary length of those
excursion sets (V1: the mean over pixels of |grad kappa| / 4 weighted by the logistic
step's derivative, a kernel of unit area about the threshold, where the statistics bin
the same integrand in threshold intervals); and the log of the map's mean power in each
ring of integer |k| from 1 to N/4 (the statistics' ell range, half Nyquist). The loss
averages D over six groups, each weighing the same: the mean, the sigma, the skewness,
the V0 thresholds, the V1 thresholds and the rings (within a group, its summaries
alike). With ``fundamental_group`` the ring-1 summary is a seventh group of its own:
among the rings it weighs 1/96 of the term, and the quickstart's fundamental sat 8-11%
low in mean power with 11-16% too little scatter over maps (training notes, zh_s0-2);
as a group it came within 2.6-5.3% and 0.95-0.97, while V0's spread near the mode
widened to 1.16-1.19 (fg_s0-2, correlation part at 0.5); with the correlation part at 1
V0's spread held within 0.93-1.15 (fw1_s0-2), and configs/quickstart.yaml uses that
(the class's default stays off). Averaged over the 28 summaries instead,
the map mean weighed 1/28 and moved the wrong way, +1.0 reference sigmas at best.pt
(docs/training-notes.md, dist5); a shift of the mean shifts every pixel, so every V0
threshold and PDF bin. V1 joined after the term had brought the pixel moments within
0.2 sigma and left V1 below the mean at 0.45-0.6 sigma (runs comb_s0, comb_s1).

Two optional parts look past each summary's own distribution. The spread part
(``spread_errors``) weighs a wrong scatter over maps, which the distance barely sees.
The correlation part (``correlation_errors``) weighs the joint distribution: the
physical model's maps have their pixel mean and sigma correlated at 0.99 (a lognormal
map's mean follows its realised variance), which sets how V0 near the mode scatters
(one rises with the mean and falls with the sigma); the emulator had them at 0.34 with
each marginal right, and V0 at -0.3 sigma 1.2x too wide (docs/training-notes.md, sp5_s0).
It compares correlations on Fisher's z scale, where each pair's sampling noise is the same.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from pipeline.data.transforms import PixelTransform
from pipeline.models.conditioning import nearest_points
from pipeline.models.fourier import rfft_rings
from pipeline.train.soft_excursions import soft_excursions

#: V0 thresholds, in the bank's pixel sigma about its mean: the -2..3 sigma of the
#: statistics, less the bright tail above 2.5 sigma where a 64x64 map has a handful of
#: pixels. The dark tail is kept to -2 sigma (~30 pixels per quickstart map below it):
#: the lognormal's floor is near, and without -2 and -1.75 the maps had a quarter too few
#: pixels there, the worst V0 bias of the report (1.03 sigma; training notes, g4k_w5).
THRESHOLDS_SIGMA = (-2.0, -1.75, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
#: Width of the logistic step of the soft V0, in pixel sigma: narrow against the 0.5
#: sigma between thresholds, wide enough that every map has pixels on the slope.
SOFTNESS_SIGMA = 0.1


#: Shrinkage of a correlation before Fisher's z: |z| <= atanh(1 - R_SHRINK) = 3.8, beyond the
#: quickstart's tightest coupling (mean-sigma, 0.99: z = 2.6).
R_SHRINK = 1e-3


def fisher_z(r: torch.Tensor) -> torch.Tensor:
    """atanh((1 - R_SHRINK) r): a correlation on a scale where its sampling noise is even."""
    return torch.atanh((1 - R_SHRINK) * r)


class PerMapDistributionLoss:
    def __init__(self, size: int, bank_chunks: Iterable[np.ndarray], transform: PixelTransform,
                 device: torch.device, spread_weight: float = 0.0, correlation_weight: float = 0.0,
                 fundamental_group: bool = False, per_cosmology: list[Iterable[np.ndarray]] | None = None,
                 points: torch.Tensor | None = None):
        """size: pixels per side N; bank_chunks: training maps in kappa, arrays (n_i, N, N),
        whose summaries are the reference distribution; transform: the run's pixel transform;
        spread_weight, correlation_weight: weights of the spread and correlation parts (see
        ``spread_errors``, ``correlation_errors``) beside the distances; fundamental_group:
        the ring-1 summary weighs as a group of its own rather than as one of the rings.
        Conditional: per_cosmology, each training cosmology's chunks in place of bank_chunks
        (give []), and points (C, P), those cosmologies' normalised parameters. Each map's
        summaries are then standardised by its own cosmology's training maps (their mean and
        per-map spread of each summary, the V0/V1 thresholds in that cosmology's pixel sigma
        about its mean), and the distances, spreads and correlations are those of the pooled
        standardised summaries: a cosmology-independent shape, as the within-cosmology
        covariance a likelihood uses is."""
        self.transform = transform
        self.spread_weight = float(spread_weight)
        self.correlation_weight = float(correlation_weight)
        ring = rfft_rings(size, device)
        self.keep = (ring >= 1) & (ring <= size // 4)
        self.ring = ring[self.keep] - 1
        self.n_rings = size // 4
        self.ring_counts = torch.bincount(self.ring, minlength=self.n_rings).float()
        self.thresholds_sigma = torch.tensor(THRESHOLDS_SIGMA, device=device)
        self.points = points.to(device) if points is not None else None
        groups = per_cosmology if per_cosmology is not None else [bank_chunks]
        banks = [torch.cat([torch.as_tensor(np.asarray(c, np.float32), device=device) for c in chunks])
                 for chunks in groups]
        if min(len(m) for m in banks) < 2:
            raise ValueError("per-map distribution term: needs at least 2 training maps (of each cosmology)")
        self.centers = torch.tensor([float(m.mean()) for m in banks], device=device)
        self.scales = torch.tensor([float(m.std()) for m in banks], device=device)
        raws = [self._bank_summaries(m, c) for c, m in enumerate(banks)]  # (n_c, K) each
        del banks
        self.offsets = torch.stack([r.mean(0) for r in raws])  # (C, K)
        spreads = torch.stack([r.std(0) for r in raws])         # (C, K)
        # a summary that does not vary over some cosmology's training maps (a fixed map mean) is
        # skipped: it has no scale to measure a generated one in. "Does not vary": below 1e-4 of
        # its natural unit, the pixel sigma for the mean and sigma, 1 for the dimensionless rest
        unit = torch.ones_like(spreads)
        unit[:, :2] = self.scales[:, None]
        self.used = (spreads > 1e-4 * unit).all(0)
        # the group of each summary: 0 mean, 1 sigma, 2 skewness, 3 the V0s, 4 the V1s, 5 the rings
        # (6 ring 1, with fundamental_group)
        n_t = len(THRESHOLDS_SIGMA)
        rings = [6 if fundamental_group else 5] + [5] * (self.n_rings - 1)
        self.group = torch.tensor([0, 1, 2] + [3] * n_t + [4] * n_t + rings, device=device)
        counts = torch.bincount(self.group[self.used], minlength=7).float()
        # each used summary's weight: 1 / (its group's used count x the groups used)
        weight = torch.where(self.used, 1 / counts.clamp(min=1)[self.group], torch.zeros(len(self.used), device=device))
        self.weight = weight / weight.sum()
        self.spreads = torch.where(self.used, spreads, torch.ones_like(spreads))
        self.bank = torch.cat([self._standardise(r, torch.full((len(r),), c, device=device))
                               for c, r in enumerate(raws)])  # (n_bank, K)
        self.bank_correlation = self._correlation(self.bank)    # (K, K)
        self.bank_z = fisher_z(self.bank_correlation)
        # each pair's weight: the product of its summaries' weights, off the diagonal, so every
        # group weighs in the pairs as in the distances; normalised to sum 1
        pair = self.weight[:, None] * self.weight[None, :]
        pair.fill_diagonal_(0)
        self.pair_weight = pair / pair.sum().clamp(min=1e-30)
        # the bank sorted per summary, as (K, n), and its prefix sums (K, n + 1) in float64: E|x - Y|
        # for any x from a binary search (``_cross``)
        n = len(self.bank)
        ordered = self.bank.sort(0).values
        self.sorted_bank = ordered.T.contiguous()
        self.bank_prefix = torch.cat([torch.zeros(1, ordered.shape[1], dtype=torch.float64, device=device),
                                      ordered.double().cumsum(0)]).T.contiguous()
        # E|Y - Y'| per summary (K,), from the sorted bank: sum over i<j of y_(j) - y_(i)
        rank = torch.arange(n, device=device, dtype=torch.float32)
        self.bank_self = 2 * (ordered * (2 * rank - n + 1)[:, None]).sum(0) / (n * (n - 1))

    @property
    def names(self) -> list[str]:
        return (["mean", "sigma", "skewness"] + [f"V0({t:+g})" for t in THRESHOLDS_SIGMA]
                + [f"V1({t:+g})" for t in THRESHOLDS_SIGMA]
                + [f"log P(|k|={r})" for r in range(1, self.n_rings + 1)])

    def _bank_summaries(self, maps: torch.Tensor, c: int) -> torch.Tensor:
        """The summaries (n, K) of cosmology c's training maps (n, N, N), 256 at a time."""
        parts = [maps[s:s + 256] for s in range(0, len(maps), 256)]
        return torch.cat([self.summaries(m, torch.full((len(m),), c, device=m.device)) for m in parts])

    @property
    def center(self) -> float:
        """The (first) cosmology's pixel mean over its training maps, in kappa."""
        return float(self.centers[0])

    @property
    def scale(self) -> float:
        """The (first) cosmology's pixel standard deviation over its training maps, in kappa."""
        return float(self.scales[0])

    def cosmology_of(self, params: torch.Tensor | None, n: int) -> torch.Tensor:
        """The training cosmology (n,) nearest each map's normalised parameters (0 for one)."""
        return nearest_points(self.points, params, n, self.centers.device)

    def summaries(self, kappa: torch.Tensor, cosmology: torch.Tensor | None = None) -> torch.Tensor:
        """Each map's summaries (B, K) from maps (B, N, N) in kappa, float32; cosmology (B,):
        each map's training cosmology, whose pixel mean and sigma place its V0/V1 thresholds
        (default: the first)."""
        k = kappa.float()
        if cosmology is None:
            cosmology = torch.zeros(len(k), dtype=torch.long, device=k.device)
        x = k.flatten(1)
        mean = x.mean(1, keepdim=True)
        dev = x - mean
        var = dev.square().mean(1)
        sigma = var.sqrt()
        skew = dev.pow(3).mean(1) / var.pow(1.5)
        # |grad kappa| by periodic central differences in pixel units, as the statistics take it
        gx = (k.roll(-1, 2) - k.roll(1, 2)) / 2
        gy = (k.roll(-1, 1) - k.roll(1, 1)) / 2
        grad = (gx.square() + gy.square() + 1e-30).sqrt().flatten(1)  # + 1e-30: sqrt's gradient finite where flat
        # V0 and V1 in each map's cosmology's pixel sigma about its mean: V1, a length, does not
        # depend on the unit (the kernel's unit area cancels |grad|'s scale)
        center, scale = self.centers[cosmology][:, None], self.scales[cosmology][:, None]
        v0, v1 = soft_excursions((x - center) / scale, grad / scale, self.thresholds_sigma, SOFTNESS_SIGMA)
        power = torch.fft.rfft2(k).abs().square()[:, self.keep]
        rings = torch.zeros(len(x), self.n_rings, device=x.device).index_add(1, self.ring, power) / self.ring_counts
        return torch.cat([mean, sigma[:, None], skew[:, None], v0, v1, torch.log(rings)], 1)

    def _standardise(self, s: torch.Tensor, cosmology: torch.Tensor | None = None) -> torch.Tensor:
        """Summaries (B, K) in units of their cosmology's (default: the first's) per-map spread
        about its mean."""
        c = 0 if cosmology is None else cosmology
        return (s - self.offsets[c]) / self.spreads[c]

    @staticmethod
    def _pair_mean(s: torch.Tensor) -> torch.Tensor:
        """E|S - S'| over distinct pairs of the rows of s (n, K), per column."""
        n = len(s)
        return (s[:, None, :] - s[None, :, :]).abs().sum((0, 1)) / (n * (n - 1))

    def standardised(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """The summaries (B, K) of generated maps (B, 1, N, N), as the generator makes them,
        in units of the per-map spread about the mean of the training maps of each one's
        cosmology (nearest its normalised params (B, P); one cosmology: the bank's)."""
        if len(fake) < 2:
            raise ValueError("per-map distribution term: needs a batch of at least 2 maps")
        c = self.cosmology_of(params, len(fake))
        return self._standardise(self.summaries(self.transform.inverse(fake[:, 0].float(), params), c), c)

    def distances(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """The energy distance per summary (K,) of generated maps (B, 1, N, N) from the bank
        (0 for a summary not used)."""
        return self._distances(self.standardised(fake, params))

    def spread_errors(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """(log(s_batch / s_bank))^2 per summary (K,) of generated maps (B, 1, N, N), s the
        standard deviation over maps (ddof 1), 0 for a summary not used. The energy distance
        barely sees a spread error: for two normals it is 0.019 (in the narrower's sigma)
        when one is 1.28x wider, as the quickstart's map means were (docs/training-notes.md,
        v1m5_s0), against 0.035 for a shift of 0.25 sigma that the criteria still pass; this
        part is 0.061 there and grows as the square of the log ratio. Over a batch of 64 its
        expectation for two samples of one model is ~0.01."""
        return self._spread_errors(self.standardised(fake, params))

    def correlation_errors(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """(z_batch - z_bank)^2 per pair of summaries (K, K) of generated maps (B, 1, N, N),
        z = atanh(r) Fisher's transform of r, the Pearson correlation over maps (0 on the
        diagonal and for a summary not used; ``pair_weight`` weighs them). Why z and not r:
        r's sampling variance, (1 - r^2)^2 / B, is 100x smaller at r = 0.99 than at 0, so in
        r the tightest couplings weighed least where they are best measured; z's is 1 / (B - 3)
        for every pair (for a batch of 64, 0.016), so each error reads in units of sampling
        noise. The quickstart's mean-sigma pair (0.66 against 0.99) is 3.5 in z, 0.11 in r
        (docs/training-notes.md, c2_s0). r is shrunk by 1 - R_SHRINK first so that |r| = 1
        has a finite z and gradient."""
        return self._correlation_errors(self.standardised(fake, params))

    @staticmethod
    def _correlation(x: torch.Tensor) -> torch.Tensor:
        """Pearson correlation matrix (K, K) of the columns of x (n, K); a column that does not
        vary gets correlation 0 (its variance floored, so the gradient stays finite)."""
        dev = x - x.mean(0)
        cov = dev.T @ dev / (len(x) - 1)
        sd = cov.diagonal().clamp(min=1e-12).sqrt()
        return cov / (sd[:, None] * sd[None, :])

    def _correlation_errors(self, x: torch.Tensor) -> torch.Tensor:
        err = (fisher_z(self._correlation(x)) - self.bank_z).square()
        return torch.where(self.pair_weight > 0, err, torch.zeros_like(err))

    def _cross(self, x: torch.Tensor) -> torch.Tensor:
        """E|X - Y| per summary (K,) over the batch's rows x (B, K) and the whole bank:
        mean_j |x - y_j| = (x (2 k - n) + sum_j y_j - 2 sum_{j<k} y_(j)) / n, k the number of
        bank values below x, by a binary search in the sorted bank. Its gradient in x is
        (k + k' - n) / n, k' the number not above x: the mean of sign(x - y_j), 0 at a tie as
        torch's |.| takes it. The (B, n, K) differences it replaces took ~1/3 of the term's
        time (docs/benchmarks.md)."""
        n = self.sorted_bank.shape[1]
        xt = x.T.contiguous()                                                    # (K, B)
        below = torch.searchsorted(self.sorted_bank, xt.detach())                # (K, B): k
        not_above = torch.searchsorted(self.sorted_bank, xt.detach(), right=True)  # k'
        rest = self.bank_prefix[:, -1:] - 2 * self.bank_prefix.gather(1, below)
        slope = (below + not_above - n).to(x.dtype)
        # value x (2 k - n) + rest, gradient the slope: the tie's share added without one
        per_value = xt * slope + xt.detach() * (below - not_above).to(x.dtype) + rest.to(x.dtype)
        return per_value.mean(1) / n

    def _distances(self, x: torch.Tensor) -> torch.Tensor:
        d = 2 * self._cross(x) - self._pair_mean(x) - self.bank_self
        return torch.where(self.used, d, torch.zeros_like(d))

    def _spread_errors(self, x: torch.Tensor) -> torch.Tensor:
        # log s = log(var) / 2 (the bank's standardised spread is 1); the variance, not the
        # standard deviation, so a summary the batch does not vary has a finite gradient
        var = torch.where(self.used, x.var(0), torch.ones_like(self.weight))
        return (torch.log(var) / 2).square()

    def __call__(self, fake: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        x = self.standardised(fake, params)  # once, for every part
        total = (self._distances(x) * self.weight).sum()
        if self.spread_weight > 0:
            total = total + self.spread_weight * (self._spread_errors(x) * self.weight).sum()
        if self.correlation_weight > 0:
            total = total + self.correlation_weight * (self._correlation_errors(x) * self.pair_weight).sum()
        return total

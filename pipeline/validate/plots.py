"""The validation report's figures: the reference (simulations) and the emulator (GAN) overlaid.

Every figure is a matplotlib ``Figure`` rendered by the Agg canvas (no pyplot, no
global state, no display needed) and saved as a PNG atomically. Conventions
shared by all figures:

* reference = simulated maps, solid blue; emulator = generated maps, dashed orange
  (Okabe-Ito colours, distinguishable in grey and by colour-blind readers);
* shaded bands are the mean +- the per-map standard deviation (the scatter of one
  map); error bars in the lower panels are the standard error of the difference of
  the means, sqrt(var_a / n_a + var_b / n_b), the uncertainty the verdicts face;
* lower panels show what the verdict judges: emulator / reference for the power
  spectrum, (emulator - reference) / max|reference| for the threshold statistics
  (V2 crosses zero and the others fall to zero in their tails, so a ratio is noise
  there); the verdict's threshold is drawn as dotted grey lines when given;
* units: ell in rad^-1, kappa dimensionless, thresholds as nu = kappa / sigma_kappa
  (sigma_kappa the reference's pooled pixel standard deviation) when the stats
  were binned in units of sigma.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.data.format import atomic_path

REF_COLOR = "#0072B2"
EMU_COLOR = "#D55E00"
REF_LABEL = "reference (simulations)"
EMU_LABEL = "emulator (GAN)"
DPI = 110
STYLE = {"font.size": 9.5, "axes.titlesize": 10.5, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
         "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "axes.grid": True, "grid.alpha": 0.3,
         "grid.linewidth": 0.6, "savefig.facecolor": "white", "figure.facecolor": "white"}


def save(fig: Figure, path: Path) -> Path:
    """Render with Agg and write the PNG atomically (no metadata naming a URL or version)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return path


def mean_std_se(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin mean, per-map standard deviation (ddof=1; 0 for one map) and error of the mean."""
    x = np.asarray(x, np.float64)
    n = len(x)
    mean = x.mean(0)
    std = x.std(0, ddof=1) if n > 1 else np.zeros_like(mean)
    return mean, std, std / np.sqrt(n)


def _band(ax, x, mean, std, color, label, dashed, floor=None):
    lower = mean - std if floor is None else np.maximum(mean - std, floor)
    ax.fill_between(x, lower, mean + std, color=color, alpha=0.22, linewidth=0)
    ax.plot(x, mean, color=color, linestyle="--" if dashed else "-", linewidth=1.6, label=label,
            marker="o" if len(x) <= 12 else None, markersize=3)


def _log_ell_axis(ax, which, edges):
    """A logarithmic ell axis labelled at 1-2-5 multipoles in plain numbers (no 2x10^2 clutter)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = float(np.min(edges)), float(np.max(edges))
    ticks = [m * 10 ** e for e in range(int(np.floor(np.log10(max(lo, 1e-3)))), int(np.ceil(np.log10(hi))) + 1)
             for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    if len(ticks) >= 2:
        axis.set_major_locator(ticker.FixedLocator(ticks))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def _log_spaced(edges) -> bool:
    """Edges evenly spaced in log ell (stats.ell_spacing = log): then each bin is one cell on a log axis."""
    edges = np.asarray(edges, float)
    if len(edges) < 3 or edges[0] <= 0:
        return False
    steps = np.diff(np.log(edges))
    return bool(np.allclose(steps, steps[0], rtol=1e-6))


def _threshold_lines(ax, centre: float, threshold: float | None):
    if threshold is not None and np.isfinite(threshold):
        for y in (centre - threshold, centre + threshold):
            ax.axhline(y, color="0.45", linestyle=":", linewidth=1.1)


def _two_panels(figsize=(6.4, 4.8)):
    fig = Figure(figsize=figsize, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (2.6, 1)})
    return fig, top, bottom


def sample_maps(ref: np.ndarray, emu: np.ndarray, side_angle_deg: float, path: Path) -> Path:
    """Up to 4 maps of each, side by side, on one colour scale (0.5 to 99.5 percentiles of all shown)."""
    k = max(len(ref), len(emu))
    shown = np.concatenate([ref.ravel(), emu.ravel()])
    vmin, vmax = np.percentile(shown, [0.5, 99.5])
    if not vmax > vmin:
        vmin, vmax = vmin - 1e-6, vmax + 1e-6
    h, w = (ref if len(ref) else emu).shape[1:]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(1.9 * k + 1.3, 4.5), layout="constrained")
        axes = np.atleast_2d(fig.subplots(2, k, squeeze=False))
        im = None
        for row, (maps, label, color) in enumerate(((ref, "reference", REF_COLOR), (emu, "emulator", EMU_COLOR))):
            for j in range(k):
                ax = axes[row, j]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if j < len(maps):
                    im = ax.imshow(maps[j], cmap="magma", vmin=vmin, vmax=vmax, origin="lower",
                                   interpolation="nearest")
                else:
                    ax.set_axis_off()
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(2)
            axes[row, 0].set_ylabel(label, color=color, fontsize=11, fontweight="bold")
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=0.9, label="convergence κ (dimensionless)")
        fig.suptitle(f"Sample maps: {h}×{w} pixels, {side_angle_deg:g}°×{side_angle_deg:g}° "
                     f"({60 * side_angle_deg / w:.2g} arcmin pixels), one colour scale")
        return save(fig, path)


def pixel_histogram(ref: np.ndarray, emu: np.ndarray, path: Path, thresholds=None) -> Path:
    """Histogram of all pixels of the sampled maps (density per unit kappa, log scale) and the ratio."""
    lo = float(min(ref.min(), emu.min()))
    hi = float(max(ref.max(), emu.max()))
    if not hi > lo:
        lo, hi = lo - 1e-6, hi + 1e-6
    edges = np.linspace(lo, hi, 81)
    centres = 0.5 * (edges[1:] + edges[:-1])
    width = np.diff(edges)
    ca, _ = np.histogram(ref, edges)
    cb, _ = np.histogram(emu, edges)
    da, db = ca / (ref.size * width), cb / (emu.size * width)
    with matplotlib.rc_context(STYLE):
        fig, top, bottom = _two_panels()
        top.step(centres, np.where(ca > 0, da, np.nan), where="mid", color=REF_COLOR, linewidth=1.6,
                 label=f"{REF_LABEL}, {len(ref)} maps")
        top.step(centres, np.where(cb > 0, db, np.nan), where="mid", color=EMU_COLOR, linewidth=1.6,
                 linestyle="--", label=f"{EMU_LABEL}, {len(emu)} maps")
        top.set_yscale("log")
        top.set_ylabel("pixel density (per unit κ)")
        top.set_title("One-point pixel distribution of the maps")
        if thresholds is not None:
            for t in (thresholds[0], thresholds[-1]):
                top.axvline(t, color="0.5", linewidth=0.8, linestyle="-.")
            top.plot([], [], color="0.5", linewidth=0.8, linestyle="-.", label="threshold range of the statistics")
        top.legend(loc="upper right")
        both = (ca >= 10) & (cb >= 10)  # fewer counts make a ratio that is all noise
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(both, db / da, np.nan)
            err = ratio * np.sqrt(1 / np.maximum(ca, 1) + 1 / np.maximum(cb, 1))
        bottom.errorbar(centres, ratio, yerr=err, fmt="o", color=EMU_COLOR, markersize=2.5, elinewidth=0.8)
        bottom.axhline(1, color=REF_COLOR, linewidth=1)
        finite = ratio[np.isfinite(ratio)]
        if finite.size:
            span = min(max(0.1, float(np.nanpercentile(np.abs(finite - 1), 95)) * 1.3), 2.0)
            bottom.set_ylim(max(0.0, 1 - span), 1 + span)
        bottom.set_ylabel("emulator /\nreference")
        bottom.set_xlabel("convergence κ (dimensionless)")
        bottom.set_xlim(top.get_xlim())
        return save(fig, path)


def power_spectrum(ell, l_edges, ps_ref, ps_emu, path: Path, threshold: float | None = None) -> Path:
    """ell(ell+1)C_ell/2pi with mean +- scatter bands; below, emulator/reference with the error of the mean."""
    ell = np.asarray(ell)
    scale = ell * (ell + 1) / (2 * np.pi)
    ma, sa, ea = mean_std_se(ps_ref * scale)
    mb, sb, eb = mean_std_se(ps_emu * scale)
    with matplotlib.rc_context(STYLE):
        fig, top, bottom = _two_panels()
        _band(top, ell, ma, sa, REF_COLOR, REF_LABEL, False)
        _band(top, ell, mb, sb, EMU_COLOR, EMU_LABEL, True)
        if l_edges[-1] / max(l_edges[0], 1e-300) >= 10:
            _log_ell_axis(top, "x", l_edges)
        if (ma > 0).all() and (mb > 0).all():
            top.set_yscale("log")
            # a band whose lower edge reaches zero (few modes per bin) runs off the bottom
            # rather than stretching the axis over decades
            lower = np.concatenate([ma - sa, mb - sb])
            floor = min(ma.min(), mb.min()) / 10
            top.set_ylim(max(lower[lower > 0].min(initial=floor), floor) * 0.8,
                         max((ma + sa).max(), (mb + sb).max()) * 1.5)
        top.set_ylabel("ℓ(ℓ+1) C$_ℓ$ / 2π  (dimensionless)")
        top.set_title("Convergence power spectrum (bands: ±1σ per map)")
        top.plot([], [], " ", label=f"{len(ps_ref)} reference, {len(ps_emu)} emulated maps")
        top.legend(loc="best")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ma != 0, mb / ma, np.nan)
            err = np.where(ma != 0, np.sqrt(ea ** 2 + eb ** 2) / np.abs(ma), np.nan)
        bottom.axhline(1, color=REF_COLOR, linewidth=1)
        bottom.fill_between(ell, 1 - err, 1 + err, color=REF_COLOR, alpha=0.18, linewidth=0,
                            label="error of the mean")
        bottom.plot(ell, ratio, color=EMU_COLOR, linestyle="--", marker="o", markersize=3, linewidth=1.4)
        _threshold_lines(bottom, 1.0, threshold)
        _auto_ylim(bottom, ratio - 1, err, threshold, centre=1.0)
        bottom.set_ylabel("emulator /\nreference")
        bottom.set_xlabel("multipole ℓ (rad$^{-1}$)")
        return save(fig, path)


def _auto_ylim(ax, dev, err, threshold, centre=0.0):
    vals = np.abs(np.concatenate([np.asarray(dev, float), np.asarray(err, float)]))
    vals = vals[np.isfinite(vals)]
    span = float(vals.max()) if vals.size else 0.0
    if threshold is not None and np.isfinite(threshold):
        span = max(span, threshold)
    span = max(span * 1.25, 1e-3)
    ax.set_ylim(centre - span, centre + span)


def threshold_statistic(nu, x_ref, x_emu, path: Path, *, title: str, ylabel: str, xlabel: str,
                        threshold: float | None = None, logy: bool = False) -> Path:
    """A statistic binned in threshold: mean +- scatter bands; below, difference over peak."""
    nu = np.asarray(nu)
    ma, sa, ea = mean_std_se(x_ref)
    mb, sb, eb = mean_std_se(x_emu)
    peak = float(np.abs(ma).max())
    peak = peak if peak > 0 else 1.0
    with matplotlib.rc_context(STYLE):
        fig, top, bottom = _two_panels()
        # counts, densities and area fractions cannot be negative: their bands stop at zero
        floor = 0.0 if (np.min(x_ref) >= 0 and np.min(x_emu) >= 0) else None
        _band(top, nu, ma, sa, REF_COLOR, REF_LABEL, False, floor)
        _band(top, nu, mb, sb, EMU_COLOR, EMU_LABEL, True, floor)
        if floor is not None and not logy:
            top.set_ylim(bottom=0)
        if logy and (ma > 0).any():
            top.set_yscale("log")
            positive = np.concatenate([ma[ma > 0], mb[mb > 0]])
            top.set_ylim(bottom=positive.min() * 0.5)
        if (ma < 0).any():
            top.axhline(0, color="0.3", linewidth=0.7)
        top.set_ylabel(ylabel)
        top.set_title(title)
        top.legend(loc="best")
        diff = (mb - ma) / peak
        err = np.sqrt(ea ** 2 + eb ** 2) / peak
        bottom.axhline(0, color=REF_COLOR, linewidth=1)
        bottom.fill_between(nu, -err, err, color=REF_COLOR, alpha=0.18, linewidth=0)
        bottom.plot(nu, diff, color=EMU_COLOR, linestyle="--", marker="o", markersize=2.5, linewidth=1.4)
        _threshold_lines(bottom, 0.0, threshold)
        _auto_ylim(bottom, diff, err, threshold)
        bottom.set_ylabel("(emu − ref)\n/ max|ref|")
        bottom.set_xlabel(xlabel)
        return save(fig, path)


def _corr(ps, n_bins: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        corr = np.corrcoef(np.asarray(ps, np.float64), rowvar=False) if len(ps) > 1 else \
            np.full((n_bins,) * 2, np.nan)
    return np.atleast_2d(corr)


def correlation_matrices(l_edges, ps_ref, ps_emu, path: Path) -> Path:
    """Pearson correlation of the power spectrum between ell bins, per-map scatter, side by
    side, and their difference (emulator - reference) on its own colour scale."""
    edges = np.asarray(l_edges)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(14, 4.4), layout="constrained")
        axes = fig.subplots(1, 3, sharey=True)
        mesh = None
        ra, rb = _corr(ps_ref, len(edges) - 1), _corr(ps_emu, len(edges) - 1)
        diff = np.ma.masked_invalid(rb - ra)
        span = max(0.05, float(np.abs(diff).max()) if diff.count() else 0.05)
        dmesh = axes[2].pcolormesh(edges, edges, diff, cmap="PuOr_r", vmin=-span, vmax=span)
        axes[2].set_title("emulator − reference")
        fig.colorbar(dmesh, ax=axes[2], shrink=0.9, label="Δ correlation coefficient")
        for ax in axes[2:]:
            ax.set_aspect("equal")
            ax.grid(False)
            if _log_spaced(edges):
                _log_ell_axis(ax, "x", edges)
            ax.set_xlabel("multipole ℓ (rad$^{-1}$)")
        for ax, corr, label, n in ((axes[0], ra, "reference (simulations)", len(ps_ref)),
                                   (axes[1], rb, "emulator (GAN)", len(ps_emu))):
            corr = np.ma.masked_invalid(corr)
            mesh = ax.pcolormesh(edges, edges, corr, cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_aspect("equal")
            ax.grid(False)
            if _log_spaced(edges):
                _log_ell_axis(ax, "x", edges)
                _log_ell_axis(ax, "y", edges)
            ax.set_title(f"{label}, {n} maps")
            ax.set_xlabel("multipole ℓ (rad$^{-1}$)")
        axes[0].set_ylabel("multipole ℓ (rad$^{-1}$)")
        fig.colorbar(mesh, ax=axes[:2], shrink=0.9, label="correlation coefficient of C$_ℓ$")
        fig.suptitle("Power-spectrum correlation matrices (between ℓ bins, over maps)")
        return save(fig, path)


def distributions(panels: list[dict], path: Path, bias_max: float | None, ratio_range: tuple | None) -> Path:
    """Per statistic, per bin: the bias of the mean in units of the reference's per-map
    standard deviation (top) and the ratio of per-map standard deviations (bottom), with
    the criteria (dotted) and, when given, the noise floor: the same measures for two
    samples of the simulations (grey). panels: dicts of title, x, xlabel, bias, ratio,
    judged (bool per bin: the ratio is judged there), floor_bias, floor_ratio, logx."""
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.6 * cols, 3.9 * rows), layout="constrained")
        grid = fig.subplots(2 * rows, cols, squeeze=False)
        for ax in grid.ravel()[2 * len(panels):]:
            ax.set_visible(False)
        for k, pnl in enumerate(panels):  # each statistic: its bias above its spread ratio
            top, bottom = grid[2 * (k // cols), k % cols], grid[2 * (k // cols) + 1, k % cols]
            x = np.asarray(pnl["x"], np.float64)
            for ax, key, centre, limit in ((top, "bias", 0.0, bias_max), (bottom, "ratio", 1.0, None)):
                y = np.array([np.nan if v is None else v for v in pnl[key]], np.float64)
                floor = pnl.get(f"floor_{key}")
                if floor is not None:
                    f = np.array([np.nan if v is None else v for v in floor], np.float64)
                    ax.plot(x, f, color="0.55", lw=1.2, marker=".", ms=3, label="two samples of the simulations")
                if key == "ratio":
                    judged = np.asarray(pnl["judged"], bool)
                    ax.plot(x, y, color=EMU_COLOR, lw=1.0, alpha=0.5)
                    ax.plot(x[judged], y[judged], color=EMU_COLOR, lw=0, marker="o", ms=3.5, label="emulator")
                    ax.plot(x[~judged], y[~judged], color=EMU_COLOR, lw=0, marker="o", ms=3.5, mfc="none",
                            label="emulator (not judged)" if (~judged).any() else None)
                    if ratio_range:
                        for v in ratio_range:
                            ax.axhline(v, color="0.3", ls=":", lw=1.1)
                    shown = y[judged & np.isfinite(y)]
                    if shown.size:  # the judged bins set the scale; an unjudged tail bin may sit at 0
                        lo = min(shown.min(), *(ratio_range or (1.0,)))
                        hi = max(shown.max(), *(ratio_range or (1.0,)))
                        pad = 0.08 * (hi - lo) + 0.01
                        ax.set_ylim(lo - pad, hi + pad)
                    ax.set_ylabel("σ$_{emu}$ / σ$_{ref}$ per map")
                else:
                    ax.plot(x, y, color=EMU_COLOR, lw=1.0, marker="o", ms=3.5, label="emulator")
                    if limit:
                        for v in (-limit, limit):
                            ax.axhline(v, color="0.3", ls=":", lw=1.1)
                    ax.set_ylabel("Δμ / σ$_{ref}$")
                    ax.set_title(pnl["title"])
                ax.axhline(centre, color="0.2", lw=0.7)
                if pnl.get("logx"):
                    ax.set_xscale("log")
            bottom.set_xlabel(pnl["xlabel"])
        grid[0, 0].legend(fontsize=7, loc="best")
        grid[1, 0].legend(fontsize=7, loc="best")
        fig.suptitle("Per-map distributions: bias of the mean in units of the scatter, and the ratio of the scatters")
        return save(fig, path)

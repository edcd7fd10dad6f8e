"""Matplotlib figures for :mod:`ebmppl.reporting` (no ArviZ here; ArviZ plots are in ebmppl.arviz).

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas: nothing touches pyplot,
the global backend or a display, so reports can be made in a notebook, a headless job or a
thread. Every function returns PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "figure_png",
    "new_figure",
    "plot_comparison",
    "plot_energy_factors",
    "plot_log_weights",
    "plot_replicas",
    "plot_schedule",
    "plot_step_stats",
    "plot_subsampling",
]

DPI = 80


def new_figure(width: float, height: float):
    """A matplotlib Figure with an Agg canvas (never shown, never registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi: int = DPI) -> bytes:
    """Render ``fig`` to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_schedule(betas: np.ndarray) -> bytes:
    """The annealing schedule: beta against step, linear and log scale."""
    betas = np.asarray(betas, dtype=np.float64)
    steps = np.arange(betas.size)
    fig = new_figure(9, 3)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, betas, ".-", ms=3)
    ax1.set(xlabel="step", ylabel="beta", title="schedule")
    pos = betas > 0
    if pos.any():
        ax2.semilogy(steps[pos], betas[pos], ".-", ms=3)
    ax2.set(xlabel="step", ylabel="beta (log scale)", title="schedule (log scale)")
    fig.tight_layout()
    return figure_png(fig)


def plot_step_stats(
    acceptance: np.ndarray,
    step_size: np.ndarray,
    ess: np.ndarray,
    num_particles: int,
    *,
    dropped: np.ndarray | None = None,
    resampled: np.ndarray | None = None,
    target_accept: float | None = None,
) -> bytes:
    """Per-step acceptance rate, step size and ESS (with dropped particles and resampling
    events where given)."""
    panels = 4 if dropped is not None else 3
    fig = new_figure(4.0 * panels, 3.2)
    axes = fig.subplots(1, panels)
    steps = np.arange(1, np.size(acceptance) + 1)
    axes[0].plot(steps, acceptance, lw=1)
    if target_accept is not None:
        axes[0].axhline(target_accept, color="gray", ls="--", lw=0.8, label="target")
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="step", ylabel="mean acceptance", title="acceptance rate", ylim=(0, 1.02))
    axes[1].semilogy(steps, step_size, lw=1)
    axes[1].set(xlabel="step", ylabel="step size", title="HMC step size")
    axes[2].plot(steps, ess, lw=1)
    axes[2].axhline(num_particles, color="gray", ls=":", lw=0.8)
    axes[2].set(xlabel="step", ylabel="ESS", title=f"weight ESS (N = {num_particles})")
    axes[2].set_ylim(0, num_particles * 1.05)
    if resampled is not None and np.size(resampled):
        for s in np.flatnonzero(resampled):
            axes[2].axvline(s + 1, color="C3", lw=0.6, alpha=0.6)
        axes[2].set_title(f"weight ESS (N = {num_particles}; red: resampling)")
    if dropped is not None:
        axes[3].step(steps, dropped, where="post")
        axes[3].set(xlabel="step", ylabel="particles", title="dropped particles (cumulative)")
    fig.tight_layout()
    return figure_png(fig)


def plot_log_weights(log_weights: np.ndarray, *, tail_size: int | None = None) -> bytes:
    """Histogram of the final log weights (relative to the largest), tail used by k-hat marked."""
    lw = np.asarray(log_weights, dtype=np.float64)
    finite = lw[np.isfinite(lw)]
    fig = new_figure(6, 3.2)
    ax = fig.subplots()
    if finite.size:
        rel = finite - finite.max()
        ax.hist(rel, bins=min(60, max(10, finite.size // 10)), color="C0", alpha=0.8)
        if tail_size and tail_size < finite.size:
            cut = np.sort(rel)[-tail_size - 1]
            ax.axvline(cut, color="C3", ls="--", lw=1, label=f"k-hat tail ({tail_size} largest)")
            ax.legend(fontsize=8)
    dropped = lw.size - finite.size
    title = "final log weights (minus max)"
    if dropped:
        title += f"; {dropped} dropped (weight 0)"
    ax.set(xlabel="log w - max log w", ylabel="particles", title=title)
    fig.tight_layout()
    return figure_png(fig)


def plot_subsampling(
    sizes: np.ndarray,
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    log_z: float,
    log_z_se: float,
) -> bytes:
    """log Z of random particle subsets against their size (mean and 5-95 % band)."""
    fig = new_figure(6, 3.4)
    ax = fig.subplots()
    ax.fill_between(sizes, lower, upper, alpha=0.25, color="C0", label="subsets: 5-95 %")
    ax.plot(sizes, mean, "o-", color="C0", ms=4, label="subsets: mean")
    if np.isfinite(log_z):
        ax.axhline(log_z, color="C3", lw=1, label="all particles")
        if np.isfinite(log_z_se):
            ax.axhspan(log_z - log_z_se, log_z + log_z_se, color="C3", alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="number of particles N", ylabel="log Z", title="log Z against N")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def plot_energy_factors(energies: Mapping[str, np.ndarray], max_factors: int = 6) -> bytes:
    """Per-factor energy traces, one panel per factor, one line per chain.

    ``energies`` maps factor names to arrays (chain, draw, ...); extra dimensions (plates)
    are summed.
    """
    names = list(energies)[:max_factors]
    fig = new_figure(10, 2.2 * len(names) + 0.4)
    axes = np.atleast_1d(fig.subplots(len(names), 1, squeeze=False)[:, 0])
    for ax, name in zip(axes, names, strict=True):
        arr = np.asarray(energies[name], dtype=np.float64)
        summed = arr.reshape(arr.shape[:2] + (-1,)).sum(-1)
        for c in range(summed.shape[0]):
            ax.plot(summed[c], lw=0.7, alpha=0.8, label=f"chain {c}")
        label = name if arr.ndim == 2 else f"{name} (sum of {int(np.prod(arr.shape[2:]))})"
        ax.set(ylabel="energy", title=f"energy factor {label}")
    axes[-1].set_xlabel("draw")
    if summed.shape[0] <= 8:
        axes[0].legend(fontsize=7, ncol=min(summed.shape[0], 4))
    fig.tight_layout()
    return figure_png(fig)


def plot_replicas(log_z: np.ndarray, log_z_se: np.ndarray | None = None) -> bytes:
    """log Z of independent replicas with their standard errors."""
    lz = np.asarray(log_z, dtype=np.float64)
    fig = new_figure(6, 3)
    ax = fig.subplots()
    idx = np.arange(lz.size)
    if log_z_se is not None:
        ax.errorbar(idx, lz, yerr=np.asarray(log_z_se, dtype=np.float64), fmt="o", ms=4)
    else:
        ax.plot(idx, lz, "o", ms=4)
    ax.axhline(np.mean(lz), color="gray", ls="--", lw=0.8)
    ax.set(xlabel="replica", ylabel="log Z", title="replica spread")
    fig.tight_layout()
    return figure_png(fig)


def plot_comparison(names: Sequence[str], log_z: np.ndarray, log_z_se: np.ndarray) -> bytes:
    """log Z (± 2 se) per model, best at the top."""
    fig = new_figure(6, 0.5 * len(names) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.errorbar(log_z, y, xerr=2 * np.nan_to_num(log_z_se), fmt="o", ms=5, capsize=3)
    ax.set_yticks(y, list(names))
    ax.set(xlabel="log Z (± 2 se)", title="model comparison")
    fig.tight_layout()
    return figure_png(fig)

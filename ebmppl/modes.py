"""Mode occupancy: do MCMC chains visit the modes that tempered particles find? (NumPy only)

R-hat compares chains with each other; chains that all sit in the same well agree perfectly
while missing the others. Tempered AIS/SMC particles (weighted) see every mode with its
mass, so comparing each chain's occupancy of the particles' modes catches what R-hat cannot.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import diagnostics

__all__ = ["ModeOccupancy", "ModeOccupancyWarning", "check_mode_occupancy", "find_modes"]


class ModeOccupancyWarning(UserWarning):
    """MCMC chains occupy the modes differently from the tempered reference."""


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 60):
    centres = [x[rng.integers(x.shape[0])]]
    for _ in range(1, k):  # k-means++ seeding
        d2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[rng.choice(x.shape[0], p=d2 / d2.sum())])
    c = np.array(centres)
    for _ in range(iters):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c, ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    d = np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))
    ks = np.unique(labels)
    if ks.size < 2:
        return -1.0
    a = np.array(
        [
            d[i, labels == labels[i]].sum() / max((labels == labels[i]).sum() - 1, 1)
            for i in range(x.shape[0])
        ]
    )
    b = np.min(
        [
            [d[i, labels == j].mean() if j != labels[i] else np.inf for j in ks]
            for i in range(x.shape[0])
        ],
        axis=1,
    )
    return float(np.mean((b - a) / np.maximum(a, b)))


def find_modes(
    particles: np.ndarray, log_weights: np.ndarray, *, max_modes: int = 6, seed: int = 0
) -> np.ndarray:
    """Centres (K, D) of the well-separated modes of weighted particles (N, D).

    Resamples the particles, standardises them, runs k-means for k = 2..max_modes and keeps
    the k with the best silhouette if it exceeds 0.6 (clearly separated clusters); else one
    mode. Returns centres in the original units.
    """
    x = np.asarray(particles, dtype=np.float64).reshape(len(particles), -1)
    rng = np.random.default_rng(seed)
    idx = diagnostics.resample_indices(log_weights, min(800, x.shape[0]), seed=seed)
    sample = x[idx]
    scale = sample.std(0) + 1e-12
    z = (sample - sample.mean(0)) / scale
    best, best_score = (sample.mean(0, keepdims=True), None), 0.6
    for k in range(2, max_modes + 1):
        c, labels = _kmeans(z, k, rng)
        if np.min(np.bincount(labels, minlength=k)) < 0.01 * z.shape[0]:
            continue
        score = _silhouette(z[:400], labels[:400])
        if score > best_score:
            best, best_score = (c * scale + sample.mean(0), score), score
    return best[0]


@dataclass(frozen=True)
class ModeOccupancy:
    """Occupancy of each mode by the reference particles and by each chain.

    Attributes:
        centres: (K, D) mode centres; reference_weights / reference_se: (K,) weighted mass of
        each mode in the particles and its MC error; chain_weights: (C, K) fraction of each
        chain's draws nearest each centre; disagree: any chain off by more than the tolerance.
    """

    centres: np.ndarray
    reference_weights: np.ndarray
    reference_se: np.ndarray
    chain_weights: np.ndarray
    disagree: bool
    message: str


def check_mode_occupancy(
    chain_draws: np.ndarray,
    particles: np.ndarray,
    log_weights: np.ndarray,
    *,
    tolerance: float = 0.1,
    warn: bool = True,
) -> ModeOccupancy:
    """Compare each MCMC chain's mode occupancy with weighted tempered particles.

    Args:
        chain_draws: (chains, draws, D) (or (chains, draws) for a scalar).
        particles, log_weights: AIS/SMC particles (N, D) and their log weights (N,), e.g.
            ``result.particles["x"], result.log_weights``.
        tolerance: allowed absolute occupancy difference (on top of 4.4 x the reference se).

    Emits :class:`ModeOccupancyWarning` when a chain disagrees (and ``warn`` is True).
    """
    draws = np.asarray(chain_draws, dtype=np.float64)
    if draws.ndim == 2:
        draws = draws[..., None]
    if draws.ndim != 3:
        raise ValueError(f"chain_draws must be (chains, draws, D), got shape {draws.shape}")
    parts = np.asarray(particles, dtype=np.float64).reshape(len(particles), -1)
    if parts.shape[1] != draws.shape[2]:
        raise ValueError(
            f"particles have {parts.shape[1]} dimensions but chain draws have {draws.shape[2]}"
        )
    centres = find_modes(parts, log_weights)
    k = centres.shape[0]

    def assign(x):
        return np.eye(k)[((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)]

    ref, ref_se = diagnostics.weighted_expectation(log_weights, assign(parts))
    chains = np.stack([assign(c).mean(0) for c in draws])
    diff = np.abs(chains - ref[None])
    bad = diff > tolerance + 4.4 * ref_se[None]
    disagree = bool(k > 1 and bad.any())
    if disagree:
        worst = int(np.argmax(diff.max(1)))
        msg = (
            f"MCMC chains disagree with the tempered particles on mode occupancy: "
            f"{k} modes with mass {np.round(ref, 3).tolist()} in the particles, but chain "
            f"{worst} has {np.round(chains[worst], 3).tolist()}. R-hat cannot see a mode that "
            "no chain visits; use AIS/SMC particles (resampled) for posterior summaries, or "
            "tempered transitions"
        )
        if warn:
            warnings.warn(msg, ModeOccupancyWarning, stacklevel=2)
    else:
        msg = f"{k} mode(s); every chain's occupancy matches the particles within tolerance"
    return ModeOccupancy(centres, ref, ref_se, chains, disagree, msg)

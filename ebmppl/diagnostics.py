"""Importance-weight diagnostics shared by both backends (NumPy/SciPy only).

Conventions: ``log_weights`` are unnormalised log importance weights of shape
(num_particles,); non-finite entries (``-inf``) are particles with zero weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "combine_log_z",
    "log_mean_exp",
    "log_z_from_weights",
    "normalized_weights",
    "pareto_khat",
    "resample_indices",
    "weight_ess",
    "weighted_expectation",
]


def _as_log_weights(log_weights) -> np.ndarray:
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 1 or lw.size == 0:
        raise ValueError(f"log_weights must be a non-empty 1-D array, got shape {lw.shape}")
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log_weights contain NaN or +inf; drop or repair those particles first")
    return lw


def log_mean_exp(log_weights) -> float:
    """Return log(mean(exp(log_weights))), computed stably (-inf if every weight is zero)."""
    lw = _as_log_weights(log_weights)
    return float(logsumexp(lw) - np.log(lw.size))


def normalized_weights(log_weights) -> np.ndarray:
    """Return the self-normalised weights exp(lw) / sum(exp(lw)), shape (num_particles,)."""
    lw = _as_log_weights(log_weights)
    if not np.any(np.isfinite(lw)):
        raise ValueError("every particle has zero weight; nothing to normalise")
    w = np.exp(lw - np.max(lw))
    return w / np.sum(w)


def weight_ess(log_weights) -> float:
    """Return Kish's effective sample size 1 / sum(w_i^2) of the normalised weights."""
    w = normalized_weights(log_weights)
    return float(1.0 / np.sum(w**2))


def log_z_from_weights(log_weights) -> tuple[float, float]:
    """Return ``(log_z, log_z_se)`` from AIS/IS log weights.

    ``log_z = log mean(w)`` is the log of an unbiased estimate of Z; it is biased low by
    about ``log_z_se**2 / 2`` (Jensen). The standard error is the delta-method one,
    ``sqrt(1/ESS - 1/N)``: the relative standard error of the estimate of Z.
    """
    lw = _as_log_weights(log_weights)
    n = lw.size
    log_z = log_mean_exp(lw)
    if not np.isfinite(log_z):
        return log_z, float("nan")
    # 1/ESS - 1/N == sum_i (w_i - 1/N)^2 for normalised w; this form is exactly 0 for
    # equal weights instead of a round-off residue.
    w = normalized_weights(lw)
    return log_z, float(np.sqrt(np.sum((w - 1.0 / n) ** 2)))


def _gpd_fit(tail: np.ndarray) -> float:
    """Zhang & Stephens (2009) empirical-Bayes estimate of the generalised Pareto shape k.

    ``tail`` holds sorted positive exceedances. Includes the weakly informative prior
    on k used by PSIS (Vehtari et al. 2024): k <- (n k + 10 * 0.5) / (n + 10).
    """
    n = tail.size
    m = 30 + int(np.sqrt(n))
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1, dtype=np.float64) - 0.5))
    theta /= 3.0 * tail[int(n / 4 + 0.5) - 1]
    theta += 1.0 / tail[-1]
    k = np.mean(np.log1p(-theta[:, None] * tail), axis=1)
    log_lik = n * (np.log(-theta / k) - k - 1.0)
    post = 1.0 / np.sum(np.exp(log_lik - log_lik[:, None]), axis=1)
    keep = post >= 10 * np.finfo(np.float64).eps
    post, theta = post[keep], theta[keep]
    post /= post.sum()
    theta_hat = np.sum(theta * post)
    k_hat = np.mean(np.log1p(-theta_hat * tail))
    return float((n * k_hat + 10 * 0.5) / (n + 10))


def pareto_khat(log_weights) -> float:
    """Return the Pareto k-hat of the upper tail of the importance weights (PSIS diagnostic).

    Tail length ``ceil(min(0.2 N, 3 sqrt(N)))``, as in PSIS. Rough guide: k-hat < 0.5 good,
    0.5-0.7 usable, > 0.7 the estimate of Z cannot be trusted. Returns ``inf`` when the tail
    has too few finite weights to fit (N tiny or almost all weights zero).
    """
    lw = _as_log_weights(log_weights)
    lw = lw - np.max(lw)
    n = lw.size
    tail_len = int(np.ceil(min(0.2 * n, 3.0 * np.sqrt(n))))
    order = np.sort(lw)
    cutoff = max(order[-tail_len - 1] if tail_len < n else -np.inf, np.log(np.finfo(float).tiny))
    tail = np.sort(lw[lw > cutoff])
    if tail.size <= 4:
        return float("inf")
    exceed = np.exp(tail) - np.exp(cutoff)
    return _gpd_fit(exceed)


def weighted_expectation(log_weights, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Self-normalised importance estimate of E[f] and its Monte Carlo standard error.

    Args:
        log_weights: shape (N,).
        values: f evaluated per particle, shape (N, ...).

    Returns:
        ``(mean, se)`` of shape ``values.shape[1:]``; ``se**2 = sum_i w_i^2 (f_i - mean)^2``
        (delta method for the ratio estimator).
    """
    w = normalized_weights(log_weights)
    vals = np.asarray(values, dtype=np.float64)
    if vals.shape[:1] != w.shape:
        raise ValueError(
            f"values must have the particle axis first: expected leading dim {w.size}, "
            f"got shape {vals.shape}"
        )
    wb = w.reshape((-1,) + (1,) * (vals.ndim - 1))
    live = wb > 0
    mean = np.sum(np.where(live, wb * vals, 0.0), axis=0)
    var = np.sum(np.where(live, wb**2 * (vals - mean) ** 2, 0.0), axis=0)
    return mean, np.sqrt(var)


def resample_indices(
    log_weights, num: int | None = None, *, method: str = "systematic", seed=None
) -> np.ndarray:
    """Draw ``num`` particle indices with probabilities proportional to the weights.

    ``method`` is ``"systematic"`` (lower variance) or ``"multinomial"``. Returns int array (num,).
    """
    w = normalized_weights(log_weights)
    num = w.size if num is None else int(num)
    if num < 1:
        raise ValueError(f"num must be a positive integer, got {num}")
    rng = np.random.default_rng(seed)
    if method == "multinomial":
        return rng.choice(w.size, size=num, p=w)
    if method != "systematic":
        raise ValueError(f"unknown resampling method {method!r}; use 'systematic' or 'multinomial'")
    positions = (rng.uniform() + np.arange(num)) / num
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, positions, side="right").clip(0, w.size - 1)


def combine_log_z(
    log_z: np.ndarray, log_z_se: np.ndarray | None = None, num_particles=None
) -> tuple[float, float]:
    """Pool independent log Z estimates (replicas, devices, processes) into one.

    With ``num_particles`` given (one per estimate) the pooled Z is the particle-weighted mean
    of the Z estimates (what one big run would have given); otherwise the plain mean. The
    standard error is that of log of the pooled mean, propagated from the per-estimate
    ``log_z_se`` when given, or from the spread of the estimates (needs >= 2).
    Returns ``(log_z, log_z_se)``.
    """
    lz = np.atleast_1d(np.asarray(log_z, dtype=np.float64))
    if lz.ndim != 1 or lz.size == 0 or not np.all(np.isfinite(lz)):
        raise ValueError(f"log_z must be a non-empty 1-D array of finite values, got {lz}")
    if num_particles is None:
        weights = np.full(lz.size, 1.0 / lz.size)
    else:
        npart = np.asarray(num_particles, dtype=np.float64)
        if npart.shape != lz.shape or np.any(npart <= 0):
            raise ValueError("num_particles must be positive, one per log_z estimate")
        weights = npart / npart.sum()
    pooled = float(logsumexp(lz, b=weights))
    rel = np.exp(lz - pooled) * weights
    if log_z_se is not None:
        se = np.asarray(log_z_se, dtype=np.float64)
        if se.shape != lz.shape:
            raise ValueError("log_z_se must have one entry per log_z estimate")
        return pooled, float(np.sqrt(np.sum((rel * se) ** 2)))
    if lz.size < 2:
        raise ValueError("need log_z_se or at least two estimates to get a standard error")
    z_rel = np.exp(lz - pooled)
    var = np.sum(weights**2 * (z_rel - 1.0) ** 2) * lz.size / (lz.size - 1)
    return pooled, float(np.sqrt(var))


def apply_to_particles(
    fn: Callable[[Mapping[str, np.ndarray]], np.ndarray], particles: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Evaluate ``fn`` on the dict of particle arrays (each (N, ...)); result must be (N, ...)."""
    out = np.asarray(fn(particles), dtype=np.float64)
    n = next(iter(particles.values())).shape[0]
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(
            f"fn must return one value per particle (leading dim {n}), got shape {out.shape}; "
            "write it vectorised over the particle axis, e.g. lambda p: p['x'][:, 0]"
        )
    return out

"""The partition-function result object, identical for both backends (NumPy only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from . import diagnostics

__all__ = ["AISResult", "BDMCResult"]


def _frozen_array(x) -> np.ndarray:
    arr = np.array(x, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, repr=False, eq=False)
class AISResult:
    """Outcome of an annealed importance sampling run (either backend).

    ``exp(log_z)`` is an unbiased estimate of Z, the normalising constant of the whole
    unnormalised model (prior x every energy factor, factor and observed likelihood).
    ``log_z`` itself is biased low by about ``log_z_se**2 / 2``. ``log_z_se`` is the
    delta-method standard error ``sqrt(1/ESS - 1/N)`` from the final weights; it is only
    as good as the weights: check ``ess`` and ``pareto_khat`` (> 0.7: do not trust it).

    Attributes:
        log_z, log_z_se: the estimate and its standard error.
        log_weights: final log importance weights, shape (num_particles,); ``-inf`` marks a
            particle that was dropped (non-finite energy).
        betas: the schedule, shape (num_steps + 1,).
        ess: Kish effective sample size of the final weights.
        pareto_khat: Pareto k-hat of the final weights.
        particles: final particles per latent site, constrained space, each (num_particles, ...).
        acceptance_rate, step_size, ess_trace: per-step statistics, shape (num_steps,).
        num_dropped: number of particles whose weight became non-finite.
        gradient_evaluations: potential-and-gradient evaluations per particle.
        backend: ``"numpyro"`` or ``"pyro"``.
        info: other run metadata (schedule name, options, wall time).
    """

    log_z: float
    log_z_se: float
    log_weights: np.ndarray
    betas: np.ndarray
    particles: Mapping[str, np.ndarray]
    acceptance_rate: np.ndarray
    step_size: np.ndarray
    ess_trace: np.ndarray
    backend: str
    gradient_evaluations: int = 0
    num_dropped: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)
    ess: float = field(init=False)
    pareto_khat: float = field(init=False)

    def __post_init__(self):
        set_ = object.__setattr__
        lw = np.asarray(self.log_weights, dtype=np.float64)
        set_(self, "log_weights", _frozen_array(lw))
        for name in ("betas", "acceptance_rate", "step_size", "ess_trace"):
            set_(self, name, _frozen_array(np.asarray(getattr(self, name), dtype=np.float64)))
        set_(
            self,
            "particles",
            MappingProxyType({k: _frozen_array(v) for k, v in dict(self.particles).items()}),
        )
        set_(self, "info", MappingProxyType(dict(self.info)))
        set_(self, "log_z", float(self.log_z))
        set_(self, "log_z_se", float(self.log_z_se))
        finite = np.isfinite(lw)
        set_(self, "ess", diagnostics.weight_ess(lw) if finite.any() else 0.0)
        set_(self, "pareto_khat", diagnostics.pareto_khat(lw) if finite.any() else float("inf"))

    @classmethod
    def from_log_weights(cls, log_weights, **kwargs) -> AISResult:
        """Build a result, computing ``log_z`` and ``log_z_se`` from ``log_weights``."""
        log_z, log_z_se = diagnostics.log_z_from_weights(log_weights)
        return cls(log_z=log_z, log_z_se=log_z_se, log_weights=log_weights, **kwargs)

    @property
    def num_particles(self) -> int:
        return int(self.log_weights.size)

    @property
    def num_steps(self) -> int:
        return int(self.betas.size - 1)

    @property
    def normalized_weights(self) -> np.ndarray:
        """Self-normalised weights, shape (num_particles,)."""
        return diagnostics.normalized_weights(self.log_weights)

    def expectation(
        self, fn: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Estimate E_target[fn] from the weighted particles.

        ``fn`` maps the particle dict (each array (N, ...)) to values (N, ...). Returns
        ``(mean, se)``: the self-normalised estimate and its Monte Carlo standard error (for
        SMC runs with replicas, from the spread of the per-replica estimates).
        """
        values = diagnostics.apply_to_particles(fn, self.particles)
        mean, se = diagnostics.weighted_expectation(self.log_weights, values)
        replicas = int(self.info.get("num_replicas", 1) or 1)
        if replicas >= 2 and self.info.get("se_method") == "replicas":
            # Resampled particles are not independent: take the error from the replicas.
            lw = self.log_weights.reshape(replicas, -1)
            vals = values.reshape((replicas, -1) + values.shape[1:])
            per = np.stack(
                [diagnostics.weighted_expectation(w, v)[0] for w, v in zip(lw, vals, strict=True)]
            )
            se = per.std(axis=0, ddof=1) / np.sqrt(replicas)
        return mean, se

    def resample(
        self, num: int | None = None, *, method: str = "systematic", seed=None
    ) -> dict[str, np.ndarray]:
        """Return ``num`` equally weighted draws per site, resampled from the particles."""
        idx = diagnostics.resample_indices(self.log_weights, num, method=method, seed=seed)
        return {k: np.asarray(v)[idx] for k, v in self.particles.items()}

    def to_arviz(self):
        """Convert to ArviZ ``InferenceData`` (see :func:`ebmppl.to_arviz`)."""
        from .arviz import to_arviz

        return to_arviz(self)

    def summary_line(self) -> str:
        return (
            f"log Z = {self.log_z:.4g} ± {self.log_z_se:.2g} "
            f"(ESS {self.ess:.0f}/{self.num_particles}, k-hat {self.pareto_khat:.2f})"
        )

    def __repr__(self) -> str:
        extra = f", {self.num_dropped} dropped" if self.num_dropped else ""
        return (
            f"AISResult({self.summary_line()}, {self.num_steps} steps, "
            f"backend={self.backend}{extra})"
        )


@dataclass(frozen=True)
class BDMCResult:
    """A bidirectional Monte Carlo sandwich of log Z.

    ``lower`` is forward AIS: E[log Z_lower] <= log Z. ``upper`` is reverse AIS from exact
    target draws: E[log Z_upper] >= log Z. Both are stochastic bounds (each has a standard
    error); the gap shrinks to 0 as the annealing gets slower, so it bounds the error of
    either estimate on problems like this one (e.g. simulated data).
    """

    lower: AISResult
    upper: AISResult

    @property
    def log_z_lower(self) -> float:
        return self.lower.log_z

    @property
    def log_z_upper(self) -> float:
        return self.upper.log_z

    @property
    def gap(self) -> float:
        return self.upper.log_z - self.lower.log_z

    def __repr__(self) -> str:
        return (
            f"BDMCResult(log Z in [{self.log_z_lower:.4g} ± {self.lower.log_z_se:.2g}, "
            f"{self.log_z_upper:.4g} ± {self.upper.log_z_se:.2g}], gap {self.gap:.3g})"
        )

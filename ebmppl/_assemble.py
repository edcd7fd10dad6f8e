"""Backend-neutral assembly of SMC and BDMC results from per-step arrays (NumPy only).

Both backends run the sampler on their own device and hand the final weights and per-step
statistics here as NumPy arrays, so the result (estimate, standard error, ``info`` keys) is
computed by the same code whichever backend produced it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import diagnostics
from ._options import SMCOptions
from ._runs import DriveOutput, RunControl, drive, dropped_summary, segment_length
from .results import AISResult, BDMCResult

__all__ = [
    "ais_result",
    "bdmc_result",
    "check_not_all_dropped",
    "combine_smc_results",
    "describe_sites",
    "run_ais",
    "run_identity",
    "run_info",
    "run_replica_batches",
    "smc_result",
]


def smc_result(
    opts: SMCOptions,
    pot,
    log_weights: np.ndarray,
    steps: Mapping[str, np.ndarray],
    particles: Mapping[str, np.ndarray],
    *,
    backend: str,
    start: float,
    extra_info: Mapping[str, Any] | None = None,
    stacklevel: int = 3,
) -> AISResult:
    """Build the :class:`~ebmppl.AISResult` of a tempered SMC run with R replicas of N particles.

    Args:
        opts: the run's options.
        pot: the backend's model potential (for ``reference_kind``, ``energy_names``,
            ``observed_names`` and ``latent``).
        log_weights: final log weights, shape (R, N).
        steps: per-step statistics, each (R, T) over the T loop steps run: ``beta`` (reached
            at the step), ``acceptance_rate``, ``step_size`` (used at the step), ``ess``,
            ``resampled`` (bool) and ``active`` (False once the replica had reached beta = 1).
        particles: final particles per site, each (R * N, ...).
        backend: ``"numpyro"`` or ``"pyro"``.
        start: ``time.perf_counter()`` at the start of the run (for ``wall_time``).
        extra_info: backend-specific entries added to ``info``.

    Warns (at ``stacklevel``: the user's call) when one replica of an adaptive or
    resampling run has to report the weight-based standard error, which understates the error.
    """
    base = opts.base
    r, n = opts.num_replicas, base.num_particles
    log_w = np.asarray(log_weights, dtype=np.float64).reshape(r, n)
    active = np.asarray(steps["active"], dtype=bool)
    num_steps = active.sum(1)
    if np.all(~np.isfinite(log_w)):
        raise RuntimeError(
            "every particle of every replica got zero weight: the energy sites "
            f"{pot.energy_names} or observed sites {pot.observed_names} returned "
            "non-finite values. Check the energy for NaN/inf"
        )
    replica_lz = np.array([diagnostics.log_mean_exp(lw) for lw in log_w])
    replica_se = np.array([diagnostics.log_z_from_weights(lw)[1] for lw in log_w])
    exact_weights = not opts.adaptive and opts.resampling is None
    if r >= 2:
        log_z, log_z_se = diagnostics.combine_log_z(replica_lz)
        se_method = "replicas"
    else:
        log_z, log_z_se = replica_lz[0], replica_se[0]
        se_method = "weights"
        if not exact_weights:
            warnings.warn(
                "with one replica, the standard error of an SMC/adaptive run comes from "
                "the final weights and understates the error; use num_replicas >= 2",
                RuntimeWarning,
                stacklevel=stacklevel,
            )
    beta = np.asarray(steps["beta"], dtype=np.float64)
    betas = np.full((r, active.shape[1] + 1), np.nan)
    betas[:, 0] = 0.0
    betas[:, 1:] = np.where(active, beta, np.nan)

    def first(name):
        return np.asarray(steps[name][0][: num_steps[0]], dtype=np.float64)

    evals = float(np.mean(num_steps) * (1 + base.num_mcmc_steps * base.num_leapfrog_steps))
    resampled = np.where(active, np.asarray(steps["resampled"], dtype=bool), False)
    return AISResult(
        log_z=log_z,
        log_z_se=log_z_se,
        log_weights=log_w.reshape(-1),
        betas=np.concatenate([[0.0], first("beta")]),
        particles=particles,
        acceptance_rate=first("acceptance_rate"),
        step_size=first("step_size"),
        ess_trace=first("ess"),
        backend=backend,
        gradient_evaluations=round(evals),
        num_dropped=int(np.sum(~np.isfinite(log_w))),
        info={
            **opts.describe(),
            "method": "smc",
            "se_method": se_method,
            "reference": pot.reference_kind,
            "energy_sites": tuple(pot.energy_names),
            "observed_sites": tuple(pot.observed_names),
            "latent_sites": tuple(pot.latent),
            "replica_log_z": replica_lz,
            "replica_log_z_se": replica_se,
            "num_steps_per_replica": num_steps.astype(np.int64),
            "betas_per_replica": betas,
            "resampled": resampled[0][: num_steps[0]],
            "num_resampling_events": resampled.sum(1).astype(np.int64),
            "acceptance_rate_per_replica": np.where(
                active, np.asarray(steps["acceptance_rate"], np.float64), np.nan
            ),
            "wall_time": time.perf_counter() - start,
            **(extra_info or {}),
        },
    )


def bdmc_result(lower: AISResult, upper: AISResult) -> BDMCResult:
    """Pair forward AIS (``lower``) with reverse AIS (``upper``) into a :class:`BDMCResult`.

    The forward result's ``info`` also gets ``log_z_upper``, ``log_z_upper_se`` and
    ``bdmc_gap`` (upper minus lower log Z).
    """
    lower = dataclasses.replace(
        lower,
        info={
            **lower.info,
            "log_z_upper": upper.log_z,
            "log_z_upper_se": upper.log_z_se,
            "bdmc_gap": upper.log_z - lower.log_z,
        },
    )
    return BDMCResult(lower=lower, upper=upper)


def check_not_all_dropped(pot, log_weights: np.ndarray, num_dropped_per_step, betas) -> int:
    """Return the number of dropped particles; raise when every particle was dropped."""
    n = log_weights.size
    num_dropped = int(np.sum(~np.isfinite(log_weights)))
    if num_dropped == n:
        first = int(np.argmax(np.asarray(num_dropped_per_step) >= n))
        raise RuntimeError(
            f"every particle's weight became zero by step {first} "
            f"(beta={betas[first + 1]:.4g}): the energy sites {pot.energy_names} or observed "
            f"sites {pot.observed_names} returned non-finite values there. "
            "Check the energy for NaN/inf"
        )
    return num_dropped


def ais_result(
    opts,
    pot,
    log_weights: np.ndarray,
    betas: np.ndarray,
    particles: Mapping[str, np.ndarray],
    info,
    *,
    backend: str,
    reverse: bool,
    pilot: bool,
    start: float,
    num_batches: int = 1,
    extra_info: Mapping[str, Any] | None = None,
) -> AISResult:
    """Build the :class:`~ebmppl.AISResult` of a forward or reverse AIS run (either backend).

    ``info`` holds per-step arrays (num_steps,): ``acceptance_rate``, ``step_size``, ``ess``,
    ``num_dropped`` (over all ``num_batches`` batches, whose particles are all in
    ``log_weights``; ``gradient_evaluations`` per particle then spreads the pilot over them). For a reverse run the weights estimate 1/Z, so ``log_z`` is
    ``-log mean(w)`` (a stochastic upper bound) with the same delta-method standard error.
    """
    log_w = np.asarray(log_weights, dtype=np.float64)
    num_dropped = check_not_all_dropped(pot, log_w, info.num_dropped, betas)
    num_steps = betas.size - 1
    evals = num_steps * (1 + opts.num_mcmc_steps * opts.num_leapfrog_steps)
    if reverse:
        log_w_inv, se = diagnostics.log_z_from_weights(log_w)
        make, fields = AISResult, {"log_z": -log_w_inv, "log_z_se": se}
    else:
        make, fields = AISResult.from_log_weights, {}
    return make(
        log_weights=log_w,
        **fields,
        betas=betas,
        particles=particles,
        acceptance_rate=np.asarray(info.acceptance_rate),
        step_size=np.asarray(info.step_size),
        ess_trace=np.asarray(info.ess),
        backend=backend,
        gradient_evaluations=round(evals * (num_batches + int(pilot)) / num_batches),
        num_dropped=num_dropped,
        info={
            **opts.describe(),
            "reference": pot.reference_kind,
            "energy_sites": tuple(pot.energy_names),
            "observed_sites": tuple(pot.observed_names),
            "latent_sites": tuple(pot.latent),
            "num_dropped_per_step": np.asarray(info.num_dropped),
            "pilot_gradient_evaluations": evals if pilot else 0,
            "wall_time": time.perf_counter() - start,
            "direction": "reverse" if reverse else "forward",
            **(extra_info or {}),
        },
    )


def describe_sites(pot, sites: list[str]) -> str:
    """Name the sites found non-finite (for error messages)."""
    energies = [s for s in sites if s in pot.energy_names]
    others = [s for s in sites if s not in pot.energy_names]
    parts = [f"energy site '{s}'" for s in energies]
    if others:
        parts.append(f"observed/factor sites {others}")
    if not parts:
        return (
            f"no single site (the summed log density of {pot.observed_names + pot.energy_names} "
            "was NaN or inf)"
        )
    return ", ".join(parts)


def run_identity(backend: str, model, opts, pot, betas, reverse: bool) -> dict[str, Any]:
    """What must agree between a checkpoint and the run resuming from it."""
    options = opts.describe()
    options.pop("chunk_size", None)  # memory only: a resumed run may use another chunk size
    return {
        "backend": backend,
        "model": getattr(model, "__qualname__", type(model).__name__),
        "options": options,
        "betas": np.asarray(betas, np.float64).tobytes().hex(),
        "latent": tuple(pot.latent),
        "dim": int(pot.dim),
        "reverse": reverse,
    }


def run_info(out: DriveOutput, control: RunControl, betas, info) -> dict[str, Any]:
    """``info`` entries describing batches, stopping, checkpoints and dropped particles."""
    return {
        "stopped_by": out.stopped_by,
        "num_batches": len(out.batches),
        "target_se": control.target_se,
        "max_time": control.max_time,
        "checkpoint": control.checkpoint,
        "resumed_from_step": out.resumed_from,
        **dropped_summary(info.num_dropped, betas),
    }


def _pad_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack (R_i, T_i) arrays into (sum R_i, max T_i), padding with NaN."""
    width = max(a.shape[1] for a in arrays)
    out = []
    for a in arrays:
        pad = np.full((a.shape[0], width - a.shape[1]), np.nan)
        out.append(np.concatenate([np.asarray(a, np.float64), pad], axis=1))
    return np.concatenate(out)


def combine_smc_results(results: list[AISResult]) -> AISResult:
    """Pool SMC runs of independent replicas into one result with all their replicas.

    log Z and its standard error come from all replicas (:func:`diagnostics.combine_log_z`);
    per-replica ``info`` arrays are concatenated (padded with NaN to the longest schedule);
    the first run's first replica gives the per-step arrays.
    """
    if len(results) == 1:
        return results[0]
    first = results[0]
    replica_lz = np.concatenate([r.info["replica_log_z"] for r in results])
    log_z, log_z_se = diagnostics.combine_log_z(replica_lz)
    replicas = int(replica_lz.size)
    particles = {k: np.concatenate([r.particles[k] for r in results]) for k in first.particles}
    per_replica = {
        "replica_log_z": replica_lz,
        "replica_log_z_se": np.concatenate([r.info["replica_log_z_se"] for r in results]),
        "num_steps_per_replica": np.concatenate([r.info["num_steps_per_replica"] for r in results]),
        "num_resampling_events": np.concatenate([r.info["num_resampling_events"] for r in results]),
        "betas_per_replica": _pad_rows([r.info["betas_per_replica"] for r in results]),
        "acceptance_rate_per_replica": _pad_rows(
            [r.info["acceptance_rate_per_replica"] for r in results]
        ),
    }
    if all("num_leapfrog_per_replica" in r.info for r in results):
        leap = _pad_rows([r.info["num_leapfrog_per_replica"] for r in results])
        per_replica["num_leapfrog_per_replica"] = leap
        per_replica["mean_num_leapfrog"] = float(np.nanmean(leap))
    evals = np.array([r.gradient_evaluations for r in results], np.float64)
    sizes = np.array([r.num_particles for r in results], np.float64)
    return dataclasses.replace(
        first,
        log_z=log_z,
        log_z_se=log_z_se,
        log_weights=np.concatenate([r.log_weights for r in results]),
        particles=particles,
        gradient_evaluations=round(float(np.sum(evals * sizes) / sizes.sum())),
        num_dropped=sum(r.num_dropped for r in results),
        info={
            **first.info,
            **per_replica,
            "num_replicas": replicas,
            "se_method": "replicas",
            "num_batches": len(results),
            "wall_time": sum(r.info["wall_time"] for r in results),
        },
    )


def run_replica_batches(run_batch, control: RunControl) -> AISResult:
    """Run SMC batches ``run_batch(b)`` (b = 0, 1, ...; each returns an SMC result with its own
    replicas) until ``control``'s standard-error target, time budget (no batch starts that would
    end after it) or batch cap is reached; pool them with :func:`combine_smc_results`.

    The result's ``info`` gets ``stopped_by``, ``num_batches``, ``target_se`` and ``max_time``.
    """
    start = time.perf_counter()
    results: list[AISResult] = []
    stopped_by = "num_replicas"
    while True:
        results.append(run_batch(len(results)))
        per_batch = (time.perf_counter() - start) / len(results)
        if not control.batched:
            break
        pooled = combine_smc_results(results)
        if control.target_se is not None and pooled.log_z_se <= control.target_se:
            stopped_by = "target_se"
            break
        elapsed = time.perf_counter() - start
        if control.max_time is not None and elapsed + per_batch > control.max_time:
            stopped_by = "max_time"
            break
        if len(results) >= control.max_batches:
            stopped_by = "max_batches"
            break
    pooled = combine_smc_results(results)
    return dataclasses.replace(
        pooled,
        info={
            **pooled.info,
            "stopped_by": stopped_by,
            "num_batches": len(results),
            "target_se": control.target_se,
            "max_time": control.max_time,
        },
    )


def run_ais(
    *,
    make_engine: Callable[[np.ndarray, int], Any],
    opts,
    pot,
    model,
    control: RunControl,
    reverse: bool,
    backend: str,
    start: float,
    extra_info: Mapping[str, Any],
) -> AISResult:
    """The AIS run of either backend: schedule, segments, :func:`drive`, checks, result.

    ``make_engine(betas, segment)`` builds the backend's :class:`~ebmppl._runs.Engine`.
    """
    betas = opts.betas[::-1].copy() if reverse else opts.betas
    num_steps = betas.size - 1
    progress = opts.progress if opts.progress is not None else sys.stderr.isatty()
    segment = segment_length(control, num_steps, progress)
    engine = make_engine(betas, segment)
    direction = "reverse AIS" if reverse else "AIS"
    out = drive(
        engine,
        num_steps=num_steps,
        betas=betas,
        pilot=opts.uses_pilot,
        control=control,
        segment=segment,
        label=f"{direction} ({backend})" if progress else None,
        run_id=run_identity(backend, model, opts, pot, betas, reverse),
        describe_site=lambda sites: describe_sites(pot, sites),
    )
    log_w = out.log_weights
    info = out.combined_info()
    check_not_all_dropped(pot, log_w, info.num_dropped, betas)
    positions = out.positions
    dropped_sites = engine.dropped_sites(positions[log_w == -np.inf])
    return ais_result(
        opts,
        pot,
        log_w,
        betas,
        engine.particles(positions),
        info,
        backend=backend,
        reverse=reverse,
        pilot=opts.uses_pilot,
        start=start,
        num_batches=len(out.batches),
        extra_info={
            **extra_info,
            **run_info(out, control, betas, info),
            "dropped_sites": tuple(dropped_sites),
        },
    )

"""Tempered SMC for NumPyro models: adaptive schedule, resampling, independent replicas.

AIS is the special case with a fixed schedule and no resampling. With resampling or an
adaptive (particle-dependent) schedule the weight-based standard error no longer applies, so
SMC runs ``num_replicas`` independent replicas in one vectorised call (``vmap`` over
replicas) and reports the pooled log Z with a standard error from their spread.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._assemble import smc_result
from .._options import SMCOptions, progress_printer
from ..results import AISResult
from ._ais import (
    COMPILED,
    _check_initial_energies,
    build_mutation,
    build_potential,
    kish_ess,
    options_key,
    weight_update,
)
from ._model import ModelPotential

__all__ = ["SMC", "SMCInfo", "SMCState", "build_smc_step", "next_beta_by_cess"]


class SMCState(NamedTuple):
    """What the next tempering step needs (one replica)."""

    position: jax.Array  # (N, D)
    log_weights: jax.Array  # (N,) unnormalised; their log-mean-exp is the running log Z
    beta: jax.Array  # () current inverse temperature
    step: jax.Array  # () int32, steps taken
    step_size: jax.Array  # ()
    inverse_mass: jax.Array  # (D,)


class SMCInfo(NamedTuple):
    """Per-step diagnostics of one replica."""

    beta: jax.Array  # beta reached at this step
    acceptance_rate: jax.Array
    step_size: jax.Array
    ess: jax.Array  # after the weight update, before resampling
    resampled: jax.Array  # bool
    num_dropped: jax.Array
    active: jax.Array  # False once beta == 1 (padding)


def next_beta_by_cess(log_weights, log_ratio, beta, target_cess, num_bisections=40):
    """Next beta whose conditional ESS (Zhou, Johansen & Aston 2016) equals ``target_cess``.

    CESS(d) = (sum W_i u_i)^2 / sum W_i u_i^2 with u_i = exp(d * log_ratio_i), in (0, 1], is
    decreasing in the increment d; bisection on d in [0, 1 - beta]. Returns 1 when even the
    full remaining step keeps CESS above the target. Particles with non-finite weight or
    log_ratio are left out.
    """
    ok = jnp.isfinite(log_weights) & jnp.isfinite(log_ratio)
    lw = jnp.where(ok, log_weights, -jnp.inf)
    lw = lw - jax.nn.logsumexp(lw)
    lr = jnp.where(ok, log_ratio, 0.0)
    log_target = jnp.log(target_cess)

    def log_cess(d):
        return 2 * jax.nn.logsumexp(lw + d * lr) - jax.nn.logsumexp(lw + 2 * d * lr)

    remaining = 1.0 - beta

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        good = log_cess(mid) >= log_target
        return jnp.where(good, mid, lo), jnp.where(good, hi, mid)

    lo, _ = lax.fori_loop(0, num_bisections, bisect, (jnp.zeros_like(beta), remaining))
    # Guarantee progress: at least a tiny step (the cap on steps bounds the total work).
    delta = jnp.maximum(lo, 1e-6 * remaining)
    return jnp.where(log_cess(remaining) >= log_target, 1.0, jnp.minimum(beta + delta, 1.0))


def _systematic(key, log_weights):
    n = log_weights.shape[0]
    w = jnp.exp(log_weights - jax.nn.logsumexp(log_weights))
    cdf = jnp.cumsum(w)
    cdf = cdf.at[-1].set(1.0)
    pos = (jax.random.uniform(key, dtype=w.dtype) + jnp.arange(n, dtype=w.dtype)) / n
    return jnp.clip(jnp.searchsorted(cdf, pos, side="right"), 0, n - 1)


def _multinomial(key, log_weights):
    n = log_weights.shape[0]
    return jax.random.categorical(key, log_weights, shape=(n,))


def build_smc_step(log_parts, opts: SMCOptions):
    """Return ``step(state, rng_key) -> (state, info)`` for one replica (vmap for more).

    Order within a step: choose beta (adaptive: by CESS; fixed: the next schedule entry),
    reweight by ``(beta - beta_prev) * log_ratio``, resample if ESS < threshold * N (log
    weights reset to their log-mean-exp, which carries the running log Z), then HMC moves at
    the new beta with the potential and gradient evaluated there.
    """
    base = opts.base
    potential = jax.vmap(build_potential(log_parts), in_axes=(0, None))
    parts = jax.vmap(log_parts)
    mutate = build_mutation(log_parts, base)
    betas = jnp.asarray(base.betas)
    resample = {"systematic": _systematic, "multinomial": _multinomial}.get(opts.resampling)

    def step(state: SMCState, rng_key):
        active = state.beta < 1.0
        key = jax.random.fold_in(rng_key, state.step)
        k_res, k_mut = jax.random.split(key)
        z = state.position
        n = z.shape[0]
        forced = state.step + 1 >= opts.max_steps
        if opts.adaptive:
            _, lr0 = parts(z)
            beta = next_beta_by_cess(state.log_weights, lr0, state.beta, opts.target_cess)
        else:
            beta = betas[jnp.minimum(state.step + 1, betas.shape[0] - 1)]
        beta = jnp.where(forced, 1.0, beta).astype(state.beta.dtype)
        u, g, _, lr = potential(z, beta)
        log_w = weight_update(state.log_weights, lr, state.beta, beta)
        ess = kish_ess(log_w)
        alive = jnp.isfinite(log_w)
        did_resample = jnp.asarray(False)
        if resample is not None:
            did_resample = ess < opts.resample_threshold * n
            idx = jnp.where(did_resample, resample(k_res, log_w), jnp.arange(n))
            z, u, g = z[idx], u[idx], g[idx]
            log_mean = jax.nn.logsumexp(log_w) - jnp.log(n)
            log_w = jnp.where(did_resample, jnp.full_like(log_w, log_mean), log_w)
            alive = jnp.where(did_resample, jnp.ones_like(alive), alive)
        z_new, mean_acc, step_size, inverse_mass = mutate(
            k_mut, z, u, g, beta, alive, state.step_size, state.inverse_mass
        )
        new = SMCState(z_new, log_w, beta, state.step + 1, step_size, inverse_mass)
        new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
        info = SMCInfo(
            beta=beta,
            acceptance_rate=mean_acc,
            step_size=state.step_size,
            ess=ess,
            resampled=did_resample,
            num_dropped=n - jnp.sum(jnp.isfinite(log_w)),
            active=active,
        )
        return new, info

    return step


class SMC:
    """Tempered sequential Monte Carlo from the prior (or a reference) to a NumPyro model.

    Same path and moves as :class:`~ebmppl.numpyro.AIS`, plus:

    Args:
        schedule: ``"adaptive"`` (default: each next beta keeps the conditional ESS of the
            incremental weights at ``target_cess``) or any AIS schedule.
        target_cess: target conditional ESS fraction of the adaptive schedule.
        max_steps: cap on the number of steps (the last allowed step jumps to beta = 1).
        resampling: ``"systematic"`` (default), ``"multinomial"`` or ``None`` (no resampling).
        resample_threshold: resample when ESS < threshold * num_particles.
        num_replicas: independent replicas run in one vectorised call; log Z is pooled over
            them (``log mean_r Z_r``) and its standard error comes from their spread.
        **options: the AIS options (num_particles, num_leapfrog_steps, num_mcmc_steps,
            step_size, target_accept, adapt_step_size, adapt_mass, step_size_jitter, progress).
    """

    def __init__(self, model, *, reference=None, **options):
        if not callable(model):
            raise TypeError(f"model must be a callable NumPyro model, got {type(model).__name__}")
        self.model = model
        self.reference = reference
        self.options = SMCOptions.create(**options)

    def _compiled(self, pot: ModelPotential, chunk: int):
        key = ("smc", id(self.model), id(self.reference), options_key(self.options), chunk)
        step = None

        def build():
            nonlocal step
            step = jax.vmap(build_smc_step(pot.log_parts, self.options))

            @jax.jit
            def segment(state, keys):
                return lax.scan(lambda s, _: step(s, keys), state, None, length=chunk)

            return (
                segment,
                jax.jit(pot.sample_base, static_argnums=1),
                jax.jit(jax.vmap(pot.postprocess)),
                jax.jit(jax.vmap(pot.log_parts)),
                jax.jit(jax.vmap(pot.energy_values)),
            )

        return COMPILED.get(key, pot, build)

    def run(self, rng_key, *model_args, **model_kwargs) -> AISResult:
        """Run SMC; returns an :class:`~ebmppl.AISResult` with replica-based ``log_z_se``.

        ``result.log_weights`` holds all replicas' particles (num_replicas * num_particles),
        whose pooled weights give posterior expectations; ``result.info`` has the per-replica
        log Z, betas (NaN-padded after each replica reached beta = 1) and resampling events.
        """
        if not (isinstance(rng_key, jax.Array) and jnp.shape(rng_key) in ((2,), ())):
            raise TypeError(
                "rng_key must be a JAX PRNG key, e.g. jax.random.PRNGKey(0); "
                f"got {type(rng_key).__name__}"
            )
        opts, base = self.options, self.options.base
        start = time.perf_counter()
        key_init, key_run = jax.random.split(rng_key)
        pot = ModelPotential(
            self.model, model_args, model_kwargs, reference=self.reference, rng_key=key_init
        )
        r, n = opts.num_replicas, base.num_particles
        total = opts.max_steps if opts.adaptive else base.betas.size - 1
        progress = base.progress if base.progress is not None else sys.stderr.isatty()
        chunk = max(1, min(total, 25 if opts.adaptive else -(-total // (20 if progress else 1))))
        segment, sample, post, parts, energies = self._compiled(pot, chunk)
        z0 = sample(key_init, r * n)
        _check_initial_energies(pot, energies, parts, z0)
        z0 = z0.reshape(r, n, pot.dim)
        inv_mass = jnp.clip(jnp.var(z0, axis=1), 1e-6, None) if base.adapt_mass else None
        if inv_mass is None:
            inv_mass = jnp.ones((r, pot.dim), z0.dtype)
        init_step = base.step_size if base.step_size is not None else 0.5 * pot.dim**-0.25
        dtype = z0.dtype
        state = SMCState(
            z0,
            jnp.zeros((r, n), dtype),
            jnp.zeros((r,), dtype),
            jnp.zeros((r,), jnp.int32),
            jnp.full((r,), init_step, dtype),
            inv_mass.astype(dtype),
        )
        keys = jax.random.split(key_run, r)
        report = progress_printer("SMC (numpyro)", total) if progress else None
        infos = []
        done = 0
        while done < total:
            state, info = segment(state, keys)
            infos.append(info)
            done += chunk
            finished = bool(np.all(np.asarray(state.beta) >= 1.0))
            if report is not None:
                last = jax.tree.map(lambda a: a[:, 0], info)
                report(total if finished else min(done, total), last)
            if finished:
                break
        info = jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]).T, *infos)
        return self._result(pot, state, info, post, start)

    def _result(self, pot, state, info: SMCInfo, post, start) -> AISResult:
        r, n = self.options.num_replicas, self.options.base.num_particles
        steps = {
            "beta": np.asarray(info.beta),
            "acceptance_rate": np.asarray(info.acceptance_rate),
            "step_size": np.asarray(info.step_size),
            "ess": np.asarray(info.ess),
            "resampled": np.asarray(info.resampled),
            "active": np.asarray(info.active),
        }
        flat = np.asarray(state.position).reshape(r * n, -1)
        particles = {
            k: np.asarray(v).reshape((r * n, *np.shape(v)[1:])) for k, v in post(flat).items()
        }
        return smc_result(
            self.options,
            pot,
            np.asarray(state.log_weights, dtype=np.float64),
            steps,
            particles,
            backend="numpyro",
            start=start,
        )

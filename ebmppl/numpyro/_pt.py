"""Replica exchange (parallel tempering) for NumPyro models, with an adaptive ladder.

``num_temperatures`` tempered copies ``base(z) exp(beta_k log_ratio(z))`` (beta_0 = 0,
beta_{K-1} = 1) are moved by HMC and swapped between neighbours with the deterministic
even/odd scheme (non-reversible parallel tempering). ``num_chains`` independent tempering
systems run side by side (vmap): their spread gives the standard errors. During warm-up the
ladder is re-spaced so that the swap rejection rates are equal (Syed et al. 2021: equal
increments of the communication barrier). After warm-up, the draws at beta = 1 cross modes
and the recorded ``log_ratio`` values give two log Z estimates from the same run: stepping
stone (Xie et al. 2011) and thermodynamic integration (trapezoid on the final ladder).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .._pt_common import (
    ReplicaExchangeResult,
    check_options,
    ladder_from_rejections,
    replica_exchange_result,
    run_rounds,
)
from ._ais import COMPILED, build_hmc_move, build_potential, check_rng_key
from ._model import ModelPotential, check_sampler
from ._sharding import check_same_key, shard_particles, to_host

__all__ = ["ReplicaExchange", "ReplicaExchangeResult", "ladder_from_rejections"]


class PTState(NamedTuple):
    position: jax.Array  # (K, M, D)
    step_size: jax.Array  # (K,)
    inverse_mass: jax.Array  # (K, D)
    iteration: jax.Array  # () int32


class ReplicaExchange:
    """Parallel tempering over an adaptive ladder of betas (see module docstring).

    Args:
        model: NumPyro model. ``reference=`` as in :class:`AIS` for improper priors.
        num_temperatures: ladder size K (>= 2), including beta = 0 and beta = 1.
        num_chains: independent tempering systems M (>= 2 for standard errors).
        num_warmup: iterations spent adapting step sizes and the ladder (in ``num_rounds``).
        num_samples: iterations recorded after warm-up.
        num_leapfrog_steps, target_accept: HMC moves at every temperature, step size per
            temperature adapted during warm-up only (so the sampling phase is exact MCMC).
        shard: split the chains over all JAX devices (``jax.sharding``; also across processes
            after ``jax.distributed.initialize()``, with the same key in every process); every
            device holds all temperatures of its chains, so swaps stay on the device.
            ``num_chains`` must be divisible by the number of devices.
    """

    def __init__(
        self,
        model,
        *,
        num_temperatures: int = 16,
        num_chains: int = 8,
        num_warmup: int = 400,
        num_samples: int = 1000,
        num_rounds: int = 4,
        num_leapfrog_steps: int = 3,
        target_accept: float = 0.8,
        reference=None,
        shard: bool = False,
        progress: bool | None = None,
    ):
        check_sampler(model, shard)
        self.model = model
        self.reference = reference
        self.shard = bool(shard)
        check_options(
            self,
            num_temperatures=num_temperatures,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_rounds=num_rounds,
            num_leapfrog_steps=num_leapfrog_steps,
            target_accept=target_accept,
            progress=progress,
        )

    def _build(self, pot: ModelPotential):
        potential = build_potential(pot.log_parts)
        move = build_hmc_move(pot.log_parts, self.num_leapfrog_steps)
        parts = jax.vmap(jax.vmap(pot.log_parts))
        k, m = self.num_temperatures, self.num_chains
        target = self.target_accept

        def hmc_all(key, z, betas, step_size, inv_mass):
            def one_temp(key, z_k, beta, eps, im):
                u, g, _, _ = jax.vmap(potential, in_axes=(0, None))(z_k, beta)
                keys = jax.random.split(key, z_k.shape[0])
                z_new, _, _, acc = jax.vmap(move, in_axes=(0, 0, 0, 0, None, None, None))(
                    keys, z_k, u, g, beta, eps, im
                )
                return z_new, acc

            return jax.vmap(one_temp)(jax.random.split(key, k), z, betas, step_size, inv_mass)

        def iteration(state: PTState, betas, key, adapt: bool):
            k_move, k_swap = jax.random.split(jax.random.fold_in(key, state.iteration))
            z, acc = hmc_all(k_move, state.position, betas, state.step_size, state.inverse_mass)
            _, lr = parts(z)  # (K, M)
            lr = jnp.where(jnp.isfinite(lr), lr, -jnp.inf)
            # deterministic even/odd swaps between neighbours (k, k+1)
            parity = state.iteration % 2
            lower = jnp.arange(k - 1)
            pair_on = (lower % 2) == parity  # (K-1,)
            log_alpha = (betas[1:] - betas[:-1])[:, None] * (lr[:-1] - lr[1:])  # (K-1, M)
            log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
            u = jax.random.uniform(k_swap, log_alpha.shape)
            swap = pair_on[:, None] & (jnp.log1p(-u) < log_alpha)  # log(1 - U) > -inf
            swap_prob = jnp.minimum(1.0, jnp.exp(log_alpha))
            up = jnp.concatenate([swap, jnp.zeros((1, m), bool)])  # k takes from k+1
            down = jnp.concatenate([jnp.zeros((1, m), bool), swap])  # k+1 takes from k
            z_up = jnp.concatenate([z[1:], z[-1:]])
            z_down = jnp.concatenate([z[:1], z[:-1]])
            z = jnp.where(up[..., None], z_up, jnp.where(down[..., None], z_down, z))
            lr_up = jnp.concatenate([lr[1:], lr[-1:]])
            lr_down = jnp.concatenate([lr[:1], lr[:-1]])
            lr = jnp.where(up, lr_up, jnp.where(down, lr_down, lr))
            mean_acc = jnp.mean(acc, axis=1)  # (K,)
            step_size, inv_mass = state.step_size, state.inverse_mass
            if adapt:
                step_size = step_size * jnp.exp(0.5 * (mean_acc - target))
                var = jnp.var(z, axis=1) + 1e-6
                inv_mass = 0.9 * inv_mass + 0.1 * var
            new = PTState(z, step_size, inv_mass, state.iteration + 1)
            stats = (lr, mean_acc, jnp.mean(swap_prob, axis=1), pair_on, z[-1])
            return new, stats

        def scan(adapt):
            @jax.jit
            def run(state, betas, key, marker):
                def body(s, _):
                    return iteration(s, betas, key, adapt)

                return lax.scan(body, state, None, length=marker.shape[0])

            return run

        warm, sample = scan(True), scan(False)

        post = jax.jit(jax.vmap(jax.vmap(pot.postprocess)))
        return warm, sample, post

    def run(self, rng_key, *model_args, **model_kwargs) -> ReplicaExchangeResult:
        """Run warm-up (ladder and step-size adaptation) and sampling; return the result."""
        check_rng_key(rng_key)
        if self.shard:
            check_same_key(rng_key)
        start = time.perf_counter()
        k_init, k_warm, k_sample = jax.random.split(rng_key, 3)
        pot = ModelPotential(
            self.model, model_args, model_kwargs, reference=self.reference, rng_key=k_init
        )
        # Compiled once per model, reference and kernel options (like AIS and SMC).
        key = (
            "replica_exchange",
            id(self.model),
            id(self.reference),
            self.num_temperatures,
            self.num_chains,
            self.num_leapfrog_steps,
            self.target_accept,
        )
        warm, sample, post = COMPILED.get(key, pot, lambda: self._build(pot))
        k, m = self.num_temperatures, self.num_chains
        z0 = pot.sample_base(k_init, k * m).reshape(k, m, pot.dim)
        var0 = jnp.clip(jnp.var(z0.reshape(-1, pot.dim), axis=0), 1e-6, None)
        if self.shard:  # (K, M, D): the chain axis is split
            z0 = shard_particles(z0, axis=1)
        state = PTState(
            z0,
            jnp.full((k,), 0.5 * pot.dim**-0.25, z0.dtype),
            jnp.tile(var0, (k, 1)).astype(z0.dtype),
            jnp.zeros((), jnp.int32),
        )
        dtype = z0.dtype

        def scan(state, betas, length, adapt, round_):
            fn, key = (warm, jax.random.fold_in(k_warm, round_)) if adapt else (sample, k_sample)
            state, (lr, acc, swap_prob, pair_on, top) = fn(
                state, jnp.asarray(betas, dtype), key, jnp.zeros(length)
            )
            return state, to_host(swap_prob), to_host(pair_on), (lr, acc, top)

        state, betas, history, swap_rate, (lr, acc, top) = run_rounds(self, state, scan, "numpyro")
        draws = post(jnp.swapaxes(top, 0, 1))  # (M, S, ...) per site, constrained
        return replica_exchange_result(
            betas=betas,
            log_ratio=to_host(lr),  # (S, K, M)
            acceptance=to_host(acc),
            step_size=to_host(state.step_size),
            samples={name: to_host(v) for name, v in draws.items()},
            history=history,
            swap_rate=swap_rate,
            info={
                "num_samples": self.num_samples,
                "num_chains": self.num_chains,
                "devices": len(jax.devices()) if self.shard else 1,
                "wall_time": time.perf_counter() - start,
            },
            backend="numpyro",
        )

"""NUTS moves for tempered SMC (NumPyro): multinomial NUTS per particle, vmapped.

The tree is NumPyro's own :func:`numpyro.infer.hmc_util.build_tree` (multinomial sampling,
iterative U-turn checks, divergence at an energy error above 1000), which is JAX-pure and
vmaps over particles; a particle's trajectory length is its own, so under ``vmap`` a move
costs as long as the longest trajectory in the batch while each particle's gradient count
is its own number of leapfrog steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.infer.hmc_util import (
    IntegratorState,
    build_tree,
    euclidean_kinetic_energy,
    velocity_verlet,
)

from .._options import AISOptions
from ._ais import LogParts, adapt_kernel, chunked_vmap, jittered_step_sizes

__all__ = ["build_nuts_move", "build_nuts_mutation"]


def build_nuts_move(log_parts: LogParts, max_tree_depth: int = 10):
    """Return ``move(key, z, U, grad, beta, step_size, inverse_mass) -> (z, U, grad, accept, L)``.

    One multinomial NUTS transition of one particle (z: (D,), inverse_mass: (D,), the rest
    scalars) leaving ``exp(log_base + beta * log_ratio)`` invariant; trees of at most
    ``2 ** max_tree_depth - 1`` leapfrog steps. ``U`` and ``grad`` must be the potential and
    its gradient at ``z`` *for this beta*. A non-finite potential (NaN, or either infinity)
    counts as ``+inf``, i.e. zero density: such a state ends the tree as a divergence and is
    never chosen. ``accept`` is NUTS's mean acceptance statistic over the tree's leaves (the
    quantity step-size adaptation targets); ``L`` (int) the leapfrog steps (gradients) taken.
    """

    def move(key, z, u0, g0, beta, step_size, inverse_mass):
        def potential(x):
            lb, lr = log_parts(x)
            u = -(lb + beta * lr)
            return jnp.where(jnp.isfinite(u), u, jnp.inf)

        k_mom, k_tree = jax.random.split(key)
        r = jax.random.normal(k_mom, z.shape, z.dtype) / jnp.sqrt(inverse_mass)
        _, update = velocity_verlet(potential, euclidean_kinetic_energy)
        u0 = jnp.where(jnp.isfinite(u0), u0, jnp.inf)
        tree = build_tree(
            update,
            euclidean_kinetic_energy,
            IntegratorState(z, r, u0, g0),
            inverse_mass,
            step_size,
            k_tree,
            max_tree_depth=max_tree_depth,
        )
        accept = tree.sum_accept_probs / jnp.maximum(tree.num_proposals, 1)
        return (
            tree.z_proposal,
            tree.z_proposal_pe,
            tree.z_proposal_grad,
            accept,
            tree.num_proposals,
        )

    return move


def build_nuts_mutation(log_parts: LogParts, opts: AISOptions, max_tree_depth: int):
    """Return ``mutate(key, z, u, g, beta, alive, step_size, inverse_mass)``.

    As :func:`ebmppl.numpyro._ais.build_mutation` (same per-particle step-size jitter, same
    adaptation of the step size towards ``target_accept`` and of the diagonal inverse mass)
    with ``num_mcmc_steps`` NUTS transitions instead of HMC moves. z: (N, D); u, alive: (N,).
    Returns ``(z_new, mean_acceptance, new_step_size, new_inverse_mass, mean_num_leapfrog)``,
    the last the leapfrog steps per particle per transition, averaged over all N particles.
    """
    move = chunked_vmap(
        build_nuts_move(log_parts, max_tree_depth), (0, 0, 0, 0, None, 0, None), opts.chunk_size
    )

    def mutate(key, z, u, g, beta, alive, step_size, inverse_mass):
        n = z.shape[0]
        k_jit, k_moves = jax.random.split(key)
        eps = jittered_step_sizes(k_jit, n, z.dtype, step_size, opts)

        def one_move(carry, k):
            z, u, g, acc, leap = carry
            z, u, g, a, num = move(jax.random.split(k, n), z, u, g, beta, eps, inverse_mass)
            return (z, u, g, acc + a.astype(z.dtype), leap + num.astype(jnp.int32)), None

        zeros = jnp.zeros((n,), z.dtype)
        (z_new, _, _, acc, leap), _ = lax.scan(
            one_move,
            (z, u, g, zeros, jnp.zeros((n,), jnp.int32)),
            jax.random.split(k_moves, opts.num_mcmc_steps),
        )
        mean_acc, new_step, new_inv_mass = adapt_kernel(
            opts, z_new, alive, acc / opts.num_mcmc_steps, step_size, inverse_mass
        )
        mean_leap = jnp.mean(leap.astype(z.dtype)) / opts.num_mcmc_steps
        return z_new, mean_acc, new_step, new_inv_mass, mean_leap

    return mutate

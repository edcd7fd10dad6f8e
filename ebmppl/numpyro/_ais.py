"""Annealed importance sampling for NumPyro models (vmapped over particles, lax.scan over steps).

Building blocks in the BlackJAX style: :func:`build_hmc_move` (one HMC move of one particle
at a given beta), :func:`build_ais_step` (weight update then moves: one annealing step of the
whole population) and the :class:`AIS` driver.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.util import is_prng_key

from .._assemble import run_ais
from .._options import AISOptions
from .._runs import RunControl
from ..results import AISResult
from ._model import ModelPotential, check_sampler
from ._sharding import check_same_key, shard_particles, to_host

__all__ = ["AIS", "AISInfo", "AISState", "build_ais_step", "build_hmc_move"]


class AISState(NamedTuple):
    """What the next annealing step needs."""

    position: jax.Array  # (N, D) unconstrained particles
    # (N,) log weights minus the sum of the per-step ``AISInfo.weight_shift`` (added back in
    # float64 on the host): kept O(spread of the weights), so float32 does not lose precision
    # when energies and log Z are large.
    log_weights: jax.Array
    step_size: jax.Array  # () base HMC step size (adapted)
    inverse_mass: jax.Array  # (D,) diagonal inverse mass matrix (adapted)


class AISInfo(NamedTuple):
    """Per-step diagnostics (stacked over steps by the scan)."""

    acceptance_rate: jax.Array  # mean acceptance probability over live particles
    step_size: jax.Array  # step size used at this step
    ess: jax.Array  # Kish ESS of the weights after this step's increment
    num_dropped: jax.Array  # particles with zero weight after this step
    inverse_mass: jax.Array  # (D,) diagonal inverse mass used at this step
    weight_shift: jax.Array  # () taken out of every log weight at this step (see AISState)


class AISInputs(NamedTuple):
    """Per-step inputs of the scan (one entry per annealing step)."""

    t: jax.Array  # step index (folds into the random key)
    beta_prev: jax.Array
    beta: jax.Array
    active: jax.Array  # False: a padding no-op step
    step_size: jax.Array  # kernel step size when use_fixed
    inverse_mass: jax.Array  # (D,) kernel inverse mass when use_fixed
    use_fixed: jax.Array  # use the given kernel (from a pilot) instead of the adapted one


LogParts = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def check_rng_key(rng_key) -> None:
    """Raise a TypeError unless ``rng_key`` is one JAX PRNG key, as NumPyro accepts it.

    Typed keys (``jax.random.key(0, impl=...)``) of any implementation, or raw ``(2,)`` uint32
    threefry keys (``jax.random.PRNGKey(0)``).
    """
    if isinstance(rng_key, jax.Array) and is_prng_key(rng_key):
        return
    hint = ""
    if isinstance(rng_key, jax.Array) and rng_key.dtype == jnp.uint32 and rng_key.ndim == 1:
        hint = (
            " (a raw key of another implementation, e.g. jax_default_prng_impl='rbg': "
            "pass a typed key, jax.random.key(0) or jax.random.wrap_key_data(raw))"
        )
    raise TypeError(
        "rng_key must be one JAX PRNG key, e.g. jax.random.PRNGKey(0) or jax.random.key(0); "
        f"got {type(rng_key).__name__} of shape {jnp.shape(rng_key)}{hint}"
    )


def population_functions(pot: ModelPotential) -> tuple:
    """Jitted ``(sample_base(key, n), vmap(postprocess), vmap(log_parts), vmap(energy_values))``
    of ``pot``: what AIS and SMC need around their compiled step."""
    return (
        jax.jit(pot.sample_base, static_argnums=1),
        jax.jit(jax.vmap(pot.postprocess)),
        jax.jit(jax.vmap(pot.log_parts)),
        jax.jit(jax.vmap(pot.energy_values)),
    )


def chunked_vmap(fn: Callable, in_axes: tuple, chunk_size: int | None) -> Callable:
    """``jax.vmap(fn, in_axes)``, evaluated ``chunk_size`` particles at a time (``lax.map``).

    Bounds the memory of the model evaluations (activations of a large energy network, the
    leapfrog trajectory) by ``chunk_size`` particles; elementwise results are unchanged. The
    particle count is padded up to a multiple of ``chunk_size`` with copies of the last
    particle, whose results are discarded.
    """
    vfn = jax.vmap(fn, in_axes=in_axes)
    if chunk_size is None:
        return vfn

    def run(*args):
        mapped = [i for i, ax in enumerate(in_axes) if ax is not None]
        n = jax.tree.leaves(args[mapped[0]])[0].shape[0]
        if n <= chunk_size:
            return vfn(*args)
        num = -(-n // chunk_size)
        pad = num * chunk_size - n

        def split(x):
            if pad:
                x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])
            return x.reshape((num, chunk_size, *x.shape[1:]))

        chunks = [jax.tree.map(split, args[i]) for i in mapped]

        def one(chunk):
            full = list(args)
            for i, c in zip(mapped, chunk, strict=True):
                full[i] = c
            return vfn(*full)

        out = lax.map(one, chunks)
        return jax.tree.map(lambda y: y.reshape((num * chunk_size, *y.shape[2:]))[:n], out)

    return run


def build_potential(log_parts: LogParts):
    """Return ``potential(z, beta) -> (U, grad U, log_base, log_ratio)`` for one particle.

    ``U = -(log_base + beta * log_ratio)`` is evaluated afresh at the given beta; nothing is
    cached across temperatures (a stale potential biases log Z low).
    """

    def potential(z, beta):
        def u(z):
            lb, lr = log_parts(z)
            return -(lb + beta * lr), (lb, lr)

        (val, (lb, lr)), grad = jax.value_and_grad(u, has_aux=True)(z)
        return val, grad, lb, lr

    return potential


def build_hmc_move(log_parts: LogParts, num_leapfrog_steps: int):
    """Return ``move(key, z, U, grad, beta, step_size, inverse_mass) -> (z, U, grad, accept_prob)``.

    One HMC move of one particle leaving ``exp(log_base + beta * log_ratio)`` invariant. ``U``
    and ``grad`` must be the potential and its gradient at ``z`` *for this beta*. A proposal
    with a non-finite potential is rejected (treated as zero density).
    """
    transition = build_hmc_transition(log_parts, num_leapfrog_steps)

    def move(key, z, u0, g0, beta, step_size, inverse_mass):
        k_mom, k_acc = jax.random.split(key)
        noise = jax.random.normal(k_mom, z.shape, z.dtype)
        uniform = jax.random.uniform(k_acc, dtype=z.dtype)
        return transition(noise, uniform, z, u0, g0, beta, step_size, inverse_mass)

    return move


def build_hmc_transition(log_parts: LogParts, num_leapfrog_steps: int):
    """:func:`build_hmc_move` given its random numbers instead of a key.

    Returns ``transition(noise, uniform, z, U, grad, beta, step_size, inverse_mass)``;
    ``noise`` (D,) standard normal (the momentum before the mass scaling), ``uniform`` () in
    [0, 1) (the accept test). Drawing these for the whole population at once (two calls
    instead of a key split per particle) is what :func:`build_mutation` does: it saves
    the per-particle key derivations, a large part of the cost of a step on a cheap potential.
    """
    potential = build_potential(log_parts)

    def transition(noise, uniform, z, u0, g0, beta, step_size, inverse_mass):
        p0 = noise / jnp.sqrt(inverse_mass)

        def leapfrog(carry, _):
            z, p, _, g = carry
            p = p - 0.5 * step_size * g
            z = z + step_size * inverse_mass * p
            u, g, _, _ = potential(z, beta)
            p = p - 0.5 * step_size * g
            return (z, p, u, g), None

        (z1, p1, u1, g1), _ = lax.scan(leapfrog, (z, p0, u0, g0), None, length=num_leapfrog_steps)
        kin0 = 0.5 * jnp.sum(inverse_mass * p0**2)
        kin1 = 0.5 * jnp.sum(inverse_mass * p1**2)
        log_accept = (u0 + kin0) - (u1 + kin1)
        log_accept = jnp.where(jnp.isnan(log_accept) | ~jnp.isfinite(u1), -jnp.inf, log_accept)
        accept_prob = jnp.minimum(1.0, jnp.exp(log_accept))
        # log(1 - U), U in [0, 1): never -inf, so a proposal of (near) zero density is never
        # accepted; log(U) is -inf when U = 0 (probability 2^-23 in float32) and accepted any
        # finite proposal, e.g. a particle thrown to |x| = 3e5 in a quartic well.
        accepted = jnp.log1p(-uniform) < log_accept
        return (
            jnp.where(accepted, z1, z),
            jnp.where(accepted, u1, u0),
            jnp.where(accepted, g1, g0),
            accept_prob,
        )

    return transition


def build_mutation(log_parts: LogParts, opts: AISOptions):
    """Return ``mutate(key, z, u, g, beta, alive, step_size, inverse_mass)``.

    Runs ``num_mcmc_steps`` HMC moves of every particle at ``beta`` (per-particle jittered step
    sizes), then adapts the step size towards ``target_accept`` and the diagonal inverse mass
    to the live particles' variance. ``u``/``g`` must be the potential and gradient at ``z`` for
    this beta. Returns ``(z_new, mean_acceptance, new_step_size, new_inverse_mass)``.
    """
    move = chunked_vmap(
        build_hmc_transition(log_parts, opts.num_leapfrog_steps),
        (0, 0, 0, 0, 0, None, 0, None),
        getattr(opts, "chunk_size", None),
    )

    def mutate(key, z, u, g, beta, alive, step_size, inverse_mass):
        n = z.shape[0]
        k_jit, k_moves = jax.random.split(key)
        eps = jittered_step_sizes(k_jit, n, z.dtype, step_size, opts)

        def one_move(carry, k):
            z, u, g, acc = carry
            k_mom, k_acc = jax.random.split(k)
            noise = jax.random.normal(k_mom, z.shape, z.dtype)
            uniform = jax.random.uniform(k_acc, (n,), z.dtype)
            z, u, g, a = move(noise, uniform, z, u, g, beta, eps, inverse_mass)
            return (z, u, g, acc + a), None

        (z_new, _, _, acc), _ = lax.scan(
            one_move,
            (z, u, g, jnp.zeros((n,), z.dtype)),
            jax.random.split(k_moves, opts.num_mcmc_steps),
        )
        mean_acc, new_step, new_inv_mass = adapt_kernel(
            opts, z_new, alive, acc / opts.num_mcmc_steps, step_size, inverse_mass
        )
        return z_new, mean_acc, new_step, new_inv_mass

    return mutate


def jittered_step_sizes(key, n: int, dtype, step_size, opts: AISOptions):
    """Per-particle step sizes (n,): ``step_size`` times U(1 - j, 1 + j)."""
    j = opts.step_size_jitter
    return step_size * jax.random.uniform(key, (n,), dtype, 1.0 - j, 1.0 + j)


def adapt_kernel(opts: AISOptions, z_new, alive, acceptance, step_size, inverse_mass):
    """Adapt the kernel after the moves of one temperature (shared by the HMC and NUTS moves).

    ``acceptance`` (N,) per particle; returns ``(mean acceptance over live particles, step
    size moved by exp(adapt_rate * (mean - target_accept)), diagonal inverse mass = the
    Stan-shrunk variance of the live particles z_new (N, D))``.
    """
    num_alive = jnp.maximum(jnp.sum(alive), 1)
    mean_acc = jnp.sum(jnp.where(alive, acceptance, 0.0)) / num_alive
    new_step = step_size
    if opts.adapt_step_size:
        new_step = step_size * jnp.exp(opts.adapt_rate * (mean_acc - opts.target_accept))
    new_inv_mass = inverse_mass
    if opts.adapt_mass:
        mask = alive[:, None]
        mean = jnp.sum(jnp.where(mask, z_new, 0.0), 0) / num_alive
        var = jnp.sum(jnp.where(mask, (z_new - mean) ** 2, 0.0), 0) / num_alive
        # Stan-style shrinkage towards a small constant keeps the metric well defined.
        var = (num_alive / (num_alive + 5.0)) * var + 1e-3 * (5.0 / (num_alive + 5.0))
        new_inv_mass = jnp.where(jnp.all(jnp.isfinite(var)), var, inverse_mass)
    return mean_acc, new_step, new_inv_mass


def weight_update(log_weights, log_ratio, beta_prev, beta):
    """Add ``(beta - beta_prev) * log_ratio``; non-finite increments drop the particle (-inf)."""
    incr = jnp.where(beta != beta_prev, (beta - beta_prev) * log_ratio, 0.0)
    log_w = log_weights + jnp.where(jnp.isfinite(incr), incr, -jnp.inf)
    return jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)


def shifted_weight_update(log_weights, log_ratio, beta_prev, beta):
    """:func:`weight_update` minus a common shift: returns ``(log_weights (N,), shift ())``.

    The shift makes the heaviest particle's log weight (about) zero after the update; the
    caller adds the shifts up in float64, so the stored float32 log weights stay of the order
    of their spread below the top, however large the energies. The shift is anchored on the
    heaviest particle, not on an average, so that one far-out particle (an increment of -1e21)
    cannot pull the shift away and wipe out the precision of the others. It is split exactly
    (TwoSum) so that ``shift + log_weights`` loses nothing to rounding the shift to float32.
    """
    incr = jnp.where(beta != beta_prev, (beta - beta_prev) * log_ratio, 0.0)
    total = log_weights + incr  # only to choose the reference particle
    ok = jnp.isfinite(total)
    top = jnp.argmax(jnp.where(ok, total, -jnp.inf))
    a = jnp.where(ok[top], incr[top], 0.0)
    b = jnp.where(ok[top], log_weights[top], 0.0)
    shift = a + b
    bb = shift - a
    err = (a - (shift - bb)) + (b - bb)  # exactly (a + b) - shift
    log_w = (log_weights - b) + (incr - a) + err
    log_w = jnp.where(jnp.isfinite(incr), log_w, -jnp.inf)
    return jnp.where(jnp.isnan(log_w), -jnp.inf, log_w), shift


def kish_ess(log_weights):
    """Kish ESS ``1 / sum(W^2)`` of the normalised weights (0-d array)."""
    lw_norm = log_weights - jax.nn.logsumexp(log_weights)
    return 1.0 / jnp.sum(jnp.exp(2 * lw_norm))


def build_ais_step(log_parts: LogParts, opts: AISOptions):
    """Return ``step(state, xs: AISInputs, rng_key) -> (state, info)``.

    The incremental weight ``(beta - beta_prev) * log_ratio(z)`` is taken at the particles'
    current positions, then ``num_mcmc_steps`` HMC moves at ``beta`` follow. Non-finite
    increments drop the particle (log weight -inf; it then stays where it was dropped). The
    state's log weights exclude the per-step ``info.weight_shift`` (see :class:`AISState`). ``active=False`` makes a no-op step (used
    to pad the last chunk of a chunked run). Betas may also decrease (reverse AIS).
    """
    potential = chunked_vmap(
        build_potential(log_parts), (0, None), getattr(opts, "chunk_size", None)
    )
    mutate = build_mutation(log_parts, opts)

    def step(state: AISState, xs: AISInputs, rng_key):
        key = jax.random.fold_in(rng_key, xs.t)
        z = state.position
        u, g, _, lr = potential(z, xs.beta)
        log_w, shift = shifted_weight_update(state.log_weights, lr, xs.beta_prev, xs.beta)
        alive = jnp.isfinite(log_w)
        eps = jnp.where(xs.use_fixed, xs.step_size, state.step_size)
        inv_mass = jnp.where(xs.use_fixed, xs.inverse_mass, state.inverse_mass)
        z_new, mean_acc, step_size, inverse_mass = mutate(
            key, z, u, g, xs.beta, alive, eps, inv_mass
        )
        # A dropped particle stays where its weight died, so the culprit site can be named.
        z_new = jnp.where(alive[:, None], z_new, z)
        new = AISState(z_new, log_w, step_size, inverse_mass)
        new = jax.tree.map(lambda a, b: jnp.where(xs.active, a, b), new, state)
        info = AISInfo(
            acceptance_rate=mean_acc,
            step_size=eps,
            ess=kish_ess(log_w),
            num_dropped=z.shape[0] - jnp.sum(alive),
            inverse_mass=inv_mass,
            weight_shift=jnp.where(xs.active, shift, 0.0),
        )
        return new, info

    return step


class CompileCache:
    """Compiled programs shared across AIS/SMC objects and runs (small LRU).

    A hit needs the same model function, the same option values and the very same model
    argument objects (identity), so a cached program never sees stale data.
    """

    def __init__(self, size: int = 16):
        self.size = size
        self._entries: OrderedDict = OrderedDict()

    @staticmethod
    def _leaves(pot: ModelPotential):
        return (*pot.args, *pot.kwargs.values())

    def get(self, key, pot: ModelPotential, build):
        leaves = self._leaves(pot)
        entry = self._entries.get(key)
        same = entry is not None and len(entry[0]) == len(leaves)
        if same and all(a is b for a, b in zip(entry[0], leaves, strict=True)):
            self._entries.move_to_end(key)
            return entry[1]
        fns = build()
        self._entries[key] = (leaves, fns)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return fns


COMPILED = CompileCache()


def options_key(opts) -> tuple:
    """A hashable key of option values (including the schedule)."""
    betas = getattr(opts, "betas", None)
    if betas is None:
        betas = opts.base.betas
    return (type(opts).__name__, tuple(sorted(map(repr, opts.describe().items()))), betas.tobytes())


class AIS:
    """Annealed importance sampling from the prior (or a reference) to a NumPyro model.

    The path is ``prior(z) * L(z) ** beta``, where ``L`` collects every energy factor, every
    other factor and every observed site; ``log_z`` is the log evidence of the whole
    unnormalised model (for ``x ~ prior; energy("E", E, x)``: ``log E_prior[exp(-E(x))]``).

    Args:
        model: a NumPyro model (a callable using numpyro primitives).
        num_particles: number of independent AIS chains.
        num_steps: number of annealing steps (ignored if ``schedule`` is an array).
        schedule: ``"sigmoidal"`` (default), ``"linear"``, ``"geometric"`` or an array of betas
            from 0 to 1.
        num_leapfrog_steps: leapfrog steps per HMC move (1 gives MALA).
        num_mcmc_steps: HMC moves per temperature.
        step_size: initial HMC step size (default ``0.5 * dim ** -0.25``).
        target_accept: acceptance rate the step size is adapted towards across the schedule.
        adapt_step_size, adapt_mass: adapt the step size / a diagonal mass matrix (from the
            particle population's variance) along the schedule.
        adaptation: ``"pilot"`` (default): tune step sizes and masses on an independent pilot
            run with the same number of particles, then run AIS with those fixed per-step
            kernels, so every transition is exactly invariant and Z is unbiased (the pilot
            doubles the cost; both are counted). ``"online"``: tune on the particles being
            moved (half the cost, but an O(1/N) bias in log Z).
        step_size_jitter: each particle's step size is the base one times U(1-j, 1+j); avoids
            resonant trajectories in high dimension.
        chunk_size: evaluate the model on at most this many particles at a time (bounds the
            memory of a large energy network or of many particles; the result is unchanged).
        reference: ``None`` (start from the prior), ``{site: Distribution}`` or ``"laplace"``;
            needed when a latent prior is improper.
        shard: split the particles over all JAX devices (``jax.sharding``; also across
            processes after ``jax.distributed.initialize()``); ``num_particles`` must be
            divisible by the number of devices.
        progress: print progress to stderr (default: when stderr is a terminal).
    """

    def __init__(self, model, *, reference=None, shard: bool = False, **options):
        check_sampler(model, shard)
        self.model = model
        self.reference = reference
        self.shard = bool(shard)
        self.options = AISOptions.create(**options)

    def _compiled(self, pot: ModelPotential, chunk: int):
        key = ("ais", id(self.model), id(self.reference), options_key(self.options), chunk)
        opts = self.options

        def build():
            step = build_ais_step(pot.log_parts, opts)

            @jax.jit
            def segment(state, xs, rng_key):
                return lax.scan(lambda s, x: step(s, x, rng_key), state, xs)

            return (segment, *population_functions(pot))

        return COMPILED.get(key, pot, build)

    def run(
        self,
        rng_key,
        *model_args,
        target_se: float | None = None,
        max_time: float | None = None,
        max_batches: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        **model_kwargs,
    ) -> AISResult:
        """Run AIS and return an :class:`~ebmppl.AISResult` (log Z, weights, particles, stats).

        Args:
            rng_key: a JAX PRNG key.
            *model_args, **model_kwargs: passed to the model.
            target_se: run independent batches of ``num_particles`` (kernels from one pilot)
                until the standard error of log Z is at most this; ``info["stopped_by"]`` says
                whether ``"target_se"``, ``"max_time"`` or ``"max_batches"`` ended the run.
            max_time: time budget in seconds for adding batches (the first always runs).
            max_batches: cap on the number of batches (default 100 with a target or budget).
            checkpoint: file to save the run to every ``checkpoint_every`` steps, and to resume
                from when it exists (the resumed run gives the uninterrupted run's result).
                On Ctrl-C the last completed segment is saved (to a temporary file when no
                path is given) and :class:`~ebmppl.RunInterrupted` names it.
            checkpoint_every: steps between saves (default: 10 saves per pass).

        These names are reserved: a model keyword argument cannot share them.
        """
        control = RunControl.create(
            target_se=target_se,
            max_time=max_time,
            max_batches=max_batches,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
        return self._run(rng_key, model_args, model_kwargs, control=control)

    def run_reverse(self, rng_key, exact_samples, *model_args, **model_kwargs) -> AISResult:
        """Reverse AIS from exact draws of the target (beta 1 -> 0), for BDMC upper bounds.

        ``exact_samples`` maps every latent site to an array (num_samples, ...) of exact draws
        from the normalised model (constrained space). The returned result's log weights
        estimate 1/Z unbiasedly, so its ``log_z`` (= -log mean w) is a stochastic UPPER bound
        on log Z (Grosse, Ghahramani & Adams 2015); ``log_z_se`` is its delta-method error.
        With pilot adaptation the pilot reuses the exact samples in a random order.
        """
        return self._run(rng_key, model_args, model_kwargs, initial=exact_samples)

    def _run(
        self, rng_key, model_args, model_kwargs, initial=None, control: RunControl | None = None
    ) -> AISResult:
        check_rng_key(rng_key)
        control = control or RunControl.create()
        if self.shard:
            check_same_key(rng_key)
        opts = self.options
        start = time.perf_counter()
        key_init = jax.random.split(rng_key)[0]
        pot = ModelPotential(
            self.model, model_args, model_kwargs, reference=self.reference, rng_key=key_init
        )
        return run_ais(
            make_engine=lambda betas, segment: _Engine(self, pot, rng_key, betas, segment, initial),
            opts=opts,
            pot=pot,
            model=self.model,
            control=control,
            reverse=initial is not None,
            backend="numpyro",
            start=start,
            extra_info={"devices": len(jax.devices()) if self.shard else 1},
        )


class _Engine:
    """The NumPyro side of :func:`ebmppl._runs.drive`: compiled segments of AIS steps."""

    def __init__(self, ais: AIS, pot: ModelPotential, rng_key, betas, segment: int, initial):
        self.ais, self.pot, self.betas, self.segment = ais, pot, betas, segment
        self.initial_samples = initial
        self.num_steps = betas.size - 1
        self.typed_key = jnp.shape(rng_key) == ()
        self.rng_key = rng_key
        fns = ais._compiled(pot, segment)
        self.run_segment, self.sample, self.post, self.parts, self.energies = fns
        n = ais.options.num_particles
        if initial is not None:
            n = int(np.shape(jax.tree.leaves(initial)[0])[0])
        self.num_particles = n
        self._checked = False

    def _keys(self, phase: str, batch: int):
        """(init key, run key) of a phase; batch 0 keeps the keys of a single-batch run."""
        key_init, key_run = jax.random.split(self.rng_key)
        if phase == "pilot":
            key_init, key_run = jax.random.split(jax.random.fold_in(self.rng_key, 1))
        elif batch > 0:
            key_init, key_run = jax.random.split(jax.random.fold_in(self.rng_key, 1000 + batch))
        return key_init, key_run

    def initial(self, phase: str, batch: int) -> AISState:
        opts, pot = self.ais.options, self.pot
        key_init, _ = self._keys(phase, batch)
        if self.initial_samples is not None:
            if batch > 0:
                raise ValueError(
                    "reverse AIS runs one batch (one particle per exact sample); "
                    "target_se/max_time are not available for run_reverse"
                )
            z0 = pot.unconstrain_samples(self.initial_samples)
            if phase == "pilot":
                z0 = z0[jax.random.permutation(key_init, z0.shape[0])]
        else:
            z0 = self.sample(key_init, opts.num_particles)
        if not self._checked:  # warn once per run, not once per batch (on this process's z0)
            _check_initial_energies(pot, self.energies, self.parts, z0, stacklevel=8)
            self._checked = True
        if self.ais.shard:
            z0 = shard_particles(z0)
        dtype = z0.dtype
        inv_mass = jnp.ones((z0.shape[1],), dtype)
        if opts.adapt_mass:
            inv_mass = jnp.clip(jnp.var(z0, axis=0), 1e-6, None).astype(dtype)
        init_step = opts.step_size if opts.step_size is not None else 0.5 * z0.shape[1] ** -0.25
        log_w0 = jnp.zeros((z0.shape[0],), dtype)
        if self.ais.shard:
            log_w0 = shard_particles(log_w0)
        return AISState(z0, log_w0, jnp.asarray(init_step, dtype), inv_mass)

    def advance(self, state: AISState, phase: str, batch: int, t0: int, t1: int, fixed):
        betas, chunk, dim = self.betas, self.segment, state.position.shape[1]
        dtype = state.position.dtype
        t_idx = np.arange(t0, t0 + chunk)
        active = t_idx < t1
        last = self.num_steps - 1
        b_prev = np.where(active, betas[np.minimum(t_idx, last)], 1.0)
        b_next = np.where(active, betas[np.minimum(t_idx + 1, last + 1)], 1.0)
        fixed_eps, fixed_mass = np.ones(chunk), np.ones((chunk, dim))
        if fixed is not None:
            fixed_eps[active] = np.asarray(fixed[0])[t_idx[active]]
            fixed_mass[active] = np.asarray(fixed[1])[t_idx[active]]
        xs = AISInputs(
            jnp.asarray(t_idx, jnp.int32),
            jnp.asarray(b_prev, dtype),
            jnp.asarray(b_next, dtype),
            jnp.asarray(active),
            jnp.asarray(fixed_eps, dtype),
            jnp.asarray(fixed_mass, dtype),
            jnp.full((chunk,), fixed is not None),
        )
        state, info = self.run_segment(state, xs, self._keys(phase, batch)[1])
        n_active = t1 - t0
        return state, {k: to_host(v)[:n_active] for k, v in info._asdict().items()}

    def state_arrays(self, state: AISState) -> dict[str, np.ndarray]:
        return {k: to_host(v) for k, v in state._asdict().items()}

    def state_from_arrays(self, arrays) -> AISState:
        state = AISState(**{k: jnp.asarray(arrays[k]) for k in AISState._fields})
        if self.ais.shard:
            state = state._replace(
                position=shard_particles(state.position),
                log_weights=shard_particles(state.log_weights),
            )
        return state

    def rng_arrays(self) -> dict[str, np.ndarray]:
        key = jax.random.key_data(self.rng_key) if self.typed_key else self.rng_key
        return {"key": np.asarray(key)}

    def set_rng_arrays(self, arrays) -> None:
        key = jnp.asarray(arrays["key"])
        self.rng_key = jax.random.wrap_key_data(key) if self.typed_key else key

    def finish(self, state: AISState, info) -> tuple[np.ndarray, np.ndarray]:
        shift = np.sum(np.asarray(info["weight_shift"], dtype=np.float64))
        log_w = to_host(state.log_weights).astype(np.float64) + shift
        return log_w, to_host(state.position)

    def particles(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.post(jnp.asarray(positions)).items()}

    def dropped_sites(self, positions: np.ndarray) -> list[str]:
        if positions.shape[0] == 0:
            return []
        z = jnp.asarray(positions)
        sites = []
        if self.pot.energy_names:
            values = self.energies(z)
            for name in self.pot.energy_names:
                if not np.all(np.isfinite(np.asarray(values[name]))):
                    sites.append(name)
        if not sites:
            _, lr = self.parts(z)
            if not np.all(np.isfinite(np.asarray(lr))):
                sites = list(self.pot.observed_names)
        return sites


def _check_initial_energies(pot: ModelPotential, energies, parts, z0, stacklevel: int = 3) -> None:
    """Raise (most particles) or warn (a few) when energies are non-finite at the start."""
    n = z0.shape[0]
    if pot.energy_names:
        values = energies(z0)
        for name in pot.energy_names:
            e = np.asarray(values[name]).reshape(n, -1)
            bad = ~np.all(np.isfinite(e), axis=1)
            _complain(int(bad.sum()), n, f"energy site '{name}'", stacklevel)
    _, lr = parts(z0)
    bad = ~np.isfinite(np.asarray(lr))
    _complain(
        int(bad.sum()),
        n,
        f"the model's annealed sites {pot.observed_names + pot.energy_names}",
        stacklevel,
    )


def _complain(num_bad: int, n: int, what: str, stacklevel: int = 3) -> None:
    if num_bad == 0:
        return
    msg = (
        f"{what} is non-finite (NaN or inf) for {num_bad} of {n} initial particles drawn "
        "from the prior/reference"
    )
    if num_bad > n // 2:
        raise ValueError(
            msg + ". Make the energy finite wherever the prior puts mass (e.g. clip its input), "
            "or give AIS a reference= distribution that stays where it is finite"
        )
    warnings.warn(
        msg + "; those particles get zero weight (counted in num_dropped)",
        RuntimeWarning,
        stacklevel=stacklevel,
    )

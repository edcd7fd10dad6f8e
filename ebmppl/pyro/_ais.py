"""Annealed importance sampling for Pyro models (batched over particles, a tight loop over steps).

The same algorithm as :mod:`ebmppl.numpyro._ais`, with the same building blocks:
:func:`build_hmc_move` (one HMC move of a batch of particles at a given beta),
:func:`build_ais_step` (weight update then moves: one annealing step of the population) and
the :class:`AIS` driver. Everything acts on the whole particle batch at once; per-step
statistics stay on the device until the end of the run (no host synchronisation in the loop).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyro
import torch

from .._options import AISOptions, progress_printer
from ..results import AISResult
from ._model import VECTORIZE, ModelPotential, rng_scope

__all__ = ["AIS", "AISInfo", "AISState", "build_ais_step", "build_hmc_move", "build_potential"]

LogParts = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class AISState(NamedTuple):
    """What the next annealing step needs."""

    position: torch.Tensor  # (N, D) unconstrained particles
    log_weights: torch.Tensor  # (N,) float64
    step_size: torch.Tensor  # () base HMC step size (adapted)
    inverse_mass: torch.Tensor  # (D,) diagonal inverse mass matrix (adapted)


class AISInfo(NamedTuple):
    """Per-step diagnostics: 0-d tensors per step, or arrays (num_steps,) in a result."""

    acceptance_rate: torch.Tensor  # mean acceptance probability over live particles
    step_size: torch.Tensor  # step size used at this step
    ess: torch.Tensor  # Kish ESS of the weights after this step's increment
    num_dropped: torch.Tensor  # particles with zero weight after this step


def build_potential(log_parts: LogParts):
    """Return ``potential(z, beta) -> (U, grad U, log_base, log_ratio)`` for particles (N, D).

    ``U = -(log_base + beta * log_ratio)``, shape (N,), is evaluated afresh at the given beta;
    nothing is cached across temperatures (a stale potential biases log Z low). The gradient
    (N, D) is taken with :func:`torch.autograd.grad` of the sum over particles (particles are
    independent, so this is each particle's gradient). Non-finite potentials give non-finite
    gradients for that particle only.
    """

    def potential(z: torch.Tensor, beta: float):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lb, lr = log_parts(z)
            u = -(lb + beta * lr)
            (grad,) = torch.autograd.grad(u.sum(), z, allow_unused=True)
        if grad is None:  # the density does not depend on z at all
            grad = torch.zeros_like(z)
        return u.detach(), grad.detach(), lb.detach(), lr.detach()

    return potential


def build_hmc_move(log_parts: LogParts, num_leapfrog_steps: int):
    """Return ``move(z, U, grad, beta, step_size, inverse_mass, generator=None)``.

    One HMC move of every particle, leaving ``exp(log_base + beta * log_ratio)`` invariant.
    ``z`` (N, D); ``U`` (N,) and ``grad`` (N, D) must be the potential and its gradient at
    ``z`` *for this beta*; ``step_size`` is a scalar or one per particle (N,);
    ``inverse_mass`` is a diagonal (D,). A proposal with a non-finite potential is rejected
    (treated as zero density). Returns ``(z, U, grad, accept_prob)`` with ``accept_prob`` (N,).
    """
    potential = build_potential(log_parts)

    def move(z, u0, g0, beta, step_size, inverse_mass, generator=None):
        n = z.shape[0]
        eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
        if eps.dim() == 1:
            eps = eps[:, None]
        p0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        p0 = p0 / torch.sqrt(inverse_mass)
        z1, p, u1, g = z, p0, u0, g0
        for _ in range(num_leapfrog_steps):
            p = p - 0.5 * eps * g
            z1 = z1 + eps * inverse_mass * p
            u1, g, _, _ = potential(z1, beta)
            p = p - 0.5 * eps * g
        kin0 = 0.5 * torch.sum(inverse_mass * p0**2, dim=1)
        kin1 = 0.5 * torch.sum(inverse_mass * p**2, dim=1)
        log_accept = (u0 + kin0) - (u1 + kin1)
        bad = torch.isnan(log_accept) | ~torch.isfinite(u1)
        log_accept = torch.where(bad, torch.full_like(log_accept, -torch.inf), log_accept)
        accept_prob = torch.clamp(torch.exp(log_accept), max=1.0)
        unif = torch.rand((n,), generator=generator, dtype=z.dtype, device=z.device)
        accepted = torch.log(unif) < log_accept
        acc = accepted[:, None]
        return (
            torch.where(acc, z1, z),
            torch.where(accepted, u1, u0),
            torch.where(acc, g, g0),
            accept_prob,
        )

    return move


def build_ais_step(log_parts: LogParts, opts: AISOptions):
    """Return ``step(state, beta_prev, beta, generator=None) -> (state, info)``.

    The incremental weight ``(beta - beta_prev) * log_ratio(z)`` is taken at the particles'
    current positions (potential and gradient evaluated afresh at the new beta), then
    ``num_mcmc_steps`` HMC moves at ``beta`` follow, each particle with its step size jittered
    by U(1 - j, 1 + j). Non-finite increments drop the particle (log weight -inf). The step
    size is adapted by ``exp(adapt_rate * (mean acceptance - target))`` and the diagonal
    inverse mass is the Stan-shrunk variance of the live particles. ``beta_prev`` and
    ``beta`` are Python floats; nothing in the step synchronises with the host.
    """
    potential = build_potential(log_parts)
    move = build_hmc_move(log_parts, opts.num_leapfrog_steps)

    def step(state: AISState, beta_prev: float, beta: float, generator=None):
        z = state.position
        n = z.shape[0]
        u, g, _, lr = potential(z, beta)
        if beta > beta_prev:
            incr = (beta - beta_prev) * lr.to(torch.float64)
        else:
            incr = torch.zeros((n,), dtype=torch.float64, device=z.device)
        neg_inf = torch.full_like(incr, -torch.inf)
        log_w = state.log_weights + torch.where(torch.isfinite(incr), incr, neg_inf)
        log_w = torch.where(torch.isnan(log_w), neg_inf, log_w)
        alive = torch.isfinite(log_w)
        num_alive = alive.sum().clamp(min=1).to(z.dtype)

        j = opts.step_size_jitter
        jit = torch.rand((n,), generator=generator, dtype=z.dtype, device=z.device)
        eps = state.step_size * (1.0 - j + 2.0 * j * jit)
        acc = torch.zeros((n,), dtype=z.dtype, device=z.device)
        for _ in range(opts.num_mcmc_steps):
            z, u, g, a = move(z, u, g, beta, eps, state.inverse_mass, generator)
            acc = acc + a
        acc = acc / opts.num_mcmc_steps
        mean_acc = torch.where(alive, acc, torch.zeros_like(acc)).sum() / num_alive
        step_size = state.step_size
        if opts.adapt_step_size:
            step_size = step_size * torch.exp(opts.adapt_rate * (mean_acc - opts.target_accept))
        inverse_mass = state.inverse_mass
        if opts.adapt_mass:
            mask = alive[:, None]
            zero = torch.zeros_like(z)
            mean = torch.where(mask, z, zero).sum(0) / num_alive
            var = torch.where(mask, (z - mean) ** 2, zero).sum(0) / num_alive
            # Stan-style shrinkage towards a small constant keeps the metric well defined.
            var = (num_alive / (num_alive + 5.0)) * var + 1e-3 * (5.0 / (num_alive + 5.0))
            inverse_mass = torch.where(torch.isfinite(var).all(), var, inverse_mass)
        lw_norm = log_w - torch.logsumexp(log_w, 0)
        info = AISInfo(
            acceptance_rate=mean_acc,
            step_size=state.step_size,
            ess=1.0 / torch.exp(2 * lw_norm).sum(),
            num_dropped=n - alive.sum(),
        )
        return AISState(z, log_w, step_size, inverse_mass), info

    return step


class AIS:
    """Annealed importance sampling from the prior (or a reference) to a Pyro model.

    The path is ``prior(z) * L(z) ** beta``, where ``L`` collects every energy factor, every
    other factor and every observed site; ``log_z`` is the log evidence of the whole
    unnormalised model (for ``x ~ prior; energy("E", E, x)``: ``log E_prior[exp(-E(x))]``).
    The same algorithm, options and result as :class:`ebmppl.numpyro.AIS`.

    The model is evaluated on all particles at once (see :class:`ModelPotential` for how, and
    what ``vectorize`` means); there is no Python loop over particles. Device and dtype are
    those of the latent values the model draws (``torch.set_default_dtype(torch.float64)``
    or float64 parameters give a float64 run); log weights are accumulated in float64.

    Args:
        model: a Pyro model (a callable using pyro primitives).
        num_particles: number of independent AIS chains.
        num_steps: number of annealing steps (ignored if ``schedule`` is an array).
        schedule: ``"sigmoidal"`` (default), ``"linear"``, ``"geometric"`` or an array of betas
            from 0 to 1.
        num_leapfrog_steps: leapfrog steps per HMC move (1 gives MALA).
        num_mcmc_steps: HMC moves per temperature.
        step_size: initial HMC step size (default ``0.5 * dim ** -0.25``).
        target_accept: acceptance rate the step size is adapted towards across the schedule.
        adapt_step_size, adapt_mass: adapt the step size / a diagonal mass matrix (from the
            particle population's variance) after each step.
        step_size_jitter: each particle's step size is the base one times U(1-j, 1+j); avoids
            resonant trajectories in high dimension.
        reference: ``None`` (start from the prior), ``{site: Distribution}`` or ``"laplace"``;
            needed when a latent prior is improper.
        vectorize: ``"auto"`` (default), ``"plate"`` or ``"vmap"``; see :class:`ModelPotential`.
        progress: print progress to stderr (default: when stderr is a terminal).
    """

    def __init__(self, model, *, reference=None, vectorize: str = "auto", **options) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if vectorize not in VECTORIZE:
            raise ValueError(f"vectorize must be one of {VECTORIZE}, got {vectorize!r}")
        self.model = model
        self.reference = reference
        self.vectorize = vectorize
        self.options = AISOptions.create(**options)

    def run(self, *model_args, generator: torch.Generator | None = None, **model_kwargs):
        """Run AIS and return an :class:`~ebmppl.AISResult` (log Z, weights, particles, stats).

        Randomness comes from torch's global RNG (``pyro.set_rng_seed(s)`` makes the result
        reproducible, bit for bit) or from ``generator``, a ``torch.Generator`` on the model's
        device (then the global RNG is left untouched). ``generator`` is reserved: a model
        keyword argument of that name cannot be passed through ``run``.

        Returns:
            An :class:`~ebmppl.AISResult` with ``backend="pyro"``: ``log_weights`` (N,),
            ``particles`` per latent (and deterministic) site ``(N, *site shape)``, per-step
            ``acceptance_rate``, ``step_size``, ``ess_trace`` (num_steps,), and ``info`` with
            the options, site names, ``num_dropped_per_step``, ``wall_time``, ``vectorize``,
            ``dtype`` and ``device``.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        opts = self.options
        start = time.perf_counter()
        with rng_scope(generator):
            pot = ModelPotential(
                self.model,
                model_args,
                model_kwargs,
                reference=self.reference,
                vectorize=self.vectorize,
            )
        n = opts.num_particles
        with pyro.validation_enabled(False), torch.no_grad():
            z0 = pot.sample_base(n, generator)
            _check_initial_energies(pot, z0)
            state, info = self._anneal(pot, z0, generator)
        betas = opts.betas
        num_steps = betas.size - 1
        log_w = state.log_weights.detach().cpu().numpy().astype(np.float64)
        num_dropped = int(np.sum(~np.isfinite(log_w)))
        if num_dropped == n:
            first = int(np.argmax(info.num_dropped >= n))
            raise RuntimeError(
                f"every particle's weight became zero by step {first} "
                f"(beta={betas[first + 1]:.4g}): the energy sites {pot.energy_names} or observed "
                f"sites {pot.observed_names} returned non-finite values there. Check the energy "
                "for NaN/inf"
            )
        with pyro.validation_enabled(False):
            particles = {
                k: v.detach().cpu().numpy() for k, v in pot.postprocess(state.position).items()
            }
        evals = num_steps * (1 + opts.num_mcmc_steps * opts.num_leapfrog_steps)
        return AISResult.from_log_weights(
            log_w,
            betas=betas,
            particles=particles,
            acceptance_rate=info.acceptance_rate,
            step_size=info.step_size,
            ess_trace=info.ess,
            backend="pyro",
            gradient_evaluations=evals,
            num_dropped=num_dropped,
            info={
                **opts.describe(),
                "reference": pot.reference_kind,
                "energy_sites": tuple(pot.energy_names),
                "observed_sites": tuple(pot.observed_names),
                "latent_sites": tuple(pot.latent),
                "num_dropped_per_step": np.asarray(info.num_dropped),
                "wall_time": time.perf_counter() - start,
                "devices": 1,
                "device": str(pot.device),
                "dtype": str(pot.dtype).replace("torch.", ""),
                "vectorize": pot.vectorize,
            },
        )

    def _anneal(self, pot: ModelPotential, z0: torch.Tensor, generator):
        """The annealing loop; returns the final state and per-step info as NumPy arrays."""
        opts = self.options
        n, dtype, device = z0.shape[0], z0.dtype, z0.device
        betas = [float(b) for b in opts.betas]
        num_steps = len(betas) - 1
        inv_mass = torch.ones((pot.dim,), dtype=dtype, device=device)
        if opts.adapt_mass:
            inv_mass = torch.clamp(torch.var(z0, dim=0, unbiased=False), min=1e-6)
        init_step = opts.step_size if opts.step_size is not None else 0.5 * pot.dim**-0.25
        state = AISState(
            z0,
            torch.zeros((n,), dtype=torch.float64, device=device),
            torch.as_tensor(init_step, dtype=dtype, device=device),
            inv_mass,
        )
        step = build_ais_step(pot.log_parts, opts)
        progress = opts.progress if opts.progress is not None else sys.stderr.isatty()
        report = progress_printer("AIS (pyro)", num_steps) if progress else None
        every = max(1, -(-num_steps // 20))
        infos: list[AISInfo] = []
        for t in range(num_steps):
            state, info = step(state, betas[t], betas[t + 1], generator)
            infos.append(info)
            if report is not None and ((t + 1) % every == 0 or t + 1 == num_steps):
                report(t + 1, _stack(infos[-every:]))
        return state, _stack(infos)


def _stack(infos: list[AISInfo]) -> AISInfo:
    """Per-step 0-d tensors -> NumPy arrays (num_steps,): the one host transfer of a run."""
    return AISInfo(
        *(torch.stack([torch.as_tensor(v) for v in vals]).cpu().numpy() for vals in zip(*infos))
    )


def _check_initial_energies(pot: ModelPotential, z0: torch.Tensor) -> None:
    """Raise (most particles) or warn (a few) when energies are non-finite at the start."""
    n = z0.shape[0]
    if pot.energy_names:
        values = pot.energy_values(z0)
        for name in pot.energy_names:
            e = values[name].reshape(n, -1)
            bad = ~torch.all(torch.isfinite(e), dim=1)
            _complain(int(bad.sum()), n, f"energy site '{name}'")
    _, lr = pot.log_parts(z0)
    bad = ~torch.isfinite(lr)
    _complain(
        int(bad.sum()), n, f"the model's annealed sites {pot.observed_names + pot.energy_names}"
    )


def _complain(num_bad: int, n: int, what: str) -> None:
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
        stacklevel=4,
    )

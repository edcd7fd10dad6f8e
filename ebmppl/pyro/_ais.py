"""Annealed importance sampling for Pyro models (batched over particles, a tight loop over steps).

The same algorithm as :mod:`ebmppl.numpyro._ais`, with the same building blocks:
:func:`build_hmc_move` (one HMC move of a batch of particles at a given beta),
:func:`build_mutation` (the HMC moves of one temperature plus kernel adaptation),
:func:`build_ais_step` (weight update then moves: one annealing step of the population) and
the :class:`AIS` driver. Everything acts on the whole particle batch at once; per-step
statistics stay on the device until the end of the run (no host synchronisation in the loop).

The building blocks also accept extra leading batch axes (``z`` of shape ``(*B, N, D)``), which
:mod:`ebmppl.pyro._smc` uses to run independent replicas in the same model evaluations.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyro
import torch

from .._assemble import run_ais
from .._options import AISOptions
from .._runs import RunControl
from ..results import AISResult
from ._model import ModelPotential, check_sampler, potential_for_run

__all__ = [
    "AIS",
    "AISInfo",
    "AISState",
    "build_ais_step",
    "build_hmc_move",
    "build_mutation",
    "build_potential",
    "kish_ess",
    "weight_update",
]

LogParts = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Beta = float | torch.Tensor


class AISState(NamedTuple):
    """What the next annealing step needs."""

    position: torch.Tensor  # (N, D) unconstrained particles
    log_weights: torch.Tensor  # (N,) float64
    step_size: torch.Tensor  # () base HMC step size (adapted)
    inverse_mass: torch.Tensor  # (D,) diagonal inverse mass matrix (adapted)


class AISInfo(NamedTuple):
    """Per-step diagnostics: tensors per step, or arrays with a leading (num_steps,) axis."""

    acceptance_rate: torch.Tensor  # () mean acceptance probability over live particles
    step_size: torch.Tensor  # () step size used at this step
    ess: torch.Tensor  # () Kish ESS of the weights after this step's increment
    num_dropped: torch.Tensor  # () particles with zero weight after this step
    inverse_mass: torch.Tensor  # (D,) diagonal inverse mass used at this step


def forward_parts(log_parts: LogParts, z: torch.Tensor):
    """Evaluate ``log_parts`` on particles ``z`` (*B, D) with the graph kept for a gradient.

    Batch axes are flattened for the model, which sees (prod(B), D). Must run under
    :func:`torch.enable_grad`. Returns ``(z_leaf, log_base, log_ratio)``, the last two (*B,).
    """
    z = z.detach().requires_grad_(True)
    batch = z.shape[:-1]
    lb, lr = log_parts(z.reshape(-1, z.shape[-1]))
    return z, lb.reshape(batch), lr.reshape(batch)


def potential_from_parts(z_leaf, log_base, log_ratio, beta: Beta):
    """``U = -(log_base + beta * log_ratio)`` and its gradient from :func:`forward_parts`.

    ``beta`` is a float or a tensor broadcastable to ``log_base`` (e.g. (R, 1) for replicas).
    Returns detached ``(U (*B,), grad U (*B, D))``; the gradient of the sum over particles is
    each particle's own gradient (particles are independent).
    """
    u = -(log_base + beta * log_ratio)
    (grad,) = torch.autograd.grad(u.sum(), z_leaf, allow_unused=True)
    if grad is None:  # the density does not depend on z at all
        grad = torch.zeros_like(z_leaf)
    return u.detach(), grad.detach()


def build_potential(log_parts: LogParts, chunk_size: int | None = None):
    """Return ``potential(z, beta) -> (U, grad U, log_base, log_ratio)`` for particles (*B, D).

    ``U = -(log_base + beta * log_ratio)``, shape (*B,), is evaluated afresh at the given beta;
    nothing is cached across temperatures (a stale potential biases log Z low). ``beta`` is a
    float or a tensor broadcastable to (*B,). The gradient (*B, D) is taken with
    :func:`torch.autograd.grad` of the sum over particles. Non-finite potentials give
    non-finite gradients for that particle only. ``chunk_size``: evaluate the model on at
    most this many particles at a time (bounds the memory of the autograd graph); only for a
    single batch axis (N, D) with a float beta.
    """

    def potential(z: torch.Tensor, beta: Beta):
        with torch.enable_grad():
            z_leaf, lb, lr = forward_parts(log_parts, z)
            u, grad = potential_from_parts(z_leaf, lb, lr, beta)
        return u, grad, lb.detach(), lr.detach()

    if chunk_size is None:
        return potential

    def chunked(z: torch.Tensor, beta: Beta):
        if z.dim() != 2 or z.shape[0] <= chunk_size:
            return potential(z, beta)
        if isinstance(beta, torch.Tensor) and beta.numel() > 1:
            raise ValueError("chunk_size needs one beta for all particles")
        parts = [potential(c, beta) for c in torch.split(z, chunk_size)]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))

    return chunked


def build_hmc_move(log_parts: LogParts, num_leapfrog_steps: int, chunk_size: int | None = None):
    """Return ``move(z, U, grad, beta, step_size, inverse_mass, generator=None)``.

    One HMC move of every particle, leaving ``exp(log_base + beta * log_ratio)`` invariant.
    ``z`` (*B, D); ``U`` (*B,) and ``grad`` (*B, D) must be the potential and its gradient at
    ``z`` *for this beta*; ``beta`` is a float or a tensor broadcastable to (*B,);
    ``step_size`` is a scalar or one per particle (*B,); ``inverse_mass`` is a diagonal
    broadcastable to (*B, D), e.g. (D,). A proposal with a non-finite potential is rejected
    (treated as zero density). Returns ``(z, U, grad, accept_prob)`` with ``accept_prob`` (*B,).
    ``chunk_size``: see :func:`build_potential`.
    """
    potential = build_potential(log_parts, chunk_size)

    def move(z, u0, g0, beta, step_size, inverse_mass, generator=None):
        eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
        if eps.dim() > 0:
            eps = eps.unsqueeze(-1)
        p0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        p0 = p0 / torch.sqrt(inverse_mass)
        z1, p, u1, g = z, p0, u0, g0
        for _ in range(num_leapfrog_steps):
            p = p - 0.5 * eps * g
            z1 = z1 + eps * inverse_mass * p
            u1, g, _, _ = potential(z1, beta)
            p = p - 0.5 * eps * g
        kin0 = 0.5 * torch.sum(inverse_mass * p0**2, dim=-1)
        kin1 = 0.5 * torch.sum(inverse_mass * p**2, dim=-1)
        log_accept = (u0 + kin0) - (u1 + kin1)
        bad = torch.isnan(log_accept) | ~torch.isfinite(u1)
        log_accept = torch.where(bad, torch.full_like(log_accept, -torch.inf), log_accept)
        accept_prob = torch.clamp(torch.exp(log_accept), max=1.0)
        unif = torch.rand(z.shape[:-1], generator=generator, dtype=z.dtype, device=z.device)
        # log(1 - U), U in [0, 1): never -inf (log(U) is, at U = 0, and then accepted any
        # finite proposal however improbable).
        accepted = torch.log1p(-unif) < log_accept
        acc = accepted.unsqueeze(-1)
        return (
            torch.where(acc, z1, z),
            torch.where(accepted, u1, u0),
            torch.where(acc, g, g0),
            accept_prob,
        )

    return move


def build_mutation(log_parts: LogParts, opts: AISOptions):
    """Return ``mutate(z, u, g, beta, alive, step_size, inverse_mass, generator=None)``.

    Runs ``num_mcmc_steps`` HMC moves of every particle at ``beta`` (each particle's step size
    jittered by U(1 - j, 1 + j)), then adapts the step size by
    ``exp(adapt_rate * (mean acceptance - target_accept))`` and the diagonal inverse mass to
    the Stan-shrunk variance of the live particles. Shapes, with optional leading batch axes B
    (independent populations, e.g. SMC replicas): ``z`` (*B, N, D); ``u`` (*B, N) and ``g``
    (*B, N, D) the potential and gradient at ``z`` for this beta; ``beta`` a float or a tensor
    (*B,); ``alive`` (*B, N) bool; ``step_size`` (*B,); ``inverse_mass`` (*B, D). Returns
    ``(z_new, mean_acceptance (*B,), new_step_size (*B,), new_inverse_mass (*B, D))``.
    """
    move = build_hmc_move(log_parts, opts.num_leapfrog_steps, getattr(opts, "chunk_size", None))

    def mutate(z, u, g, beta, alive, step_size, inverse_mass, generator=None):
        num_alive = alive.sum(-1).clamp(min=1).to(z.dtype)
        j = opts.step_size_jitter
        jit = torch.rand(z.shape[:-1], generator=generator, dtype=z.dtype, device=z.device)
        eps = step_size.unsqueeze(-1) * (1.0 - j + 2.0 * j * jit)
        b = beta.unsqueeze(-1) if isinstance(beta, torch.Tensor) else beta
        inv = inverse_mass.unsqueeze(-2)
        acc = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for _ in range(opts.num_mcmc_steps):
            z, u, g, a = move(z, u, g, b, eps, inv, generator)
            acc = acc + a
        acc = acc / opts.num_mcmc_steps
        mean_acc = torch.where(alive, acc, torch.zeros_like(acc)).sum(-1) / num_alive
        new_step = step_size
        if opts.adapt_step_size:
            new_step = step_size * torch.exp(opts.adapt_rate * (mean_acc - opts.target_accept))
        new_inv_mass = inverse_mass
        if opts.adapt_mass:
            mask = alive.unsqueeze(-1)
            zero = torch.zeros_like(z)
            na = num_alive.unsqueeze(-1)
            mean = torch.where(mask, z, zero).sum(-2, keepdim=True) / na.unsqueeze(-1)
            var = torch.where(mask, (z - mean) ** 2, zero).sum(-2) / na
            # Stan-style shrinkage towards a small constant keeps the metric well defined.
            var = (na / (na + 5.0)) * var + 1e-3 * (5.0 / (na + 5.0))
            ok = torch.isfinite(var).all(-1, keepdim=True)
            new_inv_mass = torch.where(ok, var, inverse_mass)
        return z, mean_acc, new_step, new_inv_mass

    return mutate


def weight_update(log_weights, log_ratio, beta_prev: Beta, beta: Beta):
    """Add ``(beta - beta_prev) * log_ratio`` in float64; non-finite increments drop (-inf).

    ``log_weights`` (*B, N) float64, ``log_ratio`` (*B, N); the betas are floats or tensors
    broadcastable to (*B, N) (e.g. (R, 1)); they may decrease (reverse AIS). A particle whose
    beta does not change gets no increment (so a -inf log ratio does not become NaN).
    """
    lr = log_ratio.to(torch.float64)
    if isinstance(beta, torch.Tensor) or isinstance(beta_prev, torch.Tensor):
        b = torch.as_tensor(beta, device=lr.device).to(torch.float64)
        b_prev = torch.as_tensor(beta_prev, device=lr.device).to(torch.float64)
        incr = torch.where(b != b_prev, (b - b_prev) * lr, torch.zeros_like(lr))
    elif beta != beta_prev:
        incr = (beta - beta_prev) * lr
    else:
        incr = torch.zeros_like(lr)
    neg_inf = torch.full_like(incr, -torch.inf)
    log_w = log_weights + torch.where(torch.isfinite(incr), incr, neg_inf)
    return torch.where(torch.isnan(log_w), neg_inf, log_w)


def kish_ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Kish ESS ``1 / sum(W^2)`` of the normalised weights over the last axis: (*B,)."""
    lw_norm = log_weights - torch.logsumexp(log_weights, -1, keepdim=True)
    return 1.0 / torch.exp(2 * lw_norm).sum(-1)


def build_ais_step(log_parts: LogParts, opts: AISOptions):
    """Return ``step(state, beta_prev, beta, generator=None, kernel=None) -> (state, info)``.

    The incremental weight ``(beta - beta_prev) * log_ratio(z)`` is taken at the particles'
    current positions (potential and gradient evaluated afresh at the new beta), then the
    moves of :func:`build_mutation` at ``beta`` follow. Non-finite increments drop the
    particle (log weight -inf; it then stays where it was dropped). Betas may also decrease
    (reverse AIS). ``beta_prev`` and
    ``beta`` are Python floats. ``kernel``: ``(step_size (), inverse_mass (D,))`` tensors to
    use instead of the state's adapted ones (the per-step kernel of a pilot run). Nothing in
    the step synchronises with the host.
    """
    potential = build_potential(log_parts, getattr(opts, "chunk_size", None))
    mutate = build_mutation(log_parts, opts)

    def step(state: AISState, beta_prev: float, beta: float, generator=None, kernel=None):
        z = state.position
        u, g, _, lr = potential(z, beta)
        log_w = weight_update(state.log_weights, lr, beta_prev, beta)
        alive = torch.isfinite(log_w)
        eps, inv_mass = (state.step_size, state.inverse_mass) if kernel is None else kernel
        z_new, mean_acc, step_size, inverse_mass = mutate(
            z, u, g, beta, alive, eps, inv_mass, generator
        )
        # A dropped particle stays where its weight died, so the culprit site can be named.
        z_new = torch.where(alive.unsqueeze(-1), z_new, z)
        info = AISInfo(
            acceptance_rate=mean_acc,
            step_size=eps,
            ess=kish_ess(log_w),
            num_dropped=z.shape[0] - alive.sum(),
            inverse_mass=inv_mass,
        )
        return AISState(z_new, log_w, step_size, inverse_mass), info

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
        vectorize: ``"auto"`` (default), ``"plate"`` or ``"vmap"``; see :class:`ModelPotential`.
        progress: print progress to stderr (default: when stderr is a terminal).
    """

    def __init__(self, model, *, reference=None, vectorize: str = "auto", **options) -> None:
        check_sampler(model, vectorize)
        self.model = model
        self.reference = reference
        self.vectorize = vectorize
        self.options = AISOptions.create(**options)

    def run(
        self,
        *model_args,
        generator: torch.Generator | None = None,
        target_se: float | None = None,
        max_time: float | None = None,
        max_batches: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        **model_kwargs,
    ):
        """Run AIS and return an :class:`~ebmppl.AISResult` (log Z, weights, particles, stats).

        Randomness comes from torch's global RNG (``pyro.set_rng_seed(s)`` makes the result
        reproducible, bit for bit) or from ``generator``, a ``torch.Generator`` on the model's
        device (then the global RNG is left untouched). With pilot adaptation the pilot draws
        its own initial particles and randomness from the same source.

        Args:
            target_se: run independent batches of ``num_particles`` (kernels from one pilot)
                until the standard error of log Z is at most this; ``info["stopped_by"]`` says
                whether ``"target_se"``, ``"max_time"`` or ``"max_batches"`` ended the run.
            max_time: time budget in seconds for adding batches (the first always runs).
            max_batches: cap on the number of batches (default 100 with a target or budget).
            checkpoint: file to save the run to every ``checkpoint_every`` steps (with the
                random state), and to resume from when it exists (the resumed run gives the
                uninterrupted run's result, bit for bit). On Ctrl-C the last completed segment
                is saved (to a temporary file when no path is given) and
                :class:`~ebmppl.RunInterrupted` names it.
            checkpoint_every: steps between saves (default: 10 saves per pass).

        ``generator`` and the arguments above are reserved: a model keyword argument cannot
        share their names.

        Returns:
            An :class:`~ebmppl.AISResult` with ``backend="pyro"``: ``log_weights`` (N,),
            ``particles`` per latent (and deterministic) site ``(N, *site shape)``, per-step
            ``acceptance_rate``, ``step_size``, ``ess_trace`` (num_steps,), and ``info`` with
            the options, site names, ``num_dropped_per_step``, ``dropped_at_betas``,
            ``pilot_gradient_evaluations``, ``stopped_by``, ``num_batches``, ``direction``
            (``"forward"``), ``wall_time``, ``vectorize``, ``dtype``, ``device``.
        """
        control = RunControl.create(
            target_se=target_se,
            max_time=max_time,
            max_batches=max_batches,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
        return self._run(model_args, model_kwargs, generator, control=control)

    def run_reverse(
        self,
        exact_samples,
        *model_args,
        generator: torch.Generator | None = None,
        **model_kwargs,
    ) -> AISResult:
        """Reverse AIS from exact draws of the target (beta 1 -> 0), for BDMC upper bounds.

        ``exact_samples`` maps every latent site to an array or tensor (num_samples, ...) of
        exact draws from the normalised model (constrained space); there is one particle per
        draw. The returned result's log weights estimate 1/Z unbiasedly, so its ``log_z``
        (= -log mean w) is a stochastic UPPER bound on log Z (Grosse, Ghahramani & Adams
        2015); ``log_z_se`` is its delta-method error; ``info["direction"]`` is
        ``"reverse"`` and ``betas`` run from 1 to 0. With pilot adaptation the pilot reuses
        the exact samples in a random order.
        """
        return self._run(model_args, model_kwargs, generator, initial=exact_samples)

    def _run(
        self, model_args, model_kwargs, generator, initial=None, control: RunControl | None = None
    ) -> AISResult:
        control = control or RunControl.create()
        opts = self.options
        start = time.perf_counter()
        pot = potential_for_run(self, model_args, model_kwargs, generator)
        with pyro.validation_enabled(False), torch.no_grad():
            return run_ais(
                make_engine=lambda betas, _segment: _Engine(self, pot, betas, generator, initial),
                opts=opts,
                pot=pot,
                model=self.model,
                control=control,
                reverse=initial is not None,
                backend="pyro",
                start=start,
                extra_info={
                    "devices": 1,
                    "device": str(pot.device),
                    "dtype": str(pot.dtype).replace("torch.", ""),
                    "vectorize": pot.vectorize,
                },
            )


class _Engine:
    """The Pyro side of :func:`ebmppl._runs.drive`: batched AIS steps, one loop over steps."""

    def __init__(self, ais: AIS, pot: ModelPotential, betas, generator, initial) -> None:
        self.ais, self.pot, self.generator = ais, pot, generator
        self.steps = [float(b) for b in betas]
        self.initial_samples = initial
        self.step = build_ais_step(pot.log_parts, ais.options)
        self._z0 = None
        if initial is not None:
            self._z0 = pot.unconstrain_samples(initial)
        n = ais.options.num_particles if self._z0 is None else self._z0.shape[0]
        self.num_particles = int(n)
        self._checked = False

    def initial(self, phase: str, batch: int) -> AISState:
        opts, pot, gen = self.ais.options, self.pot, self.generator
        if self._z0 is not None:
            if batch > 0:
                raise ValueError(
                    "reverse AIS runs one batch (one particle per exact sample); "
                    "target_se/max_time are not available for run_reverse"
                )
            z0 = self._z0
            if phase == "pilot":
                z0 = z0[torch.randperm(z0.shape[0], generator=gen, device=z0.device)]
        else:
            z0 = pot.sample_base(opts.num_particles, gen)
        if not self._checked:  # warn once per run, not once per batch
            _check_initial_energies(pot, z0, stacklevel=8)
            self._checked = True
        dtype, device = z0.dtype, z0.device
        inv_mass = torch.ones((pot.dim,), dtype=dtype, device=device)
        if opts.adapt_mass:
            inv_mass = torch.clamp(torch.var(z0, dim=0, unbiased=False), min=1e-6)
        init_step = opts.step_size if opts.step_size is not None else 0.5 * pot.dim**-0.25
        return AISState(
            z0,
            torch.zeros((z0.shape[0],), dtype=torch.float64, device=device),
            torch.as_tensor(init_step, dtype=dtype, device=device),
            inv_mass,
        )

    def advance(self, state: AISState, phase: str, batch: int, t0: int, t1: int, fixed):
        z = state.position
        if fixed is not None:
            eps = torch.as_tensor(np.asarray(fixed[0])[t0:t1], dtype=z.dtype, device=z.device)
            mass = torch.as_tensor(np.asarray(fixed[1])[t0:t1], dtype=z.dtype, device=z.device)
        record = StepBuffers(t1 - t0)
        for t in range(t0, t1):
            kernel = None if fixed is None else (eps[t - t0], mass[t - t0])
            state, info = self.step(state, self.steps[t], self.steps[t + 1], self.generator, kernel)
            record.put(t - t0, info)
        return state, AISInfo(*(v.cpu().numpy() for v in record.stacked()))._asdict()

    def state_arrays(self, state: AISState) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in state._asdict().items()}

    def state_from_arrays(self, arrays) -> AISState:
        device = self.pot.device
        return AISState(**{k: torch.as_tensor(arrays[k], device=device) for k in AISState._fields})

    def rng_arrays(self) -> dict[str, np.ndarray]:
        if self.generator is not None:
            return {"generator": self.generator.get_state().numpy()}
        out = {"cpu": torch.get_rng_state().numpy()}
        if self.pot.device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(self.pot.device).numpy()
        return out

    def set_rng_arrays(self, arrays) -> None:
        if self.generator is not None:
            if "generator" not in arrays:
                raise ValueError("the checkpoint was written by a run without generator=")
            self.generator.set_state(torch.as_tensor(arrays["generator"]))
            return
        if "cpu" not in arrays:
            raise ValueError("the checkpoint was written by a run with generator=; pass one")
        torch.set_rng_state(torch.as_tensor(arrays["cpu"]))
        if "cuda" in arrays:
            torch.cuda.set_rng_state(torch.as_tensor(arrays["cuda"]), self.pot.device)

    def finish(self, state: AISState, info) -> tuple[np.ndarray, np.ndarray]:
        log_w = state.log_weights.detach().cpu().numpy().astype(np.float64)
        return log_w, state.position.detach().cpu().numpy()

    def particles(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        z = torch.as_tensor(positions, device=self.pot.device)
        return {k: v.detach().cpu().numpy() for k, v in self.pot.postprocess(z).items()}

    def dropped_sites(self, positions: np.ndarray) -> list[str]:
        if positions.shape[0] == 0:
            return []
        pot = self.pot
        z = torch.as_tensor(positions, device=pot.device)
        sites = []
        with pyro.validation_enabled(False), torch.no_grad():
            if pot.energy_names:
                values = pot.energy_values(z)
                sites = [k for k in pot.energy_names if not torch.isfinite(values[k]).all()]
            if not sites:
                _, lr = pot.log_parts(z)
                if not torch.isfinite(lr).all():
                    sites = list(pot.observed_names)
        return sites


class StepBuffers:
    """Per-step statistics of a loop, written into tensors allocated at the first step.

    Keeping a list of small per-step tensors instead would scatter long-lived allocations
    between the step's freed ``(N, D)`` temporaries in glibc's heap, so the process's peak RSS
    would grow with the number of steps although live data does not (measured: 357 -> 555 MiB
    from 100 to 1000 AIS steps at N = 10^4, D = 10; 323 -> 323 MiB with these buffers).
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.buffers: list[torch.Tensor] | None = None

    def put(self, i: int, values) -> None:
        """Store step ``i``'s values (a sequence of tensors or numbers); no host sync."""
        values = [torch.as_tensor(v) for v in values]
        if self.buffers is None:
            self.buffers = [
                torch.empty((self.length, *v.shape), dtype=v.dtype, device=v.device) for v in values
            ]
        for buf, v in zip(self.buffers, values, strict=True):
            buf[i] = v

    def stacked(self, count: int | None = None) -> list[torch.Tensor]:
        """The first ``count`` (default all) steps: one ``(count, *shape)`` tensor per value."""
        if self.buffers is None:
            raise ValueError("no step was recorded")
        return [b[:count] for b in self.buffers]


def _check_initial_energies(pot: ModelPotential, z0: torch.Tensor, stacklevel: int) -> None:
    """Raise (most particles) or warn (a few) when energies are non-finite at the start.

    ``z0`` (N, D); ``stacklevel`` of the warning, counted from the function that warns
    (``_complain``), so that it points at the user's call.
    """
    n = z0.shape[0]
    if pot.energy_names:
        values = pot.energy_values(z0)
        for name in pot.energy_names:
            e = values[name].reshape(n, -1)
            bad = ~torch.all(torch.isfinite(e), dim=1)
            _complain(int(bad.sum()), n, f"energy site '{name}'", stacklevel)
    _, lr = pot.log_parts(z0)
    bad = ~torch.isfinite(lr)
    what = f"the model's annealed sites {pot.observed_names + pot.energy_names}"
    _complain(int(bad.sum()), n, what, stacklevel)


def _complain(num_bad: int, n: int, what: str, stacklevel: int) -> None:
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

"""Replica exchange (parallel tempering) for Pyro models, with an adaptive ladder.

The same algorithm, options and result as :mod:`ebmppl.numpyro._pt`. ``num_temperatures``
tempered copies ``base(z) exp(beta_k log_ratio(z))`` (beta_0 = 0, beta_{K-1} = 1) are moved by
HMC and swapped between neighbours with the deterministic even/odd scheme (non-reversible
parallel tempering). ``num_chains`` independent tempering systems run side by side: all K x M
replicas live in one tensor (K, M, D) and every model evaluation covers all of them (no Python
loop over temperatures or chains); their spread gives the standard errors. During warm-up the
ladder is re-spaced so that the swap rejection rates are equal (Syed et al. 2021: equal
increments of the communication barrier). After warm-up, the draws at beta = 1 cross modes
and the recorded ``log_ratio`` values give two log Z estimates from the same run: stepping
stone (Xie et al. 2011) and thermodynamic integration (corrected trapezoid on the final ladder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch

from .._pt_common import (
    ReplicaExchangeResult,
    check_options,
    ladder_from_rejections,
    replica_exchange_result,
    run_rounds,
)
from ._ais import StepBuffers, _check_initial_energies, build_hmc_move, build_potential
from ._model import ModelPotential, check_sampler, potential_for_run

__all__ = [
    "ReplicaExchange",
    "ReplicaExchangeResult",
    "build_pt_iteration",
    "ladder_from_rejections",
]

LogParts = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class PTState(NamedTuple):
    """What the next replica-exchange iteration needs."""

    position: torch.Tensor  # (K, M, D) unconstrained replicas, row k at betas[k]
    step_size: torch.Tensor  # (K,) HMC step size per temperature
    inverse_mass: torch.Tensor  # (K, D) diagonal inverse mass per temperature
    iteration: int  # iterations done so far (sets the even/odd swap parity)


class PTStats(NamedTuple):
    """Per-iteration statistics (tensors; stacked to arrays with a leading (T,) axis)."""

    log_ratio: torch.Tensor  # (K, M) log_ratio of each replica after the swaps
    acceptance_rate: torch.Tensor  # (K,) mean HMC acceptance over chains
    swap_prob: torch.Tensor  # (K-1,) mean swap acceptance probability over chains
    pair_on: torch.Tensor  # (K-1,) bool: pair (k, k+1) was proposed this iteration
    top: torch.Tensor  # (M, D) replicas at beta = 1 after the swaps


def build_pt_iteration(log_parts: LogParts, num_leapfrog_steps: int, target_accept: float):
    """Return ``iteration(state, betas, adapt, generator=None) -> (state, PTStats)``.

    One HMC move of every replica at its own temperature (potential evaluated afresh at
    ``betas``), then the even/odd swaps between neighbours, then (``adapt=True``) the step size
    per temperature moves by ``exp(0.5 * (acceptance - target_accept))`` and the inverse mass
    towards the variance over chains. ``betas`` (K,) tensor of the state's dtype. Nothing here
    synchronises with the host.
    """
    potential = build_potential(log_parts)
    move = build_hmc_move(log_parts, num_leapfrog_steps)

    def iteration(state: PTState, betas: torch.Tensor, adapt: bool, generator=None):
        z = state.position
        k, m, _ = z.shape
        b = betas.unsqueeze(-1)  # (K, 1) broadcasts against (K, M)
        u, g, _, _ = potential(z, b)
        z, _, _, acc = move(
            z,
            u,
            g,
            b,
            state.step_size.unsqueeze(-1),
            state.inverse_mass.unsqueeze(-2),
            generator,
        )
        _, lr = log_parts(z.reshape(k * m, -1))
        lr = lr.reshape(k, m)
        neg_inf = torch.full_like(lr, -torch.inf)
        lr = torch.where(torch.isfinite(lr), lr, neg_inf)
        # deterministic even/odd swaps between neighbours (k, k+1)
        pair_on = (torch.arange(k - 1, device=z.device) % 2) == (state.iteration % 2)
        log_alpha = (betas[1:] - betas[:-1]).unsqueeze(-1) * (lr[:-1] - lr[1:])  # (K-1, M)
        log_alpha = torch.where(torch.isnan(log_alpha), neg_inf[1:], log_alpha)
        unif = torch.rand(log_alpha.shape, generator=generator, dtype=z.dtype, device=z.device)
        swap = pair_on.unsqueeze(-1) & (torch.log1p(-unif) < log_alpha)  # log(1 - U) > -inf
        swap_prob = torch.clamp(torch.exp(log_alpha), max=1.0)
        no = torch.zeros((1, m), dtype=torch.bool, device=z.device)
        up = torch.cat([swap, no])  # row k takes row k+1
        down = torch.cat([no, swap])  # row k+1 takes row k
        z_up = torch.cat([z[1:], z[-1:]])
        z_down = torch.cat([z[:1], z[:-1]])
        z = torch.where(up.unsqueeze(-1), z_up, torch.where(down.unsqueeze(-1), z_down, z))
        lr_up = torch.cat([lr[1:], lr[-1:]])
        lr_down = torch.cat([lr[:1], lr[:-1]])
        lr = torch.where(up, lr_up, torch.where(down, lr_down, lr))
        mean_acc = acc.mean(1)
        step_size, inv_mass = state.step_size, state.inverse_mass
        if adapt:
            step_size = step_size * torch.exp(0.5 * (mean_acc - target_accept))
            var = torch.var(z, dim=1, unbiased=False) + 1e-6
            inv_mass = 0.9 * inv_mass + 0.1 * var
        new = PTState(z, step_size, inv_mass, state.iteration + 1)
        return new, PTStats(lr, mean_acc, swap_prob.mean(1), pair_on, z[-1])

    return iteration


class ReplicaExchange:
    """Parallel tempering over an adaptive ladder of betas (see module docstring).

    The same algorithm, options and result as :class:`ebmppl.numpyro.ReplicaExchange`. The
    model is evaluated on all K x M replicas at once (see :class:`ModelPotential` and
    ``vectorize``); device and dtype are those of the latent values the model draws.

    Args:
        model: Pyro model. ``reference=`` as in :class:`AIS` for improper priors.
        num_temperatures: ladder size K (>= 2), including beta = 0 and beta = 1.
        num_chains: independent tempering systems M (>= 2 for standard errors).
        num_warmup: iterations spent adapting step sizes and the ladder (in ``num_rounds``).
        num_samples: iterations recorded after warm-up.
        num_leapfrog_steps, target_accept: HMC moves at every temperature, step size per
            temperature adapted during warm-up only (so the sampling phase is exact MCMC).
        vectorize: ``"auto"`` (default), ``"plate"`` or ``"vmap"``; see :class:`ModelPotential`.
        progress: print one line per warm-up round to stderr (default: when it is a terminal).
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
        vectorize: str = "auto",
        progress: bool | None = None,
    ) -> None:
        check_sampler(model, vectorize)
        self.model = model
        self.reference = reference
        self.vectorize = vectorize
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

    def run(
        self, *model_args, generator: torch.Generator | None = None, **model_kwargs
    ) -> ReplicaExchangeResult:
        """Run warm-up (ladder and step-size adaptation) and sampling; return the result.

        Randomness comes from torch's global RNG (``pyro.set_rng_seed(s)`` makes the result
        reproducible) or from ``generator``, a ``torch.Generator`` on the model's device (then
        the global RNG is left untouched). ``generator`` is reserved: a model keyword argument
        of that name cannot be passed through ``run``.

        Returns:
            A :class:`~ebmppl.pyro.ReplicaExchangeResult` (the NumPyro backend's class) with ``backend="pyro"``;
            ``samples`` per latent (and deterministic) site ``(num_chains, num_samples, ...)``;
            ``info`` with ``num_samples``, ``num_chains``, ``wall_time``, ``device``,
            ``dtype`` and ``vectorize``.
        """
        start = time.perf_counter()
        pot = potential_for_run(self, model_args, model_kwargs, generator)
        with pyro.validation_enabled(False), torch.no_grad():
            state, betas, history, swap_rate, (lr, acc, top) = self._sample(pot, generator)
        with pyro.validation_enabled(False):
            m, s = self.num_chains, self.num_samples
            draws = pot.postprocess(top.transpose(0, 1).reshape(m * s, pot.dim))
        return replica_exchange_result(
            betas=betas,
            log_ratio=lr,  # (S, K, M)
            acceptance=acc,
            step_size=state.step_size.detach().cpu().numpy(),
            samples={
                name: v.detach().cpu().numpy().reshape((m, s) + tuple(v.shape[1:]))
                for name, v in draws.items()
            },
            history=history,
            swap_rate=swap_rate,
            info={
                "num_samples": s,
                "num_chains": m,
                "wall_time": time.perf_counter() - start,
                "device": str(pot.device),
                "dtype": str(pot.dtype).replace("torch.", ""),
                "vectorize": pot.vectorize,
            },
            backend="pyro",
        )

    def _sample(self, pot: ModelPotential, generator):
        """Warm-up rounds then sampling (:func:`ebmppl._pt_common.run_rounds`). Returns
        ``(state, betas (K,), ladder history, swap_rate (K-1,), (log_ratio (S, K, M),
        acceptance (S, K), top (S, M, D) tensor))``."""
        k, m = self.num_temperatures, self.num_chains
        z0 = pot.sample_base(k * m, generator)
        _check_initial_energies(pot, z0, stacklevel=5)
        z0 = z0.reshape(k, m, pot.dim)
        dtype, device = z0.dtype, z0.device
        var0 = torch.clamp(torch.var(z0.reshape(-1, pot.dim), dim=0, unbiased=False), min=1e-6)
        state = PTState(
            z0,
            torch.full((k,), 0.5 * pot.dim**-0.25, dtype=dtype, device=device),
            var0.expand(k, pot.dim).clone(),
            0,
        )
        iteration = build_pt_iteration(pot.log_parts, self.num_leapfrog_steps, self.target_accept)

        def scan(state, betas, length, adapt, _round):
            beta_t = torch.as_tensor(betas, dtype=dtype, device=device)
            record = StepBuffers(length)
            for i in range(length):
                state, st = iteration(state, beta_t, adapt, generator)
                record.put(i, st)
            # one host transfer per phase: arrays with a leading (length,) axis
            st = PTStats(*record.stacked())
            lr, acc, swap_prob, pair_on = (v.cpu().numpy() for v in st[:4])
            return state, swap_prob, pair_on, (lr, acc, st.top)

        return run_rounds(self, state, scan, "pyro")

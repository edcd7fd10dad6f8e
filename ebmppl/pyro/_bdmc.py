"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015) for Pyro models."""

from __future__ import annotations

import torch

from .._assemble import bdmc_result
from ..results import BDMCResult
from ._ais import AIS

__all__ = ["BDMC"]


class BDMC:
    """Sandwich log Z between forward AIS (a stochastic lower bound) and reverse AIS.

    Reverse AIS starts from exact draws of the target (e.g. the latents used to simulate the
    data, or a problem with a known sampler) and anneals back to the prior; its weights
    estimate 1/Z unbiasedly, so ``-log mean(w_reverse)`` is a stochastic upper bound.
    Both directions use the same options and schedule (see :class:`AIS`, including
    ``reference`` and ``vectorize``). The same as :class:`ebmppl.numpyro.BDMC`.
    """

    def __init__(self, model, **options) -> None:
        self.ais = AIS(model, **options)

    def run(
        self,
        exact_samples,
        *model_args,
        generator: torch.Generator | None = None,
        **model_kwargs,
    ) -> BDMCResult:
        """Return a :class:`~ebmppl.BDMCResult` with ``log_z_lower``, ``log_z_upper``, ``gap``.

        ``exact_samples``: ``{latent site: array or tensor (num_samples, *site shape)}`` of
        exact draws from the normalised model (see :meth:`AIS.run_reverse`). Forward then
        reverse AIS draw their randomness from ``generator`` (or torch's global RNG).
        """
        lower = self.ais.run(*model_args, generator=generator, **model_kwargs)
        upper = self.ais.run_reverse(
            exact_samples, *model_args, generator=generator, **model_kwargs
        )
        return bdmc_result(lower, upper)

"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015) for NumPyro models."""

from __future__ import annotations

import jax

from .._assemble import bdmc_result
from ..results import BDMCResult
from ._ais import AIS

__all__ = ["BDMC"]


class BDMC:
    """Sandwich log Z between forward AIS (a stochastic lower bound) and reverse AIS.

    Reverse AIS starts from exact draws of the target (e.g. the latents used to simulate the
    data, or a problem with a known sampler) and anneals back to the prior; its weights
    estimate 1/Z unbiasedly, so ``-log mean(w_reverse)`` is a stochastic upper bound.
    Both directions use the same options and schedule (see :class:`AIS`).
    """

    def __init__(self, model, **options):
        self.ais = AIS(model, **options)

    def run(self, rng_key, exact_samples, *model_args, **model_kwargs) -> BDMCResult:
        """Return a :class:`~ebmppl.BDMCResult` with ``log_z_lower``, ``log_z_upper``, ``gap``."""
        k_fwd, k_rev = jax.random.split(rng_key)
        lower = self.ais.run(k_fwd, *model_args, **model_kwargs)
        upper = self.ais.run_reverse(k_rev, exact_samples, *model_args, **model_kwargs)
        return bdmc_result(lower, upper)

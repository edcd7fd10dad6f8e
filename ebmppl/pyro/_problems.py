"""Pyro models for the exact problems of :mod:`ebmppl.problems`."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch

from ..problems import Problem
from ._energy import energy


def problem_model(problem: Problem) -> Callable[[], None]:
    """Return the Pyro model ``x ~ prior; energy("E", problem.energy, x)`` (no arguments).

    The prior's parameters are tensors of torch's default dtype (float32 unless
    ``torch.set_default_dtype`` says otherwise), so the model (and AIS on it) runs in that
    dtype. Problem energies are batch-aware, so AIS uses the particle-plate route.
    """

    def model():
        dtype = torch.get_default_dtype()
        if problem.prior == "normal":
            (scale,) = problem.prior_params
            prior = dist.Normal(torch.zeros((), dtype=dtype), torch.tensor(scale, dtype=dtype))
            if problem.dim:
                prior = prior.expand([problem.dim]).to_event(1)
        elif problem.prior == "gamma":
            shape, rate = problem.prior_params
            prior = dist.Gamma(torch.tensor(shape, dtype=dtype), torch.tensor(rate, dtype=dtype))
        else:
            raise ValueError(f"unknown prior kind {problem.prior!r}")
        x = pyro.sample("x", prior)
        energy("E", problem.energy, x)

    model.__name__ = f"{problem.name}_model"
    return model

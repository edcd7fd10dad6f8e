"""NumPyro models for the exact problems of :mod:`ebmppl.problems`."""

from __future__ import annotations

import numpyro
import numpyro.distributions as dist

from ..problems import Problem
from ._energy import energy


def problem_model(problem: Problem):
    """Return the NumPyro model ``x ~ prior; energy("E", problem.energy, x)`` (no arguments)."""

    def model():
        if problem.prior == "normal":
            (scale,) = problem.prior_params
            prior = dist.Normal(0.0, scale)
            if problem.dim:
                prior = prior.expand([problem.dim]).to_event(1)
        elif problem.prior == "gamma":
            shape, rate = problem.prior_params
            prior = dist.Gamma(shape, rate)
        else:
            raise ValueError(f"unknown prior kind {problem.prior!r}")
        x = numpyro.sample("x", prior)
        energy("E", problem.energy, x)

    model.__name__ = f"{problem.name}_model"
    return model

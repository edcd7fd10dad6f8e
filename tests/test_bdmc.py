"""Bidirectional Monte Carlo: forward and reverse AIS sandwich the exact log Z (NumPyro)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numpyro")

import jax

from ebmppl import problems
from ebmppl.numpyro import BDMC, problem_model

K, FLOOR = 4.4, 0.02


@pytest.mark.parametrize("name", ["gaussian10", "mixture", "positive"])
def test_bdmc_bounds_bracket_exact_log_z(name):
    prob = problems.get_problem(name)
    exact = {"x": prob.sample(1000, seed=3)}
    res = BDMC(problem_model(prob), num_particles=1000, num_steps=200, progress=False).run(
        jax.random.PRNGKey(0), exact
    )
    assert res.lower.info["direction"] == "forward" and res.upper.info["direction"] == "reverse"
    assert res.log_z_lower - K * res.lower.log_z_se - FLOOR < prob.log_z
    assert prob.log_z < res.log_z_upper + K * res.upper.log_z_se + FLOOR
    assert res.lower.info["bdmc_gap"] == pytest.approx(res.gap)
    assert "gap" in repr(res)


def test_bdmc_gap_exposes_too_fast_annealing():
    prob = problems.gaussian(10)
    exact = {"x": prob.sample(2000, seed=4)}
    fast = BDMC(problem_model(prob), num_particles=2000, num_steps=5, progress=False).run(
        jax.random.PRNGKey(1), exact
    )
    # With 5 steps the reverse bound sits far above the truth (beyond its own error), so the
    # gap is large: BDMC tells the user that neither estimate can be trusted yet.
    assert fast.log_z_upper - prob.log_z > K * fast.upper.log_z_se
    assert fast.gap > 1.0


def test_reverse_needs_every_latent_site():
    prob = problems.gaussian(2)
    with pytest.raises(ValueError, match="missing the latent sites"):
        BDMC(problem_model(prob), num_particles=10, num_steps=3).run(
            jax.random.PRNGKey(0), {"y": np.zeros((5, 2))}
        )
    with pytest.raises(ValueError, match="shape"):
        BDMC(problem_model(prob), num_particles=10, num_steps=3).run(
            jax.random.PRNGKey(0), {"x": np.zeros((5, 3))}
        )

"""Bidirectional Monte Carlo: forward and reverse AIS sandwich the exact log Z (both backends)."""

from __future__ import annotations

import numpy as np
import pytest

from ebmppl import problems

K, FLOOR = 4.4, 0.02


@pytest.mark.parametrize("name", ["gaussian10", "mixture", "positive"])
def test_bdmc_bounds_bracket_exact_log_z(backend, name):
    prob = problems.get_problem(name)
    exact = {"x": prob.sample(1000, seed=3)}
    res = backend.run_bdmc(backend.problem_model(prob), 0, exact, num_particles=1000, num_steps=200)
    assert res.lower.info["direction"] == "forward" and res.upper.info["direction"] == "reverse"
    assert res.lower.backend == res.upper.backend == backend.NAME
    assert res.upper.betas[0] == 1.0 and res.upper.betas[-1] == 0.0
    assert res.log_z_lower - K * res.lower.log_z_se - FLOOR < prob.log_z
    assert prob.log_z < res.log_z_upper + K * res.upper.log_z_se + FLOOR
    assert res.lower.info["bdmc_gap"] == pytest.approx(res.gap)
    assert "gap" in repr(res)


def test_bdmc_gap_exposes_too_fast_annealing(backend):
    prob = problems.gaussian(10)
    exact = {"x": prob.sample(2000, seed=4)}
    fast = backend.run_bdmc(backend.problem_model(prob), 1, exact, num_particles=2000, num_steps=5)
    # With 5 steps the sandwich is wide: BDMC tells the user that neither estimate can be
    # trusted yet. The reverse weights are then so uneven (ESS of a few) that their own se is
    # unreliable, so "the upper bound is far above the truth" is asserted through either the
    # se or the weight diagnostics that flag such an se (as the report does).
    assert fast.gap > 1.0
    above = fast.log_z_upper - prob.log_z > K * fast.upper.log_z_se
    flagged = fast.upper.pareto_khat > 0.7 or fast.upper.ess < 0.01 * 2000
    assert above or flagged


def test_reverse_needs_every_latent_site(backend):
    model = backend.problem_model(problems.gaussian(2))
    with pytest.raises(ValueError, match="missing the latent sites"):
        backend.run_bdmc(model, 0, {"y": np.zeros((5, 2))}, num_particles=10, num_steps=3)
    with pytest.raises(ValueError, match="shape"):
        backend.run_bdmc(model, 0, {"x": np.zeros((5, 3))}, num_particles=10, num_steps=3)

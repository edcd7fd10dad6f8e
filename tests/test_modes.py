"""Mode-occupancy check: chains stuck in one well while R-hat looks fine are flagged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ebmppl import problems
from ebmppl.modes import ModeOccupancyWarning, check_mode_occupancy, find_modes


def _particles(prob, n=3000, seed=0):
    x = prob.sample(n, seed=seed)
    return x, np.zeros(n)  # exact draws, equal weights


def test_find_modes_of_the_mixture_and_a_gaussian():
    x, lw = _particles(problems.mixture())
    centres = find_modes(x, lw)
    assert centres.shape == (3, 2)
    truth = problems.mixture().extra["mode_centers"]
    for c in truth:
        assert np.min(np.linalg.norm(centres - c, axis=1)) < 0.5
    g, lwg = _particles(problems.gaussian(2))
    assert find_modes(g, lwg).shape == (1, 2)


def test_chains_with_the_right_occupancy_pass():
    prob = problems.mixture()
    x, lw = _particles(prob)
    chains = prob.sample(2000, seed=5).reshape(4, 500, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModeOccupancyWarning)
        occ = check_mode_occupancy(chains, x, lw)
    assert not occ.disagree
    np.testing.assert_allclose(occ.reference_weights.sum(), 1.0)


def test_nuts_chains_stuck_in_one_mode_are_flagged_although_rhat_is_fine():
    pytest.importorskip("numpyro")
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_value

    from ebmppl.numpyro import AIS, problem_model

    prob = problems.mixture()
    model = problem_model(prob)
    start = prob.extra["mode_centers"][0] * 0.95
    mcmc = MCMC(
        NUTS(model, init_strategy=init_to_value(values={"x": start})),
        num_warmup=300,
        num_samples=500,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    rhat = np.asarray(az.rhat(draws[..., 0])), np.asarray(az.rhat(draws[..., 1]))
    assert max(float(rhat[0]), float(rhat[1])) < 1.02  # R-hat sees nothing wrong
    res = AIS(model, num_particles=1000, num_steps=100, progress=False).run(jax.random.PRNGKey(1))
    with pytest.warns(ModeOccupancyWarning, match="R-hat cannot see"):
        occ = check_mode_occupancy(draws, res.particles["x"], res.log_weights)
    assert occ.disagree and occ.centres.shape[0] == 3


def test_bad_shapes_raise():
    x, lw = _particles(problems.mixture(), 200)
    with pytest.raises(ValueError, match="dimensions"):
        check_mode_occupancy(np.zeros((2, 10, 3)), x, lw)
    with pytest.raises(ValueError, match="chains, draws, D"):
        check_mode_occupancy(np.zeros(10), x, lw)

"""Tempered SMC (NumPyro): adaptive schedule, resampling, replica-based standard errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numpyro")

import jax
import jax.numpy as jnp

from ebmppl import problems
from ebmppl.numpyro import SMC, next_beta_by_cess, problem_model

K, FLOOR = 4.4, 0.02


@pytest.mark.parametrize("name", ["mixture", "double_well", "gaussian10"])
def test_adaptive_smc_matches_exact_log_z(name):
    prob = problems.get_problem(name)
    res = SMC(
        problem_model(prob), num_particles=250, num_replicas=8, target_cess=0.99, progress=False
    ).run(jax.random.PRNGKey(0))
    assert res.info["se_method"] == "replicas"
    assert res.info["replica_log_z"].shape == (8,)
    assert np.all(res.info["num_steps_per_replica"] < res.info["max_steps"])
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR, res
    betas = res.betas
    assert betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)


def test_mixture_mode_weights_recovered():
    prob = problems.mixture()
    res = SMC(
        problem_model(prob), num_particles=500, num_replicas=8, target_cess=0.99, progress=False
    ).run(jax.random.PRNGKey(1))
    centres = prob.extra["mode_centers"]

    def modes(p):
        return np.eye(3)[((p["x"][:, None, :] - centres) ** 2).sum(-1).argmin(1)]

    mean, se = res.expectation(modes)
    exact = prob.extra["mode_weights"]
    assert np.all(np.abs(mean - exact) < K * se + 0.01), (mean, exact, se)


def test_cess_bisection_hits_target():
    key = jax.random.PRNGKey(0)
    lr = -0.5 * jax.random.normal(key, (2000,)) ** 2 * 10.0
    lw = jnp.zeros(2000)
    beta = next_beta_by_cess(lw, lr, jnp.asarray(0.2), 0.9)
    d = beta - 0.2
    w = jnp.exp(d * lr)
    cess = jnp.sum(w) ** 2 / (2000 * jnp.sum(w**2))
    assert 0.2 < beta < 1.0
    assert abs(float(cess) - 0.9) < 1e-3
    # an easy step goes straight to beta = 1
    assert next_beta_by_cess(lw, jnp.zeros(2000), jnp.asarray(0.5), 0.9) == 1.0


def test_resampling_and_fixed_schedule():
    prob = problems.gaussian(2)
    res = SMC(
        problem_model(prob),
        schedule="linear",
        num_steps=30,
        num_particles=200,
        num_replicas=4,
        resample_threshold=0.9,
        progress=False,
    ).run(jax.random.PRNGKey(2))
    assert res.num_steps == 30
    assert res.info["num_resampling_events"].min() >= 1
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR


def test_no_resampling_fixed_schedule_is_ais_with_replicas():
    prob = problems.gaussian(2)
    res = SMC(
        problem_model(prob),
        schedule="sigmoidal",
        num_steps=50,
        resampling=None,
        num_particles=300,
        num_replicas=1,
        progress=False,
    ).run(jax.random.PRNGKey(3))
    assert res.info["se_method"] == "weights"
    assert res.info["num_resampling_events"][0] == 0
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR


def test_step_cap_forces_the_last_step_to_beta_one():
    prob = problems.gaussian(10)
    res = SMC(
        problem_model(prob), max_steps=5, num_particles=100, num_replicas=2, progress=False
    ).run(jax.random.PRNGKey(4))
    assert np.all(res.info["num_steps_per_replica"] == 5)
    assert res.betas[-1] == 1.0


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"target_cess": 1.0}, "target_cess"),
        ({"resampling": "stratified"}, "resampling"),
        ({"num_replicas": 0}, "num_replicas"),
        ({"num_steps": 10}, "adaptive"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_bad_smc_options(options, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        SMC(problem_model(problems.gaussian(2)), **options)

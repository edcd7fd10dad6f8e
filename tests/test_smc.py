"""Tempered SMC on both backends: adaptive schedule, resampling, replica-based standard errors.

Also AIS adaptation: pilot (the default) and online.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ebmppl import problems

K, FLOOR = 4.4, 0.02


@pytest.mark.parametrize("name", ["mixture", "double_well", "gaussian10"])
def test_adaptive_smc_matches_exact_log_z(backend, name):
    prob = problems.get_problem(name)
    res = backend.run_smc(
        backend.problem_model(prob), 0, num_particles=250, num_replicas=8, target_cess=0.99
    )
    assert res.backend == backend.NAME
    assert res.info["method"] == "smc"
    assert res.info["se_method"] == "replicas"
    assert res.info["replica_log_z"].shape == (8,)
    assert np.all(res.info["num_steps_per_replica"] < res.info["max_steps"])
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR, res
    betas = res.betas
    assert betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)


def test_mixture_mode_weights_recovered(backend):
    prob = problems.mixture()
    res = backend.run_smc(
        backend.problem_model(prob), 1, num_particles=500, num_replicas=8, target_cess=0.99
    )
    centres = prob.extra["mode_centers"]

    def modes(p):
        return np.eye(3)[((p["x"][:, None, :] - centres) ** 2).sum(-1).argmin(1)]

    mean, se = res.expectation(modes)
    exact = prob.extra["mode_weights"]
    assert np.all(np.abs(mean - exact) < K * se + 0.01), (mean, exact, se)


def test_cess_bisection_hits_target(backend):
    rng = np.random.default_rng(0)
    lr = -0.5 * rng.normal(size=2000) ** 2 * 10.0
    lw = np.zeros(2000)
    beta = backend.next_beta_by_cess(lw, lr, 0.2, 0.9)
    assert isinstance(beta, float)
    w = np.exp((beta - 0.2) * lr)
    cess = np.sum(w) ** 2 / (2000 * np.sum(w**2))
    assert 0.2 < beta < 1.0
    assert abs(cess - 0.9) < 1e-3
    # an easy step goes straight to beta = 1
    assert backend.next_beta_by_cess(lw, np.zeros(2000), 0.5, 0.9) == 1.0


def test_resampling_and_fixed_schedule(backend):
    prob = problems.gaussian(2)
    res = backend.run_smc(
        backend.problem_model(prob),
        2,
        schedule="linear",
        num_steps=30,
        num_particles=200,
        num_replicas=4,
        resample_threshold=0.9,
    )
    assert res.num_steps == 30
    assert res.info["num_resampling_events"].min() >= 1
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR


def test_no_resampling_fixed_schedule_is_ais_with_replicas(backend):
    prob = problems.gaussian(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = backend.run_smc(
            backend.problem_model(prob),
            3,
            schedule="sigmoidal",
            num_steps=50,
            resampling=None,
            num_particles=300,
            num_replicas=1,
        )
    # Exact AIS weights: the weight-based standard error is valid, so no warning.
    assert not [w for w in caught if "num_replicas" in str(w.message)]
    assert res.info["se_method"] == "weights"
    assert res.info["num_resampling_events"][0] == 0
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR


def test_step_cap_forces_the_last_step_to_beta_one(backend):
    prob = problems.gaussian(10)
    res = backend.run_smc(
        backend.problem_model(prob), 4, max_steps=5, num_particles=100, num_replicas=2
    )
    assert np.all(res.info["num_steps_per_replica"] == 5)
    assert res.betas[-1] == 1.0
    assert res.info["betas_per_replica"].shape == (2, 6)
    keys = {
        "method", "se_method", "replica_log_z", "replica_log_z_se", "num_steps_per_replica",
        "betas_per_replica", "resampled", "num_resampling_events", "acceptance_rate_per_replica",
        "schedule", "target_cess", "max_steps", "resampling", "resample_threshold",
        "num_replicas", "reference", "energy_sites", "latent_sites", "wall_time",
    }  # fmt: skip
    assert keys <= set(res.info)
    assert res.info["acceptance_rate_per_replica"].shape == (2, 5)


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
def test_bad_smc_options(backend, options, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        backend.make_smc(backend.problem_model(problems.gaussian(2)), **options)


# -- AIS adaptation ----------------------------------------------------------------------
def test_pilot_adaptation_is_the_default_and_online_works(backend):
    prob = problems.gaussian(2)
    model = backend.problem_model(prob)
    evals = 40 * (1 + 1 * 3)
    pilot = backend.run_ais(model, 6, num_particles=300, num_steps=40)
    assert pilot.info["adaptation"] == "pilot"
    assert pilot.info["pilot_gradient_evaluations"] == evals
    assert pilot.gradient_evaluations == 2 * evals
    online = backend.run_ais(model, 6, num_particles=300, num_steps=40, adaptation="online")
    assert online.info["adaptation"] == "online"
    assert online.info["pilot_gradient_evaluations"] == 0
    assert online.gradient_evaluations == evals
    for res in (pilot, online):
        assert res.info["direction"] == "forward"
        assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR, res
    # Without any adaptation there is nothing to pilot.
    fixed = backend.run_ais(
        model, 6, num_particles=50, num_steps=5, adapt_step_size=False, adapt_mass=False
    )
    assert fixed.info["pilot_gradient_evaluations"] == 0
    with pytest.raises(ValueError, match="adaptation"):
        backend.make_ais(model, adaptation="offline")

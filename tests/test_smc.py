"""Tempered SMC on both backends: adaptive schedule, resampling, replica-based standard errors.

Also AIS adaptation: pilot (the default) and online.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from ebmppl import problems
from ebmppl._options import SMCOptions

K, FLOOR = 4.4, 0.02


@pytest.mark.parametrize("name", ["mixture", "double_well", "many_well8", "gaussian10"])
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
        ({"move": "mala"}, r"move must be one of \('hmc', 'nuts'\), got 'mala'"),
        ({"move": None}, "move"),
        ({"max_tree_depth": 5}, "max_tree_depth applies to move='nuts'"),
        ({"move": "nuts", "max_tree_depth": 0}, "max_tree_depth"),
        ({"move": "nuts", "max_tree_depth": 21}, "max_tree_depth"),
        ({"move": "nuts", "num_leapfrog_steps": 5}, "num_leapfrog_steps"),
    ],
)
def test_bad_smc_options(backend, options, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        backend.make_smc(backend.problem_model(problems.gaussian(2)), **options)


# -- NUTS moves -------------------------------------------------------------------------
def test_move_option_is_described():
    hmc = SMCOptions.create().describe()
    assert (hmc["move"], hmc["max_tree_depth"], hmc["num_leapfrog_steps"]) == ("hmc", None, 3)
    nuts = SMCOptions.create(move="nuts").describe()
    assert (nuts["move"], nuts["max_tree_depth"], nuts["num_leapfrog_steps"]) == ("nuts", 10, None)
    assert SMCOptions.create(move="nuts", max_tree_depth=4).describe()["max_tree_depth"] == 4


@pytest.mark.parametrize("name", ["mixture", "gaussian10"])
def test_nuts_smc_matches_exact_log_z(numpyro_harness, name):
    h, prob = numpyro_harness, problems.get_problem(name)
    res = h.run_smc(h.problem_model(prob), 0, num_particles=250, num_replicas=8, move="nuts")
    assert res.info["move"] == "nuts" and res.info["max_tree_depth"] == 10
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR, res
    # Gradient evaluations count each particle's own NUTS trajectories (plus the pilot's).
    leap = res.info["num_leapfrog_per_replica"]
    steps = res.info["num_steps_per_replica"]
    assert leap.shape == res.info["acceptance_rate_per_replica"].shape
    assert np.all(np.isfinite(leap[:, : steps[0]])) and np.all(np.isnan(leap[:, steps[0] :]))
    assert np.all(leap[:, : steps[0]] >= 1) and 1.5 < res.info["mean_num_leapfrog"] < 100
    replicas = np.nansum(1 + leap) / 8
    pilot = res.info["pilot_gradient_evaluations"]
    assert res.gradient_evaluations == pytest.approx(replicas + pilot, abs=1)
    assert pilot == pytest.approx(replicas / 8, rel=0.2)


def _truncated_gaussian(beta, wall):
    prec = 1.0 + 4.0 * beta
    mean, sd = 6.0 * beta / prec, prec**-0.5
    upper = np.inf if wall is None else (wall - mean) / sd
    return stats.truncnorm(-np.inf, upper, loc=mean, scale=sd)


@pytest.mark.parametrize("wall", [None, 1.2])
def test_nuts_move_leaves_tempered_density_invariant(numpyro_harness, wall):
    """Exact draws of pi_beta stay distributed as pi_beta after 5 NUTS moves at beta.

    ``wall``: pi_beta is truncated (log_ratio = -inf beyond it), so trajectories leave the
    support; the move must treat that as zero density. Reusing the previous temperature's
    potential (stale_beta) breaks invariance, and the same check sees it.
    """
    beta, n = 0.5, 20000
    ref = _truncated_gaussian(beta, wall)
    before, after, leap = numpyro_harness.nuts_transition_invariance(
        beta, n, 5, 0, step_size=0.9, wall=wall
    )
    assert np.mean(before != after) > 0.5 and leap >= 1  # the moves did move
    if wall is not None:
        assert after.max() <= wall
    z_mean = (after.mean() - ref.mean()) / np.sqrt(ref.var() / n)
    assert abs(z_mean) < K, z_mean
    assert stats.kstest(after, ref.cdf).pvalue > 1e-4
    _, stale, _ = numpyro_harness.nuts_transition_invariance(
        beta, n, 5, 0, step_size=0.9, wall=wall, stale_beta=0.0
    )
    assert stats.kstest(stale, ref.cdf).pvalue < 1e-6


def test_nuts_move_only_on_numpyro(backend):
    model = backend.problem_model(problems.gaussian(2))
    if backend.NAME == "pyro":
        with pytest.raises(NotImplementedError, match="move='hmc' or the NumPyro backend"):
            backend.make_smc(model, move="nuts")
    else:
        assert backend.make_smc(model, move="nuts").options.move == "nuts"


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


# -- SMC adaptation ----------------------------------------------------------------------
def test_smc_adaptation_does_not_bias_log_z(backend):
    """Pooled over seeds, log Z has no adaptation bias on a 10-D Gaussian.

    Adapting each replica's schedule and HMC kernel on the particles it moves (the old SMC,
    now ``adaptation="online"``) gives a mean error of -0.19 here, 8-10 standard errors of
    the mean (0.018 NumPyro, 0.024 Pyro); the pilot (default) gives -0.02 +- 0.015 (NumPyro)
    and +0.03 +- 0.026 (Pyro).
    """
    prob = problems.gaussian(10)
    model = backend.problem_model(prob)
    errors = [
        backend.run_smc(model, 100 + seed, num_particles=100, num_replicas=16).log_z - prob.log_z
        for seed in range(16)
    ]
    mean, se = np.mean(errors), np.std(errors, ddof=1) / np.sqrt(len(errors))
    assert abs(mean) < 4 * se + FLOOR, (mean, se)


def test_smc_pilot_sets_the_schedule_and_kernel_and_is_counted(backend):
    prob = problems.gaussian(2)
    model = backend.problem_model(prob)
    per_step = 1 + 1 * 3
    pilot = backend.run_smc(model, 5, num_particles=100, num_replicas=4)
    assert pilot.info["adaptation"] == "pilot"
    steps = pilot.info["num_steps_per_replica"]
    # Every replica follows the pilot's schedule (and kernel), so they take the same steps.
    assert np.all(steps == steps[0])
    assert np.all(pilot.info["betas_per_replica"][:, : steps[0] + 1] == pilot.betas)
    # The pilot ran as long as the replicas; its evaluations are shared over the 4 replicas.
    assert pilot.info["pilot_gradient_evaluations"] == round(steps[0] * per_step / 4)
    assert pilot.gradient_evaluations == round(steps[0] * per_step * 5 / 4)
    online = backend.run_smc(model, 5, num_particles=100, num_replicas=4, adaptation="online")
    assert online.info["adaptation"] == "online"
    assert online.info["pilot_gradient_evaluations"] == 0
    assert online.gradient_evaluations == round(
        np.mean(online.info["num_steps_per_replica"]) * per_step
    )
    # Nothing to adapt: no pilot.
    fixed = backend.run_smc(
        model, 5, num_particles=100, num_replicas=4, adapt_step_size=False, adapt_mass=False
    )
    assert fixed.info["pilot_gradient_evaluations"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixture", "double_well", "many_well8"])
def test_adaptive_smc_beats_ais_at_equal_cost_on_multimodal_problems(numpyro_harness, name):
    """Default SMC (CESS 0.95, 8 replicas of 250 particles plus the pilot) has a smaller mean
    squared log Z error than AIS (pilot, 2000 particles) at the same gradient evaluations per
    particle (about 56), on the unequal-weight mixture and the tilted double well.

    Measured on other seeds (200 each): RMSE 0.040 vs 0.053 (mixture) and 0.032 vs 0.045
    (double well), the MSE difference 3.7 and 4.6 of its standard errors; with 300 seeds the
    expected ratio is 4.5 and 5.7, so requiring 2 (one-sided 98% confidence that SMC is
    better) fails by chance with probability under 1%. The many-well (16 modes) separates them
    more (60 other seeds: RMSE 0.055 vs 0.29 at ~121 evaluations, ratio 5.6), so 100 seeds do
    (expected ratio 7).
    """
    h, num = numpyro_harness, (100 if name == "many_well8" else 300)
    prob = problems.get_problem(name)
    model = h.problem_model(prob)
    smc = [h.run_smc(model, s, num_particles=250, num_replicas=8) for s in range(num)]
    evals = np.mean([r.gradient_evaluations for r in smc])
    steps = round(evals / (2 * (1 + 1 * 3)))  # the AIS pilot doubles the cost
    ais = [h.run_ais(model, 10_000 + s, num_particles=2000, num_steps=steps) for s in range(num)]
    assert abs(ais[0].gradient_evaluations - evals) <= 4  # matched to within half an AIS step
    sq_smc = np.array([(r.log_z - prob.log_z) ** 2 for r in smc])
    sq_ais = np.array([(r.log_z - prob.log_z) ** 2 for r in ais])
    diff = sq_ais.mean() - sq_smc.mean()
    se = np.hypot(sq_smc.std(ddof=1), sq_ais.std(ddof=1)) / np.sqrt(num)
    rmse = np.sqrt([sq_smc.mean(), sq_ais.mean()])
    assert diff > 2 * se, (name, rmse, diff / se)

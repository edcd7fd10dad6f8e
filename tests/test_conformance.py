"""Backend-neutral conformance suite: every test runs on each backend through its harness.

Tolerances: |estimate - exact| < K * se + floor with K = 4.4 (two-sided false-failure
budget ~1e-5 per check) and floor 0.02 nats, after gating on the weight ESS.
"""

from __future__ import annotations

import numpy as np
import pytest

from ebmppl import problems

K = 4.4
FLOOR = 0.02

# (num_particles, num_steps, extra options) per exact problem: a stated budget.
BUDGETS = {
    "gaussian2": (1000, 100, {}),
    "gaussian10": (1000, 200, {}),
    "mixture": (1000, 200, {}),
    "double_well": (1000, 200, {}),
    "banana": (1000, 200, {}),
    "funnel5": (1000, 400, {"target_accept": 0.9}),  # smaller steps reach the neck
    "positive": (1000, 100, {}),
}


def assert_close_to_exact(result, exact, min_ess=100):
    assert result.ess >= min_ess, f"ESS {result.ess:.0f} too low to test anything ({result})"
    assert np.isfinite(result.log_z_se) and result.log_z_se > 0
    err = abs(result.log_z - exact)
    assert err < K * result.log_z_se + FLOOR, (
        f"log Z {result.log_z:.4f} vs exact {exact:.4f}: error {err:.4f} > "
        f"{K} x se {result.log_z_se:.4f} + {FLOOR}"
    )


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_exact_problems(backend, name):
    prob = problems.get_problem(name)
    n, steps, extra = BUDGETS[name]
    res = backend.run_ais(backend.problem_model(prob), 1, num_particles=n, num_steps=steps, **extra)
    assert res.backend == backend.NAME
    assert res.num_particles == n and res.num_steps == steps
    assert_close_to_exact(res, prob.log_z)


@pytest.mark.slow
def test_gaussian100(backend):
    prob = problems.gaussian(100)
    res = backend.run_ais(backend.problem_model(prob), 3, num_particles=1000, num_steps=1000)
    assert_close_to_exact(res, prob.log_z, min_ess=50)


def test_zero_energy_gives_log_z_exactly_zero(backend):
    res = backend.run_ais(backend.zero_energy_model(3), 0, num_particles=64, num_steps=10)
    assert res.log_z == 0.0
    assert res.log_z_se == 0.0
    assert np.all(res.log_weights == 0.0)
    assert res.ess == pytest.approx(64)


def test_single_step_prior_to_prior_weights_are_one(backend):
    res = backend.run_ais(backend.zero_energy_model(2), 0, num_particles=16, num_steps=1)
    assert np.all(res.log_weights == 0.0)


def _invariance_zscores(before, after, beta):
    prec = 1.0 + 4.0 * beta
    mean, var = 6.0 * beta / prec, 1.0 / prec
    n = after.size
    z_mean = (after.mean() - mean) / np.sqrt(var / n)
    z_var = (after.var(ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


def test_transition_leaves_intermediate_density_invariant(backend):
    beta = 0.5
    before, after = backend.transition_invariance(beta, 20000, 5, 0, step_size=0.9)
    assert not np.allclose(before, after)  # the moves did move
    z_mean, z_var = _invariance_zscores(before, after, beta)
    assert abs(z_mean) < K and abs(z_var) < K, (z_mean, z_var)


def test_stale_potential_is_detected(backend):
    """Reusing the previous temperature's potential breaks invariance; the check sees it."""
    beta = 0.5
    _, after = backend.transition_invariance(beta, 20000, 5, 0, step_size=0.9, stale_beta=0.0)
    z_mean, z_var = _invariance_zscores(None, after, beta)
    assert max(abs(z_mean), abs(z_var)) > K


def test_same_seed_same_result(backend):
    prob = problems.mixture()
    model = backend.problem_model(prob)
    a = backend.run_ais(model, 7, num_particles=128, num_steps=20)
    b = backend.run_ais(model, 7, num_particles=128, num_steps=20)
    c = backend.run_ais(model, 8, num_particles=128, num_steps=20)
    np.testing.assert_array_equal(a.log_weights, b.log_weights)
    np.testing.assert_array_equal(a.particles["x"], b.particles["x"])
    assert a.log_z == b.log_z
    assert not np.array_equal(a.log_weights, c.log_weights)


def test_log_z_se_is_honest(backend):
    """Over 20 independent runs the spread of log Z matches the mean reported se (x1.5).

    Budget chosen for a healthy regime (median ESS ~50/200, k-hat ~0.4); with ESS near 10 the
    weight-based se is optimistic, which the report flags through ESS and k-hat.
    """
    prob = problems.gaussian(10)
    model = backend.problem_model(prob)
    runs = [backend.run_ais(model, 100 + s, num_particles=200, num_steps=200) for s in range(20)]
    log_z = np.array([r.log_z for r in runs])
    se = np.array([r.log_z_se for r in runs])
    spread = log_z.std(ddof=1)
    assert 1 / 1.5 < spread / se.mean() < 1.5, (spread, se.mean())
    # Jensen: log Z is biased low by about se^2 / 2; the mean stays within its error.
    assert abs(log_z.mean() - prob.log_z) < K * spread / np.sqrt(20) + se.mean() ** 2


def test_plated_energy(backend):
    num = 4
    res = backend.run_ais(backend.plated_energy_model(num), 2, num_particles=1000, num_steps=50)
    exact = num * (-0.25 - 0.5 * np.log(2.0))  # log N(1; 0, 2) + log sqrt(2 pi), per item
    assert_close_to_exact(res, exact)
    assert res.particles["x"].shape == (1000, num)


def _conjugate_exact(y, s, noise, w):
    n = y.shape[0]
    a = 1 / s**2 + w + n / noise**2
    b = y.sum(0) / noise**2
    per_dim = (
        -0.5 * np.log(2 * np.pi * s**2)
        - 0.5 * n * np.log(2 * np.pi * noise**2)
        - 0.5 * (y**2).sum(0) / noise**2
        + 0.5 * b**2 / a
        + 0.5 * np.log(2 * np.pi / a)
    )
    return per_dim.sum(), b / a


def test_observed_data_is_annealed(backend):
    rng = np.random.default_rng(0)
    y = rng.normal(loc=[1.0, -0.5], scale=0.5, size=(8, 2))
    exact, post_mean = _conjugate_exact(y, 2.0, 0.5, 0.3)
    model = backend.conjugate_model(2.0, 0.5, 0.3)
    res = backend.run_ais(model, 3, backend.as_data(y), num_particles=1000, num_steps=100)
    assert_close_to_exact(res, exact)
    mean, se = res.expectation(lambda p: p["x"])
    assert np.all(np.abs(mean - post_mean) < K * se + 0.01), (mean, post_mean, se)


def test_improper_prior_needs_reference(backend):
    model = backend.improper_model()
    with pytest.raises(ValueError, match=r"site 'x'.*improper.*reference"):
        backend.run_ais(model, 0, num_particles=10, num_steps=5)
    res = backend.run_ais(
        model, 0, num_particles=1000, num_steps=50, reference=backend.improper_reference()
    )
    assert_close_to_exact(res, 0.5 * np.log(2 * np.pi))
    lap = backend.run_ais(model, 1, num_particles=1000, num_steps=50, reference="laplace")
    assert_close_to_exact(lap, 0.5 * np.log(2 * np.pi))


@pytest.mark.parametrize(
    "factory, err, pattern",
    [
        ("bad_nonscalar_energy", ValueError, r"energy site 'E_vec'.*shape \(3,\)"),
        ("bad_not_callable", TypeError, r"energy site 'E_nc'.*callable"),
        ("bad_duplicate_name", ValueError, r"'E_dup'.*already used"),
    ],
)
def test_bad_energy_sites_raise_clear_errors(backend, factory, err, pattern):
    with pytest.raises(err, match=pattern):
        backend.trace_model(getattr(backend, factory)())


def test_nonfinite_energy_at_init_raises(backend):
    with pytest.raises(ValueError, match=r"energy site 'E_nan'.*non-finite"):
        backend.run_ais(backend.bad_nonfinite_energy(), 0, num_particles=20, num_steps=5)


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"num_particles": 0}, "num_particles"),
        ({"num_steps": -3}, "num_steps"),
        ({"schedule": "cosine"}, "schedule"),
        ({"schedule": [0.0, 0.7, 0.5, 1.0]}, "non-decreasing"),
        ({"schedule": [0.1, 0.5, 1.0]}, "start at beta=0"),
        ({"step_size": 0.0}, "step_size"),
        ({"target_accept": 1.5}, "target_accept"),
        ({"num_leapfrog_steps": 0}, "num_leapfrog_steps"),
    ],
)
def test_bad_options_raise(backend, options, pattern):
    model = backend.problem_model(problems.gaussian(2))
    with pytest.raises((ValueError, TypeError), match=pattern):
        backend.make_ais(model, **options)


def test_schedules_all_work(backend):
    prob = problems.gaussian(2)
    model = backend.problem_model(prob)
    for sched in ("linear", "geometric", "sigmoidal", np.linspace(0, 1, 101) ** 3):
        res = backend.run_ais(model, 4, num_particles=500, num_steps=100, schedule=sched)
        assert_close_to_exact(res, prob.log_z)
        assert res.betas[0] == 0.0 and res.betas[-1] == 1.0 and res.betas.size == 101


def test_nuts_recovers_moments(backend):
    import arviz as az

    prob = problems.gaussian(2)
    _mcmc, samples = backend.run_nuts(backend.problem_model(prob), 0, num_samples=1000)
    x = samples["x"]
    chains = x.reshape(2, -1, 2)
    ess = np.array([az.ess(chains[..., i]) for i in range(2)])
    sd = np.sqrt(prob.var)
    assert np.all(ess > 200)
    assert np.all(np.abs(x.mean(0) - prob.mean) < K * sd / np.sqrt(ess)), (x.mean(0), prob.mean)
    # variance: se of a variance estimate ~ var * sqrt(2 / ess)
    assert np.all(np.abs(x.var(0) - prob.var) < K * prob.var * np.sqrt(2 / ess) + 0.01)


def test_arviz_groups_and_netcdf_round_trip(backend, tmp_path):
    import ebmppl

    rng = np.random.default_rng(1)
    y = backend.as_data(rng.normal(size=(5, 2)))
    model = backend.conjugate_model(2.0, 1.0, 0.5)
    mcmc, _ = backend.run_nuts(model, 0, y, num_warmup=200, num_samples=200)
    res = backend.run_ais(model, 0, y, num_particles=200, num_steps=20)
    idata = ebmppl.to_arviz(mcmc, ais=res)
    groups = set(ebmppl.arviz.groups(idata))
    assert {"posterior", "sample_stats", "energy", "log_likelihood", "observed_data"} <= groups
    assert {"ais", "ais_particles"} <= groups
    assert list(idata.energy.data_vars) == ["E"]
    assert "E" not in idata.log_likelihood and "E" not in idata.observed_data
    assert "y" in idata.log_likelihood and "y" in idata.observed_data
    assert idata.posterior["x"].shape == (2, 200, 2)
    assert idata.energy["E"].shape == (2, 200)
    assert "diverging" in idata.sample_stats
    assert idata.ais.attrs["log_z"] == res.log_z
    path = tmp_path / "run.nc"
    ebmppl.arviz.to_netcdf(idata, path)
    back = ebmppl.arviz.from_netcdf(path)
    assert set(ebmppl.arviz.groups(back)) == groups
    np.testing.assert_array_equal(back.ais["log_weights"].values, res.log_weights)
    np.testing.assert_array_equal(back.energy["E"].values, idata.energy["E"].values)
    again = ebmppl.arviz.ais_result_from_arviz(back)
    assert again.log_z == res.log_z and again.log_z_se == res.log_z_se
    assert again.pareto_khat == pytest.approx(res.pareto_khat)


def test_energy_value_sign(backend):
    """The energy group holds E itself (not -E, not -E/T): check against the problem."""
    import ebmppl

    prob = problems.gaussian(2)
    mcmc, _samples = backend.run_nuts(
        backend.problem_model(prob), 0, num_warmup=100, num_samples=50
    )
    idata = ebmppl.to_arviz(mcmc)
    x = idata.posterior["x"].values.reshape(-1, 2)
    prec, m = prob.extra["prec"], prob.extra["m"]
    expected = 0.5 * np.einsum("ni,ij,nj->n", x - m, prec, x - m)
    np.testing.assert_allclose(idata.energy["E"].values.reshape(-1), expected, rtol=1e-4, atol=1e-5)


def test_expectation_and_resample(backend):
    prob = problems.mixture()
    res = backend.run_ais(backend.problem_model(prob), 5, num_particles=2000, num_steps=200)
    # mode weights: which centre is nearest
    centres = prob.extra["mode_centers"]

    def mode_indicator(p):
        d = ((p["x"][:, None, :] - centres) ** 2).sum(-1)
        return np.eye(3)[d.argmin(1)]

    mean, se = res.expectation(mode_indicator)
    exact = prob.extra["mode_weights"]
    assert np.all(np.abs(mean - exact) < K * se + 0.01), (mean, exact, se)
    draws = res.resample(500, seed=0)
    assert draws["x"].shape == (500, 2)


def test_cross_backend_agreement():
    """Both backends on the same problem agree within their combined standard errors."""
    from conftest import load_harness

    a, b = load_harness("numpyro"), load_harness("pyro")
    prob = problems.gaussian(10)
    ra = a.run_ais(a.problem_model(prob), 11, num_particles=1000, num_steps=100)
    rb = b.run_ais(b.problem_model(prob), 11, num_particles=1000, num_steps=100)
    combined = np.hypot(ra.log_z_se, rb.log_z_se)
    assert abs(ra.log_z - rb.log_z) < K * combined + FLOOR, (ra, rb)

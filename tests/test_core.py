"""Backend-neutral core: schedules, weight diagnostics, the result object, exact problems."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from ebmppl import AISResult, diagnostics, make_schedule, problems
from ebmppl.schedules import validate_betas


# -- schedules ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "geometric", "sigmoidal"])
@pytest.mark.parametrize("num_steps", [1, 2, 50])
def test_schedules_shape_and_ends(kind, num_steps):
    b = make_schedule(kind, num_steps)
    assert b.shape == (num_steps + 1,)
    assert b[0] == 0.0 and b[-1] == 1.0
    assert np.all(np.diff(b) >= 0)


def test_schedule_array_and_errors():
    np.testing.assert_array_equal(make_schedule([0, 0.5, 1]), [0, 0.5, 1])
    with pytest.raises(ValueError, match="disagrees"):
        make_schedule([0, 0.5, 1], num_steps=5)
    with pytest.raises(ValueError, match="non-finite"):
        validate_betas([0, np.nan, 1])
    with pytest.raises(ValueError, match="end at beta=1|start at beta=0"):
        validate_betas([0, 0.5, 0.9])
    with pytest.raises(ValueError, match="non-decreasing"):
        validate_betas([0, 0.6, 0.4, 1])
    with pytest.raises(ValueError, match="at least two"):
        validate_betas([1.0])
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("cosine", 10)
    with pytest.raises(TypeError, match="num_steps"):
        make_schedule("linear", 2.5)
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule("linear", 0)


# -- diagnostics -------------------------------------------------------------------------
def test_log_z_and_se_from_weights():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=5000)
    log_z, se = diagnostics.log_z_from_weights(lw)
    assert log_z == pytest.approx(logsumexp(lw) - np.log(lw.size))
    ess = diagnostics.weight_ess(lw)
    assert se == pytest.approx(np.sqrt(1 / ess - 1 / lw.size))
    # lognormal weights: Var(w)/E[w]^2 = e - 1, so se ~ sqrt((e - 1) / N)
    assert se == pytest.approx(np.sqrt((np.e - 1) / lw.size), rel=0.1)
    assert diagnostics.log_z_from_weights(np.zeros(10)) == (0.0, 0.0)


def test_dead_particles_count_as_zero_weight():
    lw = np.array([0.0, -np.inf, 0.0, -np.inf])
    log_z, _ = diagnostics.log_z_from_weights(lw)
    assert log_z == pytest.approx(np.log(0.5))
    assert diagnostics.weight_ess(lw) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="NaN"):
        diagnostics.log_z_from_weights([0.0, np.nan])


def test_pareto_khat_matches_arviz():
    from ebmppl import arviz as ebmppl_arviz

    rng = np.random.default_rng(1)
    for lw in (rng.normal(size=1000), 2.0 * rng.standard_t(3, size=4000), rng.normal(size=60)):
        ours = diagnostics.pareto_khat(lw)
        theirs = ebmppl_arviz.arviz_pareto_khat(lw)
        if ebmppl_arviz.generation() == 0 or lw.size <= 225:
            assert ours == pytest.approx(theirs, abs=1e-10)
        else:  # ArviZ 1.x picks a slightly different tail length for N > 225
            assert ours == pytest.approx(theirs, abs=0.05)


def test_pareto_khat_separates_light_and_heavy_tails():
    rng = np.random.default_rng(2)
    light = rng.normal(scale=0.3, size=4000)
    heavy = np.log(rng.pareto(0.8, size=4000) + 1)  # Lomax tail index 0.8 -> k = 1.25
    assert diagnostics.pareto_khat(light) < 0.5
    assert diagnostics.pareto_khat(heavy) > 0.7


def test_weighted_expectation_against_exact_importance_sampling():
    # target N(1, 1), proposal N(0, 2^2): exact E[x] = 1
    rng = np.random.default_rng(3)
    x = rng.normal(scale=2.0, size=20000)
    lw = stats.norm.logpdf(x, 1.0) - stats.norm.logpdf(x, scale=2.0)
    mean, se = diagnostics.weighted_expectation(lw, x)
    assert abs(mean - 1.0) < 4.4 * se
    assert 0.005 < se < 0.02
    with pytest.raises(ValueError, match="particle axis"):
        diagnostics.weighted_expectation(lw, x[:10])


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resample_indices_follow_weights(method):
    w = np.array([0.5, 0.25, 0.125, 0.125])
    idx = diagnostics.resample_indices(np.log(w), 8000, method=method, seed=0)
    freq = np.bincount(idx, minlength=4) / 8000
    assert np.all(np.abs(freq - w) < 4.4 * np.sqrt(w * (1 - w) / 8000) + 1e-3)
    with pytest.raises(ValueError, match="unknown resampling"):
        diagnostics.resample_indices(np.log(w), 4, method="stratified-ish")


def test_combine_log_z():
    # Equal-size independent estimates pool to the log of the mean Z.
    lz = np.array([-1.0, -1.2, -0.9])
    pooled, se = diagnostics.combine_log_z(lz, np.array([0.1, 0.1, 0.1]))
    assert pooled == pytest.approx(np.log(np.mean(np.exp(lz))))
    assert se == pytest.approx(np.sqrt(np.sum((np.exp(lz - pooled) / 3 * 0.1) ** 2)))
    # With particle counts: the same as one run over all particles.
    rng = np.random.default_rng(4)
    lw = rng.normal(size=3000)
    parts = np.split(lw, [1000, 1500])
    lzs = [diagnostics.log_mean_exp(p) for p in parts]
    pooled, _ = diagnostics.combine_log_z(lzs, num_particles=[p.size for p in parts])
    assert pooled == pytest.approx(diagnostics.log_mean_exp(lw))
    _, spread_se = diagnostics.combine_log_z(lzs)
    assert spread_se > 0
    with pytest.raises(ValueError, match="at least two"):
        diagnostics.combine_log_z([0.3])


# -- result object -----------------------------------------------------------------------
def _result(lw):
    n = len(lw)
    return AISResult.from_log_weights(
        np.asarray(lw, float),
        betas=np.linspace(0, 1, 4),
        particles={"x": np.arange(n, dtype=float)[:, None] * np.ones((1, 2))},
        acceptance_rate=np.ones(3),
        step_size=np.ones(3),
        ess_trace=np.ones(3),
        backend="numpy",
    )


def test_result_is_frozen_and_prints():
    r = _result(np.zeros(8))
    with pytest.raises(AttributeError):
        r.log_z = 3.0
    with pytest.raises(ValueError):
        r.log_weights[0] = 1.0
    with pytest.raises(TypeError):
        r.particles["y"] = 1
    assert "log Z = 0 ± 0 (ESS 8/8" in repr(r)
    assert r.num_steps == 3 and r.num_particles == 8


def test_result_expectation_and_resample():
    r = _result(np.log([1.0, 1.0, 2.0, 0.0 + 1e-300]))
    mean, se = r.expectation(lambda p: p["x"][:, 0])
    assert mean == pytest.approx((0 + 1 + 4) / 4)
    assert se > 0
    with pytest.raises(ValueError, match="one value per particle"):
        r.expectation(lambda p: p["x"].sum())
    draws = r.resample(100, seed=0)
    assert draws["x"].shape == (100, 2)
    assert set(np.unique(draws["x"][:, 0])) <= {0.0, 1.0, 2.0}


# -- exact problems ----------------------------------------------------------------------
def _dblquad_log_z(prob, lim=12.0):
    scale = prob.prior_params[0]

    def f(x1, x0):
        e = float(prob.energy(np.array([x0, x1])))
        return np.exp(-e) * stats.norm.pdf(x0, scale=scale) * stats.norm.pdf(x1, scale=scale)

    val, _ = integrate.dblquad(f, -lim, lim, -lim, lim, epsabs=1e-13, epsrel=1e-10)
    return np.log(val)


@pytest.mark.parametrize(
    "name",
    ["gaussian2", pytest.param("mixture", marks=pytest.mark.slow), "double_well", "banana"],
)
def test_exact_log_z_by_2d_quadrature(name):
    prob = problems.get_problem(name)
    assert _dblquad_log_z(prob) == pytest.approx(prob.log_z, abs=1e-6)


@pytest.mark.parametrize("dim", [2, 10, 100])
def test_exact_gaussian_log_z_by_completing_the_square(dim):
    prob = problems.gaussian(dim)
    prec, m = prob.extra["prec"], prob.extra["m"]
    s2 = prob.prior_params[0] ** 2
    a = np.eye(dim) / s2 + prec
    b = prec @ m
    log_z = (
        -0.5 * dim * np.log(s2)
        - 0.5 * np.linalg.slogdet(a)[1]
        + 0.5 * b @ np.linalg.solve(a, b)
        - 0.5 * m @ prec @ m
    )
    assert log_z == pytest.approx(prob.log_z, abs=1e-8)


def test_exact_funnel_by_monte_carlo():
    """Z = E_funnel[prior density]: exact funnel draws, 10^6 of them."""
    prob = problems.funnel(5)
    rng = np.random.default_rng(0)
    n = 1_000_000
    v = rng.normal(0, 3, n)
    x = rng.normal(size=(n, 4)) * np.exp(v / 2)[:, None]
    lw = stats.norm.logpdf(v, scale=3) + stats.norm.logpdf(x, scale=3).sum(1)
    log_z, se = diagnostics.log_z_from_weights(lw)
    assert abs(log_z - prob.log_z) < 4.4 * se + 1e-4


def test_exact_positive_by_quadrature():
    prob = problems.positive()
    a, b = prob.prior_params
    val, _ = integrate.quad(
        lambda lam: stats.gamma.pdf(lam, a, scale=1 / b) * np.exp(-(3.0 * lam - 4.0 * np.log(lam))),
        0,
        np.inf,
        epsrel=1e-12,
    )
    assert np.log(val) == pytest.approx(prob.log_z, abs=1e-9)


def test_problem_registry():
    probs = problems.all_problems()
    assert {"gaussian2", "gaussian10", "gaussian100", "mixture", "double_well"} <= set(probs)
    assert {"banana", "funnel5", "positive"} <= set(probs)
    assert probs["mixture"].extra["mode_weights"].sum() == pytest.approx(1.0)
    with pytest.raises(KeyError, match="unknown problem"):
        problems.get_problem("rosenbrock")


# -- packaging ---------------------------------------------------------------------------
def test_import_ebmppl_imports_neither_backend():
    code = (
        "import sys, ebmppl; "
        "bad = [m for m in ('jax', 'torch', 'numpyro', 'pyro', 'arviz') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_backend_error_names_the_extra(monkeypatch):
    import importlib

    from ebmppl import _backend

    real = importlib.import_module

    def fake_import(name):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real(name)

    monkeypatch.setattr(_backend.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'ebmppl\[pyro\]'"):
        _backend.require("pyro")


@pytest.mark.parametrize("name", ["gaussian10", "mixture", "positive"])
def test_exact_samplers_match_exact_moments(name):
    prob = problems.get_problem(name)
    x = prob.sample(200_000, seed=1)
    n = x.shape[0]
    assert np.all(np.abs(x.mean(0) - prob.mean) < 4.4 * np.sqrt(prob.var / n))
    assert np.all(np.abs(x.var(0) - prob.var) < 4.4 * prob.var * np.sqrt(3.0 / n) + 1e-9)
    with pytest.raises(NotImplementedError):
        problems.banana().sample(3)


def test_bfmi_is_computed_the_same_on_every_arviz_generation():
    import xarray as xr

    from ebmppl import arviz as ebmppl_arviz

    energy = np.cumsum(np.random.default_rng(0).normal(size=(3, 400)), axis=1)
    idata = ebmppl_arviz.make_idata(
        {"sample_stats": xr.Dataset({"energy": (("chain", "draw"), energy)})}
    )
    expected = np.square(np.diff(energy, axis=1)).sum(1) / 400 / energy.var(1)
    np.testing.assert_allclose(ebmppl_arviz.bfmi(idata), expected, rtol=1e-12)
    if ebmppl_arviz.generation() == 0:
        import arviz as az

        np.testing.assert_allclose(ebmppl_arviz.bfmi(idata), az.bfmi(idata), rtol=1e-12)

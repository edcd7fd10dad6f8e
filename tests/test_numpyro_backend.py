"""NumPyro-specific behaviour (the conformance suite covers what both backends share)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numpyro")

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.handlers import seed, trace
from numpyro.infer.util import log_density

from ebmppl import problems
from ebmppl.numpyro import AIS, SMC, energy, is_energy_site, problem_model, tempered


def model_with_everything(y):
    x = numpyro.sample("x", dist.Normal(0.0, 2.0))
    energy("E", lambda v: 0.5 * (v - 1.0) ** 2, x, temperature=2.0)
    numpyro.factor("f", -0.1 * x**2)
    numpyro.sample("y", dist.Normal(x, 1.0), obs=y)


def test_energy_site_is_tagged_and_scaled_by_temperature():
    tr = trace(seed(model_with_everything, 0)).get_trace(0.3)
    site = tr["E"]
    assert is_energy_site(site) and not is_energy_site(tr["f"])
    assert site["infer"]["ebmppl_energy"]["temperature"] == 2.0
    x = tr["x"]["value"]
    np.testing.assert_allclose(site["fn"].log_factor, -0.5 * (x - 1.0) ** 2 / 2.0, rtol=1e-6)


def test_energy_returns_the_energy():
    out = {}

    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        out["e"] = energy("E", lambda v: 3.0 * v**2, x, temperature=5.0)
        out["x"] = x

    seed(model, 1)()
    np.testing.assert_allclose(out["e"], 3.0 * out["x"] ** 2, rtol=1e-6)


def test_tempered_scales_every_observed_site_and_not_the_prior():
    y, x, beta = 0.3, 0.7, 0.37
    lp, _ = log_density(tempered(model_with_everything, beta=beta), (y,), {}, {"x": x})
    prior = dist.Normal(0.0, 2.0).log_prob(x)
    lik = -0.5 * (x - 1.0) ** 2 / 2.0 - 0.1 * x**2 + dist.Normal(x, 1.0).log_prob(y)
    np.testing.assert_allclose(lp, prior + beta * lik, rtol=1e-6)


def test_energy_shape_must_match_plates():
    def model():
        with numpyro.plate("items", 3):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3, 2]).to_event(1))
            energy("E_p", lambda v: (v**2).sum(), x)  # reduces over the plate too

    with pytest.raises(ValueError, match=r"energy site 'E_p'.*shape \(\).*\(3,\)"):
        trace(seed(model, 0)).get_trace()

    def model_ok():
        with numpyro.plate("items", 3):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3, 2]).to_event(1))
            energy("E_p", lambda v: (v**2).sum(-1), x)

    trace(seed(model_ok, 0)).get_trace()


def test_energy_outside_plate_may_reduce_over_it():
    def model():
        with numpyro.plate("items", 3):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_total", lambda v: jnp.sum(v**2), x)

    trace(seed(model, 0)).get_trace()

    def model_2d():
        with numpyro.plate("rows", 3, dim=-2):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E_rows", lambda v: v**2, x)  # shape (3, 1) == plate batch shape

    trace(seed(model_2d, 0)).get_trace()


def test_bad_temperature_raises():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_t", lambda v: v**2, x, temperature=0.0)

    with pytest.raises(ValueError, match="'E_t'.*temperature must be positive"):
        trace(seed(model, 0)).get_trace()


def test_discrete_latent_raises():
    def model():
        k = numpyro.sample("k", dist.Categorical(probs=jnp.ones(3) / 3))
        energy("E", lambda v: v * 1.0, k)

    with pytest.raises(ValueError, match="site 'k' is discrete"):
        AIS(model, num_particles=8, num_steps=2, progress=False).run(jax.random.PRNGKey(0))


def test_reference_must_cover_latent_sites():
    model = problem_model(problems.gaussian(2))
    with pytest.raises(ValueError, match=r"missing \['x'\]"):
        AIS(model, reference={"z": dist.Normal(0, 1)}, num_particles=8, num_steps=2).run(
            jax.random.PRNGKey(0)
        )
    with pytest.raises(ValueError, match="shape"):
        AIS(model, reference={"x": dist.Normal(0, 1)}, num_particles=8, num_steps=2).run(
            jax.random.PRNGKey(0)
        )


def test_rng_key_must_be_a_key():
    ais = AIS(problem_model(problems.gaussian(2)), num_particles=8, num_steps=2)
    with pytest.raises(TypeError, match="PRNGKey"):
        ais.run(0)


def test_few_nonfinite_initial_energies_are_dropped_with_a_warning():
    """E = NaN where x > 2.5 (prior mass ~0.6%); the target treats that region as zero density."""

    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_cut", lambda v: jnp.where(v > 2.5, jnp.nan, 0.5 * v**2), x)

    with pytest.warns(RuntimeWarning, match="E_cut.*non-finite"):
        res = AIS(model, num_particles=2000, num_steps=50, progress=False).run(
            jax.random.PRNGKey(0)
        )
    assert 0 < res.num_dropped < 40
    # exact: int_{-inf}^{2.5} N(x) exp(-x^2/2) dx = Phi(2.5 sqrt 2) / sqrt 2
    from scipy import stats

    exact = np.log(stats.norm.cdf(2.5 * np.sqrt(2)) / np.sqrt(2))
    assert abs(res.log_z - exact) < 4.4 * res.log_z_se + 0.02


def test_sharded_particles_over_two_devices_agree():
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 JAX devices (XLA_FLAGS set in conftest before JAX starts)")
    prob = problems.mixture()
    model = problem_model(prob)
    key = jax.random.PRNGKey(3)
    plain = AIS(model, num_particles=512, num_steps=50, progress=False).run(key)
    sharded = AIS(model, num_particles=512, num_steps=50, shard=True, progress=False).run(key)
    assert sharded.info["devices"] == 2
    # Same keys and maths, but cross-shard reductions round differently in float32, so the
    # adapted step sizes and then the trajectories drift apart: the two runs are at most as
    # different as independent ones.
    combined = np.hypot(sharded.log_z_se, plain.log_z_se)
    assert abs(sharded.log_z - plain.log_z) < 4.4 * combined + 0.02
    with pytest.raises(ValueError, match="divisible"):
        AIS(model, num_particles=511, num_steps=5, shard=True, progress=False).run(key)
    with pytest.raises(TypeError, match="shard must be True or False"):
        AIS(model, shard="yes")


def test_sharded_smc_over_two_devices_agrees():
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 JAX devices (XLA_FLAGS set in conftest before JAX starts)")
    model = problem_model(problems.mixture())
    key = jax.random.PRNGKey(4)
    opts = {"num_particles": 256, "num_replicas": 4, "progress": False}
    plain = SMC(model, **opts).run(key)
    sharded = SMC(model, shard=True, **opts).run(key)
    assert sharded.info["devices"] == 2 and plain.info["devices"] == 1
    assert sharded.log_weights.shape == plain.log_weights.shape == (1024,)
    combined = np.hypot(sharded.log_z_se, plain.log_z_se)
    assert abs(sharded.log_z - plain.log_z) < 4.4 * combined + 0.02
    with pytest.raises(ValueError, match="divisible"):
        SMC(model, num_particles=255, shard=True, progress=False).run(key)
    with pytest.raises(TypeError, match="shard must be True or False"):
        SMC(model, shard=1)


def test_progress_goes_to_stderr(capsys):
    AIS(problem_model(problems.gaussian(2)), num_particles=16, num_steps=40, progress=True).run(
        jax.random.PRNGKey(0)
    )
    err = capsys.readouterr().err
    assert "AIS (numpyro): step 40/40" in err


def test_progress_does_not_change_the_result():
    model = problem_model(problems.gaussian(2))
    a = AIS(model, num_particles=64, num_steps=45, progress=True).run(jax.random.PRNGKey(1))
    b = AIS(model, num_particles=64, num_steps=45, progress=False).run(jax.random.PRNGKey(1))
    np.testing.assert_allclose(a.log_weights, b.log_weights, rtol=1e-5, atol=1e-5)


def test_positive_latent_particles_are_constrained():
    prob = problems.positive()
    res = AIS(problem_model(prob), num_particles=1000, num_steps=100, progress=False).run(
        jax.random.PRNGKey(0)
    )
    assert np.all(res.particles["x"] > 0)
    mean, se = res.expectation(lambda p: p["x"])
    assert abs(mean - prob.mean) < 4.4 * se + 0.01


def test_keys_of_every_prng_implementation_are_accepted():
    model = problem_model(problems.gaussian(2))
    ais = AIS(model, num_particles=64, num_steps=10, progress=False)
    smc = SMC(model, num_particles=64, num_replicas=2, max_steps=20, progress=False)
    for key in (jax.random.key(0, impl="rbg"), jax.random.key(0), jax.random.PRNGKey(0)):
        assert np.isfinite(ais.run(key).log_z)
        assert np.isfinite(smc.run(key).log_z)
    with jax.default_prng_impl("rbg"):  # a raw (4,) key: NumPyro refuses it; say what to do
        raw = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="pass a typed key"):
        ais.run(raw)
    for bad in (0, np.zeros(2, np.uint32), jax.random.split(jax.random.PRNGKey(0), 2)):
        with pytest.raises(TypeError, match="rng_key must be one JAX PRNG key"):
            ais.run(bad)
        with pytest.raises(TypeError, match="rng_key must be one JAX PRNG key"):
            smc.run(bad)

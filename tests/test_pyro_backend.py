"""Pyro-specific tests: nn.Module energies, dtypes, RNG handling, batching, errors, NUTS, ArviZ.

Statistical checks use the reported standard error: |estimate - exact| < K * se + floor with
K = 4.4 (as in the conformance suite) and fixed seeds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

pytest.importorskip("pyro")

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC

import ebmppl
from ebmppl import problems
from ebmppl.pyro import (
    AIS,
    SMC,
    EnergyNotBatchedError,
    ModelPotential,
    energy,
    is_energy_site,
    nuts_mcmc,
    problem_model,
    tempered,
)

K = 4.4
FLOOR = 0.02
GAUSS2 = problems.gaussian(2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small tensors: one intra-op thread avoids OpenMP spin-waits on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(result, exact):
    assert result.ess > 100, result
    assert abs(result.log_z - exact) < K * result.log_z_se + FLOOR, (result, exact)


class QuadraticEnergy(torch.nn.Module):
    """E(x) = (x - m)^T P (x - m) / 2 with trainable-looking parameters (held fixed by ebmppl)."""

    def __init__(self, prec: np.ndarray, mean: np.ndarray) -> None:
        super().__init__()
        chol = np.linalg.cholesky(prec)
        self.chol = torch.nn.Parameter(torch.tensor(chol, dtype=torch.float32))
        self.mean = torch.nn.Parameter(torch.tensor(mean, dtype=torch.float32))

    def forward(self, x):
        d = (x - self.mean) @ self.chol
        return 0.5 * (d**2).sum(-1)


def _module_model(net):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
        energy("E", net, x)

    return model


# -- nn.Module energies --------------------------------------------------------------------
def test_module_energy_ais_exact_and_parameters_untouched():
    net = QuadraticEnergy(GAUSS2.extra["prec"], GAUSS2.extra["m"])
    before = [p.detach().clone() for p in net.parameters()]
    res = AIS(_module_model(net), num_particles=1000, num_steps=100, progress=False).run(
        generator=_gen(0)
    )
    _close(res, GAUSS2.log_z)
    assert res.info["vectorize"] == "plate"
    for p, b in zip(net.parameters(), before):
        assert p.grad is None
        assert torch.equal(p.detach(), b)


def test_module_energy_value_has_no_graph_and_works_under_no_grad():
    net = QuadraticEnergy(GAUSS2.extra["prec"], GAUSS2.extra["m"])
    x = torch.zeros(2)
    tr = poutine.trace(lambda: energy("E", net, x)).get_trace()
    value = tr.nodes["_RETURN"]["value"]
    assert value.grad_fn is None and not value.requires_grad  # parameters are not in a graph
    assert is_energy_site(tr.nodes["E"])
    assert tr.nodes["E"]["infer"]["is_auxiliary"]
    xg = torch.zeros(2, requires_grad=True)
    (g,) = torch.autograd.grad(energy_value(net, xg), xg)  # gradient w.r.t. the input flows
    expected = -torch.tensor(GAUSS2.extra["prec"] @ GAUSS2.extra["m"], dtype=torch.float32)
    torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        res = AIS(_module_model(net), num_particles=200, num_steps=20, progress=False).run(
            generator=_gen(1)
        )
    assert np.isfinite(res.log_z)
    assert all(p.grad is None for p in net.parameters())


def energy_value(net, x):
    return poutine.trace(lambda: energy("E", net, x)).get_trace().nodes["_RETURN"]["value"]


def test_module_energy_under_jit_nuts_recovers_moments_and_leaves_parameters_alone():
    net = QuadraticEnergy(GAUSS2.extra["prec"], GAUSS2.extra["m"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mcmc = nuts_mcmc(_module_model(net), num_samples=600, num_warmup=300, jit_compile=True)
        mcmc.run()
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    _check_moments(mcmc.get_samples()["x"].numpy())


# -- dtypes, RNG ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_the_model(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        res = AIS(problem_model(GAUSS2), num_particles=1000, num_steps=100, progress=False).run(
            generator=_gen(2)
        )
    finally:
        torch.set_default_dtype(old)
    assert res.info["dtype"] == str(dtype).replace("torch.", "")
    assert res.particles["x"].dtype == (np.float32 if dtype == torch.float32 else np.float64)
    assert res.log_weights.dtype == np.float64
    _close(res, GAUSS2.log_z)


def test_explicit_generator_is_reproducible_and_leaves_global_rng_alone():
    ais = AIS(problem_model(problems.mixture()), num_particles=128, num_steps=20, progress=False)
    state = torch.get_rng_state()
    a = ais.run(generator=_gen(3))
    b = ais.run(generator=_gen(3))
    c = ais.run(generator=_gen(4))
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a.log_weights, b.log_weights)
    np.testing.assert_array_equal(a.particles["x"], b.particles["x"])
    assert not np.array_equal(a.log_weights, c.log_weights)


def test_global_seed_is_reproducible():
    ais = AIS(problem_model(GAUSS2), num_particles=64, num_steps=10, progress=False)
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(11)
        a = ais.run()
        pyro.set_rng_seed(11)
        b = ais.run()
    np.testing.assert_array_equal(a.log_weights, b.log_weights)


def test_bad_generator_and_vectorize_raise():
    with pytest.raises(ValueError, match="vectorize"):
        AIS(problem_model(GAUSS2), vectorize="loop")
    with pytest.raises(TypeError, match="generator"):
        AIS(problem_model(GAUSS2), progress=False).run(generator=0)


# -- batching --------------------------------------------------------------------------------
def _single_x_model(reduce_all: bool, as_factor: bool = False):
    prec = torch.tensor(GAUSS2.extra["prec"], dtype=torch.float32)
    m = torch.tensor(GAUSS2.extra["m"], dtype=torch.float32)

    def single(x):  # written for one x of shape (2,)
        d = x - m
        return 0.5 * d @ prec @ d if not reduce_all else 0.5 * torch.sum((d @ prec) * d)

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
        if as_factor:
            pyro.factor("f", -single(x))
        else:
            energy("E", single, x)

    return model


@pytest.mark.parametrize("reduce_all", [False, True])
def test_single_x_energy_is_batched_with_vmap(reduce_all):
    res = AIS(_single_x_model(reduce_all), num_particles=1000, num_steps=100, progress=False).run(
        generator=_gen(5)
    )
    assert res.info["vectorize"] == "vmap"
    _close(res, GAUSS2.log_z)


def test_energy_reducing_over_particles_is_caught_on_the_plate_route():
    with pytest.raises(EnergyNotBatchedError, match=r"energy site 'E'.*batch-aware"):
        ModelPotential(_single_x_model(True), vectorize="plate")
    with pytest.raises(EnergyNotBatchedError, match=r"factor site 'f'"):
        ModelPotential(_single_x_model(True, as_factor=True), vectorize="plate")
    assert ModelPotential(_single_x_model(True, as_factor=True)).vectorize == "vmap"


def test_plate_and_vmap_routes_agree_on_a_plated_model():
    def model(y):
        x = pyro.sample("x", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        energy("E", lambda v: 0.25 * torch.sum(v**2, -1), x)
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(x, s[..., None]).to_event(1), obs=y)
            pyro.factor("g", -0.1 * (y[:, 0] - x[..., 0]) ** 2)

    y = torch.randn(6, 2, generator=_gen(0))
    plate = ModelPotential(model, (y,), vectorize="plate")
    vmap = ModelPotential(model, (y,), vectorize="vmap")
    assert plate.dim == 3 and plate.particle_dim == -2
    z = torch.randn(7, 3, generator=_gen(1))
    for a, b in zip(plate.log_parts(z), vmap.log_parts(z)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        plate.energy_values(z)["E"], vmap.energy_values(z)["E"], rtol=1e-5, atol=1e-6
    )


def test_tempered_scales_observed_sites_only():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E", lambda v: 2.0 * v**2, x, temperature=2.0)
        pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.5))

    def log_joint(fn):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            tr = poutine.trace(fn).get_trace()
        tr.compute_log_prob()
        return tr

    full = log_joint(model)
    half = log_joint(tempered(model, beta=0.5))
    x = full.nodes["x"]["value"]
    assert torch.equal(half.nodes["x"]["log_prob_sum"], full.nodes["x"]["log_prob_sum"])
    torch.testing.assert_close(full.nodes["E"]["log_prob_sum"], -(x**2))  # -E / T
    for site in ("E", "y"):
        torch.testing.assert_close(
            half.nodes[site]["log_prob_sum"], 0.5 * full.nodes[site]["log_prob_sum"]
        )
    with pytest.raises(ValueError, match="beta"):
        tempered(model, beta=-1.0)


# -- errors ------------------------------------------------------------------------------
def _trace(model):
    with torch.random.fork_rng(devices=[]):
        poutine.trace(model).get_trace()


def test_energy_errors_name_the_site():
    def bad_temperature():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_t", lambda v: v**2, x, temperature=0.0)

    def bad_plate_shape():
        with pyro.plate("items", 4):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E_p", lambda v: v[:3], x)

    def scalar_in_plate():
        with pyro.plate("items", 4):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E_s", lambda v: torch.sum(v**2), x)

    def discrete():
        k = pyro.sample("k", dist.Poisson(3.0))
        energy("E", lambda v: 0.0 * v, k)

    with pytest.raises(ValueError, match=r"energy site 'E_t'.*temperature must be positive"):
        _trace(bad_temperature)
    with pytest.raises(ValueError, match=r"energy site 'E_p'.*shape \(3,\).*\(4,\)"):
        _trace(bad_plate_shape)
    with pytest.raises(ValueError, match=r"energy site 'E_s'.*counted once per element"):
        _trace(scalar_in_plate)
    with pytest.raises(ValueError, match=r"latent site 'k' is discrete"):
        AIS(discrete, progress=False).run(generator=_gen(0))
    with pytest.raises(TypeError, match="energy site name"):
        _trace(lambda: energy("", lambda v: v, torch.zeros(())))


def test_diverging_proposals_are_rejected_not_raised():
    """A huge fixed step size on a Gamma prior overflows: validation must not crash the run."""
    prob = problems.positive()
    ais = AIS(
        problem_model(prob),
        num_particles=200,
        num_steps=10,
        step_size=60.0,
        adapt_step_size=False,
        progress=False,
    )
    res = ais.run(generator=_gen(6))
    assert np.isfinite(res.log_z)
    assert res.acceptance_rate.mean() < 0.2
    assert pyro.poutine.util.is_validation_enabled()  # the user's setting is restored


def test_partly_infinite_energy_drops_particles_and_stays_unbiased():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E", lambda v: torch.where(v > 1.5, torch.inf, 0.0 * v), x)

    with pytest.warns(RuntimeWarning) as record:
        res = AIS(model, num_particles=2000, num_steps=50, progress=False).run(generator=_gen(7))
    messages = [str(w.message) for w in record]
    assert any(m.startswith("energy site 'E' is non-finite") for m in messages), messages
    assert res.num_dropped > 0
    exact = math.log(0.5 * (1 + math.erf(1.5 / math.sqrt(2))))  # log P(x <= 1.5)
    _close(res, exact)


def test_result_info_and_progress(capsys):
    res = AIS(problem_model(GAUSS2), num_particles=32, num_steps=8, progress=True).run(
        generator=_gen(8)
    )
    assert "AIS (pyro): step 8/8" in capsys.readouterr().err
    assert res.backend == "pyro"
    expected = {
        "num_particles", "schedule", "num_steps", "num_leapfrog_steps", "num_mcmc_steps",
        "step_size", "target_accept", "adapt_step_size", "adapt_mass", "adapt_rate",
        "step_size_jitter", "reference", "energy_sites", "observed_sites", "latent_sites",
        "num_dropped_per_step", "wall_time", "devices", "adaptation",
        "pilot_gradient_evaluations", "direction",
    }  # fmt: skip
    assert expected <= set(res.info)
    assert res.info["num_dropped_per_step"].shape == (8,)
    assert res.acceptance_rate.shape == res.step_size.shape == res.ess_trace.shape == (8,)
    # The default pilot run costs as much as the main run; both are counted.
    assert res.info["pilot_gradient_evaluations"] == 8 * (1 + 1 * 3)
    assert res.gradient_evaluations == 2 * 8 * (1 + 1 * 3)


def test_smc_progress_and_pyro_info(capsys):
    res = SMC(problem_model(GAUSS2), num_particles=32, num_replicas=3, progress=True).run(
        generator=_gen(9)
    )
    err = capsys.readouterr().err
    assert "SMC (pyro): step 500/500" in err  # the final line, once every replica is at 1
    assert len(err.splitlines()) <= 2  # reported every 25 steps, not every step
    assert res.backend == "pyro"
    assert {"device", "dtype", "vectorize"} <= set(res.info)
    assert res.log_weights.shape == (96,) and res.particles["x"].shape == (96, 2)


def test_one_smc_replica_with_resampling_warns_that_the_se_is_optimistic():
    # The warning comes from the backend-neutral result assembly (ebmppl._assemble).
    with pytest.warns(RuntimeWarning, match="num_replicas >= 2") as caught:
        res = SMC(problem_model(GAUSS2), num_particles=50, num_replicas=1, progress=False).run(
            generator=_gen(10)
        )
    assert res.info["se_method"] == "weights"
    assert caught[0].filename == __file__  # points at the user's call


# -- NUTS and ArviZ --------------------------------------------------------------------------
def _ess(draws: np.ndarray) -> np.ndarray:
    import arviz as az

    return np.array([float(az.ess(draws[None, :, i])) for i in range(draws.shape[1])])


def _check_moments(x: np.ndarray) -> None:
    ess = _ess(x)
    sd = np.sqrt(GAUSS2.var)
    assert np.all(ess > 150), ess
    assert np.all(np.abs(x.mean(0) - GAUSS2.mean) < K * sd / np.sqrt(ess)), x.mean(0)
    assert np.all(np.abs(x.var(0) - GAUSS2.var) < K * GAUSS2.var * np.sqrt(2 / ess) + 0.01)


def test_plain_pyro_nuts_recovers_moments():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mcmc = MCMC(
            pyro.infer.NUTS(problem_model(GAUSS2)),
            num_samples=600,
            warmup_steps=300,
            disable_progbar=True,
        )
        mcmc.run()
    _check_moments(mcmc.get_samples()["x"].numpy())


def test_arviz_groups_from_recording_nuts_and_netcdf(tmp_path):
    def model(y):
        x = pyro.sample("x", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
        energy("E", lambda v: 0.25 * torch.sum(v**2, -1), x)
        pyro.deterministic("r", torch.sum(x**2, -1))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    y = torch.randn(5, 2, generator=_gen(1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"num_chains=\d+ is more than available_cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            mcmc = nuts_mcmc(model, num_samples=100, num_warmup=100, num_chains=2)
            mcmc.run(y)
    state = torch.get_rng_state()
    idata = ebmppl.to_arviz(mcmc)
    assert torch.equal(torch.get_rng_state(), state)
    assert {"posterior", "sample_stats", "energy", "log_likelihood", "observed_data"} <= set(
        idata.groups()
    )
    stats = idata.sample_stats
    for name in ("lp", "energy", "diverging", "n_steps", "tree_depth", "acceptance_rate"):
        assert stats[name].shape == (2, 100), name
    assert idata.posterior.attrs["inference_library"] == "pyro"
    assert list(idata.energy.data_vars) == ["E"]
    assert "E" not in idata.log_likelihood and "y" in idata.log_likelihood
    assert idata.log_likelihood["y"].shape == (2, 100, 5)
    x = idata.posterior["x"].values
    np.testing.assert_allclose(idata.posterior["r"].values, (x**2).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(idata.energy["E"].values, 0.25 * (x**2).sum(-1), rtol=1e-5)
    lp = stats["lp"].values  # log density (Jacobian-free here) at the draws, recomputed
    yv = y.numpy()
    expected = (
        -0.5 * (x**2).sum(-1) / 4.0
        - 2 * math.log(2.0 * math.sqrt(2 * math.pi))
        - 0.25 * (x**2).sum(-1)
        - 0.5 * ((yv[None, None] - x[:, :, None]) ** 2).sum((-1, -2))
        - 5 * math.log(2 * math.pi)
    )
    np.testing.assert_allclose(lp, expected, rtol=1e-4, atol=1e-3)
    path = tmp_path / "pyro.nc"
    idata.to_netcdf(str(path))
    back = ebmppl.arviz.from_netcdf(path)
    assert set(back.groups()) == set(idata.groups())
    np.testing.assert_array_equal(back.energy["E"].values, idata.energy["E"].values)


def test_plain_pyro_nuts_converts_with_diverging_only():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        mcmc = MCMC(
            pyro.infer.NUTS(problem_model(GAUSS2)),
            num_samples=30,
            warmup_steps=30,
            disable_progbar=True,
        )
        mcmc.run()
    with pytest.warns(UserWarning, match="only 'diverging'"):
        idata = ebmppl.to_arviz(mcmc)
    assert list(idata.sample_stats.data_vars) == ["diverging"]
    assert idata.energy["E"].shape == (1, 30)

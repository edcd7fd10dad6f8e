"""Replica exchange (Pyro): adaptive ladder, mode crossing, stepping-stone and TI log Z.

Mirrors tests/test_replica_exchange.py. The log Z checks use K = 24 temperatures and a longer
warm-up than the NumPyro test: the corrected-trapezoid TI's standard error covers Monte Carlo
error only, and on "double_well" (Var[log_ratio] ~ 4e5 under the prior) a 12-rung adapted ladder
leaves a discretisation bias of 0.1-1.0 nats in the first interval (measured with exact
moments by quadrature), while 24 rungs adapted over 6 rounds leave < 0.012 over 12 seeds.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyro")

import pyro
import pyro.distributions as dist
import torch

from ebmppl import _pt_common, problems
from ebmppl.arviz import groups, to_netcdf
from ebmppl.pyro import (
    ReplicaExchange,
    ReplicaExchangeResult,
    energy,
    ladder_from_rejections,
    problem_model,
)

K, FLOOR = 4.4, 0.02
TEMPS, CHAINS, WARMUP, SAMPLES, ROUNDS = 24, 8, 600, 600, 6


@pytest.fixture(autouse=True)
def one_thread():
    """Small batches: one intra-op thread avoids OpenMP spin-waiting on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_common_module_is_backend_neutral():
    code = (
        "import sys, ebmppl._pt_common; "
        "assert not {'torch', 'jax'} & set(sys.modules), sorted({'torch', 'jax'} & "
        "set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ladder_from_rejections is _pt_common.ladder_from_rejections
    assert ReplicaExchangeResult is _pt_common.ReplicaExchangeResult


def test_ladder_from_rejections():
    betas = np.linspace(0, 1, 5)
    np.testing.assert_allclose(ladder_from_rejections(betas, np.full(4, 0.3)), betas)
    new = ladder_from_rejections(betas, np.array([0.9, 0.1, 0.1, 0.1]))
    assert new[0] == 0 and new[-1] == 1 and np.all(np.diff(new) > 0)
    assert new[1] < betas[1]  # rungs crowd where swaps were rejected


@pytest.mark.parametrize("name", ["mixture", "double_well"])
def test_replica_exchange_log_z_and_modes(name, tmp_path):
    prob = problems.get_problem(name)
    res = ReplicaExchange(
        problem_model(prob),
        num_temperatures=TEMPS,
        num_chains=CHAINS,
        num_warmup=WARMUP,
        num_samples=SAMPLES,
        num_rounds=ROUNDS,
        progress=False,
    ).run(generator=torch.Generator().manual_seed(0))
    assert isinstance(res, ReplicaExchangeResult) and res.backend == "pyro"
    assert abs(res.log_z - prob.log_z) < K * res.log_z_se + FLOOR, res
    assert abs(res.log_z_ti - prob.log_z) < K * res.log_z_ti_se + FLOOR, res
    # ladder: endpoints fixed, strictly increasing, one ladder per adapted round
    assert res.betas.shape == (TEMPS,) and res.betas[0] == 0.0 and res.betas[-1] == 1.0
    assert np.all(np.diff(res.betas) > 0)
    assert len(res.ladder_history) == ROUNDS
    np.testing.assert_array_equal(res.ladder_history[-1], res.betas)
    # adapted ladder: swap rates close to uniform, none starved
    assert res.swap_rate.shape == (TEMPS - 1,)
    assert res.swap_rate.min() > 0.5
    assert res.swap_rate.max() - res.swap_rate.min() < 0.15
    assert res.acceptance_rate.shape == res.step_size.shape == res.mean_log_ratio.shape
    assert np.all(np.diff(res.mean_log_ratio) > 0)  # d/dbeta E[log_ratio] = Var >= 0
    x = res.samples["x"]
    assert x.shape == (CHAINS, SAMPLES, 2)
    flat = x.reshape(-1, 2)
    if name == "mixture":
        centres = prob.extra["mode_centers"]
        occ = np.eye(3)[((flat[:, None] - centres) ** 2).sum(-1).argmin(1)]
        # per-chain occupancies are independent: their spread gives the error
        per_chain = occ.reshape(CHAINS, SAMPLES, 3).mean(1)
        se = per_chain.std(0, ddof=1) / np.sqrt(CHAINS)
        assert np.all(np.abs(per_chain.mean(0) - prob.extra["mode_weights"]) < K * se + 0.02)
    else:
        left = (x[..., 0] < 0).mean(1)
        se = left.std(ddof=1) / np.sqrt(CHAINS)
        assert abs(left.mean() - prob.extra["left_mass"]) < K * se + 0.02
    idata = res.to_arviz()
    assert {"posterior", "replica_exchange"} <= set(groups(idata))
    assert idata.replica_exchange.attrs["log_z"] == res.log_z
    to_netcdf(idata, tmp_path / "pt.nc")


def _small(model, **kw):
    opts = {"num_temperatures": 4, "num_chains": 3, "num_warmup": 8, "num_samples": 5}
    return ReplicaExchange(model, **{**opts, "progress": False, **kw})


def test_reproducible_and_global_rng_untouched():
    model = problem_model(problems.get_problem("mixture"))
    state = torch.get_rng_state()
    a = _small(model).run(generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    b = _small(model).run(generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a.samples["x"], b.samples["x"])
    assert a.log_z == b.log_z and a.log_z_ti == b.log_z_ti
    pyro.set_rng_seed(5)
    c = _small(model).run()
    pyro.set_rng_seed(5)
    d = _small(model).run()
    np.testing.assert_array_equal(c.samples["x"], d.samples["x"])


def test_constrained_site_and_vmap_route():
    # Gamma latent (constrained), an energy written for a single x (vmap route), and a
    # deterministic site: draws come back constrained, (num_chains, num_samples, ...).
    def model():
        x = pyro.sample("x", dist.Gamma(2.0, 1.0).expand([3]).to_event(1))
        energy("E", lambda v: (v[0] - 1.0) ** 2, x)
        pyro.deterministic("total", x.sum(-1))

    res = _small(model, vectorize="vmap").run(generator=torch.Generator().manual_seed(0))
    assert res.info["vectorize"] == "vmap"
    assert res.samples["x"].shape == (3, 5, 3) and np.all(res.samples["x"] > 0)
    np.testing.assert_allclose(res.samples["total"], res.samples["x"].sum(-1), rtol=1e-5)
    assert np.isfinite(res.log_z) and np.isfinite(res.log_z_ti)


def test_bad_options():
    model = problem_model(problems.gaussian(2))
    with pytest.raises(ValueError, match=r"num_temperatures.*got 1"):
        ReplicaExchange(model, num_temperatures=1)
    with pytest.raises(ValueError, match=r"target_accept.*1\.2"):
        ReplicaExchange(model, target_accept=1.2)
    with pytest.raises(TypeError, match="target_accept"):
        ReplicaExchange(model, target_accept="high")
    with pytest.raises(ValueError, match=r"num_chains.*0"):
        ReplicaExchange(model, num_chains=0)
    with pytest.raises(TypeError, match=r"num_samples.*2\.5"):
        ReplicaExchange(model, num_samples=2.5)
    with pytest.raises(ValueError, match=r"vectorize.*'loop'"):
        ReplicaExchange(model, vectorize="loop")
    with pytest.raises(TypeError, match="model must be a callable"):
        ReplicaExchange(3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        _small(model).run(generator=0)

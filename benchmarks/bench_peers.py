"""log Z accuracy against cost: ebmppl (AIS, adaptive SMC, replica exchange) vs peers.

Peers (optional benchmark dependencies, ``pip install blackjax dynesty ultranest``):
BlackJAX ``adaptive_tempered_smc`` with an HMC kernel (its log-likelihood increments summed;
replicas run to get the error bar it does not give), dynesty and UltraNest nested sampling.
Same problems, same machine, one process. Times are warm for JAX code (compiled once before).
Writes ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from ebmppl import diagnostics, problems
from ebmppl.numpyro import AIS, SMC, ReplicaExchange, problem_model

PROBLEMS = ("gaussian10", "mixture", "double_well")


def _timed(fn, warm: bool):
    if warm:
        fn()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ebmppl_methods(prob, quick):
    model = problem_model(prob)
    n = 500 if quick else 1000
    rows = []
    ais = AIS(model, num_particles=n, num_steps=200, progress=False)
    res, t = _timed(lambda: ais.run(jax.random.PRNGKey(1)), True)
    rows.append(("ebmppl AIS (pilot)", res.log_z, res.log_z_se, t, res.gradient_evaluations * n))
    smc = SMC(model, num_particles=n // 4, num_replicas=8, target_cess=0.99, progress=False)
    res, t = _timed(lambda: smc.run(jax.random.PRNGKey(2)), True)
    rows.append(
        ("ebmppl SMC adaptive x8", res.log_z, res.log_z_se, t, res.gradient_evaluations * n * 2)
    )
    pt = ReplicaExchange(
        model, num_temperatures=12, num_chains=8, num_warmup=300, num_samples=600, progress=False
    )
    res, t = _timed(lambda: pt.run(jax.random.PRNGKey(3)), False)
    evals = 12 * 8 * 900 * 4
    rows.append(("ebmppl replica exchange (SS, cold)", res.log_z, res.log_z_se, t, evals))
    rows.append(("ebmppl replica exchange (TI, cold)", res.log_z_ti, res.log_z_ti_se, t, evals))
    return rows


def blackjax_runner(prob, n: int, steps: int, leap: int = 3):
    """BlackJAX adaptive tempered SMC (HMC moves, step 0.2, identity mass, no adaptation) on
    ``prob`` with ``n`` particles and ``steps`` MCMC steps per temperature.

    Returns a jitted ``run(keys) -> (log Z per replica, tempering steps per replica)`` that
    runs one replica per key (the increments summed: BlackJAX does not return log Z itself).
    """
    import blackjax
    from blackjax.smc import extend_params
    from blackjax.smc.resampling import systematic

    d = max(prob.dim, 1)
    scale = prob.prior_params[0]

    def logprior(x):
        return jnp.sum(jax.scipy.stats.norm.logpdf(x, scale=scale))

    def loglik(x):
        return -prob.energy(x)

    algo = blackjax.adaptive_tempered_smc(
        logprior,
        loglik,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        extend_params(
            {"step_size": 0.2, "inverse_mass_matrix": jnp.ones(d), "num_integration_steps": leap}
        ),
        systematic,
        0.5,
        num_mcmc_steps=steps,
    )

    def one(key):
        k0, k1 = jax.random.split(key)
        state = algo.init(scale * jax.random.normal(k0, (n, d)))

        def cond(c):
            return c[1].tempering_param < 1

        def body(c):
            i, s, k, lz = c
            k, sub = jax.random.split(k)
            s, info = algo.step(sub, s)
            return i + 1, s, k, lz + info.log_likelihood_increment

        i, _, _, lz = jax.lax.while_loop(cond, body, (0, state, k1, 0.0))
        return lz, i

    return jax.jit(jax.vmap(one))


def blackjax_smc(prob, quick, replicas=8):
    n = (500 if quick else 1000) // 4
    steps, leap = 1, 3
    run = blackjax_runner(prob, n, steps, leap)
    keys = jax.random.split(jax.random.PRNGKey(4), replicas)
    (lz, iters), t = _timed(lambda: jax.block_until_ready(run(keys)), True)
    lz = np.asarray(lz, dtype=np.float64)
    pooled, se = diagnostics.combine_log_z(lz)
    # one hmc.init (log density and gradient) per particle per tempering step, then the moves
    evals = float(np.mean(iters)) * (1 + steps * leap) * n * replicas
    return [("BlackJAX adaptive tempered SMC x8", pooled, se, t, evals)]


def _nested_fns(prob):
    scale = prob.prior_params[0]

    def transform(u):
        return stats.norm.ppf(u, scale=scale)

    def loglike(x):
        return -np.asarray(prob.energy(np.asarray(x, dtype=np.float64)))

    return transform, loglike


def dynesty_run(prob, quick):
    import dynesty

    transform, loglike = _nested_fns(prob)
    sampler = dynesty.NestedSampler(
        loglike, transform, prob.dim, nlive=250 if quick else 500, rstate=np.random.default_rng(0)
    )
    t0 = time.perf_counter()
    sampler.run_nested(dlogz=0.05, print_progress=False)
    t = time.perf_counter() - t0
    r = sampler.results
    return [("dynesty (static, nlive 500)", r.logz[-1], r.logzerr[-1], t, float(np.sum(r.ncall)))]


def ultranest_run(prob, quick):
    import logging

    import ultranest

    logging.getLogger("ultranest").setLevel(logging.WARNING)
    transform, loglike = _nested_fns(prob)

    def vec_loglike(x):
        return loglike(x)

    names = [f"x{i}" for i in range(prob.dim)]
    sampler = ultranest.ReactiveNestedSampler(
        names, vec_loglike, transform, vectorized=True, log_dir=None
    )
    t0 = time.perf_counter()
    r = sampler.run(
        min_num_live_points=200 if quick else 400, dlogz=0.5, show_status=False, viz_callback=False
    )
    t = time.perf_counter() - t0
    return [("UltraNest (reactive)", r["logz"], r["logzerr"], t, float(r["ncall"]))]


def run(quick: bool = False) -> dict:
    out = []
    for name in PROBLEMS:
        prob = problems.get_problem(name)
        rows = ebmppl_methods(prob, quick)
        for peer in (blackjax_smc, dynesty_run, ultranest_run):
            try:
                rows += peer(prob, quick)
            except ImportError as err:
                rows.append((f"{peer.__name__} (not installed: {err.name})", np.nan, np.nan, 0, 0))
        for method, lz, se, t, evals in rows:
            out.append(
                {
                    "problem": name,
                    "method": method,
                    "log_z": float(lz),
                    "error": float(lz - prob.log_z),
                    "se": float(se),
                    "wall_time_s": float(t),
                    "evaluations": float(evals),
                }
            )
    return {"rows": out, "machine": f"{os.cpu_count()} cores", "jax": jax.__version__}


def print_table(res: dict) -> None:
    print(
        f"{'problem':12s} {'method':34s} {'error':>8s} {'se':>7s} {'err/se':>7s} "
        f"{'time s':>7s} {'evals':>9s}"
    )
    for r in res["rows"]:
        z = r["error"] / r["se"] if r["se"] and np.isfinite(r["se"]) else np.nan
        print(
            f"{r['problem']:12s} {r['method']:34s} {r['error']:+8.4f} {r['se']:7.4f} "
            f"{z:+7.2f} {r['wall_time_s']:7.2f} {r['evaluations']:9.3g}"
        )


def main(quick: bool = False) -> dict:
    res = run(quick)
    print_table(res)
    path = Path(__file__).parent / "results" / "peers.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(f"-> {path}")
    return res


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)

"""Pyro (torch) backend vs NumPyro (JAX) backend: AIS and NUTS speed at the same budget.

* AIS on gaussian2, gaussian10 and mixture, same options on both backends: wall time,
  gradient evaluations per second (particles x potential-and-gradient evaluations / time),
  log Z error and se. JAX is timed warm (second run of the compiled program; the first, with
  compilation, is reported as ``cold``); torch is timed on its second run too.
* NUTS on gaussian2 and gaussian10 (unimodal: NUTS cannot hop between the mixture's modes, so
  its ESS would be meaningless there), 2 chains: effective samples per second (ArviZ bulk
  ESS of the posterior, minimum over coordinates, divided by the wall time of ``run``) for
  Pyro's NUTS as is, for the fast path :func:`ebmppl.pyro.nuts_mcmc` (``jit_compile=True``)
  and for NumPyro's NUTS (time includes compilation: that is what a user waits for).

Torch runs with one intra-op thread (``torch_threads`` in the output): the particle batches
are small, and on a 2-core machine shared with other processes OpenMP spin-waiting made
torch up to 10x slower with 2 threads (one reference row with the default thread count is
included). Prints a table and the ratios, writes ``benchmarks/results/backends.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax
import numpy as np
import pyro
import torch

from ebmppl import problems

AIS_PROBLEMS = ("gaussian2", "gaussian10", "mixture")
NUTS_PROBLEMS = ("gaussian2", "gaussian10")
_FUTURE = r"\s*ArviZ is undergoing a major refactor"


def _budget(quick: bool) -> dict:
    if quick:
        return {"particles": 500, "steps": 50, "warmup": 200, "samples": 300, "chains": 2}
    return {"particles": 1000, "steps": 200, "warmup": 500, "samples": 1000, "chains": 2}


def _ais_numpyro(prob, b) -> dict:
    from ebmppl.numpyro import AIS, problem_model

    ais = AIS(
        problem_model(prob), num_particles=b["particles"], num_steps=b["steps"], progress=False
    )
    t0 = time.perf_counter()
    ais.run(jax.random.PRNGKey(0))
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = ais.run(jax.random.PRNGKey(1))
    return _ais_row("numpyro", prob, res, time.perf_counter() - t0, cold)


def _ais_pyro(prob, b, threads: int | None = 1) -> dict:
    from ebmppl.pyro import AIS, problem_model

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        ais = AIS(
            problem_model(prob), num_particles=b["particles"], num_steps=b["steps"], progress=False
        )
        t0 = time.perf_counter()
        ais.run(generator=torch.Generator().manual_seed(0))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = ais.run(generator=torch.Generator().manual_seed(1))
        warm = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    row = _ais_row("pyro", prob, res, warm, cold)
    row["torch_threads"] = threads or before
    return row


def _ais_row(backend: str, prob, res, warm: float, cold: float) -> dict:
    n = res.num_particles
    return {
        "backend": backend,
        "problem": prob.name,
        "num_particles": n,
        "num_steps": res.num_steps,
        "log_z": res.log_z,
        "error": res.log_z - prob.log_z,
        "se": res.log_z_se,
        "ess": res.ess,
        "wall_time_s": warm,
        "wall_time_cold_s": cold,
        "grad_evals_per_s": n * res.gradient_evaluations / warm,
    }


def _min_ess(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FUTURE, category=FutureWarning)
        import arviz as az

    ds = az.convert_to_dataset({"x": x})
    return float(np.min(az.ess(ds)["x"].values))


def _nuts_pyro(prob, b, fast: bool) -> dict:
    from pyro.infer import MCMC

    from ebmppl.pyro import nuts_mcmc, problem_model

    model = problem_model(prob)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.filterwarnings("ignore", message=r"num_chains=\d+ is more than available")
            warnings.filterwarnings("ignore", message=r"`torch.jit.trace` is deprecated")
            torch.manual_seed(0)
            if fast:
                mcmc = nuts_mcmc(
                    model, num_samples=b["samples"], num_warmup=b["warmup"], num_chains=b["chains"]
                )
            else:
                mcmc = MCMC(
                    pyro.infer.NUTS(model),
                    num_samples=b["samples"],
                    warmup_steps=b["warmup"],
                    num_chains=b["chains"],
                    disable_progbar=True,
                )
            t0 = time.perf_counter()
            mcmc.run()
            wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    x = mcmc.get_samples(group_by_chain=True)["x"].numpy()
    label = "pyro nuts_mcmc (jit)" if fast else "pyro NUTS (default)"
    return _nuts_row(label, prob, x, wall)


def _nuts_numpyro(prob, b) -> dict:
    from numpyro.infer import MCMC, NUTS

    from ebmppl.numpyro import problem_model

    mcmc = MCMC(
        NUTS(problem_model(prob)),
        num_warmup=b["warmup"],
        num_samples=b["samples"],
        num_chains=b["chains"],
        chain_method="sequential",
        progress_bar=False,
    )
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0))
    wall = time.perf_counter() - t0
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    return _nuts_row("numpyro NUTS (incl. compile)", prob, x, wall)


def _nuts_row(label: str, prob, x: np.ndarray, wall: float) -> dict:
    ess = _min_ess(x)
    return {
        "sampler": label,
        "problem": prob.name,
        "draws": int(x.shape[0] * x.shape[1]),
        "min_ess": ess,
        "wall_time_s": wall,
        "ess_per_s": ess / wall,
        "max_abs_mean_error": float(np.max(np.abs(x.reshape(-1, x.shape[-1]).mean(0) - prob.mean))),
    }


def run(quick: bool = False) -> dict:
    """Run the comparison; returns a dict with ``ais``, ``nuts`` rows and ``ratios``."""
    b = _budget(quick)
    ais_rows, nuts_rows, ratios = [], [], {}
    for name in AIS_PROBLEMS:
        prob = problems.get_problem(name)
        jx = _ais_numpyro(prob, b)
        tc = _ais_pyro(prob, b)
        ais_rows += [jx, tc]
        ratios[f"ais_{name}_time_torch_over_jax"] = tc["wall_time_s"] / jx["wall_time_s"]
    ref = _ais_pyro(problems.get_problem("gaussian10"), b, threads=None)
    ref["problem"] += " (default threads)"
    ais_rows.append(ref)
    for name in NUTS_PROBLEMS:
        prob = problems.get_problem(name)
        rows = [_nuts_pyro(prob, b, fast=False), _nuts_pyro(prob, b, fast=True)]
        rows.append(_nuts_numpyro(prob, b))
        nuts_rows += rows
        ratios[f"nuts_{name}_ess_per_s_fast_over_default_pyro"] = (
            rows[1]["ess_per_s"] / rows[0]["ess_per_s"]
        )
        ratios[f"nuts_{name}_ess_per_s_numpyro_over_fast_pyro"] = (
            rows[2]["ess_per_s"] / rows[1]["ess_per_s"]
        )
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": list(os.getloadavg()),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "pyro": pyro.__version__,
        },
        "quick": quick,
        "budget": b,
        "ais": ais_rows,
        "nuts": nuts_rows,
        "ratios": ratios,
    }


def print_table(out: dict) -> None:
    b = out["budget"]
    print(
        f"AIS, {b['particles']} particles x {b['steps']} steps ({out['machine']}, "
        f"load {out['load_average'][0]:.1f})"
    )
    print(
        f"{'problem':30s} {'backend':8s} {'error':>8s} {'se':>7s} {'warm s':>7s} "
        f"{'cold s':>7s} {'grad/s':>9s}"
    )
    for r in out["ais"]:
        print(
            f"{r['problem']:30s} {r['backend']:8s} {r['error']:+8.4f} {r['se']:7.4f} "
            f"{r['wall_time_s']:7.2f} {r['wall_time_cold_s']:7.2f} {r['grad_evals_per_s']:9.3g}"
        )
    print(f"\nNUTS, {b['chains']} chains x ({b['warmup']} warmup + {b['samples']} draws)")
    print(f"{'problem':11s} {'sampler':30s} {'min ESS':>8s} {'wall s':>7s} {'ESS/s':>8s}")
    for r in out["nuts"]:
        print(
            f"{r['problem']:11s} {r['sampler']:30s} {r['min_ess']:8.0f} "
            f"{r['wall_time_s']:7.2f} {r['ess_per_s']:8.1f}"
        )
    print("\nratios")
    for k, v in out["ratios"].items():
        print(f"  {k:50s} {v:7.2f}")


def main(quick: bool = False) -> dict:
    out = run(quick)
    print_table(out)
    path = Path(__file__).parent / "results" / "backends.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"-> {path}")
    return out


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)

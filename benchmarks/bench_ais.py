"""AIS on the exact problems (NumPyro backend): accuracy, honesty of the se, speed.

Prints a table and writes ``benchmarks/results/ais.json``. Wall times are warm (the second
run of the same compiled program); the first run's time, with compilation, is reported too.
Gradient evaluations per second = particles x potential-and-gradient evaluations / warm time.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax

from ebmppl import problems
from ebmppl.numpyro import AIS, problem_model

# problem -> (num_particles, num_steps, options)
BUDGETS = {
    "gaussian2": (1000, 100, {}),
    "gaussian10": (1000, 200, {}),
    "gaussian100": (1000, 1000, {}),
    "mixture": (1000, 200, {}),
    "double_well": (1000, 200, {}),
    "banana": (1000, 200, {}),
    "funnel5": (1000, 400, {"target_accept": 0.9}),
    "positive": (1000, 100, {}),
}


def run(quick: bool = False) -> dict:
    rows = []
    names = [n for n in BUDGETS if not (quick and n == "gaussian100")]
    for name in names:
        prob = problems.get_problem(name)
        n, steps, opts = BUDGETS[name]
        ais = AIS(problem_model(prob), num_particles=n, num_steps=steps, progress=False, **opts)
        t0 = time.perf_counter()
        ais.run(jax.random.PRNGKey(0))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = ais.run(jax.random.PRNGKey(1))
        warm = time.perf_counter() - t0
        rows.append(
            {
                "problem": name,
                "dim": prob.dim,
                "num_particles": n,
                "num_steps": steps,
                "exact_log_z": prob.log_z,
                "log_z": res.log_z,
                "error": res.log_z - prob.log_z,
                "se": res.log_z_se,
                "error_over_se": (res.log_z - prob.log_z) / res.log_z_se,
                "ess": res.ess,
                "pareto_khat": res.pareto_khat,
                "wall_time_cold_s": cold,
                "wall_time_s": warm,
                "grad_evals_per_s": n * res.gradient_evaluations / warm,
            }
        )
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "backend": "numpyro",
        "rows": rows,
    }


def print_table(out: dict) -> None:
    print(f"AIS on the exact problems ({out['machine']}, jax {out['jax']})")
    head = f"{'problem':12s} {'N':>5s} {'T':>5s} {'exact':>9s} {'error':>8s} {'se':>7s}"
    head += (
        f" {'err/se':>7s} {'ESS':>6s} {'k-hat':>6s} {'warm s':>7s} {'cold s':>7s} {'grad/s':>9s}"
    )
    print(head)
    for r in out["rows"]:
        print(
            f"{r['problem']:12s} {r['num_particles']:5d} {r['num_steps']:5d} "
            f"{r['exact_log_z']:9.4f} {r['error']:+8.4f} {r['se']:7.4f} {r['error_over_se']:+7.2f} "
            f"{r['ess']:6.0f} {r['pareto_khat']:6.2f} {r['wall_time_s']:7.2f} "
            f"{r['wall_time_cold_s']:7.2f} {r['grad_evals_per_s']:9.3g}"
        )


def main(quick: bool = False) -> dict:
    out = run(quick)
    print_table(out)
    path = Path(__file__).parent / "results" / "ais.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"-> {path}")
    return out


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)

"""Command line: ``ebmppl demo`` (the main job on a built-in default) and ``ebmppl report``."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _demo_numpyro(prob, args):
    import jax
    from numpyro.infer import MCMC, NUTS

    from .numpyro import AIS, NUTS_EXTRA_FIELDS, problem_model

    model = problem_model(prob)
    mcmc = MCMC(
        NUTS(model),
        num_warmup=args.num_samples,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(args.seed), extra_fields=NUTS_EXTRA_FIELDS)
    ais = AIS(model, num_particles=args.num_particles, num_steps=args.num_steps, progress=True).run(
        jax.random.PRNGKey(args.seed + 1)
    )
    return mcmc, ais


def _demo_pyro(prob, args):
    import pyro
    from pyro.infer import MCMC, NUTS

    from .pyro import AIS, problem_model

    pyro.set_rng_seed(args.seed)
    model = problem_model(prob)
    mcmc = MCMC(
        NUTS(model, jit_compile=False),
        warmup_steps=args.num_samples,
        num_samples=args.num_samples,
        num_chains=1,
        disable_progbar=True,
    )
    mcmc.run()
    ais = AIS(
        model, num_particles=args.num_particles, num_steps=args.num_steps, progress=True
    ).run()
    return mcmc, ais


def demo(args) -> int:
    """Run NUTS and AIS on a 2-D mixture with known log Z; print and save the results."""
    from . import problems
    from ._backend import require
    from .arviz import summary_text, to_arviz

    require(args.backend)
    prob = problems.mixture()
    print(f"ebmppl demo ({args.backend}): {prob.description}, exact log Z = {prob.log_z:.4f}")
    start = time.perf_counter()
    mcmc, ais = (_demo_numpyro if args.backend == "numpyro" else _demo_pyro)(prob, args)
    elapsed = time.perf_counter() - start
    err = ais.log_z - prob.log_z
    print(f"\nAIS   {ais.summary_line()}")
    print(f"exact log Z = {prob.log_z:.4f}; error {err:+.4f} = {err / ais.log_z_se:+.1f} se")

    centres = prob.extra["mode_centers"]

    def modes(x):
        return np.eye(len(centres))[((x[:, None, :] - centres) ** 2).sum(-1).argmin(1)]

    w_ais, se_ais = ais.expectation(lambda p: modes(p["x"]))
    idata = to_arviz(mcmc, ais=ais)
    x_nuts = idata.posterior["x"].values
    per_chain = np.stack([modes(c).mean(0) for c in x_nuts])
    fmt = lambda v: "[" + ", ".join(f"{a:.3f}" for a in v) + "]"
    print("\nmode weights (nearest centre):")
    print(f"  exact              {fmt(prob.extra['mode_weights'])}")
    print(f"  AIS (weighted)     {fmt(w_ais)} ± {fmt(se_ais)}")
    for c, w in enumerate(per_chain):
        print(f"  NUTS chain {c}       {fmt(w)}")
    print("  (NUTS chains rarely cross between modes: R-hat cannot see an unvisited mode)")
    print("\nArviZ summary of the NUTS posterior:")
    print(summary_text(idata))
    out = args.out
    from .arviz import to_netcdf

    to_netcdf(idata, out)
    print(f"\nInferenceData (posterior, sample_stats, energy, ais, ais_particles) -> {out}")
    if args.report:
        from .reporting import report

        rep = report(idata, args.report)
        print(f"report -> {args.report}: {rep.verdict_line()}")
    print(f"done in {elapsed:.1f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebmppl", description="Energy-based models in Pyro and NumPyro: AIS, NUTS, ArviZ."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="NUTS + AIS on a multimodal 2-D energy with known log Z")
    d.add_argument("--backend", choices=("numpyro", "pyro"), default="numpyro")
    d.add_argument("--num-particles", type=int, default=2000)
    d.add_argument("--num-steps", type=int, default=200)
    d.add_argument("--num-samples", type=int, default=1000, help="NUTS warmup and draws")
    d.add_argument("--num-chains", type=int, default=4)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="ebmppl-demo.nc", help="InferenceData netCDF output")
    d.add_argument("--report", default="ebmppl-demo.html", help="HTML report output ('' = none)")
    from ._report_cli import add_report_parser

    add_report_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.backend == "numpyro" and "jax" not in sys.modules:
            # Parallel NUTS chains on CPU need host devices before JAX initialises.
            os.environ.setdefault(
                "XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
            )
        return demo(args)
    if args.command == "report":
        from ._report_cli import run_report

        return run_report(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

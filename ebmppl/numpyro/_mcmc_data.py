"""Extract plain NumPy groups from a NumPyro MCMC run (no ArviZ import here)."""

from __future__ import annotations

import warnings

import jax
import numpy as np
from numpyro.distributions.distribution import Unit
from numpyro.handlers import substitute, trace

from ._energy import ENERGY_TAG

#: Pass as ``mcmc.run(..., extra_fields=NUTS_EXTRA_FIELDS)`` to get full sample_stats.
NUTS_EXTRA_FIELDS = (
    "potential_energy",
    "energy",
    "diverging",
    "num_steps",
    "accept_prob",
    "adapt_state.step_size",
)

_STATS = {
    "potential_energy": "lp",
    "energy": "energy",
    "diverging": "diverging",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
    "adapt_state.step_size": "step_size",
}


def mcmc_groups(mcmc) -> dict:
    """Return ``{group: {var: array (chain, draw, ...)}}`` plus ``"attrs"`` for a NumPyro MCMC."""
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    stats = {}
    for src, dst in _STATS.items():
        if src in extra:
            stats[dst] = -extra[src] if src == "potential_energy" else extra[src]
    if "n_steps" in stats:
        stats["tree_depth"] = np.ceil(np.log2(stats["n_steps"] + 1)).astype(np.int64)
    missing = [f for f in NUTS_EXTRA_FIELDS if f not in extra]
    if missing:
        warnings.warn(
            f"sample_stats lacks {missing}: run MCMC with "
            "extra_fields=ebmppl.numpyro.NUTS_EXTRA_FIELDS to record them",
            UserWarning,
            stacklevel=3,
        )
    model = mcmc.sampler.model
    args, kwargs = getattr(mcmc, "_args", ()), getattr(mcmc, "_kwargs", {})
    latent = {k: v for k, v in mcmc.get_samples(group_by_chain=False).items()}
    num_chains, num_draws = next(iter(samples.values())).shape[:2]

    def one(draw):
        tr = trace(substitute(model, data=draw)).get_trace(*args, **kwargs)
        energies, loglik = {}, {}
        for name, site in tr.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            if ENERGY_TAG in (site.get("infer") or {}):
                temp = site["infer"][ENERGY_TAG]["temperature"]
                energies[name] = -site["fn"].log_factor * temp
            elif not isinstance(site["fn"], Unit):
                loglik[name] = site["fn"].log_prob(site["value"])
        return energies, loglik

    energies, loglik = jax.vmap(one)(latent)

    def by_chain(d):
        return {
            k: np.asarray(v).reshape((num_chains, num_draws) + np.shape(v)[1:])
            for k, v in d.items()
        }

    proto = trace(substitute(model, data=jax.tree.map(lambda a: a[0], latent))).get_trace(
        *args, **kwargs
    )
    observed = {
        n: np.asarray(s["value"])
        for n, s in proto.items()
        if s["type"] == "sample"
        and s["is_observed"]
        and not isinstance(s["fn"], Unit)
        and ENERGY_TAG not in (s.get("infer") or {})
    }
    return {
        "posterior": samples,
        "sample_stats": stats,
        "energy": by_chain(energies),
        "log_likelihood": by_chain(loglik),
        "observed_data": observed,
        "attrs": {"inference_library": "numpyro", "sampler": type(mcmc.sampler).__name__},
    }

"""Pyro NUTS with full sample statistics, a faster NUTS set-up, and plain NumPy groups from a
``pyro.infer.MCMC`` run (no ArviZ import here).

* :class:`NUTS` is a drop-in ``pyro.infer.NUTS`` that records, per draw, the log density,
  the Hamiltonian, divergences, leapfrog steps, acceptance probability and step size, so that
  :func:`ebmppl.to_arviz` can fill ``sample_stats`` (``az.bfmi``, ``plot_energy`` work). Plain
  ``pyro.infer.NUTS`` runs convert too, with ``diverging`` only.
* :func:`nuts_mcmc` is the fast path for several chains on a CPU: see its docstring.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.infer
import torch

from ._model import BatchedModel

__all__ = ["NUTS", "mcmc_groups", "nuts_mcmc"]

_RECORDED = ("lp", "energy", "diverging", "n_steps", "acceptance_rate", "step_size")


class NUTS(pyro.infer.NUTS):
    """``pyro.infer.NUTS`` that also records per-draw sample statistics (same arguments).

    Recorded for every post-warmup draw of every chain, in ``self.sample_stats`` (a list with
    one dict of lists per chain): ``lp`` (log density in unconstrained space, Jacobian
    included: minus the potential energy), ``energy`` (Hamiltonian at the start of the
    transition, after the momentum refresh), ``diverging``, ``n_steps`` (leapfrog steps),
    ``acceptance_rate`` (mean Metropolis acceptance probability over the trajectory) and
    ``step_size``. Chains run in worker processes (``num_chains`` below the CPU count) keep
    their records in the workers; :func:`mcmc_groups` then falls back to ``diverging`` only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sample_stats: list[dict[str, list]] = []
        self._ebm_leapfrogs = 0
        self._ebm_kinetic = None

    def setup(self, warmup_steps, *args, **kwargs):
        with warnings.catch_warnings():
            # jit_compile=True traces the potential here with torch.jit.trace, which torch
            # 2.13 marks deprecated; nothing a user of Pyro's NUTS can act on.
            warnings.filterwarnings(
                "ignore", message=r"`torch.jit.trace` is deprecated", category=DeprecationWarning
            )
            super().setup(warmup_steps, *args, **kwargs)
        self.sample_stats.append({k: [] for k in _RECORDED})

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        self._ebm_kinetic = self._kinetic_energy(r_unscaled)
        return r, r_unscaled

    def _build_basetree(self, *args, **kwargs):
        self._ebm_leapfrogs += 1
        return super()._build_basetree(*args, **kwargs)

    def sample(self, params):
        pe0 = self._potential_energy_last
        num_div = len(self._divergences)
        mean_acc_old = self._mean_accept_prob
        t_before = self._t
        self._ebm_leapfrogs = 0
        self._ebm_kinetic = None
        z = super().sample(params)
        if t_before >= self._warmup_steps and self.sample_stats:
            n = self._t - self._warmup_steps
            rec = self.sample_stats[-1]
            pe = self._potential_energy_last
            rec["lp"].append(-float(pe) if pe is not None else np.nan)
            if pe0 is not None and self._ebm_kinetic is not None:
                rec["energy"].append(float(pe0 + self._ebm_kinetic))
            else:
                rec["energy"].append(np.nan)
            rec["diverging"].append(len(self._divergences) > num_div)
            rec["n_steps"].append(self._ebm_leapfrogs)
            rec["acceptance_rate"].append(self._mean_accept_prob * n - mean_acc_old * (n - 1))
            rec["step_size"].append(float(self.step_size))
        return z


def nuts_mcmc(
    model: Callable,
    *,
    num_samples: int,
    num_warmup: int | None = None,
    num_chains: int = 1,
    jit_compile: bool = True,
    **nuts_kwargs: Any,
) -> pyro.infer.MCMC:
    """A ``pyro.infer.MCMC`` set up for speed on a CPU: the fast path for several chains.

    Pyro's NUTS spends nearly all its time in Python (poutine) overhead per gradient, and runs
    several chains in worker processes only when ``num_chains < cpu_count``; on a 2-core
    machine chains therefore run one after another. What helps, measured in
    ``benchmarks/bench_backends.py``: ``jit_compile=True`` (the potential is traced once with
    ``torch.jit``), with jit warnings silenced. Chains stay sequential in one process (worker
    processes were slower on 2 cores: every draw goes through a queue). Energy sites built
    with :func:`ebmppl.pyro.energy` are JIT-safe (``nn.Module`` parameters are detached); the
    model must have static shapes and no Python control flow on tensor values.

    Args:
        model: the Pyro model.
        num_samples, num_warmup, num_chains: as for ``pyro.infer.MCMC``.
        jit_compile: trace the potential with ``torch.jit`` (set False to compare).
        nuts_kwargs: passed to :class:`NUTS` (e.g. ``target_accept_prob``).

    Returns:
        An MCMC object (not yet run) using the recording :class:`NUTS`; call
        ``.run(*model_args)``, then ``ebmppl.to_arviz(mcmc)``.
    """
    kernel = NUTS(
        model,
        jit_compile=jit_compile,
        ignore_jit_warnings=True,
        **nuts_kwargs,
    )
    return pyro.infer.MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=num_warmup,
        num_chains=num_chains,
        disable_progbar=True,
    )


def _sample_stats(mcmc, num_chains: int, num_draws: int) -> dict[str, np.ndarray]:
    kernel = mcmc.kernel
    records = getattr(kernel, "sample_stats", None)
    if records is not None and len(records) >= num_chains:
        recs = records[-num_chains:]
        if all(len(r["lp"]) == num_draws for r in recs):
            stats = {
                k: np.asarray([r[k] for r in recs]).reshape(num_chains, num_draws)
                for k in _RECORDED
            }
            stats["diverging"] = stats["diverging"].astype(bool)
            stats["n_steps"] = stats["n_steps"].astype(np.int64)
            stats["tree_depth"] = np.ceil(np.log2(stats["n_steps"] + 1)).astype(np.int64)
            return stats
    diverging = np.zeros((num_chains, num_draws), dtype=bool)
    for c, diag in enumerate(getattr(mcmc, "_diagnostics", []) or []):
        if diag and "divergences" in diag:
            idx = np.asarray(diag["divergences"], dtype=np.int64)
            diverging[c, idx[(idx >= 0) & (idx < num_draws)]] = True
    warnings.warn(
        "sample_stats has only 'diverging': run with ebmppl.pyro.NUTS (chains in this process) "
        "to record lp, energy, n_steps, tree_depth, acceptance_rate and step_size",
        UserWarning,
        stacklevel=3,
    )
    return {"diverging": diverging}


def mcmc_groups(mcmc) -> dict:
    """Return ``{group: {var: array (chain, draw, ...)}}`` plus ``"attrs"`` for a Pyro MCMC.

    Groups: ``posterior`` (latent sites, plus deterministic sites), ``sample_stats`` (see
    :class:`NUTS`; ``diverging`` at least), ``energy`` (each energy site's value per draw),
    ``log_likelihood`` (pointwise, real observed sites only: never energies or factors) and
    ``observed_data``. The model is re-run once on all draws together (batched, see
    :class:`ebmppl.pyro.ModelPotential`), not per draw. Torch's global RNG is left untouched.
    """
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("this pyro.infer.MCMC has not been run yet: call mcmc.run(...) first")
    samples_t = mcmc.get_samples(group_by_chain=True)
    samples = {k: v.detach().cpu().numpy() for k, v in samples_t.items()}
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    stats = _sample_stats(mcmc, num_chains, num_draws)
    model = getattr(mcmc.kernel, "model", None)
    args = tuple(getattr(mcmc, "_args", None) or ())
    kwargs = dict(getattr(mcmc, "_kwargs", None) or {})
    groups: dict[str, Any] = {
        "posterior": samples,
        "sample_stats": stats,
        "energy": {},
        "log_likelihood": {},
        "observed_data": {},
        "attrs": {"inference_library": "pyro", "sampler": type(mcmc.kernel).__name__},
    }
    if model is None:
        return groups
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        bm = BatchedModel(model, args, kwargs)
        missing = sorted(set(bm.latent) - set(samples_t))
        if missing:
            warnings.warn(
                f"latent sites {missing} were not saved (save_params): energy, log_likelihood "
                "and deterministic sites are left out",
                UserWarning,
                stacklevel=3,
            )
            return groups
        total = num_chains * num_draws
        x = {
            n: samples_t[n].reshape((total,) + tuple(samples_t[n].shape[2:])).to(bm.dtype)
            for n in bm.latent
        }
        out = bm.evaluate(x, ("energy", "loglik", "deterministic"))

    def by_chain(d):
        return {
            k: v.detach().cpu().numpy().reshape((num_chains, num_draws) + tuple(v.shape[1:]))
            for k, v in d.items()
        }

    groups["posterior"] = {**samples, **by_chain(out["deterministic"])}
    groups["energy"] = by_chain(out["energy"])
    groups["log_likelihood"] = by_chain(out["loglik"])
    groups["observed_data"] = {
        n: bm.prototype.nodes[n]["value"].detach().cpu().numpy()
        for n in bm.observed_names
        if not isinstance(bm.prototype.nodes[n]["fn"], dist.Unit)
    }
    return groups

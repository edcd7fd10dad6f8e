"""Turn a NumPyro model into the pieces AIS needs: a base sampler and split log densities.

All functions act on ONE particle, a flat unconstrained vector ``z`` of shape (dim,); AIS
vmaps them. ``log_parts(z) = (log_base(z), log_ratio(z))`` where the annealed density is
``log_base + beta * log_ratio``:

* prior path (default): ``log_base`` = log prior of the latent sites (+ Jacobian),
  ``log_ratio`` = every observed site (energy factors, factors, data);
* reference path: ``log_base`` = log density of the reference, ``log_ratio`` =
  full model log density - ``log_base``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, substitute, trace
from numpyro.infer.util import compute_log_probs

from ._energy import is_annealed_site, is_energy_site

__all__ = ["ModelPotential", "check_sampler"]


def check_sampler(model, shard) -> None:
    """The constructor checks every NumPyro sampler (AIS, SMC, replica exchange) shares."""
    if not callable(model):
        raise TypeError(f"model must be a callable NumPyro model, got {type(model).__name__}")
    if not isinstance(shard, bool | np.bool_):
        raise TypeError(f"shard must be True or False, got {shard!r}")


def _base_dist(d):
    while isinstance(d, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        d = d.base_dist
    return d


def _constraint_kind(c):
    while isinstance(c, dist.constraints.independent):
        c = c.base_constraint
    return type(c).__name__


def _improper_init(site):
    """A value for sites that cannot be sampled (ImproperUniform): zero in unconstrained space."""
    fn = site["fn"]
    improper = isinstance(_base_dist(fn), dist.ImproperUniform)
    if site["type"] == "sample" and not site["is_observed"] and improper:
        t = biject_to(fn.support)
        return t(jnp.zeros(t.inverse_shape(fn.shape())))
    return None


class ModelPotential:
    """The AIS view of ``model(*model_args, **model_kwargs)``.

    Args:
        reference: ``None`` (anneal from the prior), a dict ``{site: Distribution}`` covering
            every latent site (constrained space, same support as the site), or ``"laplace"``
            (a Gaussian fit in unconstrained space at the MAP, covariance from the Hessian).
    """

    def __init__(self, model, model_args=(), model_kwargs=None, *, reference=None, rng_key=None):
        self.model = model
        self.args = tuple(model_args)
        self.kwargs = dict(model_kwargs or {})
        key = jax.random.PRNGKey(0) if rng_key is None else rng_key
        proto = trace(seed(substitute(model, substitute_fn=_improper_init), key)).get_trace(
            *self.args, **self.kwargs
        )
        self.prototype = proto
        self.latent = {}
        self.energy_names = [n for n, s in proto.items() if is_energy_site(s)]
        self.observed_names = [
            n for n, s in proto.items() if is_annealed_site(s) and not is_energy_site(s)
        ]
        self.deterministic_names = [n for n, s in proto.items() if s["type"] == "deterministic"]
        for name, site in proto.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            fn = site["fn"]
            if fn.support.is_discrete or site["infer"].get("enumerate"):
                raise ValueError(
                    f"latent site '{name}' is discrete ({type(fn).__name__}); AIS moves latent "
                    "sites with HMC, so marginalise it out (e.g. logsumexp over its values "
                    "inside an energy) or make it observed"
                )
            self.latent[name] = (jnp.shape(site["value"]), biject_to(fn.support), site)
        if not self.latent:
            raise ValueError(
                "the model has no latent sample sites: there is nothing to anneal over; "
                "its log Z is simply its log density"
            )
        unconstrained = {n: t.inv(proto[n]["value"]) for n, (_, t, _) in self.latent.items()}
        flat, self.unravel = ravel_pytree(unconstrained)
        self.dim = int(flat.shape[0])
        self.dtype = flat.dtype
        self.reference_kind = "prior"
        self._ref_dict: Mapping[str, Any] | None = None
        self._ref_mvn = None
        if reference is None:
            for name, (_, _, site) in self.latent.items():
                if isinstance(_base_dist(site["fn"]), dist.ImproperUniform):
                    raise ValueError(  # noqa: TRY004 - a bad model, not a bad type
                        f"latent site '{name}' has an improper prior "
                        f"({type(_base_dist(site['fn'])).__name__}), which AIS cannot start "
                        "from. Pass reference={'" + name + "': <a proper distribution>} "
                        "or reference='laplace' to AIS"
                    )
        elif isinstance(reference, str):
            if reference != "laplace":
                raise ValueError(f"reference must be None, a dict or 'laplace', got {reference!r}")
            self.reference_kind = "laplace"
            self._ref_mvn = self._laplace(flat)
        elif isinstance(reference, Mapping):
            missing = sorted(set(self.latent) - set(reference))
            extra = sorted(set(reference) - set(self.latent))
            if missing or extra:
                raise ValueError(
                    "reference must give a distribution for exactly the latent sites "
                    f"{sorted(self.latent)}; missing {missing}, not latent {extra}"
                )
            for name, d in reference.items():
                if not isinstance(d, dist.Distribution):
                    raise TypeError(
                        f"reference for site '{name}' must be a numpyro Distribution, "
                        f"got {type(d).__name__}"
                    )
                site_support = self.latent[name][2]["fn"].support
                if _constraint_kind(d.support) != _constraint_kind(site_support):
                    raise ValueError(
                        f"reference for site '{name}' has support {d.support}, but the site's "
                        f"support is {site_support}; they must match"
                    )
                shape = tuple(d.batch_shape + d.event_shape)
                if shape != tuple(self.latent[name][0]):
                    raise ValueError(
                        f"reference for site '{name}' has shape {shape}, the site has "
                        f"{tuple(self.latent[name][0])}; use .expand(...).to_event(...)"
                    )
            self.reference_kind = "dict"
            self._ref_dict = dict(reference)
        else:
            raise TypeError(
                f"reference must be None, a dict of distributions or 'laplace', "
                f"got {type(reference).__name__}"
            )

    # -- constrained <-> unconstrained -------------------------------------------------
    def constrain_with_logdet(self, z):
        u = self.unravel(z)
        x, logdet = {}, 0.0
        for name, (_, t, _) in self.latent.items():
            x[name] = t(u[name])
            logdet = logdet + jnp.sum(t.log_abs_det_jacobian(u[name], x[name]))
        return x, logdet

    def _log_probs(self, x):
        log_probs, tr = compute_log_probs(self.model, self.args, self.kwargs, x)
        prior = sum((log_probs[n] for n in self.latent), start=jnp.zeros((), self.dtype))
        lik = sum(
            (v for n, v in log_probs.items() if n not in self.latent),
            start=jnp.zeros((), self.dtype),
        )
        return prior, lik, tr

    def log_target(self, z):
        """Full unnormalised model log density at z (unconstrained, Jacobian included)."""
        x, logdet = self.constrain_with_logdet(z)
        prior, lik, _ = self._log_probs(x)
        return prior + logdet + lik

    def log_parts(self, z):
        """Return ``(log_base(z), log_ratio(z))`` for one particle."""
        x, logdet = self.constrain_with_logdet(z)
        prior, lik, _ = self._log_probs(x)
        if self.reference_kind == "prior":
            return prior + logdet, lik
        if self.reference_kind == "dict":
            base = sum(
                (jnp.sum(d.log_prob(x[n])) for n, d in self._ref_dict.items()),
                start=jnp.zeros((), self.dtype),
            )
            base = base + logdet
        else:
            base = self._ref_mvn.log_prob(z)
        return base, prior + logdet + lik - base

    # -- base distribution -----------------------------------------------------------
    def sample_base(self, rng_key, num_particles: int):
        """Exact draws from the start of the path, unconstrained, shape (num_particles, dim)."""
        if self.reference_kind == "laplace":
            return self._ref_mvn.sample(rng_key, (num_particles,))
        if self.reference_kind == "dict":
            keys = jax.random.split(rng_key, len(self._ref_dict))
            draws = {
                n: d.sample(k, (num_particles,))
                for k, (n, d) in zip(keys, sorted(self._ref_dict.items()))
            }
        else:
            hide = block(self.model, hide_fn=lambda site: False)

            def one(key):
                tr = trace(seed(hide, key)).get_trace(*self.args, **self.kwargs)
                return {n: tr[n]["value"] for n in self.latent}

            draws = jax.vmap(one)(jax.random.split(rng_key, num_particles))
        u = {n: jax.vmap(t.inv)(draws[n]) for n, (_, t, _) in self.latent.items()}
        return jax.vmap(lambda d: ravel_pytree(d)[0])(u)

    def _laplace(self, flat0):
        from jax.scipy.optimize import minimize

        def neg(z):
            return -self.log_target(z)

        best = None
        for start in (jnp.zeros_like(flat0), flat0):
            res = minimize(neg, start.astype(jnp.float32), method="BFGS", options={"maxiter": 500})
            if jnp.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        if best is None:
            raise ValueError("reference='laplace': could not find a finite mode of the model")
        hess = np.asarray(jax.hessian(neg)(best.x), dtype=np.float64)
        hess = (hess + hess.T) / 2
        eig, vec = np.linalg.eigh(hess)
        eig = np.clip(eig, 1e-6 * max(eig.max(), 1e-12), None)
        # Inflate the covariance a little: a reference with heavier spread than the target
        # keeps the importance weights bounded.
        cov = (vec / eig) @ vec.T * 1.5
        return dist.MultivariateNormal(best.x, covariance_matrix=jnp.asarray(cov, flat0.dtype))

    def unconstrain_samples(self, samples):
        """Flat unconstrained particles (num_samples, dim) from constrained draws per site."""
        if not isinstance(samples, Mapping):
            raise TypeError(f"exact samples must be a dict {{site: array}}, got {type(samples)}")
        missing = sorted(set(self.latent) - set(samples))
        if missing:
            raise ValueError(f"exact samples are missing the latent sites {missing}")
        sizes = {n: jnp.shape(samples[n])[0] for n in self.latent}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"exact samples disagree on the number of draws: {sizes}")
        for name, (shape, _, _) in self.latent.items():
            got = tuple(jnp.shape(samples[name])[1:])
            if got != tuple(shape):
                raise ValueError(
                    f"exact samples of site '{name}' have shape (num_samples, *{got}), "
                    f"expected (num_samples, *{tuple(shape)})"
                )

        def one(x):
            u = {n: t.inv(jnp.asarray(x[n], self.dtype)) for n, (_, t, _) in self.latent.items()}
            return ravel_pytree(u)[0]

        return jax.vmap(one)({n: jnp.asarray(samples[n]) for n in self.latent})

    # -- outputs ---------------------------------------------------------------------
    def postprocess(self, z):
        """Constrained latent values and deterministic sites for one particle."""
        x, _ = self.constrain_with_logdet(z)
        if not self.deterministic_names:
            return x
        tr = trace(substitute(self.model, data=x)).get_trace(*self.args, **self.kwargs)
        return {**x, **{n: tr[n]["value"] for n in self.deterministic_names}}

    def energy_values(self, z):
        """Energy of every energy site (log factor times -temperature) for one particle."""
        x, _ = self.constrain_with_logdet(z)
        tr = trace(substitute(self.model, data=x)).get_trace(*self.args, **self.kwargs)
        return {
            n: -tr[n]["fn"].log_factor * tr[n]["infer"]["ebmppl_energy"]["temperature"]
            for n in self.energy_names
        }

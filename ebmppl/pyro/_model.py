"""Turn a Pyro model into the pieces AIS needs, vectorised over particles.

Every function here acts on a *batch* of particles: a flat unconstrained tensor ``z`` of shape
``(N, dim)``. ``log_parts(z) = (log_base, log_ratio)``, each of shape ``(N,)``, where the
annealed density is ``log_base + beta * log_ratio``:

* prior path (default): ``log_base`` = log prior of the latent sites (+ log|Jacobian|),
  ``log_ratio`` = every observed site (energy factors, factors, data);
* reference path: ``log_base`` = log density of the reference, ``log_ratio`` =
  full model log density - ``log_base``.

How the model is batched (``vectorize``):

* ``"plate"``: the model runs once under an outer ``pyro.plate`` over particles, placed left
  of all the model's own batch dimensions, so every latent value carries a leading particle
  axis. Cheapest, but energies and factors must be batch-aware (input ``(..., dim)``, output
  ``(...)``), like the energies of :mod:`ebmppl.problems`. An energy that reduces over all
  axes (``x.sum()`` instead of ``x.sum(-1)``) would silently give every particle the same
  value: :func:`~ebmppl.pyro.energy` detects the missing particle axis and raises
  :class:`~ebmppl.pyro.EnergyNotBatchedError`.
* ``"vmap"``: the model runs for a single particle under :func:`torch.func.vmap`; energies
  written for a single ``x`` work unchanged. Data-dependent Python control flow
  (``if x > 0``) and ``.item()`` are not allowed inside the model.
* ``"auto"`` (default): evaluate a few probe particles both ways and use ``"plate"`` when it
  runs and agrees with ``"vmap"``, else ``"vmap"``. The choice is in ``.vectorize`` (and in
  ``AISResult.info["vectorize"]``).

Pyro's distribution validation is switched off inside these evaluations: diverging HMC
proposals produce non-finite values, which AIS treats as rejections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, biject_to

from ._energy import (
    ENERGY_TAG,
    PARTICLE_PLATE,
    check_particle_axis,
    is_annealed_site,
    is_deterministic_site,
    is_energy_site,
    skip_energies,
)

__all__ = [
    "BatchedModel",
    "ModelPotential",
    "check_sampler",
    "potential_for_run",
    "rng_scope",
]

VECTORIZE = ("auto", "plate", "vmap")


def _base_dist(d):
    while isinstance(d, (Independent, ExpandedDistribution, MaskedDistribution)):
        d = d.base_dist
    return d


def check_sampler(model, vectorize: str) -> None:
    """The constructor checks every Pyro sampler (AIS, SMC, replica exchange) shares."""
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    if vectorize not in VECTORIZE:
        raise ValueError(f"vectorize must be one of {VECTORIZE}, got {vectorize!r}")


def potential_for_run(sampler, model_args, model_kwargs, generator) -> ModelPotential:
    """The :class:`ModelPotential` of ``sampler.model`` for one ``run(...)`` call.

    ``sampler`` has ``model``, ``reference`` and ``vectorize``; ``generator`` (``None`` or a
    ``torch.Generator``) drives the probe draws, as it drives the run.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    with rng_scope(generator):
        return ModelPotential(
            sampler.model,
            model_args,
            model_kwargs,
            reference=sampler.reference,
            vectorize=sampler.vectorize,
        )


@contextlib.contextmanager
def rng_scope(generator: torch.Generator | None) -> Iterator[None]:
    """Make Pyro's sampling (which uses torch's global RNG) draw from ``generator``.

    With ``generator=None`` nothing changes (the global RNG is used, so ``pyro.set_rng_seed``
    makes runs reproducible). Otherwise the global RNG is forked, seeded from ``generator``
    and restored afterwards: results depend only on the generator.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _Substitute(Messenger):
    """Give latent sample sites fixed values (they stay unobserved)."""

    def __init__(self, data: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.data = data

    def _pyro_sample(self, msg) -> None:
        if not msg["is_observed"] and msg["name"] in self.data:
            msg["value"] = self.data[msg["name"]]
            msg["done"] = True


class _UnsampleableInit(Messenger):
    """For the prototype trace: a value for latent sites that cannot be sampled (ImproperUniform)."""

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["done"] or msg["value"] is not None:
            return
        fn = msg["fn"]
        if isinstance(_base_dist(fn), dist.ImproperUniform):
            t = biject_to(fn.support)
            msg["value"] = t(torch.zeros(t.inverse_shape(fn.shape())))
            msg["done"] = True


class _FactorCheck(Messenger):
    """Inside the particle plate: reject plain factors that dropped the particle axis."""

    def _pyro_sample(self, msg) -> None:
        fn = msg["fn"]
        if msg["is_observed"] and isinstance(fn, dist.Unit) and not is_energy_site(msg):
            check_particle_axis(msg["name"], fn.log_factor, what="factor")


def _per_particle(lp: torch.Tensor, n: int, particle_dim: int) -> torch.Tensor:
    """Sum a (broadcast) log-prob tensor over every axis but the particle axis: shape (n,)."""
    nd = -particle_dim
    if lp.dim() > nd:
        lp = lp.sum(tuple(range(lp.dim() - nd)))
    if lp.dim() == nd:
        lp = lp.reshape(lp.shape[0], -1).sum(1)
    else:
        lp = lp.sum().reshape(1)
    return lp.expand(n)


def _to_particles(t: torch.Tensor, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape a plate-batched site tensor to ``(n, *shape)``.

    ``shape`` is the site's shape for one particle; the axes left of it in ``t`` are the
    particle axis and unit axes (``(n, 1, ..., 1, *shape)``), or only unit axes for a value
    that does not depend on the particle (then it is broadcast).
    """
    shape = tuple(shape)
    lead = t.dim() - len(shape)
    if lead < 0:
        t = t.reshape((1,) * (-lead) + tuple(t.shape))
        lead = 0
    t = torch.broadcast_to(t, tuple(t.shape[:lead]) + shape).reshape((-1,) + shape)
    return t.expand((n,) + shape) if t.shape[0] == 1 else t


@dataclass(frozen=True)
class _Latent:
    shape: tuple[int, ...]  # value shape for one particle (batch + event)
    ushape: tuple[int, ...]  # unconstrained shape for one particle
    offset: int
    numel: int
    pad: int  # unit axes between the particle axis and the site's own batch axes
    transform: Any
    fn: Any


class BatchedModel:
    """A Pyro model evaluated on batches of particles (see the module docstring).

    Args:
        model: a Pyro model (callable using pyro primitives).
        model_args, model_kwargs: its arguments.
        vectorize: ``"auto"``, ``"plate"`` or ``"vmap"``.

    Attributes:
        latent: latent site name -> shape information, in model order.
        energy_names, observed_names, deterministic_names: site names by kind (observed
            excludes energies and deterministic sites).
        dim: length of the flat unconstrained vector of one particle.
        dtype, device: those of the latent values drawn by the model.
        vectorize: the route in use, ``"plate"`` or ``"vmap"``.
        prototype: the Pyro trace of one run of the model.
    """

    def __init__(
        self,
        model,
        model_args: tuple = (),
        model_kwargs: Mapping[str, Any] | None = None,
        *,
        vectorize: str = "auto",
    ) -> None:
        if vectorize not in VECTORIZE:
            raise ValueError(f"vectorize must be one of {VECTORIZE}, got {vectorize!r}")
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        self.model = model
        self.args = tuple(model_args)
        self.kwargs = dict(model_kwargs or {})
        proto = self._prototype_trace()
        self.prototype = proto
        nodes = proto.nodes
        sample_sites = {
            n: s for n, s in nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
        }
        self.energy_names = [n for n, s in sample_sites.items() if is_energy_site(s)]
        self.deterministic_names = [n for n, s in sample_sites.items() if is_deterministic_site(s)]
        self.observed_names = [
            n for n, s in sample_sites.items() if is_annealed_site(s) and not is_energy_site(s)
        ]
        nest = 0
        for site in sample_sites.values():
            nest = max(nest, len(site["fn"].batch_shape))
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    nest = max(nest, -frame.dim)
        self.particle_dim = -(nest + 1)
        self.latent: dict[str, _Latent] = {}
        offset = 0
        dtypes, device = [], None
        for name, site in sample_sites.items():
            if site["is_observed"]:
                continue
            fn = site["fn"]
            if fn.support.is_discrete or site["infer"].get("enumerate"):
                raise ValueError(
                    f"latent site '{name}' is discrete ({type(_base_dist(fn)).__name__}); AIS "
                    "moves latent sites with HMC, so marginalise it out (e.g. logsumexp over "
                    "its values inside an energy) or make it observed"
                )
            value = site["value"]
            t = biject_to(fn.support)
            shape = tuple(value.shape)
            ushape = tuple(t.inverse_shape(shape))
            numel = int(np.prod(ushape, dtype=np.int64))
            pad = nest - len(fn.batch_shape)
            self.latent[name] = _Latent(shape, ushape, offset, numel, pad, t, fn)
            offset += numel
            dtypes.append(value.dtype)
            device = value.device if device is None else device
        if not self.latent:
            raise ValueError(
                "the model has no latent sample sites: there is nothing to anneal over; "
                "its log Z is simply its log density"
            )
        self.dim = offset
        dtype = dtypes[0]
        for d in dtypes[1:]:
            dtype = torch.promote_types(dtype, d)
        self.dtype = dtype
        self.device = device
        self._shapes = {}
        for name in self.energy_names:
            self._shapes[name] = tuple(sample_sites[name]["fn"].log_factor.shape)
        for name in self.observed_names:
            self._shapes[name] = tuple(sample_sites[name]["fn"].batch_shape)
        for name in self.deterministic_names:
            self._shapes[name] = tuple(sample_sites[name]["value"].shape)
        self.z_prototype = self.unconstrain(
            {n: sample_sites[n]["value"].detach()[None] for n in self.latent}
        )
        self.vectorize, self.vectorize_reason = self._choose_route(vectorize)

    def _prototype_trace(self):
        """One run of the model (latent values drawn from the prior)."""

        def run():
            with poutine.block():
                return poutine.trace(_UnsampleableInit()(self.model)).get_trace(
                    *self.args, **self.kwargs
                )

        try:
            return run()
        except ValueError as err:
            # Pyro's validation rejects a non-finite energy (Unit log_factor); AIS reports
            # those itself, naming the site, so retry without validation for that case only.
            with pyro.validation_enabled(False):
                try:
                    proto = run()
                except Exception:  # noqa: BLE001 - any failure: report the original error
                    raise err from None
            for site in proto.nodes.values():
                if is_energy_site(site) and not torch.isfinite(site["fn"].log_factor).all():
                    return proto
            raise

    # -- constrained <-> unconstrained ----------------------------------------------------
    def constrain(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Map ``z`` (N, dim) to constrained values ``{site: (N, *shape)}`` and log|J| (N,)."""
        n = z.shape[0]
        x, logdet = {}, torch.zeros((n,), dtype=z.dtype, device=z.device)
        for name, lat in self.latent.items():
            u = z[:, lat.offset : lat.offset + lat.numel].reshape((n,) + lat.ushape)
            v = lat.transform(u)
            x[name] = v
            logdet = logdet + lat.transform.log_abs_det_jacobian(u, v).reshape(n, -1).sum(1)
        return x, logdet

    def unconstrain(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`constrain`: ``{site: (N, *shape)}`` -> ``z`` (N, dim)."""
        parts = []
        for name, lat in self.latent.items():
            v = x[name]
            parts.append(lat.transform.inv(v).reshape(v.shape[0], -1).to(self.dtype))
        return torch.cat(parts, dim=1)

    def unconstrain_samples(self, samples: Mapping[str, Any]) -> torch.Tensor:
        """Flat unconstrained particles (num_samples, dim) from constrained draws per site.

        ``samples`` maps every latent site to an array or tensor (num_samples, *site shape)
        (other keys are ignored); values are cast to the model's dtype and device.
        """
        if not isinstance(samples, Mapping):
            raise TypeError(f"exact samples must be a dict {{site: array}}, got {type(samples)}")
        missing = sorted(set(self.latent) - set(samples))
        if missing:
            raise ValueError(f"exact samples are missing the latent sites {missing}")
        x = {}
        for name, lat in self.latent.items():
            v = samples[name]
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(np.asarray(v))
            if v.dim() == 0:
                raise ValueError(
                    f"exact samples of site '{name}' must have shape (num_samples, "
                    f"*{lat.shape}), got a scalar"
                )
            x[name] = v.detach().to(dtype=self.dtype, device=self.device)
        sizes = {n: int(v.shape[0]) for n, v in x.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"exact samples disagree on the number of draws: {sizes}")
        for name, lat in self.latent.items():
            got = tuple(x[name].shape[1:])
            if got != lat.shape:
                raise ValueError(
                    f"exact samples of site '{name}' have shape (num_samples, *{got}), "
                    f"expected (num_samples, *{lat.shape})"
                )
        return self.unconstrain(x).detach()

    # -- batched evaluation -----------------------------------------------------------
    def _collect(self, tr, kinds: tuple[str, ...], n: int | None) -> dict:
        """Read log densities / site values off a trace (``n=None``: single particle)."""
        out: dict[str, Any] = {}
        nodes = tr.nodes
        for name, site in nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not site["is_observed"] and name not in self.latent:
                raise ValueError(
                    f"latent site '{name}' appeared in a batched run of the model but not in its "
                    "first run: AIS needs a fixed set of latent sites (no data-dependent sites)"
                )
        if "sums" in kinds:
            zero = torch.zeros((), dtype=self.dtype, device=self.device)
            prior, lik = zero, zero
            for name, site in nodes.items():
                if (
                    site["type"] != "sample"
                    or site_is_subsample(site)
                    or is_deterministic_site(site)
                ):
                    continue
                lp = site["fn"].log_prob(site["value"])
                lp = scale_and_mask(lp, site["scale"], site["mask"])
                s = lp.sum() if n is None else _per_particle(lp, n, self.particle_dim)
                if name in self.latent:
                    prior = prior + s
                else:
                    lik = lik + s
            if n is not None:
                prior, lik = prior.expand(n), lik.expand(n)
            out["prior"], out["lik"] = prior, lik

        def shaped(name: str, t: torch.Tensor) -> torch.Tensor:
            shape = self._shapes[name]
            if n is None:
                return torch.broadcast_to(t, shape)
            return _to_particles(t, n, shape)

        if "energy" in kinds:
            out["energy"] = {
                name: shaped(
                    name,
                    -nodes[name]["fn"].log_factor * nodes[name]["infer"][ENERGY_TAG]["temperature"],
                )
                for name in self.energy_names
            }
        if "loglik" in kinds:
            out["loglik"] = {
                name: shaped(name, nodes[name]["fn"].log_prob(nodes[name]["value"]))
                for name in self.observed_names
                if not isinstance(nodes[name]["fn"], dist.Unit)
            }
        if "deterministic" in kinds:
            out["deterministic"] = {
                name: shaped(name, nodes[name]["value"]) for name in self.deterministic_names
            }
        return out

    def _run_plate(self, x: Mapping[str, torch.Tensor], kinds: tuple[str, ...]) -> dict:
        n = next(iter(x.values())).shape[0]
        xp = {
            name: x[name].reshape((n,) + (1,) * lat.pad + lat.shape)
            for name, lat in self.latent.items()
        }
        with (
            poutine.block(),
            pyro.plate(PARTICLE_PLATE, n, dim=self.particle_dim),
            _Substitute(xp),
            _FactorCheck(),
        ):
            tr = poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
        return self._collect(tr, kinds, n)

    def _run_vmap(self, x: Mapping[str, torch.Tensor], kinds: tuple[str, ...]) -> dict:
        def single(xs):
            with poutine.block(), _Substitute(xs):
                tr = poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
            return self._collect(tr, kinds, None)

        return torch.func.vmap(single)(dict(x))

    def evaluate(
        self, x: Mapping[str, torch.Tensor], kinds: tuple[str, ...], route: str | None = None
    ) -> dict:
        """Run the model on constrained latent values ``{site: (N, *shape)}``.

        ``kinds`` selects the outputs: ``"sums"`` (``prior`` and ``lik``, the per-particle
        log prior of the latent sites and log density of every observed site, each (N,)),
        ``"energy"``, ``"loglik"`` (pointwise, unscaled) and ``"deterministic"`` (dicts of
        site -> (N, *site shape)).
        """
        route = route or self.vectorize
        with pyro.validation_enabled(False):
            if route == "plate":
                return self._run_plate(x, kinds)
            return self._run_vmap(x, kinds)

    def _choose_route(self, vectorize: str) -> tuple[str, str]:
        if vectorize != "auto":
            # Fail early with the route's own error (e.g. EnergyNotBatchedError).
            self._probe(vectorize)
            return vectorize, "requested"
        results, errors = {}, {}
        for route in ("plate", "vmap"):
            try:
                results[route] = self._probe(route)
            except Exception as err:  # noqa: BLE001 - a route that fails is not used
                errors[route] = err
        if "plate" in results and "vmap" in results:
            agree = all(
                torch.allclose(a, b, rtol=1e-3, atol=1e-3, equal_nan=True)
                for a, b in zip(results["plate"], results["vmap"])
            )
            if agree:
                return "plate", "plate and vmap agree on probe particles"
            return "vmap", "the model gives different values on a particle batch (plate)"
        if "plate" in results:
            return "plate", f"vmap failed: {type(errors['vmap']).__name__}: {errors['vmap']}"
        if "vmap" in results:
            return "vmap", f"plate failed: {type(errors['plate']).__name__}: {errors['plate']}"
        plate_err = errors["plate"]
        raise ValueError(
            "could not evaluate the model on a batch of particles. With a particle plate: "
            f"{type(plate_err).__name__}: {plate_err}. With torch.func.vmap: "
            f"{type(errors['vmap']).__name__}: {errors['vmap']}. Write the model so that its "
            "sites broadcast over a leading particle axis, without Python control flow on "
            "tensor values (use torch.where)"
        ) from plate_err

    def _probe(self, route: str) -> tuple[torch.Tensor, ...]:
        """Log densities and gradients at 3 deterministic probe particles near the prototype."""
        k = torch.arange(3, dtype=self.dtype, device=self.device)[:, None]
        j = torch.arange(self.dim, dtype=self.dtype, device=self.device)[None, :]
        z = (self.z_prototype + 0.3 * torch.sin(1.7 * j + 2.3 * k + 0.5)).detach()
        z.requires_grad_(True)
        with torch.enable_grad():
            x, logdet = self.constrain(z)
            out = self.evaluate(x, ("sums", "energy"), route=route)
            total = out["prior"] + logdet + out["lik"]
            finite = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
            (grad,) = torch.autograd.grad(finite.sum(), z, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(z)
        energies = [out["energy"][n].detach().reshape(3, -1) for n in self.energy_names]
        return (out["prior"].detach(), out["lik"].detach(), grad.detach(), *energies)

    # -- convenience --------------------------------------------------------------------
    def log_densities(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(log prior, log|J|, log likelihood)`` at ``z`` (N, dim), each (N,)."""
        x, logdet = self.constrain(z)
        out = self.evaluate(x, ("sums",))
        return out["prior"], logdet, out["lik"]

    def log_target(self, z: torch.Tensor) -> torch.Tensor:
        """Full unnormalised model log density at ``z`` (N, dim), Jacobian included: (N,)."""
        prior, logdet, lik = self.log_densities(z)
        return prior + logdet + lik

    def postprocess(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained latent values and deterministic sites, each (N, *site shape)."""
        with torch.no_grad():
            x, _ = self.constrain(z)
            if not self.deterministic_names:
                return x
            return {**x, **self.evaluate(x, ("deterministic",))["deterministic"]}

    def energy_values(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Energy of every energy site (``-log factor * temperature``), each (N, *site shape)."""
        with torch.no_grad():
            x, _ = self.constrain(z)
            return self.evaluate(x, ("energy",))["energy"]

    def sample_prior(self, num_particles: int, generator: torch.Generator | None = None):
        """Ancestral draws of the latent sites, unconstrained, shape (num_particles, dim).

        Energy functions are not evaluated (see :func:`~ebmppl.pyro._energy.skip_energies`).
        """
        with (
            rng_scope(generator),
            torch.no_grad(),
            pyro.validation_enabled(False),
            poutine.block(),
            pyro.plate(PARTICLE_PLATE, num_particles, dim=self.particle_dim),
            skip_energies(),
        ):
            tr = poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
        x = {
            name: _to_particles(tr.nodes[name]["value"], num_particles, lat.shape)
            for name, lat in self.latent.items()
        }
        return self.unconstrain(x).detach()


class ModelPotential(BatchedModel):
    """The AIS view of ``model(*model_args, **model_kwargs)``, batched over particles.

    Args:
        reference: ``None`` (anneal from the prior), a dict ``{site: Distribution}`` covering
            every latent site (constrained space, same support and shape as the site), or
            ``"laplace"`` (a Gaussian in unconstrained space at the MAP, covariance from the
            Hessian, inflated 1.5x).
        vectorize: see :class:`BatchedModel`.

    ``log_parts(z)`` returns ``(log_base, log_ratio)``, each (N,), for ``z`` of shape (N, dim).
    """

    def __init__(
        self,
        model,
        model_args: tuple = (),
        model_kwargs: Mapping[str, Any] | None = None,
        *,
        reference=None,
        vectorize: str = "auto",
    ) -> None:
        super().__init__(model, model_args, model_kwargs, vectorize=vectorize)
        self.reference_kind = "prior"
        self._ref_dict: dict[str, torch.distributions.Distribution] | None = None
        self._ref_mvn = None
        if reference is None:
            for name, lat in self.latent.items():
                if isinstance(_base_dist(lat.fn), dist.ImproperUniform):
                    raise ValueError(  # noqa: TRY004 - a modelling error, as on NumPyro
                        f"latent site '{name}' has an improper prior "
                        f"({type(_base_dist(lat.fn)).__name__}), which AIS cannot start "
                        "from. Pass reference={'" + name + "': <a proper distribution>} "
                        "or reference='laplace' to AIS"
                    )
        elif isinstance(reference, str):
            if reference != "laplace":
                raise ValueError(f"reference must be None, a dict or 'laplace', got {reference!r}")
            self.reference_kind = "laplace"
            self._ref_mvn = self._laplace()
        elif isinstance(reference, Mapping):
            missing = sorted(set(self.latent) - set(reference))
            extra = sorted(set(reference) - set(self.latent))
            if missing or extra:
                raise ValueError(
                    "reference must give a distribution for exactly the latent sites "
                    f"{sorted(self.latent)}; missing {missing}, not latent {extra}"
                )
            for name, d in reference.items():
                if not isinstance(d, torch.distributions.Distribution):
                    raise TypeError(
                        f"reference for site '{name}' must be a Pyro/torch Distribution, "
                        f"got {type(d).__name__}"
                    )
                site_support = self.latent[name].fn.support
                if type(d.support) is not type(site_support):
                    raise ValueError(
                        f"reference for site '{name}' has support {d.support}, but the site's "
                        f"support is {site_support}; they must match"
                    )
                shape = tuple(d.batch_shape + d.event_shape)
                if shape != self.latent[name].shape:
                    raise ValueError(
                        f"reference for site '{name}' has shape {shape}, the site has "
                        f"{self.latent[name].shape}; use .expand(...).to_event(...)"
                    )
            self.reference_kind = "dict"
            self._ref_dict = dict(reference)
        else:
            raise TypeError(
                "reference must be None, a dict of distributions or 'laplace', "
                f"got {type(reference).__name__}"
            )

    def log_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(log_base(z), log_ratio(z))`` for particles ``z`` (N, dim), each (N,)."""
        x, logdet = self.constrain(z)
        out = self.evaluate(x, ("sums",))
        prior, lik = out["prior"], out["lik"]
        if self.reference_kind == "prior":
            return prior + logdet, lik
        n = z.shape[0]
        if self.reference_kind == "dict":
            base = logdet
            for name, d in self._ref_dict.items():
                base = base + d.log_prob(x[name]).reshape(n, -1).sum(1)
        else:
            base = self._ref_mvn.log_prob(z)
        return base, prior + logdet + lik - base

    def sample_base(self, num_particles: int, generator: torch.Generator | None = None):
        """Exact draws from the start of the path, unconstrained, shape (num_particles, dim)."""
        if self.reference_kind == "laplace":
            mvn = self._ref_mvn
            eps = torch.randn(
                (num_particles, self.dim), generator=generator, dtype=self.dtype, device=self.device
            )
            return (mvn.loc + eps @ mvn.scale_tril.T).detach()
        if self.reference_kind == "dict":
            with rng_scope(generator), torch.no_grad():
                draws = {
                    n: d.sample((num_particles,)).to(self.dtype)
                    for n, d in sorted(self._ref_dict.items())
                }
            return self.unconstrain(draws).detach()
        return self.sample_prior(num_particles, generator)

    def _laplace(self):
        def neg(z):
            return -self.log_target(z).sum()

        best, best_val = None, None
        for start in (torch.zeros_like(self.z_prototype), self.z_prototype):
            z = start.detach().clone().requires_grad_(True)
            opt = torch.optim.LBFGS(
                [z], lr=1.0, max_iter=500, line_search_fn="strong_wolfe", tolerance_change=1e-12
            )

            def closure(z=z, opt=opt):
                opt.zero_grad()
                loss = neg(z)
                loss.backward()
                return loss

            try:
                with torch.enable_grad():
                    opt.step(closure)
            except RuntimeError:
                continue
            with torch.no_grad():
                val = float(neg(z))
            if np.isfinite(val) and (best_val is None or val < best_val):
                best, best_val = z.detach().clone(), val
        if best is None:
            raise ValueError("reference='laplace': could not find a finite mode of the model")
        hess = torch.autograd.functional.hessian(lambda v: neg(v[None]), best[0])
        hess = hess.detach().cpu().double().numpy()
        hess = (hess + hess.T) / 2
        eig, vec = np.linalg.eigh(hess)
        eig = np.clip(eig, 1e-6 * max(eig.max(), 1e-12), None)
        # Inflate the covariance a little: a reference with heavier spread than the target
        # keeps the importance weights bounded.
        cov = (vec / eig) @ vec.T * 1.5
        cov = torch.as_tensor(cov, dtype=self.dtype, device=self.device)
        return dist.MultivariateNormal(best[0], covariance_matrix=cov)

"""Energy factors and the tempering handler for NumPyro models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions.distribution import Unit
from numpyro.handlers import trace
from numpyro.primitives import _PYRO_STACK, Messenger

from .._checks import check_energy_shape, complex_energy_error, warn_doubly_intractable

ENERGY_TAG = "ebmppl_energy"

__all__ = ["ENERGY_TAG", "energy", "is_annealed_site", "is_energy_site", "tempered"]


def _plate_batch_shape() -> tuple[int, ...]:
    """Batch shape implied by the numpyro plates active at the call site."""
    frames = [h for h in _PYRO_STACK if isinstance(h, numpyro.plate)]
    if not frames:
        return ()
    ndim = max(-f.dim for f in frames)
    shape = [1] * ndim
    for f in frames:
        shape[ndim + f.dim] = f.subsample_size
    return tuple(shape)


def _check_name_unused(name: str) -> None:
    for handler in _PYRO_STACK:
        if isinstance(handler, trace) and name in handler.trace:
            raise ValueError(
                f"energy site '{name}': this name is already used by another site of the model; "
                "every energy factor needs its own site name"
            )


_DIFF_TRACERS = ("JVPTracer", "LinearizeTracer")


def _differentiated(x) -> bool:
    """Whether ``x`` is being differentiated (it depends on the latent values under a gradient)."""
    return any(
        isinstance(leaf, jax.core.Tracer) and type(leaf).__name__ in _DIFF_TRACERS
        for leaf in jax.tree.leaves(x)
    )


def energy(
    name: str,
    fn: Callable[..., Any],
    *args: Any,
    temperature: float = 1.0,
    normalized: bool = False,
    **kwargs: Any,
):
    """Add the energy ``fn(*args, **kwargs)`` to a NumPyro model as a factor ``-E / temperature``.

    The site is an observed ``Unit`` site (like :func:`numpyro.factor`) tagged with
    ``infer={"ebmppl_energy": {"temperature": temperature}}`` so that :func:`tempered`, AIS
    and :func:`ebmppl.to_arviz` can find it (energies are not data: they never land in
    ``log_likelihood``).

    Args:
        name: site name, unique in the model.
        fn: a JAX-traceable callable returning the energy: a scalar, or one value per element
            of the enclosing plates (shape broadcastable to the plates' batch shape).
        temperature: positive; the factor is ``-E / temperature``.
        normalized: declare that ``fn`` is normalised over its first argument for every value
            of the latent sites it depends on. Otherwise an energy whose value depends on
            latent sites while its first argument is fixed data raises a
            :class:`~ebmppl.DoublyIntractableWarning` (the factor would drop ``-log Z(theta)``).

    Returns:
        The energy value ``fn(*args, **kwargs)`` (not divided by the temperature), in floating
        point (integers and booleans are converted; complex values are an error).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"energy site name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(
            f"energy site '{name}': fn must be a callable returning the energy, "
            f"got {type(fn).__name__}"
        )
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"energy site '{name}': temperature must be positive, got {temperature}")
    _check_name_unused(name)
    value = jnp.asarray(fn(*args, **kwargs))
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
        raise complex_energy_error(name, value.dtype)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    elif jnp.finfo(value.dtype).bits < 32:  # float16/bfloat16 would round the log density
        value = value.astype(jnp.float32)
    if not normalized and args and _differentiated(value) and not _differentiated(args[0]):
        warn_doubly_intractable(name)
    check_energy_shape(name, tuple(value.shape), _plate_batch_shape(), "numpyro.plate")
    log_factor = -value / temperature
    unit = Unit(log_factor)
    numpyro.sample(
        name,
        unit,
        obs=unit.sample(None),
        infer={"is_auxiliary": True, ENERGY_TAG: {"temperature": temperature}},
    )
    return value


def is_energy_site(site: dict) -> bool:
    """Whether a trace site was made by :func:`energy`."""
    return site.get("type") == "sample" and ENERGY_TAG in (site.get("infer") or {})


def is_annealed_site(site: dict) -> bool:
    """Whether a site is annealed by ``tempered``: every observed site (energies, factors, data)."""
    return site.get("type") == "sample" and bool(site.get("is_observed"))


class tempered(Messenger):
    """Multiply the log density of every energy factor, factor and observed site by ``beta``.

    Latent priors are left alone, so ``tempered(model, beta)`` has density
    ``prior(z) * likelihood(z) ** beta`` (the AIS path). ``beta`` may be a traced value.
    """

    def __init__(self, fn=None, beta=1.0):
        if isinstance(beta, (int, float)) and not 0.0 <= beta:
            raise ValueError(f"tempered: beta must be non-negative, got {beta}")
        self.beta = beta
        super().__init__(fn)

    def process_message(self, msg):
        if is_annealed_site(msg):
            msg["scale"] = self.beta if msg.get("scale") is None else self.beta * msg["scale"]

"""Energy factors and the tempering handler for Pyro models."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.plate_messenger import PlateMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger

from .._checks import check_energy_shape, complex_energy_error, warn_doubly_intractable

ENERGY_TAG = "ebmppl_energy"
#: Name of the plate that :class:`ebmppl.pyro.ModelPotential` puts around a model to batch it
#: over particles (or MCMC draws).
PARTICLE_PLATE = "_ebmppl_particles"

__all__ = [
    "ENERGY_TAG",
    "PARTICLE_PLATE",
    "EnergyNotBatchedError",
    "energy",
    "is_annealed_site",
    "is_energy_site",
    "tempered",
]


class EnergyNotBatchedError(ValueError):
    """An energy (or factor) dropped the particle dimension of a batched model run.

    Raised when a model runs under ebmppl's particle plate (every latent value then carries a
    leading particle axis) and a factor that depends on the latent values has no particle axis:
    the energy reduced over all axes, which would silently give every particle the same value.
    """


_SKIP_ENERGIES = [0]


@contextlib.contextmanager
def skip_energies() -> Iterator[None]:
    """Inside this context :func:`energy` does not call its function and adds no site.

    Used for ancestral draws of the latent sites, which never need the energies (and so work
    for energies written for a single ``x``). ``energy`` returns a zero scalar there.
    """
    _SKIP_ENERGIES[0] += 1
    try:
        yield
    finally:
        _SKIP_ENERGIES[0] -= 1


def _active_plates() -> list[PlateMessenger]:
    return [h for h in _PYRO_STACK if isinstance(h, PlateMessenger) and h.dim is not None]


def _plate_batch_shape(plates: list[PlateMessenger]) -> tuple[int, ...]:
    """Batch shape implied by the vectorised Pyro plates active at the call site."""
    if not plates:
        return ()
    ndim = max(-p.dim for p in plates)
    shape = [1] * ndim
    for p in plates:
        shape[ndim + p.dim] = int(p.subsample_size)
    return tuple(shape)


def _check_name_unused(name: str) -> None:
    for handler in _PYRO_STACK:
        if isinstance(handler, TraceMessenger) and name in handler.trace.nodes:
            raise ValueError(
                f"energy site '{name}': this name is already used by another site of the model; "
                "every energy factor needs its own site name"
            )


def _evaluate(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Call ``fn``; an ``nn.Module`` is called with its parameters detached (held fixed)."""
    if isinstance(fn, torch.nn.Module):
        if torch.jit.is_tracing():
            # NUTS with jit_compile=True: torch.func's stateless API refuses jit tracing, and
            # the tracer rejects grad-requiring parameters (or a traced .detach() of them) as
            # constants. Swap in the untraced, history-free .data tensors for the call.
            saved = []
            for mod in fn.modules():
                for key, param in list(mod._parameters.items()):
                    if param is not None:
                        saved.append((mod, key, param))
                        mod._parameters[key] = param.data
            try:
                return fn(*args, **kwargs)
            finally:
                for mod, key, param in saved:
                    mod._parameters[key] = param
        state = {k: v.detach() for k, v in fn.named_parameters()}
        state.update(dict(fn.named_buffers()))
        return torch.func.functional_call(fn, state, args, kwargs)
    return fn(*args, **kwargs)


def check_particle_axis(name: str, value: torch.Tensor, what: str = "energy") -> None:
    """Raise :class:`EnergyNotBatchedError` if ``value`` lost the particle axis (see its doc)."""
    particle = [p for p in _active_plates() if p.name == PARTICLE_PLATE]
    if not particle:
        return
    plate = particle[0]
    n, d = int(plate.subsample_size), plate.dim
    if n <= 1 or not value.requires_grad:
        return  # a constant broadcasts correctly over particles
    if value.dim() < -d or value.shape[d] != n:
        raise EnergyNotBatchedError(
            f"{what} site '{name}': on a batch of {n} particles (the latent values carry an "
            f"extra axis at dim {d}) it returned shape {tuple(value.shape)}, without that axis: "
            "it reduces over all axes. Make it batch-aware (e.g. sum over the last axis with "
            "x.sum(-1) rather than x.sum()), or let ebmppl batch it with torch.func.vmap "
            "(vectorize='vmap' or 'auto')"
        )


def _check_shape(name: str, value: torch.Tensor) -> None:
    """One energy per element of the enclosing plates (ebmppl's particle plate aside)."""
    plates = _active_plates()
    batch = _plate_batch_shape(plates)
    shape = tuple(value.shape)
    particle = [p for p in plates if p.name == PARTICLE_PLATE]
    if particle:
        check_particle_axis(name, value)
        plate = particle[0]
        k = len(batch) + plate.dim
        batch = batch[:k] + batch[k + 1 :]
        ax = value.dim() + plate.dim
        if ax >= 0 and shape[ax] == plate.subsample_size:
            shape = shape[:ax] + shape[ax + 1 :]
    check_energy_shape(name, shape, batch, "pyro.plate")


def _requires_grad(x) -> bool:
    """Whether any tensor in ``x`` (a tensor, or a tuple/list/dict of them) requires grad."""
    if isinstance(x, torch.Tensor):
        return x.requires_grad
    if isinstance(x, dict):
        return any(_requires_grad(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return any(_requires_grad(v) for v in x)
    return False


# Energies found NOT to depend on the latents (e.g. closing over trainable parameters only), so
# that the extra backward pass of the check runs once for them, not at every evaluation.
_INDEPENDENT: set[tuple[str, Any]] = set()


def _differentiated_site_values() -> list[torch.Tensor]:
    """Values of the sample sites traced so far that require grad (latents under a gradient)."""
    values = []
    for handler in _PYRO_STACK:
        if isinstance(handler, TraceMessenger):
            for site in handler.trace.nodes.values():
                v = site.get("value")
                if site.get("type") == "sample" and isinstance(v, torch.Tensor) and v.requires_grad:
                    values.append(v)
    return values


def _check_doubly_intractable(name: str, fn, value: torch.Tensor, x) -> None:
    """Warn when the energy depends on latent sites that its input ``x`` does not depend on.

    Runs only under a gradient with respect to the latent values (NUTS, AIS moves) and only
    when ``x`` does not require grad: one backward pass checks that the dependence is on the
    latents, not on trainable parameters the energy closes over (then never again).
    """
    if not (torch.is_grad_enabled() and value.requires_grad) or _requires_grad(x):
        return
    key = (name, getattr(fn, "__code__", type(fn)))
    if key in _INDEPENDENT:
        return
    latents = _differentiated_site_values()
    if not latents:
        return
    grads = torch.autograd.grad(value.sum(), latents, retain_graph=True, allow_unused=True)
    if any(g is not None and bool(torch.any(g != 0)) for g in grads):
        warn_doubly_intractable(name, stacklevel=4)
    else:
        _INDEPENDENT.add(key)


def energy(
    name: str,
    fn: Callable[..., Any],
    *args: Any,
    temperature: float | torch.Tensor = 1.0,
    normalized: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """Add the energy ``fn(*args, **kwargs)`` to a Pyro model as a factor ``-E / temperature``.

    The site is an observed ``Unit`` site (like :func:`pyro.factor`) tagged with
    ``infer={"is_auxiliary": True, "ebmppl_energy": {"temperature": temperature}}`` so that
    :func:`tempered`, AIS and :func:`ebmppl.to_arviz` can find it (energies are not data: they
    never land in ``log_likelihood``). Pyro's own NUTS samples the model unchanged.

    ``fn`` may be a ``torch.nn.Module``: its parameters are held fixed (the module is called
    with detached parameters via :func:`torch.func.functional_call`), so no gradient
    accumulates in them and no graph keeps them alive; gradients with respect to the inputs
    flow as usual, also when the caller is inside ``torch.no_grad``. To *train* an EBM, call
    the module directly instead.

    Args:
        name: site name, unique in the model.
        fn: a callable (or ``nn.Module``) returning the energy: a scalar, or one value per
            element of the enclosing plates (shape equal to the plates' batch shape; leading
            singleton axes may be omitted; a scalar inside a plate is an error).
            For AIS, energies should be batch-aware (input ``(..., dim)``, output ``(...)``);
            ones written for a single ``x`` are batched with ``torch.func.vmap`` (see
            :class:`ebmppl.pyro.ModelPotential`).
        temperature: positive; the factor is ``-E / temperature``.
        normalized: declare that ``fn`` is normalised over its first argument for every value
            of the latent sites it depends on. Otherwise an energy whose value depends on
            latent sites (it requires grad) while its first argument is fixed data raises a
            :class:`~ebmppl.DoublyIntractableWarning` (the factor would drop ``-log Z(theta)``).

    Returns:
        The energy ``fn(*args, **kwargs)`` as a floating tensor (not divided by the
        temperature), of the shape ``fn`` returned (integers and booleans are converted,
        float16/bfloat16 promoted to float32; complex values are an error).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"energy site name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(
            f"energy site '{name}': fn must be a callable (or nn.Module) returning the energy, "
            f"got {type(fn).__name__}"
        )
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"energy site '{name}': temperature must be positive, got {temperature}")
    _check_name_unused(name)
    if _SKIP_ENERGIES[0]:
        return torch.zeros(())
    value = _evaluate(fn, args, kwargs)
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if value.is_complex():
        raise complex_energy_error(name, value.dtype)
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    elif torch.finfo(value.dtype).bits < 32:  # float16/bfloat16 would round the log density
        value = value.to(torch.float32)
    if not normalized and args:
        _check_doubly_intractable(name, fn, value, args[0])
    _check_shape(name, value)
    # Non-finite energies are handled by the samplers (zero density), not by validation.
    unit = dist.Unit(-value / temperature, validate_args=False)
    pyro.sample(
        name,
        unit,
        obs=unit.sample(),
        infer={"is_auxiliary": True, ENERGY_TAG: {"temperature": temperature}},
    )
    return value


def is_energy_site(site: dict) -> bool:
    """Whether a trace site (or message) was made by :func:`energy`."""
    return site.get("type") == "sample" and ENERGY_TAG in (site.get("infer") or {})


def is_deterministic_site(site: dict) -> bool:
    """Whether a site was made by :func:`pyro.deterministic` (observed, but not data)."""
    return site.get("type") == "sample" and bool((site.get("infer") or {}).get("_deterministic"))


def is_annealed_site(site: dict) -> bool:
    """Whether ``tempered`` anneals a site: every observed site (energies, factors, data)."""
    return (
        site.get("type") == "sample"
        and bool(site.get("is_observed"))
        and not is_deterministic_site(site)
        and type(site.get("fn")).__name__ != "_Subsample"
    )


class TemperedMessenger(Messenger):
    """Messenger behind :func:`tempered`."""

    def __init__(self, beta: float | torch.Tensor = 1.0) -> None:
        if isinstance(beta, (int, float)) and not 0.0 <= beta:
            raise ValueError(f"tempered: beta must be non-negative, got {beta}")
        super().__init__()
        self.beta = beta

    def _process_message(self, msg) -> None:
        if is_annealed_site(msg):
            msg["scale"] = self.beta * msg["scale"]


def tempered(fn: Callable | None = None, beta: float | torch.Tensor = 1.0):
    """Multiply the log density of every energy factor, factor and observed site by ``beta``.

    Latent priors are left alone, so ``tempered(model, beta)`` has density
    ``prior(z) * likelihood(z) ** beta`` (the AIS path). Like Pyro's handlers, it wraps a
    callable (``tempered(model, beta=0.5)``) or works as a context manager
    (``with tempered(beta=0.5): ...``).

    Returns:
        The wrapped model, or the messenger when ``fn`` is None.
    """
    msngr = TemperedMessenger(beta)
    return msngr(fn) if fn is not None else msngr

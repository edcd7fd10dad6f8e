"""Value functions as energies: adapters for logits, similarities, Q-functions, discriminators.

Many learned value functions are energies in disguise: a density ``p(v) = exp(-E(v)) / Z``.
Each adapter here takes such a function and returns an *energy callable* ``E`` to pass to
``energy(name, E, x)`` (:func:`ebmppl.numpyro.energy` or :func:`ebmppl.pyro.energy`):

* :func:`from_logits`: ``E(x) = -f_y(x)`` (class ``y`` fixed) or ``-logsumexp_y f_y(x)``;
* :func:`from_similarity`: ``E(x) = -sim(anchor, x) / T`` (anchor fixed);
* :func:`from_q_function`: ``E(a) = -Q(s, a) / T`` (state fixed; the Boltzmann policy);
* :func:`from_discriminator`: ``E(x) = -D(x)`` or ``-D(x) - log g(x)`` (generator density g);
* :func:`from_gating_logits`: ``E(k) = -(gate(x))_k`` (input fixed; expert index ``k``);
* :func:`relative_to_gaussian`: ``E(x) + log N(x; m, s)``, making ``N(m, s)`` the prior.

Sign convention (the package's, once): density ∝ ``exp(-E)``, so the energy is *minus* the
value (logit, similarity, Q, discriminator logit) -- high value, low energy, high density.
What ``Z`` means depends on the base measure the energy multiplies: inside an ebmppl model
``x ~ prior; energy("E", E, x)`` it is always ``Z = ∫ prior(x) exp(-E(x)) dx``, the quantity
AIS estimates; each adapter's docstring says what that is for its value function.

Backend-neutral: the adapters are plain Python and call the wrapped function, then do their
arithmetic through :func:`ebmppl._xp.namespace` of its *output*, so one adapter serves NumPy,
JAX (traceable: use inside ``jit``/NumPyro) and torch. When any wrapped callable is a
``torch.nn.Module`` the adapter returns an ``nn.Module`` holding it as a submodule, so that
:func:`ebmppl.pyro.energy` recognises it and holds its parameters fixed (detached, also
under ``jit_compile=True``); otherwise it returns a plain callable.

Shapes: inputs are batch-aware, a latent ``x`` of shape ``(..., d)`` (or ``(...)`` for a
scalar latent) gives an energy of shape ``(...)`` -- one value per batch element -- which is
what AIS needs. Wrapped functions must return ``(...)``-shaped values (logits: ``(..., K)``);
a network ending in ``nn.Linear(h, 1)`` returns ``(..., 1)``: drop that axis in its
``forward`` (``.squeeze(-1)``; JAX: ``[..., 0]``). A wrapped ``nn.Module`` is called as it is:
put it in ``.eval()`` mode first if it has dropout or batch norm.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

from ._xp import namespace

__all__ = [
    "EnergyFn",
    "from_discriminator",
    "from_gating_logits",
    "from_logits",
    "from_q_function",
    "from_similarity",
    "relative_to_gaussian",
]

LOG_2PI = math.log(2.0 * math.pi)


def _is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _check_callable(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(
            f"{what} must be a callable (JAX/NumPy function or nn.Module), got {type(fn).__name__}"
        )


def _check_temperature(temperature: Any, where: str) -> None:
    if isinstance(temperature, bool) or (
        isinstance(temperature, int | float)
        and not (math.isfinite(temperature) and temperature > 0)
    ):
        raise ValueError(f"{where}: temperature must be positive and finite, got {temperature!r}")


class EnergyFn:
    """A plain energy callable ``E(*args)`` with a description (returned by the adapters).

    Calling it evaluates the energy; ``description`` says which formula it implements.
    """

    def __init__(self, forward: Callable[..., Any], description: str, name: str = "energy") -> None:
        self._forward = forward
        self.description = description
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._forward(*args, **kwargs)

    def __repr__(self) -> str:
        return f"EnergyFn({self.description})"


@functools.cache
def _torch_energy_class():
    import torch

    class TorchEnergy(torch.nn.Module):
        """An adapter energy around ``nn.Module`` value functions (registered as submodules).

        Registering the wrapped modules makes their parameters this module's parameters, so
        :func:`ebmppl.pyro.energy` holds them fixed; ``forward`` is the adapter's formula.
        """

        def __init__(self, forward, modules: dict, description: str) -> None:
            super().__init__()
            for key, mod in modules.items():
                self.add_module(key, mod)
            self._energy_forward = forward
            self.description = description

        def forward(self, *args, **kwargs):
            return self._energy_forward(*args, **kwargs)

        def extra_repr(self) -> str:
            return self.description

    return TorchEnergy


def _make(forward: Callable[..., Any], parts: dict[str, Any], description: str, name: str):
    """Return ``forward`` as an ``nn.Module`` if any of ``parts`` is one, else an EnergyFn."""
    modules = {k: v for k, v in parts.items() if _is_module(v)}
    if modules:
        return _torch_energy_class()(forward, modules, description)
    return EnergyFn(forward, description, name)


def _take(values: Any, index: Any, xp) -> Any:
    """``values[..., index]`` with ``index`` an int or an integer array broadcasting against
    ``values.shape[:-1]`` (e.g. one label per batch element); returns shape ``(...)``."""
    if isinstance(index, int) and not isinstance(index, bool):
        return values[..., index]
    num = values.shape[-1]
    if xp.name == "torch":
        import torch

        idx = torch.as_tensor(index, device=values.device).long()
        classes = torch.arange(num, device=values.device)
    elif xp.name == "jax":
        import jax.numpy as jnp

        idx = jnp.asarray(index)
        classes = jnp.arange(num)
    else:
        import numpy as np

        idx = np.asarray(index)
        classes = np.arange(num)
    if getattr(idx, "ndim", 0) == 0 and xp.name != "jax":
        return values[..., int(idx)]
    onehot = idx[..., None] == classes
    return xp.sum(xp.where(onehot, values, xp.asarray(0.0)), -1)


def from_logits(logit_fn: Callable[[Any], Any], y: Any = None):
    """Energy over inputs ``x`` from a classifier's logits ``f(x)`` (shape ``(..., K)``).

    * class-conditional (``y`` given): ``E(x, y) = -f_y(x)``, shape ``(...)``. ``y`` is an int
      or an integer array broadcasting against the batch shape ``(...)``. In a model
      ``x ~ prior; energy("E", from_logits(f, y), x)``, ``Z(y) = ∫ prior(x) exp(f_y(x)) dx``
      and ``p(x | y) = prior(x) exp(f_y(x)) / Z(y)``.
    * marginal (``y=None``): ``E(x) = -logsumexp_y f_y(x)``, so ``exp(-E(x)) = Σ_y exp f_y(x)``
      (the "joint energy" reading of a classifier, JEM); ``Z = Σ_y Z(y)``, and the implied
      class prior is ``p(y) = Z(y) / Z``. ``softmax(f(x))`` stays the classifier's
      ``p(y | x)`` under this joint.

    The classifier alone does not fix these densities: adding any ``c(x)`` to all logits
    leaves ``softmax(f)`` unchanged but changes ``E``. The energy is the logits as given.

    Args:
        logit_fn: ``x (..., d) -> logits (..., K)``; a JAX/NumPy function or ``nn.Module``.
        y: class label(s), or None for the marginal energy.

    Returns:
        ``E(x) -> (...)`` (an ``nn.Module`` if ``logit_fn`` is one).
    """
    _check_callable(logit_fn, "from_logits: logit_fn")

    if y is None:

        def forward(x):
            logits = logit_fn(x)
            return -namespace(logits).logsumexp(logits, -1)

        return _make(forward, {"logit_fn": logit_fn}, "-logsumexp_y f_y(x)", "from_logits")

    def forward_y(x):
        logits = logit_fn(x)
        return -_take(logits, y, namespace(logits))

    return _make(forward_y, {"logit_fn": logit_fn}, "-f_y(x)", "from_logits")


def from_similarity(sim_fn: Callable[[Any, Any], Any], anchor: Any, temperature: float = 1.0):
    """Energy over candidates ``x`` from a contrastive similarity: ``E(x) = -sim(anchor, x) / T``.

    The density ``p(x | anchor) ∝ prior(x) exp(sim(anchor, x) / T)`` is the continuous version
    of the InfoNCE softmax over candidates; ``Z(anchor) = ∫ prior(x) exp(sim(anchor, x)/T) dx``
    is the partition function that the InfoNCE denominator estimates with negative samples
    drawn from ``prior``. Higher similarity, lower energy.

    Args:
        sim_fn: ``sim_fn(anchor, x) -> (...)`` for candidates ``x`` of shape ``(..., d)``
            (broadcasting over their batch axes); JAX/NumPy function or ``nn.Module``.
        anchor: the fixed anchor (array or tensor), passed unchanged as the first argument.
        temperature: positive ``T``.

    Returns:
        ``E(x) -> (...)``.
    """
    _check_callable(sim_fn, "from_similarity: sim_fn")
    _check_temperature(temperature, "from_similarity")

    def forward(x):
        return -sim_fn(anchor, x) / temperature

    return _make(forward, {"sim_fn": sim_fn}, f"-sim(anchor, x) / {temperature}", "from_similarity")


def from_q_function(q_fn: Callable[[Any, Any], Any], state: Any, temperature: float = 1.0):
    """Energy over actions ``a`` from a Q-function: ``E(a | s) = -Q(s, a) / T`` (Boltzmann policy).

    ``pi(a | s) ∝ prior(a) exp(Q(s, a) / T)``, the maximum-entropy (soft) policy relative to
    the prior policy ``prior(a)``. ``Z(s, T) = ∫ prior(a) exp(Q(s, a) / T) da`` and
    ``T log Z(s, T)`` is the soft state value ``V(s)``; over a discrete action set with a
    counting base measure ``log Z = logsumexp_a Q(s, a) / T``. ``E_pi[Q]`` is the expected
    return of the policy (``result.expectation`` on AIS particles).

    Args:
        q_fn: ``q_fn(state, action) -> (...)`` for actions ``(..., d_a)`` (or ``(...)`` for a
            scalar or discrete action), broadcasting over their batch axes; JAX/NumPy function
            or ``nn.Module``.
        state: the fixed state, passed unchanged as the first argument.
        temperature: positive ``T``; T -> 0 approaches the greedy policy, T -> inf the prior.

    Returns:
        ``E(a) -> (...)``.
    """
    _check_callable(q_fn, "from_q_function: q_fn")
    _check_temperature(temperature, "from_q_function")

    def forward(action):
        return -q_fn(state, action) / temperature

    return _make(forward, {"q_fn": q_fn}, f"-Q(s, a) / {temperature}", "from_q_function")


def from_discriminator(
    d_fn: Callable[[Any], Any], log_generator_density: Callable[[Any], Any] | None = None
):
    """Energy from a GAN discriminator's logit ``D(x)`` (data vs generator).

    The optimal discriminator between data ``p`` and generator ``g`` has logit
    ``D*(x) = log p(x) - log g(x)``, so ``g(x) exp(D*(x)) = p(x)``:

    * ``log_generator_density=None``: ``E(x) = -D(x)``, the energy *relative to the
      generator*. Use the generator as the model's prior, ``x ~ g; energy("E", E, x)``:
      ``Z = E_g[exp D(x)]``, exactly 1 for the optimal ``D``; ``log Z`` far from 0 means
      ``D`` is not the log density ratio (a mis-specified or under-trained discriminator).
    * ``log_generator_density=log_g`` given: ``E(x) = -D(x) - log g(x)``, the energy relative
      to Lebesgue measure, ``∫ exp(-E(x)) dx = 1`` for the optimal ``D``. Under a prior
      ``pi`` in a model ``Z = ∫ pi(x) exp(-E(x)) dx``; to get the Lebesgue ``Z`` itself, wrap
      it with :func:`relative_to_gaussian` and use that Gaussian as the prior.

    Args:
        d_fn: ``x (..., d) -> logit (...)`` (before the sigmoid); JAX/NumPy function or
            ``nn.Module``.
        log_generator_density: ``x (..., d) -> log g(x) (...)``, or None.

    Returns:
        ``E(x) -> (...)``.
    """
    _check_callable(d_fn, "from_discriminator: d_fn")
    if log_generator_density is None:

        def forward(x):
            return -d_fn(x)

        return _make(forward, {"d_fn": d_fn}, "-D(x)", "from_discriminator")
    _check_callable(log_generator_density, "from_discriminator: log_generator_density")

    def forward_g(x):
        return -d_fn(x) - log_generator_density(x)

    parts = {"d_fn": d_fn, "log_generator_density": log_generator_density}
    return _make(forward_g, parts, "-D(x) - log g(x)", "from_discriminator")


def from_gating_logits(gate_fn: Callable[[Any], Any], x: Any):
    """Energy over expert indices ``k`` from mixture-of-experts gate logits at a fixed input.

    ``E(k | x) = -(gate(x))_k`` with ``gate(x)`` of shape ``(..., K)`` (e.g. ``W x``), so the
    gate probabilities are ``softmax(gate(x))_k = exp(-E(k | x)) / Z(x)`` with
    ``Z(x) = Σ_k exp(gate(x)_k)`` (counting measure over the ``K`` experts; with a uniform
    ``Categorical`` prior over ``k`` the model's ``Z`` is ``Z(x) / K``). ``k`` is discrete:
    enumerate it (or use it in a ``Categorical`` site); HMC-based AIS and NUTS need
    continuous latents.

    Args:
        gate_fn: ``x -> logits (..., K)``; JAX/NumPy function or ``nn.Module``.
        x: the fixed input.

    Returns:
        ``E(k) -> (...)`` for ``k`` an int or an integer array (broadcasting against the
        gate's batch shape).
    """
    _check_callable(gate_fn, "from_gating_logits: gate_fn")

    def forward(k):
        logits = gate_fn(x)
        return -_take(logits, k, namespace(logits))

    return _make(forward, {"gate_fn": gate_fn}, "-(gate(x))_k", "from_gating_logits")


def relative_to_gaussian(
    energy_fn: Callable[[Any], Any], mean: Any, scale: Any, event_ndim: int = 1
):
    """Re-express an energy so that a Gaussian prior is its tractable base measure.

    Returns ``E_rel(x) = E(x) + log N(x; mean, scale)``, with the Gaussian log density summed
    over the last ``event_ndim`` axes (independent coordinates, ``scale`` the standard
    deviation). Then, exactly,

        N(x; mean, scale) * exp(-E_rel(x)) = exp(-E(x)),

    so the model ``x ~ Normal(mean, scale) (event_ndim=1: .to_event(1)); energy("E", E_rel, x)``
    has the *Lebesgue* normalising constant ``Z = ∫ exp(-E(x)) dx`` and target density
    ``exp(-E(x)) / Z``, whatever the Gaussian. The Gaussian only sets the AIS path
    (``N^(1-beta) exp(-beta E)``, beta from 0 to 1) and the starting particles: choose it
    close to ``exp(-E)`` (e.g. a Laplace approximation) and broad enough to cover it.

    Sign: *plus* ``log N``, i.e. ``E_rel = E - E_ref`` with the reference's own energy
    ``E_ref(x) = -log N(x; mean, scale)``.

    Args:
        energy_fn: ``E(x)``, ``(..., d) -> (...)`` (``event_ndim=1``) or ``(...) -> (...)``
            (``event_ndim=0``); JAX/NumPy function or ``nn.Module``.
        mean, scale: the Gaussian's mean and standard deviation, scalars or ``(d,)``.
        event_ndim: 1 for vector latents (default), 0 for scalar latents.

    Returns:
        ``E_rel(x) -> (...)``.
    """
    _check_callable(energy_fn, "relative_to_gaussian: energy_fn")
    if event_ndim not in (0, 1):
        raise ValueError(f"relative_to_gaussian: event_ndim must be 0 or 1, got {event_ndim!r}")
    if isinstance(scale, int | float) and not scale > 0:
        raise ValueError(f"relative_to_gaussian: scale must be positive, got {scale!r}")

    def forward(x):
        xp = namespace(x)
        m, s = xp.asarray(mean), xp.asarray(scale)
        z = (x - m) / s
        log_n = -0.5 * z * z - xp.log(s) - 0.5 * LOG_2PI
        if event_ndim == 1:
            log_n = xp.sum(log_n, -1)
        return energy_fn(x) + log_n

    return _make(
        forward, {"energy_fn": energy_fn}, "E(x) + log N(x; mean, scale)", "relative_to_gaussian"
    )

"""ebmppl: energy-based models as first-class factors in Pyro and NumPyro.

Sign convention, once: an energy ``E(x)`` defines the density ``p(x) ∝ exp(-E(x))``; an energy
factor adds ``-E(x) / temperature`` to the model's log density. ``Z`` is the normalising
constant of the whole unnormalised model.

Backends live in :mod:`ebmppl.numpyro` and :mod:`ebmppl.pyro` and are imported on demand;
``import ebmppl`` imports neither JAX nor torch.
"""

from __future__ import annotations

from . import diagnostics, problems, schedules
from ._checks import DoublyIntractableWarning
from ._runs import RunInterrupted
from .reporting import compare, report
from .results import AISResult, BDMCResult
from .schedules import make_schedule

__version__ = "0.1.0"

__all__ = [
    "AISResult",
    "BDMCResult",
    "DoublyIntractableWarning",
    "RunInterrupted",
    "__version__",
    "compare",
    "diagnostics",
    "make_schedule",
    "problems",
    "report",
    "schedules",
    "to_arviz",
]


def to_arviz(obj, **kwargs):
    """Convert an MCMC run (NumPyro or Pyro) or an :class:`AISResult` to ArviZ InferenceData.

    See :func:`ebmppl.arviz.to_arviz`.
    """
    from .arviz import to_arviz as _to_arviz

    return _to_arviz(obj, **kwargs)

"""The NumPyro (JAX) backend: energy factors, the tempering handler, AIS.

Mirrors :mod:`ebmppl.pyro` verb for verb.
"""

from .._backend import require as _require

_require("numpyro")

from ._ais import AIS, AISInfo, AISState, build_ais_step, build_hmc_move  # noqa: E402
from ._energy import energy, is_energy_site, tempered  # noqa: E402
from ._model import ModelPotential  # noqa: E402
from ._mcmc_data import NUTS_EXTRA_FIELDS  # noqa: E402
from ._problems import problem_model  # noqa: E402

__all__ = [
    "AIS",
    "NUTS_EXTRA_FIELDS",
    "AISInfo",
    "AISState",
    "ModelPotential",
    "build_ais_step",
    "build_hmc_move",
    "energy",
    "is_energy_site",
    "problem_model",
    "tempered",
]

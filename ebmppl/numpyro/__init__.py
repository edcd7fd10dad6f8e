"""The NumPyro (JAX) backend: energy factors, the tempering handler, AIS.

Mirrors :mod:`ebmppl.pyro` verb for verb.
"""

from .._backend import require as _require

_require("numpyro")

from ._ais import AIS, AISInfo, AISState, build_ais_step, build_hmc_move
from ._energy import energy, is_energy_site, tempered
from ._mcmc_data import NUTS_EXTRA_FIELDS
from ._model import ModelPotential
from ._problems import problem_model

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

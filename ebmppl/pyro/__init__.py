"""The Pyro (PyTorch) backend: energy factors, the tempering handler, AIS, NUTS helpers.

Mirrors :mod:`ebmppl.numpyro` verb for verb; AIS here is batched over particles in PyTorch.
"""

from .._backend import require as _require

_require("pyro")

from ._ais import AIS, AISInfo, AISState, build_ais_step, build_hmc_move
from ._energy import EnergyNotBatchedError, energy, is_energy_site, tempered
from ._mcmc_data import NUTS, nuts_mcmc
from ._model import ModelPotential
from ._problems import problem_model

__all__ = [
    "AIS",
    "NUTS",
    "AISInfo",
    "AISState",
    "EnergyNotBatchedError",
    "ModelPotential",
    "build_ais_step",
    "build_hmc_move",
    "energy",
    "is_energy_site",
    "nuts_mcmc",
    "problem_model",
    "tempered",
]

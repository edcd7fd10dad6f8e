"""The NumPyro (JAX) backend: energy factors, the tempering handler, AIS.

Mirrors :mod:`ebmppl.pyro` verb for verb.
"""

from .._backend import require as _require

_require("numpyro")

from ._ais import AIS, AISInfo, AISState, build_ais_step, build_hmc_move
from ._bdmc import BDMC
from ._energy import energy, is_energy_site, tempered
from ._mcmc_data import NUTS_EXTRA_FIELDS
from ._model import ModelPotential
from ._problems import problem_model
from ._pt import ReplicaExchange, ReplicaExchangeResult, ladder_from_rejections
from ._smc import SMC, SMCInfo, SMCState, build_smc_step, next_beta_by_cess

__all__ = [
    "AIS",
    "BDMC",
    "NUTS_EXTRA_FIELDS",
    "SMC",
    "AISInfo",
    "AISState",
    "ModelPotential",
    "ReplicaExchange",
    "ReplicaExchangeResult",
    "SMCInfo",
    "SMCState",
    "build_ais_step",
    "build_hmc_move",
    "build_smc_step",
    "energy",
    "is_energy_site",
    "ladder_from_rejections",
    "next_beta_by_cess",
    "problem_model",
    "tempered",
]

"""The Pyro (PyTorch) backend: energy factors, the tempering handler, AIS, SMC, BDMC, replica
exchange, NUTS.

Mirrors :mod:`ebmppl.numpyro` verb for verb; AIS and SMC here are batched over particles (and
SMC replicas), replica exchange over temperatures and chains, in PyTorch.
"""

from .._backend import require as _require

_require("pyro")

from ._ais import AIS, AISInfo, AISState, build_ais_step, build_hmc_move
from ._bdmc import BDMC
from ._energy import EnergyNotBatchedError, energy, is_energy_site, tempered
from ._mcmc_data import NUTS, nuts_mcmc
from ._model import ModelPotential
from ._problems import problem_model
from ._pt import ReplicaExchange, ReplicaExchangeResult, ladder_from_rejections
from ._smc import SMC, SMCInfo, SMCState, build_smc_step, next_beta_by_cess

__all__ = [
    "AIS",
    "BDMC",
    "NUTS",
    "SMC",
    "AISInfo",
    "AISState",
    "EnergyNotBatchedError",
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
    "nuts_mcmc",
    "problem_model",
    "tempered",
]

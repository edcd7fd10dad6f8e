"""Backend harness for the conformance suite: Pyro.

Mirrors harness_numpyro.py function for function (same names, arguments and return types),
so the conformance tests never mention a backend. Seeds become explicit ``torch.Generator``s
(AIS) or a forked, seeded global RNG (Pyro's own NUTS), so torch's global RNG is untouched.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC

import ebmppl.pyro as backend_api
from ebmppl.pyro import (
    AIS,
    BDMC,
    NUTS,
    SMC,
    build_hmc_move,
    energy,
    problem_model,
)
from ebmppl.pyro._ais import build_potential

NAME = "pyro"

__all__ = [
    "NAME",
    "make_ais",
    "make_smc",
    "next_beta_by_cess",
    "problem_model",
    "run_ais",
    "run_bdmc",
    "run_smc",
    "trace_model",
]


@contextlib.contextmanager
def _one_thread():
    """Particle batches here are small: one intra-op thread avoids OpenMP spin-waiting, which
    costs 10x on a 2-core machine shared with other processes (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_ais(model, **options):
    return AIS(model, **{"progress": False, **options})


def run_ais(model, seed_: int, *model_args, **options):
    """Run AIS with integer seed ``seed_``; returns an AISResult."""
    generator = torch.Generator().manual_seed(seed_)
    ais = make_ais(model, **options)
    with _one_thread():
        return ais.run(*model_args, generator=generator)


def make_smc(model, **options):
    return SMC(model, **{"progress": False, **options})


def run_smc(model, seed_: int, *model_args, **options):
    """Run tempered SMC with integer seed ``seed_``; returns an AISResult."""
    generator = torch.Generator().manual_seed(seed_)
    smc = make_smc(model, **options)
    with _one_thread():
        return smc.run(*model_args, generator=generator)


def run_bdmc(model, seed_: int, exact_samples, *model_args, **options):
    """Run BDMC from ``exact_samples`` ({site: array (num, ...)}); returns a BDMCResult."""
    generator = torch.Generator().manual_seed(seed_)
    bdmc = BDMC(model, **{"progress": False, **options})
    with _one_thread():
        return bdmc.run(exact_samples, *model_args, generator=generator)


def next_beta_by_cess(log_weights, log_ratio, beta: float, target: float) -> float:
    """The CESS bisection on NumPy inputs (N,), (N,); returns the next beta as a float."""
    return float(
        backend_api.next_beta_by_cess(
            torch.as_tensor(np.asarray(log_weights)),
            torch.as_tensor(np.asarray(log_ratio)),
            torch.as_tensor(beta, dtype=torch.get_default_dtype()),
            target,
        )
    )


def trace_model(model, *args):
    """Run the model once (with a fixed seed), returning nothing; raises model errors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        poutine.trace(model).get_trace(*args)


def zero_energy_model(dim: int = 3):
    # Written for a single x, as on NumPyro: AIS batches it with torch.func.vmap.
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        energy("E", lambda v: torch.zeros(()) * torch.sum(v), x)

    return model


def conjugate_model(prior_scale: float, noise: float, energy_weight: float):
    """x ~ N(0, s^2 I_2); y_i ~ N(x, noise^2) observed (i plate); energy w |x|^2 / 2."""

    def model(y):
        x = pyro.sample("x", dist.Normal(0.0, prior_scale).expand([2]).to_event(1))
        energy("E", lambda v: 0.5 * energy_weight * torch.sum(v**2, -1), x)
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(x, noise).to_event(1), obs=y)

    return model


def as_data(array: np.ndarray):
    return torch.as_tensor(np.asarray(array), dtype=torch.get_default_dtype())


def plated_energy_model(num: int):
    """Energy inside a plate, one value per plate element: x_i ~ N(0,1), E_i = (x_i - 1)^2 / 2."""

    def model():
        with pyro.plate("items", num):
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E", lambda v: 0.5 * (v - 1.0) ** 2, x)

    return model


def improper_model():
    """ImproperUniform latent on the real line with E = x^2 / 2: log Z = log sqrt(2 pi)."""

    def model():
        x = pyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))
        energy("E", lambda v: 0.5 * v**2, x)

    return model


def improper_reference():
    return {"x": dist.Normal(0.0, 2.0)}


# -- bad input -------------------------------------------------------------------------
def bad_nonscalar_energy():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        energy("E_vec", lambda v: v**2, x)

    return model


def bad_not_callable():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_nc", 3.0, x)

    return model


def bad_duplicate_name():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_dup", lambda v: v**2, x)
        energy("E_dup", lambda v: v**4, x)

    return model


def bad_nonfinite_energy():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_nan", lambda v: torch.log(-torch.abs(v) - 1.0), x)

    return model


# -- transitions -------------------------------------------------------------------------
def transition_invariance(
    beta: float, num: int, num_moves: int, seed_: int, step_size: float, stale_beta=None
):
    """Apply HMC moves at ``beta`` to exact draws of the 1-D path density.

    ``stale_beta``: evaluate the starting potential and gradient at this beta instead (the
    bug of reusing values cached at the previous temperature); the moves are then NOT
    invariant, which shows the invariance test has power.

    Path: log_base = log N(z; 0, 1), log_ratio = -2 (z - 1.5)^2, so pi_beta is Gaussian with
    precision 1 + 4 beta and mean 6 beta / (1 + 4 beta). Returns (before, after) samples.
    """

    def log_parts(z):
        return -0.5 * torch.sum(z**2, -1), -2.0 * torch.sum((z - 1.5) ** 2, -1)

    prec = 1.0 + 4.0 * beta
    mean = 6.0 * beta / prec
    gen = torch.Generator().manual_seed(seed_)
    z0 = mean + torch.randn((num, 1), generator=gen) / np.sqrt(prec)
    move = build_hmc_move(log_parts, 3)
    start = beta if stale_beta is None else stale_beta
    u, g, _, _ = build_potential(log_parts)(z0, start)
    z = z0
    for _ in range(num_moves):
        z, u, g, _ = move(z, u, g, beta, step_size, torch.ones(1), gen)
    return z0[:, 0].numpy(), z[:, 0].numpy()


# -- NUTS ------------------------------------------------------------------------------
def run_nuts(model, seed_: int, *model_args, num_warmup=500, num_samples=1000, num_chains=2):
    """Run the PPL's own NUTS; returns (mcmc, {site: array (chains * draws, ...)}).

    Uses :class:`ebmppl.pyro.NUTS` (``pyro.infer.NUTS`` recording sample statistics) with
    ``jit_compile=True``, chains one after another in this process.
    """
    with _one_thread(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # On a machine with <= num_chains CPUs Pyro runs the chains sequentially and says so.
        warnings.filterwarnings("ignore", message=r"num_chains=\d+ is more than available_cpu")
        torch.manual_seed(seed_)
        mcmc = MCMC(
            NUTS(model, jit_compile=True, ignore_jit_warnings=True),
            num_samples=num_samples,
            warmup_steps=num_warmup,
            num_chains=num_chains,
            disable_progbar=True,
        )
        mcmc.run(*model_args)
    return mcmc, {k: v.detach().cpu().numpy() for k, v in mcmc.get_samples().items()}


# -- long runs, bad energies, fuzzing ---------------------------------------------------
def run_ais_control(model, seed_: int, run_kwargs: dict, *model_args, **options):
    """Run AIS with run-control keywords (target_se, checkpoint, ...); returns an AISResult."""
    generator = torch.Generator().manual_seed(seed_)
    ais = make_ais(model, **options)
    with _one_thread():
        return ais.run(*model_args, generator=generator, **run_kwargs)


DTYPES = {
    "float16": torch.float16,
    "float32": torch.float32,
    "int32": torch.int32,
    "bool": torch.bool,
    "complex64": torch.complex64,
}


def shaped_energy_model(plate_size, shape: tuple, dtype: str):
    """x ~ N(0, 1) (inside a plate of ``plate_size`` if given); energy returns ``shape``/``dtype``."""

    def fn(v):
        return (torch.zeros(shape) + torch.sum(v**2)).to(DTYPES[dtype])

    def model():
        if plate_size is None:
            x = pyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E_fuzz", fn, x)
        else:
            with pyro.plate("items", plate_size):
                x = pyro.sample("x", dist.Normal(0.0, 1.0))
                energy("E_fuzz", fn, x)

    return model


def doubly_intractable_model(normalized: bool = False):
    """theta ~ N(0, 1); energy E_theta(data) = theta * sum(data^2) on fixed data."""
    data = torch.tensor([0.3, -1.2, 0.5])

    def model():
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        energy("E_di", lambda d: theta * torch.sum(d**2, -1), data, normalized=normalized)

    return model


def latent_input_model():
    """x ~ N(0, 1)^3; energy of the latent x (an ordinary energy factor, no warning)."""

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        energy("E_ok", lambda v: torch.sum(v**2, -1), x)

    return model


def run_smc_control(model, seed_: int, run_kwargs: dict, *model_args, **options):
    """Run SMC with run-control keywords (target_se, max_time, max_batches)."""
    generator = torch.Generator().manual_seed(seed_)
    smc = make_smc(model, **options)
    with _one_thread():
        return smc.run(*model_args, generator=generator, **run_kwargs)

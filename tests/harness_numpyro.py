"""Backend harness for the conformance suite: NumPyro.

Every harness module exposes the same functions, so the conformance tests never mention a
backend. harness_pyro.py mirrors this file.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.handlers import seed, trace
from numpyro.infer import MCMC, NUTS

import ebmppl.numpyro as backend_api
from ebmppl.numpyro import (
    AIS,
    BDMC,
    NUTS_EXTRA_FIELDS,
    SMC,
    build_hmc_move,
    energy,
    problem_model,
)
from ebmppl.numpyro._nuts import build_nuts_move

NAME = "numpyro"

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


def make_ais(model, **options):
    return AIS(model, **{"progress": False, **options})


def run_ais(model, seed_: int, *model_args, **options):
    """Run AIS with integer seed ``seed_``; returns an AISResult."""
    return make_ais(model, **options).run(jax.random.PRNGKey(seed_), *model_args)


def make_smc(model, **options):
    return SMC(model, **{"progress": False, **options})


def run_smc(model, seed_: int, *model_args, **options):
    """Run tempered SMC with integer seed ``seed_``; returns an AISResult."""
    return make_smc(model, **options).run(jax.random.PRNGKey(seed_), *model_args)


def run_bdmc(model, seed_: int, exact_samples, *model_args, **options):
    """Run BDMC from ``exact_samples`` ({site: array (num, ...)}); returns a BDMCResult."""
    bdmc = BDMC(model, **{"progress": False, **options})
    return bdmc.run(jax.random.PRNGKey(seed_), exact_samples, *model_args)


def next_beta_by_cess(log_weights, log_ratio, beta: float, target: float) -> float:
    """The CESS bisection on NumPy inputs (N,), (N,); returns the next beta as a float."""
    return float(
        backend_api.next_beta_by_cess(
            jnp.asarray(log_weights), jnp.asarray(log_ratio), jnp.asarray(beta), target
        )
    )


def trace_model(model, *args):
    """Run the model once (with a fixed seed), returning nothing; raises model errors."""
    trace(seed(model, 0)).get_trace(*args)


def zero_energy_model(dim: int = 3):
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        energy("E", lambda v: jnp.zeros(()) * jnp.sum(v), x)

    return model


def conjugate_model(prior_scale: float, noise: float, energy_weight: float):
    """x ~ N(0, s^2 I_2); y_i ~ N(x, noise^2) observed (i plate); energy w |x|^2 / 2."""

    def model(y):
        x = numpyro.sample("x", dist.Normal(0.0, prior_scale).expand([2]).to_event(1))
        energy("E", lambda v: 0.5 * energy_weight * jnp.sum(v**2), x)
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(x, noise).to_event(1), obs=y)

    return model


def as_data(array: np.ndarray):
    return jnp.asarray(array, dtype=jnp.float32)


def plated_energy_model(num: int):
    """Energy inside a plate, one value per plate element: x_i ~ N(0,1), E_i = (x_i - 1)^2 / 2."""

    def model():
        with numpyro.plate("items", num):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E", lambda v: 0.5 * (v - 1.0) ** 2, x)

    return model


def improper_model():
    """ImproperUniform latent on the real line with E = x^2 / 2: log Z = log sqrt(2 pi)."""

    def model():
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))
        energy("E", lambda v: 0.5 * v**2, x)

    return model


def improper_reference():
    return {"x": dist.Normal(0.0, 2.0)}


# -- bad input -------------------------------------------------------------------------
def bad_nonscalar_energy():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        energy("E_vec", lambda v: v**2, x)

    return model


def bad_not_callable():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_nc", 3.0, x)

    return model


def bad_duplicate_name():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_dup", lambda v: v**2, x)
        energy("E_dup", lambda v: v**4, x)

    return model


def bad_nonfinite_energy():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        energy("E_nan", lambda v: jnp.log(-jnp.abs(v) - 1.0), x)

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
        return -0.5 * jnp.sum(z**2), -2.0 * jnp.sum((z - 1.5) ** 2)

    prec = 1.0 + 4.0 * beta
    mean = 6.0 * beta / prec
    key = jax.random.PRNGKey(seed_)
    k0, k1 = jax.random.split(key)
    z0 = mean + jax.random.normal(k0, (num, 1)) / np.sqrt(prec)
    move = jax.vmap(build_hmc_move(log_parts, 3), in_axes=(0, 0, 0, 0, None, None, None))

    def pot(z):
        lb, lr = log_parts(z)
        return -(lb + beta * lr)

    def pot_at(b):
        return lambda z: -(log_parts(z)[0] + b * log_parts(z)[1])

    start = pot if stale_beta is None else pot_at(stale_beta)
    u = jax.vmap(start)(z0)
    g = jax.vmap(jax.grad(start))(z0)
    z = z0
    for k in jax.random.split(k1, num_moves):
        z, u, g, _ = move(jax.random.split(k, num), z, u, g, beta, step_size, jnp.ones(1))
    return np.asarray(z0[:, 0]), np.asarray(z[:, 0])


def nuts_transition_invariance(
    beta: float,
    num: int,
    num_moves: int,
    seed_: int,
    step_size: float,
    stale_beta=None,
    wall=None,
    max_tree_depth: int = 10,
):
    """As :func:`transition_invariance`, with the SMC NUTS move (NumPyro only).

    ``wall``: the path's log_ratio is also -inf for z > wall, so pi_beta is the same Gaussian
    truncated to z <= wall (exact draws by inversion), and trajectories hit zero density.
    Returns (before, after, mean leapfrog steps per move).
    """

    def log_parts(z):
        lr = -2.0 * jnp.sum((z - 1.5) ** 2)
        if wall is not None:
            lr = jnp.where(jnp.all(z <= wall), lr, -jnp.inf)
        return -0.5 * jnp.sum(z**2), lr

    prec = 1.0 + 4.0 * beta
    mean = 6.0 * beta / prec
    k0, k1 = jax.random.split(jax.random.PRNGKey(seed_))
    upper = jnp.inf if wall is None else (wall - mean) * np.sqrt(prec)
    std = jax.random.truncated_normal(k0, -jnp.inf, upper, (num, 1))
    z0 = mean + std / np.sqrt(prec)
    move = jax.jit(
        jax.vmap(build_nuts_move(log_parts, max_tree_depth), in_axes=(0, 0, 0, 0, None, None, None))
    )

    def pot_at(b):
        return lambda z: -(log_parts(z)[0] + b * log_parts(z)[1])

    start = pot_at(beta if stale_beta is None else stale_beta)
    u = jax.vmap(start)(z0)
    g = jax.vmap(jax.grad(start))(z0)
    z, leap = z0, []
    for k in jax.random.split(k1, num_moves):
        z, u, g, _, n = move(jax.random.split(k, num), z, u, g, beta, step_size, jnp.ones(1))
        leap.append(float(jnp.mean(n)))
    return np.asarray(z0[:, 0]), np.asarray(z[:, 0]), float(np.mean(leap))


# -- NUTS ------------------------------------------------------------------------------
def run_nuts(model, seed_: int, *model_args, num_warmup=500, num_samples=1000, num_chains=2):
    """Run the PPL's own NUTS; returns (mcmc, {site: array (chains * draws, ...)})."""
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed_), *model_args, extra_fields=NUTS_EXTRA_FIELDS)
    return mcmc, {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


# -- long runs, bad energies, fuzzing ---------------------------------------------------
def run_ais_control(model, seed_: int, run_kwargs: dict, *model_args, **options):
    """Run AIS with run-control keywords (target_se, checkpoint, ...); returns an AISResult."""
    return make_ais(model, **options).run(jax.random.PRNGKey(seed_), *model_args, **run_kwargs)


DTYPES = {
    "float16": jnp.float16,
    "float32": jnp.float32,
    "int32": jnp.int32,
    "bool": jnp.bool_,
    "complex64": jnp.complex64,
}


def shaped_energy_model(plate_size, shape: tuple, dtype: str):
    """x ~ N(0, 1) (inside a plate of ``plate_size`` if given); energy returns ``shape``/``dtype``."""

    def fn(v):
        return (jnp.zeros(shape) + jnp.sum(v**2)).astype(DTYPES[dtype])

    def model():
        if plate_size is None:
            x = numpyro.sample("x", dist.Normal(0.0, 1.0))
            energy("E_fuzz", fn, x)
        else:
            with numpyro.plate("items", plate_size):
                x = numpyro.sample("x", dist.Normal(0.0, 1.0))
                energy("E_fuzz", fn, x)

    return model


def doubly_intractable_model(normalized: bool = False):
    """theta ~ N(0, 1); energy E_theta(data) = theta * sum(data^2) on fixed data."""
    data = jnp.array([0.3, -1.2, 0.5])

    def model():
        theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
        energy("E_di", lambda d: theta * jnp.sum(d**2), data, normalized=normalized)

    return model


def latent_input_model():
    """x ~ N(0, 1)^3; energy of the latent x (an ordinary energy factor, no warning)."""

    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        energy("E_ok", lambda v: jnp.sum(v**2), x)

    return model


def run_smc_control(model, seed_: int, run_kwargs: dict, *model_args, **options):
    """Run SMC with run-control keywords (target_se, max_time, max_batches)."""
    return make_smc(model, **options).run(jax.random.PRNGKey(seed_), *model_args, **run_kwargs)

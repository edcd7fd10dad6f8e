"""Particles split over devices (``shard=True``), in one process or after
``jax.distributed.initialize()`` over several, and reading such arrays back to the host."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_same_key", "shard_particles", "to_host"]


def shard_particles(x, axis: int = 0):
    """Place ``x`` with its particle ``axis`` split over every device of every process.

    ``x`` must be the same array in every process (it is: the keys are the same). Each process
    places only its own devices' rows, so this also works after ``jax.distributed.initialize()``.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = np.array(jax.devices())
    if x.shape[axis] % devices.size:
        raise ValueError(
            f"shard=True needs num_particles divisible by the {devices.size} devices, "
            f"got {x.shape[axis]}"
        )
    mesh = Mesh(devices, ("particles",))
    spec = [None] * x.ndim
    spec[axis] = "particles"
    sharding = NamedSharding(mesh, PartitionSpec(*spec))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(x) -> np.ndarray:
    """The whole of ``x`` as NumPy, also when it spans devices of other processes."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_same_key(rng_key) -> None:
    """With several processes, raise unless every process passed the same ``rng_key``.

    ``shard=True`` runs one program over the devices of all processes; each process builds
    the initial particles from its own key, so different keys would give a population that no
    single key describes (and a run that cannot be reproduced or resumed).
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    data = jax.random.key_data(rng_key) if jnp.shape(rng_key) == () else rng_key
    mine = np.asarray(data).ravel()
    every = np.asarray(multihost_utils.process_allgather(mine))
    if not np.all(every == mine):
        raise ValueError(
            "shard=True after jax.distributed.initialize() needs the same rng_key in every "
            f"process; process {jax.process_index()} of {jax.process_count()} got {mine}, "
            f"others {every.tolist()}. Use one key everywhere (the particles are split for you)."
        )

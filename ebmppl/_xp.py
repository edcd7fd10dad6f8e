"""A tiny array namespace so that one energy definition serves JAX and torch."""

from __future__ import annotations

from types import SimpleNamespace


def namespace(x) -> SimpleNamespace:
    """Return the math functions for the array library of ``x`` (numpy, jax or torch array)."""
    mod = type(x).__module__
    if mod.startswith("numpy") or isinstance(x, float | int):
        import numpy as np
        from scipy.special import logsumexp as np_logsumexp

        return SimpleNamespace(
            name="numpy",
            exp=np.exp,
            log=np.log,
            log1p=np.log1p,
            sum=lambda a, axis: np.sum(a, axis=axis),
            logsumexp=lambda a, axis: np_logsumexp(a, axis=axis),
            stack=lambda seq, axis: np.stack(list(seq), axis=axis),
            asarray=lambda c: np.asarray(c, dtype=np.float64),
            where=np.where,
        )
    if mod.startswith("torch"):
        import torch

        return SimpleNamespace(
            name="torch",
            exp=torch.exp,
            log=torch.log,
            log1p=torch.log1p,
            sum=lambda a, axis: torch.sum(a, dim=axis),
            logsumexp=lambda a, axis: torch.logsumexp(a, dim=axis),
            stack=lambda seq, axis: torch.stack(list(seq), dim=axis),
            asarray=lambda c: torch.as_tensor(c, dtype=x.dtype, device=x.device),
            where=torch.where,
        )
    import jax.numpy as jnp
    from jax.nn import logsumexp

    return SimpleNamespace(
        name="jax",
        exp=jnp.exp,
        log=jnp.log,
        log1p=jnp.log1p,
        sum=lambda a, axis: jnp.sum(a, axis=axis),
        logsumexp=lambda a, axis: logsumexp(a, axis=axis),
        stack=lambda seq, axis: jnp.stack(list(seq), axis=axis),
        asarray=lambda c: jnp.asarray(c, dtype=getattr(x, "dtype", None)),
        where=jnp.where,
    )

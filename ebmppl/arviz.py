"""The one module that talks to ArviZ: conversions of ebmppl results to InferenceData.

Groups written by ebmppl:

* MCMC runs: ``posterior``, ``sample_stats`` (lp, energy, diverging, n_steps, tree_depth,
  acceptance_rate, step_size where the sampler provides them), ``energy`` (each energy
  factor's value per draw), ``log_likelihood`` and ``observed_data`` for real observed sites
  only. Energies are never filed as data, so LOO/WAIC do not treat them as observations.
* AIS results: ``ais`` (log_weights over ``particle``; betas; per-step acceptance_rate,
  step_size, ess; attributes log_z, log_z_se, ess, pareto_khat and the options) and
  ``ais_particles`` (final particles per site, constrained space, weighted by ``ais.log_weights``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .results import AISResult

__all__ = ["to_arviz", "from_netcdf", "ais_result_from_arviz"]

_FUTURE = r"\s*ArviZ is undergoing a major refactor"


def _az():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FUTURE, category=FutureWarning)
        import arviz as az
    return az


def _dataset(data: dict, dims: dict[str, list[str]] | None = None, attrs=None, sample=True):
    import xarray as xr

    dims = dims or {}
    variables = {}
    for name, value in data.items():
        arr = np.asarray(value)
        if name in dims:
            d = dims[name]
        elif sample:
            d = ["chain", "draw"] + [f"{name}_dim_{i}" for i in range(arr.ndim - 2)]
        else:
            d = [f"{name}_dim_{i}" for i in range(arr.ndim)]
        variables[name] = (d, arr)
    return xr.Dataset(variables, attrs=_clean_attrs(attrs or {}))


def _clean_attrs(attrs: dict) -> dict:
    """netCDF attributes must be str, numbers or 1-D arrays; drop None, stringify the rest."""
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, bool | np.bool_):
            out[k] = int(v)
        elif isinstance(v, int | float | str | np.integer | np.floating):
            out[k] = v
        elif isinstance(v, tuple | list) and all(isinstance(e, str) for e in v):
            out[k] = ",".join(v)
        elif isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "if":
            out[k] = v
        else:
            out[k] = str(v)
    return out


def _idata_from_groups(groups: dict[str, Any]):
    az = _az()
    from . import __version__

    attrs = {"ebmppl_version": __version__, **groups.pop("attrs", {})}
    datasets = {}
    for group, data in groups.items():
        if data is None or (isinstance(data, dict) and not data):
            continue
        if isinstance(data, dict):
            data = _dataset(data, sample=group not in ("observed_data",))
        data.attrs.update(_clean_attrs(attrs))
        datasets[group] = data
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*not .*InferenceData scheme", category=UserWarning)
        return az.InferenceData(**datasets)


def _ais_groups(result: AISResult) -> dict:
    n = result.num_particles
    ais = {
        "log_weights": (["particle"], result.log_weights),
        "betas": (["beta_index"], result.betas),
        "acceptance_rate": (["step"], result.acceptance_rate),
        "step_size": (["step"], result.step_size),
        "ess": (["step"], result.ess_trace),
    }
    for k, v in result.info.items():
        if isinstance(v, np.ndarray) and v.shape == (result.num_steps,):
            ais[k] = (["step"], v)
    import xarray as xr

    attrs = {
        "log_z": result.log_z,
        "log_z_se": result.log_z_se,
        "ess": result.ess,
        "pareto_khat": result.pareto_khat,
        "num_particles": n,
        "num_dropped": result.num_dropped,
        "gradient_evaluations": result.gradient_evaluations,
        "backend": result.backend,
        **{k: v for k, v in result.info.items() if not isinstance(v, np.ndarray)},
    }
    ais_ds = xr.Dataset(ais, attrs=_clean_attrs(attrs))
    particles = _dataset(
        result.particles,
        dims={
            k: ["particle"] + [f"{k}_dim_{i}" for i in range(np.ndim(v) - 1)]
            for k, v in result.particles.items()
        },
        sample=False,
    )
    return {"ais": ais_ds, "ais_particles": particles, "attrs": {"inference_library": result.backend}}


def _mcmc_groups(obj) -> dict | None:
    mod = type(obj).__module__
    if mod.startswith("numpyro"):
        from .numpyro._mcmc_data import mcmc_groups

        return mcmc_groups(obj)
    if mod.startswith("pyro"):
        from .pyro._mcmc_data import mcmc_groups

        return mcmc_groups(obj)
    return None


def to_arviz(obj, *, ais: AISResult | None = None):
    """Convert an MCMC run or an :class:`~ebmppl.AISResult` to ArviZ ``InferenceData``.

    Args:
        obj: ``numpyro.infer.MCMC`` (after ``run``), ``pyro.infer.MCMC``, or an AISResult.
        ais: optionally an AIS result to store beside an MCMC run (groups ``ais`` and
            ``ais_particles``), so one file holds both.
    """
    if isinstance(obj, AISResult):
        groups = _ais_groups(obj)
    else:
        groups = _mcmc_groups(obj)
        if groups is None:
            raise TypeError(
                "to_arviz expects a numpyro/pyro MCMC object or an ebmppl AISResult, "
                f"got {type(obj).__module__}.{type(obj).__name__}"
            )
    if ais is not None:
        extra = _ais_groups(ais)
        extra.pop("attrs")
        groups.update(extra)
    return _idata_from_groups(groups)


def from_netcdf(path):
    """Read an InferenceData written by ebmppl (or ArviZ) from ``path``.

    Raises ValueError with a clear message when the file is not an ArviZ netCDF file.
    """
    az = _az()
    try:
        return az.from_netcdf(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # netCDF/HDF5 libraries raise many types
        raise ValueError(
            f"{path} is not an ArviZ/ebmppl netCDF file ({type(err).__name__}: {err})"
        ) from err


def ais_result_from_arviz(idata) -> AISResult:
    """Rebuild an :class:`~ebmppl.AISResult` from the ``ais`` groups of an InferenceData."""
    if "ais" not in idata.groups():
        raise ValueError(f"this InferenceData has no 'ais' group (groups: {idata.groups()})")
    ds = idata["ais"]
    attrs = dict(ds.attrs)
    particles = {}
    if "ais_particles" in idata.groups():
        particles = {k: np.asarray(v) for k, v in idata["ais_particles"].data_vars.items()}
    return AISResult(
        log_z=float(attrs["log_z"]),
        log_z_se=float(attrs["log_z_se"]),
        log_weights=np.asarray(ds["log_weights"]),
        betas=np.asarray(ds["betas"]),
        particles=particles,
        acceptance_rate=np.asarray(ds["acceptance_rate"]),
        step_size=np.asarray(ds["step_size"]),
        ess_trace=np.asarray(ds["ess"]),
        backend=str(attrs.get("backend", "unknown")),
        gradient_evaluations=int(attrs.get("gradient_evaluations", 0)),
        num_dropped=int(attrs.get("num_dropped", 0)),
        info={k: v for k, v in attrs.items() if k not in ("log_z", "log_z_se", "ess", "pareto_khat")},
    )

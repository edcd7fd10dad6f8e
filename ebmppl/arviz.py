"""The one module that talks to ArviZ: conversions of ebmppl results to InferenceData.

It is also the only place that knows which ArviZ generation is installed: 0.x
(``az.InferenceData``, Python 3.11) or 1.x (xarray ``DataTree``, Python >= 3.12). Everything
else goes through :func:`groups`, :func:`group`, :func:`make_idata`, :func:`to_netcdf`,
:func:`from_netcdf` and the report helpers at the end, which return the same data for both.

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

import functools
import warnings
from typing import Any

import numpy as np

from .results import AISResult

__all__ = ["ais_result_from_arviz", "from_netcdf", "to_arviz"]

_FUTURE = r"\s*ArviZ is undergoing a major refactor"


def _az():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FUTURE, category=FutureWarning)
        import arviz as az
    return az


@functools.cache
def generation() -> int:
    """0 for ArviZ 0.x (InferenceData), 1 for ArviZ >= 1 (xarray DataTree)."""
    version = _az().__version__
    return 1 if int(version.split(".")[0]) >= 1 else 0


def make_idata(datasets: dict[str, Any]):
    """Build the installed ArviZ's container (InferenceData or DataTree) from named Datasets."""
    if generation() == 0:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*not .*InferenceData scheme", category=UserWarning
            )
            return _az().InferenceData(**datasets)
    import xarray as xr

    return xr.DataTree.from_dict(dict(datasets))


def is_inference_data(obj) -> bool:
    """Whether ``obj`` is an InferenceData (ArviZ 0.x) or a DataTree (ArviZ 1.x)."""
    name = type(obj).__name__
    return (name == "InferenceData" and callable(getattr(obj, "groups", None))) or (
        name == "DataTree" and hasattr(obj, "children")
    )


def groups(idata) -> list[str]:
    """Names of the groups of an InferenceData/DataTree (e.g. ``["posterior", "energy"]``)."""
    if type(idata).__name__ == "DataTree":
        return [str(k) for k in idata.children]
    return list(idata.groups())


def group(idata, name: str):
    """One group as an ``xarray.Dataset`` (KeyError naming the groups if absent)."""
    if name not in groups(idata):
        raise KeyError(f"no group {name!r}; groups: {groups(idata)}")
    if type(idata).__name__ == "DataTree":
        return idata[name].to_dataset()
    return idata[name]


def arviz_pareto_khat(log_weights) -> float:
    """The installed ArviZ's own PSIS k-hat of importance log weights (shape (N,)).

    ArviZ 1.x's ``psislw`` takes the NEGATED log weights (passing them unchanged gives a bogus
    k-hat); this handles the sign. The two generations also pick the tail differently for
    N > 225 (0.x: ceil(min(0.2 N, 3 sqrt N)); 1.x: floor(3 sqrt N)), so their values differ
    slightly there. ebmppl reports its own :func:`ebmppl.diagnostics.pareto_khat` (the 0.x
    rule), which is therefore identical whichever ArviZ is installed.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    if generation() == 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(_az().psislw(lw.copy())[1])
    from arviz_stats.base import array_stats

    return float(array_stats.psislw(-lw)[1])


def to_netcdf(idata, path) -> None:
    """Write an InferenceData/DataTree to a netCDF (HDF5) file."""
    if type(idata).__name__ == "DataTree":
        idata.to_netcdf(str(path), engine="h5netcdf")
    else:
        idata.to_netcdf(str(path))


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


def _idata_from_groups(group_data: dict[str, Any]):
    from . import __version__

    attrs = {"ebmppl_version": __version__, **group_data.pop("attrs", {})}
    datasets = {}
    for name, data in group_data.items():
        if data is None or (isinstance(data, dict) and not data):
            continue
        if isinstance(data, dict):
            data = _dataset(data, sample=name not in ("observed_data",))
        data.attrs.update(_clean_attrs(attrs))
        datasets[name] = data
    return make_idata(datasets)


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
    return {
        "ais": ais_ds,
        "ais_particles": particles,
        "attrs": {"inference_library": result.backend},
    }


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


def replica_exchange_to_arviz(result):
    """InferenceData of a replica-exchange run: beta = 1 draws and a ``replica_exchange`` group."""
    import xarray as xr

    ladder = {
        "betas": (["temperature"], result.betas),
        "acceptance_rate": (["temperature"], result.acceptance_rate),
        "step_size": (["temperature"], result.step_size),
        "mean_log_ratio": (["temperature"], result.mean_log_ratio),
        "swap_rate": (["pair"], result.swap_rate),
    }
    attrs = {
        "log_z": result.log_z,
        "log_z_se": result.log_z_se,
        "log_z_ti": result.log_z_ti,
        "log_z_ti_se": result.log_z_ti_se,
        "method": "replica_exchange",
        **result.info,
    }
    return _idata_from_groups(
        {
            "posterior": dict(result.samples),
            "replica_exchange": xr.Dataset(ladder, attrs=_clean_attrs(attrs)),
            "attrs": {"inference_library": getattr(result, "backend", "numpyro")},
        }
    )


def summary_text(idata, var_names=None) -> str:
    """ArviZ summary table (mean, sd, HDI, MCSE, ESS, R-hat) of the posterior, as text."""
    az = _az()
    return az.summary(idata, var_names=var_names).to_string()


def from_netcdf(path):
    """Read an InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x) written by ebmppl.

    Files written under either ArviZ generation hold the same netCDF groups, so each
    generation reads the other's files. Raises ValueError with a clear message when the file
    is not an ArviZ/ebmppl netCDF file.
    """
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        if generation() == 0:
            idata = _az().from_netcdf(str(path))
        else:
            import xarray as xr

            idata = xr.open_datatree(str(path), engine="h5netcdf").load()
    except Exception as err:
        raise ValueError(
            f"{path} is not an ArviZ/ebmppl netCDF file ({type(err).__name__}: {err})"
        ) from err
    if not groups(idata):
        raise ValueError(f"{path} is a netCDF file without ArviZ groups (no posterior, no ais)")
    return idata


def ais_result_from_arviz(idata) -> AISResult:
    """Rebuild an :class:`~ebmppl.AISResult` from the ``ais`` groups of an InferenceData."""
    if "ais" not in groups(idata):
        raise ValueError(f"this InferenceData has no 'ais' group (groups: {groups(idata)})")
    ds = group(idata, "ais")
    attrs = dict(ds.attrs)
    particles = {}
    if "ais_particles" in groups(idata):
        particles = {k: np.asarray(v) for k, v in group(idata, "ais_particles").data_vars.items()}
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
        info={
            k: v for k, v in attrs.items() if k not in ("log_z", "log_z_se", "ess", "pareto_khat")
        },
    )


_group = group  # the report helpers below use `group` as an argument name

# --- report helpers ---
# Used by ebmppl.report (issue 5): every ArviZ call the reports make goes through these.


def group_arrays(idata, group: str) -> dict[str, np.ndarray]:
    """Return ``{variable: array}`` of one group (empty dict when the group is absent)."""
    if group not in groups(idata):
        return {}
    return {str(k): np.asarray(v) for k, v in _group(idata, group).data_vars.items()}


def group_attrs(idata, group: str) -> dict[str, Any]:
    """Return the attributes of one group (empty dict when the group is absent)."""
    if group not in groups(idata):
        return {}
    return dict(_group(idata, group).attrs)


class _QuietArviZ:
    """Silence ArviZ's shape-validation log lines and its warnings inside a block."""

    def __enter__(self):
        import logging

        # ArviZ logs through its own Logger("arviz") instance, not logging.getLogger("arviz").
        self._logger = getattr(_az(), "_log", None) or logging.getLogger("arviz")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        self._logger.setLevel(self._level)
        return False


def summary_table(
    idata, group: str = "posterior", hdi_prob: float = 0.94
) -> tuple[list[str], list[str], np.ndarray]:
    """``az.summary`` of one group as plain data: ``(row_labels, columns, values)``.

    Columns: mean, sd, the HDI bounds, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat
    (unrounded; NaN where ArviZ cannot compute a value, e.g. R-hat with one chain).
    """
    if group not in groups(idata) or not _group(idata, group).data_vars:
        return [], [], np.zeros((0, 0))
    az = _az()
    with _QuietArviZ():
        if generation() == 0:
            df = az.summary(idata, group=group, hdi_prob=hdi_prob, round_to="none")
        else:
            df = az.summary(idata, group=group, ci_prob=hdi_prob, ci_kind="hdi", round_to=None)
            # ArviZ 1.x names the interval "hdi94_lb"/"hdi94_ub"; use the 0.x names.
            lo, hi = f"hdi_{100 * (1 - hdi_prob) / 2:g}%", f"hdi_{100 * (1 + hdi_prob) / 2:g}%"
            df = df.rename(
                columns={
                    c: lo if str(c).endswith("_lb") else hi if str(c).endswith("_ub") else c
                    for c in df.columns
                }
            )
    values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    return [str(i) for i in df.index], [str(c) for c in df.columns], values


def bfmi(idata) -> np.ndarray | None:
    """E-BFMI per chain, or None without ``sample_stats.energy``.

    ``sum_t (E_t - E_{t-1})^2 / (n var(E))`` per chain (Betancourt 2016), computed here in
    NumPy so that both ArviZ generations give the same numbers (it equals ``az.bfmi`` of 0.x).
    """
    stats = group_arrays(idata, "sample_stats")
    if "energy" not in stats:
        return None
    energy = np.asarray(stats["energy"], dtype=np.float64)
    num = np.square(np.diff(energy, axis=1)).sum(axis=1) / energy.shape[1]
    return num / np.var(energy, axis=1)


def _plot_subset(idata, max_vars: int, max_components: int):
    """A small InferenceData (posterior + sample_stats) with at most ``max_vars`` variables and
    ``max_components`` entries along each extra dimension, for legible plots."""
    import xarray as xr

    post = _group(idata, "posterior")
    names = [n for n in post.data_vars if np.issubdtype(post[n].dtype, np.number)][:max_vars]
    ds = post[names]
    extra = {d: slice(0, max_components) for d in ds.dims if d not in ("chain", "draw")}
    ds = ds.isel(extra)
    parts = {"posterior": xr.Dataset(ds.data_vars, attrs=dict(ds.attrs))}
    if "sample_stats" in groups(idata):
        parts["sample_stats"] = _group(idata, "sample_stats")
    with _QuietArviZ():
        return make_idata(parts)


def _num_panels(idata) -> int:
    post = _group(idata, "posterior")
    return int(sum(np.prod(v.shape[2:], dtype=int) for v in post.data_vars.values()))


def plot_trace_png(idata, *, max_vars: int = 6, max_components: int = 4) -> bytes | None:
    """Trace plot (density and trace per variable, divergences marked) as PNG bytes."""
    from ._report_plots import figure_png, new_figure

    if "posterior" not in groups(idata) or not _group(idata, "posterior").data_vars:
        return None
    sub = _plot_subset(idata, max_vars, max_components)
    if generation() == 1:
        return _trace_png_plain(sub)
    nvars = len(sub["posterior"].data_vars)
    fig = new_figure(10, 2.0 * nvars + 0.5)
    axes = fig.subplots(nvars, 2, squeeze=False)
    az = _az()
    with _QuietArviZ():
        az.plot_trace(sub, axes=axes, show=False)
    fig.tight_layout()
    return figure_png(fig)


def plot_rank_png(idata, *, max_vars: int = 6, max_components: int = 2) -> bytes | None:
    """Rank plots (one panel per scalar component, bars per chain) as PNG bytes."""
    from ._report_plots import figure_png, new_figure

    if "posterior" not in groups(idata) or not _group(idata, "posterior").data_vars:
        return None
    sub = _plot_subset(idata, max_vars, max_components)
    if generation() == 1:
        return _rank_png_plain(sub)
    num = _num_panels(sub)
    cols = min(num, 3)
    rows = -(-num // cols)
    fig = new_figure(3.4 * cols, 2.4 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[num:]:
        ax.set_visible(False)
    az = _az()
    with _QuietArviZ():
        az.plot_rank(sub, ax=axes[:num], show=False)
    fig.tight_layout()
    return figure_png(fig)


def plot_energy_png(idata) -> bytes | None:
    """``az.plot_energy`` (marginal energy vs energy transition, with E-BFMI) as PNG bytes."""
    from ._report_plots import figure_png, new_figure

    if "energy" not in group_arrays(idata, "sample_stats"):
        return None
    if generation() == 1:
        return _energy_png_plain(idata)
    fig = new_figure(6, 4)
    ax = fig.subplots()
    az = _az()
    with _QuietArviZ():
        az.plot_energy(idata, ax=ax, show=False)
    fig.tight_layout()
    return figure_png(fig)


# Plain-matplotlib versions used with ArviZ 1.x (whose plotting lives in arviz-plots).
def _components(idata):
    post = _group(idata, "posterior")
    for name, da in post.data_vars.items():
        arr = np.asarray(da, dtype=np.float64)
        flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
        for j in range(flat.shape[2]):
            label = name if flat.shape[2] == 1 else f"{name}[{j}]"
            yield label, flat[:, :, j]


def _trace_png_plain(idata) -> bytes:
    from ._report_plots import figure_png, new_figure

    comps = list(_components(idata))
    fig = new_figure(10, 1.8 * len(comps) + 0.5)
    axes = fig.subplots(len(comps), 2, squeeze=False)
    for (label, x), (ax_d, ax_t) in zip(comps, axes, strict=True):
        for c in range(x.shape[0]):
            ax_d.hist(x[c], bins=40, histtype="step", density=True)
            ax_t.plot(x[c], lw=0.5)
        ax_d.set_title(label)
        ax_t.set_title(label)
    fig.tight_layout()
    return figure_png(fig)


def _rank_png_plain(idata) -> bytes:
    from scipy.stats import rankdata

    from ._report_plots import figure_png, new_figure

    comps = list(_components(idata))
    cols = min(len(comps), 3)
    rows = -(-len(comps) // cols)
    fig = new_figure(3.4 * cols, 2.4 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(comps) :]:
        ax.set_visible(False)
    for (label, x), ax in zip(comps, axes, strict=False):
        ranks = rankdata(x.reshape(-1)).reshape(x.shape)
        for c in range(x.shape[0]):
            ax.hist(ranks[c], bins=20, histtype="step")
        ax.set_title(f"rank: {label}")
    fig.tight_layout()
    return figure_png(fig)


def _energy_png_plain(idata) -> bytes:
    from ._report_plots import figure_png, new_figure

    energy = np.asarray(group_arrays(idata, "sample_stats")["energy"], dtype=np.float64)
    fig = new_figure(6, 4)
    ax = fig.subplots()
    ax.hist(
        (energy - energy.mean()).reshape(-1),
        bins=40,
        alpha=0.5,
        density=True,
        label="marginal energy",
    )
    ax.hist(
        np.diff(energy, axis=1).reshape(-1),
        bins=40,
        alpha=0.5,
        density=True,
        label="energy transition",
    )
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)

"""The same assertions whichever ArviZ generation is installed (0.x InferenceData, 1.x DataTree).

CI runs this file under Python 3.11 (ArviZ 0.x) and Python 3.12 (ArviZ 1.x).
``tests/data/run_arviz0.nc`` was written by ebmppl under ArviZ 0.23 (NUTS + AIS on the
``gaussian2`` problem); both generations must read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ebmppl
from ebmppl import arviz as ea
from ebmppl import diagnostics

DATA = Path(__file__).parent / "data" / "run_arviz0.nc"
# Written alongside the file (log Z, se and k-hat of its AIS run, from ebmppl's own code).
LOG_Z, LOG_Z_SE, KHAT = -3.120621596632733, 0.1679101973023556, 0.17542878994624683


def test_reads_a_file_written_under_arviz_0x():
    idata = ea.from_netcdf(DATA)
    assert set(ea.groups(idata)) == {
        "posterior",
        "sample_stats",
        "energy",
        "ais",
        "ais_particles",
    }
    assert ea.group(idata, "posterior")["x"].shape == (2, 50, 2)
    assert ea.group(idata, "energy")["E"].dims == ("chain", "draw")
    assert {"lp", "energy", "diverging", "tree_depth", "step_size"} <= set(
        ea.group(idata, "sample_stats").data_vars
    )
    ais = ea.group(idata, "ais")
    assert ais.attrs["log_z"] == LOG_Z and ais.attrs["log_z_se"] == LOG_Z_SE
    res = ea.ais_result_from_arviz(idata)
    assert res.log_z == LOG_Z
    # k-hat is ebmppl's own computation: identical to 1e-10 on every ArviZ generation
    assert diagnostics.pareto_khat(ais["log_weights"].values) == pytest.approx(KHAT, abs=1e-10)
    assert res.pareto_khat == pytest.approx(KHAT, abs=1e-10)


def test_round_trip_and_report_verdict_are_generation_independent(tmp_path):
    idata = ea.from_netcdf(DATA)
    path = tmp_path / "again.nc"
    ea.to_netcdf(idata, path)
    back = ea.from_netcdf(path)
    assert set(ea.groups(back)) == set(ea.groups(idata))
    np.testing.assert_array_equal(
        ea.group(back, "ais")["log_weights"].values, ea.group(idata, "ais")["log_weights"].values
    )
    rep = ebmppl.report(back)
    statuses = {c.title: c.status for c in rep.checks}
    # The verdict recorded under ArviZ 0.23; ArviZ 1.x must give exactly the same one.
    # (The run is tiny: 2 x 50 NUTS draws and 64 particles, so several checks fail.)
    assert statuses == {
        "R-hat (max)": "fail",
        "bulk ESS (min)": "fail",
        "tail ESS (min)": "fail",
        "divergences": "pass",
        "E-BFMI": "pass",
        "tree depth saturation": "pass",
        "Pareto k-hat of final weights": "pass",
        "ESS of final weights": "fail",
        "standard error of log Z": "pass",
        "dropped particles": "pass",
        "per-step HMC acceptance": "pass",
        "log Z against N": "pass",
    }


def test_not_a_netcdf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.nc"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not an ArviZ/ebmppl netCDF file"):
        ea.from_netcdf(bad)
    with pytest.raises(FileNotFoundError):
        ea.from_netcdf(tmp_path / "missing.nc")


def test_reads_a_file_written_under_arviz_1x():
    """``run_arviz1.nc``: the same run written by ebmppl under ArviZ 1.3 (Python 3.12)."""
    idata = ea.from_netcdf(DATA.with_name("run_arviz1.nc"))
    assert set(ea.groups(idata)) == {"posterior", "sample_stats", "energy", "ais", "ais_particles"}
    assert ea.group(idata, "posterior")["x"].shape == (2, 50, 2)
    res = ea.ais_result_from_arviz(idata)
    # written with another JAX version: equal to float32 round-off, not bit for bit
    assert res.log_z == pytest.approx(LOG_Z, abs=1e-6)
    assert res.pareto_khat == pytest.approx(KHAT, abs=1e-5)

"""Diagnostic reports (issue 5): checks, sections, HTML, compare, CLI exit codes.

Runs from both backends are made once per backend and shared by the tests (module cache).
Synthetic inputs (heavy-tailed weights, broken chains) pin the failing checks exactly.
"""

from __future__ import annotations

import base64
import math
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest

import ebmppl
from ebmppl import problems
from ebmppl._report_cli import main as cli_main
from ebmppl.arviz import _idata_from_groups, from_netcdf
from ebmppl.reporting import (
    KHAT_GUIDE,
    THRESHOLDS,
    Check,
    Comparison,
    Report,
    Threshold,
    compare,
    report,
    subsample_log_z,
)
from ebmppl.results import AISResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_RUNS: dict[str, SimpleNamespace] = {}


@pytest.fixture
def runs(backend):
    """AIS on the mixture with 2 steps (fails) and 100 steps (passes), and a short NUTS run."""
    if backend.NAME not in _RUNS:
        model = backend.problem_model(problems.mixture())
        bad = backend.run_ais(model, 0, num_particles=512, num_steps=2)
        good = backend.run_ais(model, 0, num_particles=512, num_steps=100)
        mcmc, _ = backend.run_nuts(
            backend.problem_model(problems.gaussian(2)), 0, num_warmup=100, num_samples=100
        )
        _RUNS[backend.NAME] = SimpleNamespace(bad=bad, good=good, mcmc=mcmc)
    return _RUNS[backend.NAME]


class _ReportParser(HTMLParser):
    """Collects what the tests look at in a report's HTML."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.checks: dict[str, str] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self.h1: list[str] = []
        self._in_h1 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections[a["id"]] = a
        if tag == "tr" and "data-check" in a:
            self.checks[a["data-check"]] = a["data-status"]
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            val = a.get(key)
            if val and not val.startswith(("data:", "#")):
                self.external.append(val)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        self._in_h1 = tag == "h1"

    def handle_data(self, data):
        if self._in_h1:
            self.h1.append(data)

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False


def parse_html(text: str) -> _ReportParser:
    p = _ReportParser()
    p.feed(text)
    p.close()
    return p


def assert_self_contained(parsed: _ReportParser, min_images: int) -> None:
    assert not parsed.external, f"report refers to outside resources: {parsed.external}"
    assert len(parsed.images) >= min_images
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def no_open_pyplot_figures() -> bool:
    plt = sys.modules.get("matplotlib.pyplot")
    return plt is None or plt.get_fignums() == []


def heavy_tailed_result(n: int = 1000, seed: int = 0) -> AISResult:
    """Log weights log(Pareto(alpha=1.2)): tail index k = 1/1.2 ~ 0.83 > 0.7."""
    rng = np.random.default_rng(seed)
    lw = np.log(rng.pareto(1.2, n) + 1.0)
    steps = 5
    return AISResult.from_log_weights(
        lw,
        betas=np.linspace(0.0, 1.0, steps + 1),
        particles={"x": rng.normal(size=(n, 2))},
        acceptance_rate=np.full(steps, 0.8),
        step_size=np.full(steps, 0.3),
        ess_trace=np.linspace(n, 50, steps),
        backend="numpyro",
        info={"schedule": "linear", "num_dropped_per_step": np.zeros(steps, int)},
    )


# --- reports from real runs, both backends ------------------------------------------------
def test_ais_too_few_steps_fails(backend, runs, tmp_path):
    path = tmp_path / "bad.html"
    rep = report(runs.bad, path)
    assert isinstance(rep, Report)
    assert rep.status == "fail"
    ess = rep.check("ais.ess")
    assert ess.status == "fail" and ess.value < THRESHOLDS["ais_ess"].fail
    assert "num_steps" in ess.fix
    assert f"< {THRESHOLDS['ais_ess'].fail}" in ess.message
    khat = rep.check("ais.pareto_khat")
    assert khat.threshold == "warn > 0.5, fail > 0.7"
    assert khat.value == pytest.approx(runs.bad.pareto_khat)

    text = str(rep)
    assert text.startswith(rep.title)
    assert "Verdict: FAIL" in text and KHAT_GUIDE in text
    assert "fix: " in text

    parsed = parse_html(path.read_text(encoding="utf-8"))
    assert parsed.sections["verdict"]["data-status"] == "fail"
    assert parsed.checks["ais.ess"] == "fail"
    assert set(parsed.checks) == {c.name for c in rep.checks}
    for title in (
        "AIS estimate",
        "Importance weights",
        "log Z against number of particles",
        "Annealing schedule and per-step statistics",
        "AIS posterior (weighted particles)",
    ):
        assert rep.section(title).anchor in parsed.sections
    assert "summary" in parsed.sections
    # histogram, subsampling curve, schedule, per-step statistics
    assert_self_contained(parsed, min_images=4)
    assert no_open_pyplot_figures()


def test_ais_enough_steps_passes(backend, runs):
    rep = report(runs.good, plots=False)
    assert not rep.failed, rep.verdict_text()
    assert rep.check("ais.pareto_khat").status == "pass"
    assert rep.check("ais.ess").status == "pass"
    assert rep.check("ais.dropped").status == "pass"
    assert not any(s.figures for s in rep.sections)
    md = rep.to_markdown()
    assert md.startswith(f"# {rep.title}")
    assert "| PASS | Pareto k-hat of final weights |" in md
    curve = rep.section("log Z against number of particles").tables[0]
    assert curve.column("N") == [8, 16, 32, 64, 128, 256, 512]
    assert curve.column("mean log Z")[-1] == pytest.approx(runs.good.log_z)


def test_mcmc_report(backend, runs, tmp_path):
    path = tmp_path / "mcmc.html"
    rep = report(runs.mcmc, path)
    names = {c.name for c in rep.checks}
    assert {
        "mcmc.r_hat",
        "mcmc.ess_bulk",
        "mcmc.ess_tail",
        "mcmc.divergences",
        "mcmc.e_bfmi",
        "mcmc.tree_depth",
    } <= names
    assert rep.check("mcmc.divergences").status == "pass"
    assert rep.check("mcmc.r_hat").status != "fail"
    summary = rep.section("Posterior summary").tables[0]
    assert summary.column("parameter") == ["x[0]", "x[1]"]
    for col in ("mean", "sd", "hdi_3%", "hdi_97%", "r_hat", "ess_bulk", "ess_tail", "mcse_mean"):
        assert col in summary.columns
    factors = rep.section("Energy factors")
    assert factors.tables[0].column("factor") == ["E"]
    parsed = parse_html(path.read_text(encoding="utf-8"))
    for title in (
        "Posterior summary",
        "Sampler diagnostics",
        "Trace and rank plots",
        "Energy (E-BFMI)",
        "Energy factors",
    ):
        assert rep.section(title).anchor in parsed.sections
    # trace, rank, energy, energy-factor traces
    assert_self_contained(parsed, min_images=4)
    assert no_open_pyplot_figures()
    assert "ebmppl-report" in rep._repr_html_()


def test_netcdf_report_and_cli(backend, runs, tmp_path, capsys):
    nc = tmp_path / "run.nc"
    ebmppl.to_arviz(runs.mcmc, ais=runs.bad).to_netcdf(str(nc))
    rep = report(from_netcdf(str(nc)), plots=False)
    names = {c.name for c in rep.checks}
    assert "mcmc.r_hat" in names and "ais.pareto_khat" in names
    assert rep.check("ais.ess").status == "fail"
    assert rep.check("ais.pareto_khat").value == pytest.approx(runs.bad.pareto_khat)
    assert rep.section("AIS estimate").tables[0].records()[0]["value"] == pytest.approx(
        runs.bad.log_z
    )

    out = tmp_path / "report.html"
    assert cli_main([str(nc), "-o", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "Verdict: FAIL" in printed and "ESS of final weights" in printed
    assert parse_html(out.read_text(encoding="utf-8")).checks["ais.ess"] == "fail"
    assert cli_main([str(nc), "-o", str(out), "--no-plots", "--strict"]) == 1


# --- synthetic inputs: exact failing checks -------------------------------------------------
def test_heavy_tailed_weights_fail_khat():
    res = heavy_tailed_result()
    assert res.pareto_khat > 0.7
    rep = report(res, plots=False)
    khat = rep.check("ais.pareto_khat")
    assert khat.status == "fail"
    assert (
        khat.message.startswith(f"k-hat {res.pareto_khat:.3g} > 0.7:") and "> 0.7" in khat.message
    )
    assert "increase num_steps or use an adaptive schedule" in khat.fix
    assert rep.check("ais.subsampling").value > 0  # log Z still rising with N
    assert rep.status == "fail"


def test_broken_chains_fail_mcmc_checks():
    rng = np.random.default_rng(1)
    chains, draws = 2, 200
    x = rng.normal(size=(chains, draws)) + np.array([[0.0], [3.0]])  # chains disagree
    diverging = np.zeros((chains, draws), bool)
    diverging[0, :12] = True
    energy = np.cumsum(rng.normal(size=(chains, draws)), axis=1)  # random walk: tiny E-BFMI
    depth = np.full((chains, draws), 3)
    depth[1, :5] = 10
    idata = _idata_from_groups(
        {
            "posterior": {"x": x},
            "sample_stats": {"diverging": diverging, "energy": energy, "tree_depth": depth},
        }
    )
    rep = report(idata, plots=False)
    assert rep.check("mcmc.r_hat").status == "fail"
    assert "> 1.05" in rep.check("mcmc.r_hat").message
    assert "run longer chains" in rep.check("mcmc.r_hat").fix
    div = rep.check("mcmc.divergences")
    assert div.status == "fail" and div.message.startswith("12 divergent transitions")
    assert div.threshold == "warn > 0%, fail > 1% of draws"
    assert "target_accept" in div.fix
    assert rep.check("mcmc.e_bfmi").status == "fail"
    tree = rep.check("mcmc.tree_depth")
    assert tree.status == "warn" and tree.value == pytest.approx(5 / 400)
    assert rep.status == "fail"


def test_later_issue_keys_shown_when_present():
    base = heavy_tailed_result(200)
    assert not any(
        c.name in ("ais.replicas", "ais.bdmc_gap") for c in report(base, plots=False).checks
    )
    info = {
        **base.info,
        "replica_log_z": np.array([1.0, 1.1, 0.9, 1.05]),
        "replica_log_z_se": np.array([0.01, 0.01, 0.01, 0.01]),
        "bdmc_gap": 0.3,
        "resampled": np.array([False, True, False, True, False]),
    }
    res = AISResult(
        log_z=base.log_z,
        log_z_se=base.log_z_se,
        log_weights=base.log_weights,
        betas=base.betas,
        particles=base.particles,
        acceptance_rate=base.acceptance_rate,
        step_size=base.step_size,
        ess_trace=base.ess_trace,
        backend="pyro",
        info=info,
    )
    rep = report(res)
    assert rep.check("ais.replicas").status == "fail"  # spread ~0.09 vs se 0.01
    assert rep.check("ais.bdmc_gap").status == "pass"
    assert rep.section("Replicas").figures
    assert "2 resampling events." in rep.section("Annealing schedule and per-step statistics").notes
    assert rep.section("BDMC gap")


# --- compare ------------------------------------------------------------------------------
def test_compare_propagates_standard_errors():
    cmp = compare({"b": (-12.0, 0.4), "a": (-10.0, 0.3), "c": (-11.0, 0.0)})
    assert isinstance(cmp, Comparison)
    assert cmp.names == ("a", "c", "b") and cmp.best == "a"
    assert cmp.log_bayes_factor("a", "b") == pytest.approx((2.0, 0.5))  # sqrt(.3^2 + .4^2)
    assert cmp.log_bayes_factor("b", "c") == pytest.approx((-1.0, 0.4))
    table = cmp.table
    assert table.column("model") == ["a", "c", "b"]
    assert table.column("log BF (best / this)") == [None, pytest.approx(1.0), pytest.approx(2.0)]
    assert table.column("se (log BF)") == [None, pytest.approx(0.3), pytest.approx(0.5)]
    assert "k-hat" not in table.columns
    assert "2 ± 0.5" in cmp.pairwise.to_text()
    assert "| a |" in cmp.to_markdown()
    assert "<table>" in cmp.to_html()

    res = heavy_tailed_result(500)
    cmp2 = compare({"heavy": res, "other": (res.log_z - 3.0, 0.1)})
    value, se = cmp2.log_bayes_factor("heavy", "other")
    assert value == pytest.approx(3.0)
    assert se == pytest.approx(math.sqrt(res.log_z_se**2 + 0.01))
    assert cmp2.table.column("k-hat")[0] == pytest.approx(res.pareto_khat)

    rep = report(cmp2)
    assert rep.check("compare.reliability.heavy").status == "fail"
    assert rep.check("compare.resolution").value == pytest.approx(value / se)
    assert rep.section("Model comparison").figures

    combined = report(res, comparison=cmp, plots=False)
    assert combined.check("compare.resolution").status == "pass"  # 1.0 / 0.3 > 2
    assert combined.section("Model comparison").tables[0] == cmp.table
    assert (
        report({"a": (0.0, 0.5), "b": (0.2, 0.5)}, plots=False).check("compare.resolution").status
        == "warn"
    )

    with pytest.raises(ValueError, match="finite log_z"):
        compare({"a": (float("nan"), 0.1)})
    with pytest.raises(TypeError, match="AISResult or a"):
        compare({"a": "oops"})


# --- pieces ---------------------------------------------------------------------------------
def test_thresholds_and_checks():
    t = THRESHOLDS["pareto_khat"]
    assert (t.status(0.3), t.status(0.6), t.status(0.9)) == ("pass", "warn", "fail")
    low = Threshold(warn=400, fail=100, higher_is_worse=False)
    assert (low.status(500), low.status(200), low.status(50)) == ("pass", "warn", "fail")
    assert low.describe() == "warn < 400, fail < 100"
    assert THRESHOLDS["divergence_fraction"].describe(of="draws") == "warn > 0%, fail > 1% of draws"
    with pytest.raises(ValueError):
        Check("x", "ok", 1.0, "", "")


def test_subsampling_curve():
    lw = np.log(np.random.default_rng(0).pareto(1.2, 1024) + 1.0)
    curve = subsample_log_z(lw, seed=0)
    assert curve.sizes.tolist() == [16, 32, 64, 128, 256, 512, 1024]
    assert curve.mean[-1] == pytest.approx(ebmppl.diagnostics.log_mean_exp(lw))
    assert curve.mean[0] < curve.mean[-1]  # downward bias at small N
    assert np.all(curve.lower <= curve.mean + 1e-12) and np.all(curve.mean <= curve.upper + 1e-12)


def test_cli_exit_codes(tmp_path, capsys):
    nc = tmp_path / "ais.nc"
    ebmppl.to_arviz(heavy_tailed_result(300)).to_netcdf(str(nc))
    out = tmp_path / "r.html"
    assert cli_main([str(nc), "-o", str(out)]) == 0
    assert "Verdict: FAIL" in capsys.readouterr().out
    parsed = parse_html(out.read_text(encoding="utf-8"))
    assert parsed.checks["ais.pareto_khat"] == "fail"
    assert_self_contained(parsed, min_images=4)
    assert cli_main([str(nc), "-o", str(out), "--strict"]) == 1

    assert cli_main([str(tmp_path / "missing.nc")]) == 2
    assert "no such file" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a netCDF file\n")
    assert cli_main([str(text)]) == 2
    assert "not an ArviZ/ebmppl netCDF file" in capsys.readouterr().err
    default_out = cli_main([str(nc), "--no-plots"])
    assert default_out == 0 and (tmp_path / "ais.html").exists()


def test_ebmppl_cli_report_subcommand(tmp_path, capsys):
    cli = pytest.importorskip("ebmppl.cli")
    nc = tmp_path / "ais.nc"
    ebmppl.to_arviz(heavy_tailed_result(200)).to_netcdf(str(nc))
    out = tmp_path / "r.html"
    assert cli.main(["report", str(nc), "-o", str(out), "--no-plots", "--strict"]) == 1
    assert "Verdict: FAIL" in capsys.readouterr().out and out.exists()
    assert cli.main(["report", str(tmp_path / "nope.nc")]) == 2


def test_report_rejects_other_objects():
    with pytest.raises(TypeError, match="report expects"):
        report(object())
    with pytest.raises(TypeError, match="ais must be an AISResult"):
        report(heavy_tailed_result(100), ais=(1.0, 2.0), plots=False)

"""Diagnostic reports for MCMC runs, AIS results and model comparisons (issue 5).

:func:`report` takes a NumPyro/Pyro MCMC run, an :class:`~ebmppl.AISResult`, an InferenceData
written by ebmppl (either backend), a :class:`Comparison` or a dict for :func:`compare`, and
returns a :class:`Report`: a verdict (a list of :class:`Check`, each pass/warn/fail with the
threshold used and a one-line fix), a summary table and sections of tables and figures. A
report prints as text (``str``), renders as Markdown (:meth:`Report.to_markdown`), displays
in Jupyter (``_repr_html_``) and saves as ONE self-contained HTML file (figures embedded as
base64 PNG; matplotlib Agg, nothing is displayed).

Every threshold lives in :data:`THRESHOLDS`; ArviZ is reached only through
:mod:`ebmppl.arviz`.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.special import logsumexp

from . import diagnostics
from .results import AISResult

__all__ = [
    "KHAT_GUIDE",
    "THRESHOLDS",
    "Check",
    "Comparison",
    "Figure",
    "Report",
    "Section",
    "SubsampleCurve",
    "Table",
    "Threshold",
    "compare",
    "report",
    "subsample_log_z",
]

Status = Literal["pass", "warn", "fail"]
_SEVERITY = {"pass": 0, "warn": 1, "fail": 2}


# --- thresholds: the one place they live -------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """Warn and fail limits of one diagnostic.

    ``higher_is_worse=True``: warn when ``value > warn``, fail when ``value > fail``;
    otherwise warn when ``value < warn``, fail when ``value < fail``. Either limit may be None.
    """

    warn: float | None
    fail: float | None
    higher_is_worse: bool = True

    def status(self, value: float) -> Status:
        """Status of ``value`` (NaN fails)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "fail"
        if self.fail is not None and self._beyond(value, self.fail):
            return "fail"
        if self.warn is not None and self._beyond(value, self.warn):
            return "warn"
        return "pass"

    def _beyond(self, value: float, limit: float) -> bool:
        return value > limit if self.higher_is_worse else value < limit

    def limit(self, status: Status) -> float | None:
        """The limit that ``status`` broke (None for pass)."""
        return {"warn": self.warn, "fail": self.fail}.get(status)

    def describe(self, unit: str = "", of: str = "") -> str:
        """E.g. ``"warn > 0.5, fail > 0.7"``; with ``of`` the limits are fractions, shown as
        percentages of it (``"warn > 0%, fail > 10% of particles"``)."""
        op = ">" if self.higher_is_worse else "<"
        parts = [
            f"{name} {op} {f'{lim:.3g}%' if of else _fmt(lim)}{unit}"
            for name, lim in (
                ("warn", self.warn if not of or self.warn is None else 100 * self.warn),
                ("fail", self.fail if not of or self.fail is None else 100 * self.fail),
            )
            if lim is not None
        ]
        return ", ".join(parts) + (f" of {of}" if of and parts else "")


#: Every threshold used by the checks (see each check's ``threshold`` string in a report).
THRESHOLDS: Mapping[str, Threshold] = MappingProxyType(
    {
        # AIS / SMC final weights
        "pareto_khat": Threshold(warn=0.5, fail=0.7),
        "ais_ess": Threshold(warn=None, fail=100, higher_is_worse=False),
        "ais_ess_fraction": Threshold(warn=0.05, fail=None, higher_is_worse=False),
        "log_z_se": Threshold(warn=0.2, fail=1.0),  # nats; the bias of log Z is ~ se^2 / 2
        "dropped_fraction": Threshold(warn=0.0, fail=0.1),
        "min_step_acceptance": Threshold(warn=0.2, fail=0.05, higher_is_worse=False),
        "subsample_rise": Threshold(warn=0.1, fail=None),  # nats, log Z(N) - mean log Z(N/4)
        "replica_spread": Threshold(warn=2.0, fail=4.0),  # sd of replicas / their rms se
        "bdmc_gap": Threshold(warn=0.5, fail=2.0),  # nats between upper and lower bound
        # MCMC
        "r_hat": Threshold(warn=1.01, fail=1.05),
        "ess_bulk": Threshold(warn=400, fail=100, higher_is_worse=False),
        "ess_tail": Threshold(warn=400, fail=100, higher_is_worse=False),
        "divergence_fraction": Threshold(warn=0.0, fail=0.01),
        "e_bfmi": Threshold(warn=0.3, fail=0.2, higher_is_worse=False),
        "tree_depth_saturation": Threshold(warn=0.0, fail=None),  # fraction of draws at max
        # model comparison: |log BF| / se of the top two models
        "bf_resolution": Threshold(warn=2.0, fail=None, higher_is_worse=False),
    }
)

#: The k-hat guide printed with every AIS report.
KHAT_GUIDE = (
    "Pareto k-hat of the final weights: < 0.5 good, 0.5-0.7 ok, > 0.7 unreliable "
    "(the weight variance is effectively infinite; log Z and its se cannot be trusted)."
)

DEFAULT_MAX_TREE_DEPTH = 10  # NumPyro and Pyro NUTS default
HDI_PROB = 0.94
MAX_SUMMARY_ROWS = 40
MAX_AIS_POSTERIOR_ROWS = 20
SUBSAMPLE_REPEATS = 64
SUBSAMPLE_SMALLEST = 64  # the subsampling curve starts at N / 64

# Keys (in AISResult.info or the ``ais`` group) shown when present; added by later issues.
RESAMPLING_KEYS = ("resampled", "resampling", "resample_steps", "resampling_steps")
REPLICA_KEYS = ("replica_log_z", "log_z_replicas")
REPLICA_SE_KEYS = ("replica_log_z_se", "log_z_se_replicas")
BDMC_GAP_KEYS = ("bdmc_gap",)
BDMC_UPPER_KEYS = ("log_z_upper", "bdmc_upper", "log_z_reverse")


# --- formatting --------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    """Format a table cell / number for display (``digits`` significant digits)."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}g}"
    return str(value)


def _num(value: Any) -> str:
    """Format a number inside a message (3 significant digits)."""
    return _fmt(value, 3)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_CSS = """
.ebmppl-report{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;
 font-size:14px;line-height:1.4;color:#222;max-width:1100px}
.ebmppl-report h1{font-size:1.5em;margin:.3em 0}
.ebmppl-report h2{font-size:1.2em;border-bottom:1px solid #ddd;margin-top:1.4em}
.ebmppl-report h3{font-size:1.05em;margin-bottom:.3em}
.ebmppl-report table{border-collapse:collapse;margin:.4em 0 .8em 0}
.ebmppl-report th,.ebmppl-report td{border:1px solid #ddd;padding:3px 7px;text-align:right}
.ebmppl-report th{background:#f4f4f4}
.ebmppl-report td.text,.ebmppl-report th.text{text-align:left}
.ebmppl-report .status-pass{background:#e7f6e7}
.ebmppl-report .status-warn{background:#fff4d6}
.ebmppl-report .status-fail{background:#fde2e2}
.ebmppl-report .badge{font-weight:bold;padding:1px 6px;border-radius:3px}
.ebmppl-report figure{margin:.6em 0}
.ebmppl-report img{max-width:100%}
.ebmppl-report figcaption,.ebmppl-report .note{color:#555;font-size:.92em}
.ebmppl-report nav a{margin-right:.8em}
"""


# --- building blocks -----------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One diagnostic verdict.

    Attributes:
        name: stable identifier, e.g. ``"ais.pareto_khat"`` or ``"mcmc.r_hat"``.
        status: ``"pass"``, ``"warn"`` or ``"fail"``.
        value: the measured value (None when not measurable).
        threshold: the limits used, as text (from :data:`THRESHOLDS`).
        message: one line saying what was measured against which limit.
        fix: one line saying what to do (empty when nothing needs doing).
        label: short human-readable name.
    """

    name: str
    status: Status
    value: Any
    threshold: str
    message: str
    fix: str = ""
    label: str = ""

    def __post_init__(self):
        if self.status not in _SEVERITY:
            raise ValueError(f"status must be 'pass', 'warn' or 'fail', got {self.status!r}")

    @property
    def title(self) -> str:
        return self.label or self.name

    def __str__(self) -> str:
        line = f"[{self.status.upper()}] {self.title}: {self.message} (threshold: {self.threshold})"
        if self.status != "pass" and self.fix:
            line += f"\n       fix: {self.fix}"
        return line


@dataclass(frozen=True)
class Table:
    """A small table: ``columns`` names and ``rows`` of values (formatted when rendered)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    title: str = ""
    note: str = ""

    def __post_init__(self):
        cols = tuple(str(c) for c in self.columns)
        rows = tuple(tuple(r) for r in self.rows)
        for r in rows:
            if len(r) != len(cols):
                raise ValueError(f"row {r} has {len(r)} cells for {len(cols)} columns")
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "rows", rows)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The values of one column."""
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def _cells(self) -> list[list[str]]:
        return [[_fmt(v) for v in r] for r in self.rows]

    def _text_columns(self) -> list[bool]:
        return [
            all(isinstance(r[i], str) or r[i] is None for r in self.rows) and bool(self.rows)
            for i in range(len(self.columns))
        ]

    def to_text(self) -> str:
        """Plain-text rendering with aligned columns."""
        cells = self._cells()
        widths = [
            max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)
        ]
        is_text = self._text_columns()

        def line(values):
            return "  ".join(
                v.ljust(w) if t else v.rjust(w)
                for v, w, t in zip(values, widths, is_text, strict=True)
            ).rstrip()

        out = [self.title] if self.title else []
        out.append(line(self.columns))
        out.append("  ".join("-" * w for w in widths))
        out += [line(r) for r in cells]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown table."""
        is_text = self._text_columns()
        out = [f"**{_md_escape(self.title)}**", ""] if self.title else []
        out.append("| " + " | ".join(_md_escape(c) for c in self.columns) + " |")
        out.append("|" + "|".join(":---" if t else "---:" for t in is_text) + "|")
        out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in self._cells()]
        if self.note:
            out += ["", _md_escape(self.note)]
        return "\n".join(out)

    def to_html(self, css_class: str = "") -> str:
        """An HTML ``<table>`` (with its title as caption and note below)."""
        is_text = self._text_columns()
        cls = f' class="{css_class}"' if css_class else ""
        parts = [f"<table{cls}>"]
        if self.title:
            parts.append(f"<caption>{html.escape(self.title)}</caption>")
        head = "".join(
            f"<th{' class=text' if t else ''}>{html.escape(c)}</th>"
            for c, t in zip(self.columns, is_text, strict=True)
        )
        parts.append(f"<thead><tr>{head}</tr></thead><tbody>")
        for row in self._cells():
            tds = "".join(
                f"<td{' class=text' if t else ''}>{html.escape(v)}</td>"
                for v, t in zip(row, is_text, strict=True)
            )
            parts.append(f"<tr>{tds}</tr>")
        parts.append("</tbody></table>")
        if self.note:
            parts.append(f'<p class="note">{html.escape(self.note)}</p>')
        return "".join(parts)

    def _repr_html_(self) -> str:
        return f'<div class="ebmppl-report"><style>{_CSS}</style>{self.to_html()}</div>'


@dataclass(frozen=True)
class Figure:
    """A rendered figure: PNG bytes with a title and a caption."""

    title: str
    png: bytes = field(repr=False)
    caption: str = ""

    def data_uri(self) -> str:
        """``data:image/png;base64,...`` for embedding."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def to_html(self) -> str:
        cap = html.escape(self.caption or self.title)
        return (
            f'<figure><img alt="{html.escape(self.title)}" src="{self.data_uri()}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )


Item = str | Table | Figure


@dataclass(frozen=True)
class Section:
    """A titled part of a report: an ordered tuple of notes (str), tables and figures."""

    title: str
    items: tuple[Item, ...] = ()

    @property
    def anchor(self) -> str:
        return _slug(self.title)

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(i for i in self.items if isinstance(i, Table))

    @property
    def figures(self) -> tuple[Figure, ...]:
        return tuple(i for i in self.items if isinstance(i, Figure))

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(i for i in self.items if isinstance(i, str))

    def to_text(self) -> str:
        out = [self.title, "=" * len(self.title)]
        for item in self.items:
            if isinstance(item, Figure):
                out.append(f"[figure: {item.title}]")
            elif isinstance(item, Table):
                out += [item.to_text(), ""]
            else:
                out.append(item)
        return "\n".join(out).rstrip()

    def to_markdown(self, figures: bool = False) -> str:
        out = [f"## {self.title}", ""]
        for item in self.items:
            if isinstance(item, Figure):
                if figures:
                    out.append(f"![{_md_escape(item.title)}]({item.data_uri()})")
                else:
                    out.append(f"*[figure: {_md_escape(item.title)}]*")
            elif isinstance(item, Table):
                out.append(item.to_markdown())
            else:
                out.append(item)
            out.append("")
        return "\n".join(out).rstrip()

    def to_html(self) -> str:
        parts = [f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>']
        for item in self.items:
            if isinstance(item, Figure | Table):
                parts.append(item.to_html())
            else:
                parts.append(f'<p class="note">{html.escape(item)}</p>')
        parts.append("</section>")
        return "".join(parts)


def _checks_table(checks: Sequence[Check]) -> Table:
    return Table(
        ("status", "check", "value", "threshold", "message", "fix"),
        tuple(
            (
                c.status.upper(),
                c.title,
                c.value,
                c.threshold,
                c.message,
                c.fix if c.status != "pass" else "",
            )
            for c in checks
        ),
    )


def _worst(statuses) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__, default="pass")


@dataclass(frozen=True)
class Report:
    """A diagnostic report: verdict (checks), summary table and sections.

    ``str(report)`` is the text form; :meth:`to_markdown`, :meth:`to_html` (a complete,
    self-contained HTML document) and :meth:`save` give the others; Jupyter shows the HTML.
    """

    title: str
    checks: tuple[Check, ...]
    summary: Table
    sections: tuple[Section, ...]

    @property
    def status(self) -> Status:
        """Worst status over the checks (``"pass"`` when there are none)."""
        return _worst(c.status for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "fail")

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == "warn")

    def check(self, name: str) -> Check:
        """The check called ``name`` (e.g. ``"ais.pareto_khat"``)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; checks: {[c.name for c in self.checks]}")

    def section(self, title: str) -> Section:
        """The section with this title (or anchor)."""
        for s in self.sections:
            if title in (s.title, s.anchor):
                return s
        raise KeyError(f"no section {title!r}; sections: {[s.title for s in self.sections]}")

    def verdict_line(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in _SEVERITY}
        return (
            f"Verdict: {self.status.upper()} ({counts['fail']} fail, {counts['warn']} warn, "
            f"{counts['pass']} pass)"
        )

    def verdict_text(self) -> str:
        """The verdict block alone, as text."""
        lines = [self.verdict_line()]
        lines += ["  " + str(c).replace("\n", "\n  ") for c in self.checks]
        return "\n".join(lines)

    def to_text(self) -> str:
        parts = [self.title, "#" * len(self.title), self.verdict_text(), ""]
        parts += [self.summary.to_text(), ""]
        parts += [s.to_text() + "\n" for s in self.sections]
        return "\n".join(parts).rstrip() + "\n"

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return (
            f"Report({self.title!r}, {self.verdict_line()}, "
            f"sections={[s.title for s in self.sections]})"
        )

    def to_markdown(self, figures: bool = False) -> str:
        """Markdown; ``figures=True`` embeds the PNGs as data URIs (large)."""
        parts = [f"# {self.title}", "", f"**{self.verdict_line()}**", ""]
        if self.checks:
            parts += [_checks_table(self.checks).to_markdown(), ""]
        parts += ["## Summary", "", self.summary.to_markdown(), ""]
        parts += [s.to_markdown(figures) + "\n" for s in self.sections]
        return "\n".join(parts).rstrip() + "\n"

    def _body_html(self) -> str:
        status = self.status
        nav = " ".join(
            f'<a href="#{a}">{html.escape(t)}</a>'
            for a, t in [("verdict", "Verdict"), ("summary", "Summary")]
            + [(s.anchor, s.title) for s in self.sections]
        )
        rows = []
        for c in self.checks:
            fix = html.escape(c.fix) if c.status != "pass" else ""
            rows.append(
                f'<tr class="check status-{c.status}" data-check="{html.escape(c.name)}" '
                f'data-status="{c.status}">'
                f'<td class="text"><span class="badge">{c.status.upper()}</span></td>'
                f'<td class="text">{html.escape(c.title)}</td>'
                f"<td>{html.escape(_fmt(c.value))}</td>"
                f'<td class="text">{html.escape(c.threshold)}</td>'
                f'<td class="text">{html.escape(c.message)}</td>'
                f'<td class="text">{fix}</td></tr>'
            )
        checks = (
            '<table class="checks"><thead><tr><th class=text>status</th><th class=text>check'
            "</th><th>value</th><th class=text>threshold</th><th class=text>message</th>"
            "<th class=text>fix</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            if rows
            else '<p class="note">No checks apply to this input.</p>'
        )
        return (
            f'<div class="ebmppl-report"><style>{_CSS}</style>'
            f"<h1>{html.escape(self.title)}</h1><nav>{nav}</nav>"
            f'<section id="verdict" class="verdict" data-status="{status}">'
            f'<h2 class="status-{status}">{html.escape(self.verdict_line())}</h2>{checks}'
            "</section>"
            f'<section id="summary"><h2>Summary</h2>{self.summary.to_html()}</section>'
            + "".join(s.to_html() for s in self.sections)
            + "</div>"
        )

    def _repr_html_(self) -> str:
        return self._body_html()

    def to_html(self) -> str:
        """A complete, self-contained HTML document (figures inlined as base64 PNG)."""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title></head><body>\n"
            + self._body_html()
            + "\n</body></html>\n"
        )

    def save(self, path: str | os.PathLike) -> str:
        """Write :meth:`to_html` to ``path``; returns the path."""
        path = os.fspath(path)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_html())
        return path


# --- model comparison ----------------------------------------------------------------------
def _bf_strength(log_bf: float) -> str:
    """Kass & Raftery (1995) scale, on the natural-log Bayes factor."""
    a = abs(log_bf)
    if a < 1:
        return "barely worth mentioning"
    if a < 3:
        return "positive"
    if a < 5:
        return "strong"
    return "very strong"


@dataclass(frozen=True, eq=False)
class Comparison:
    """log Z of several models and the log Bayes factors between them, sorted by log Z.

    ``log_bayes_factor(a, b) = log Z_a - log Z_b`` with standard error
    ``sqrt(se_a**2 + se_b**2)`` (independent estimates). ``pareto_khat`` and ``ess`` are NaN
    for entries given as ``(log_z, se)``.
    """

    names: tuple[str, ...]
    log_z: np.ndarray
    log_z_se: np.ndarray
    pareto_khat: np.ndarray
    ess: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no model {name!r}; models: {list(self.names)}") from None

    def log_bayes_factor(self, a: str, b: str) -> tuple[float, float]:
        """``(log BF_ab, se)``: log Z_a - log Z_b and its propagated standard error."""
        i, j = self._index(a), self._index(b)
        value = float(self.log_z[i] - self.log_z[j])
        se = float(math.hypot(self.log_z_se[i], self.log_z_se[j]))
        return value, se

    @property
    def best(self) -> str:
        return self.names[0]

    @property
    def table(self) -> Table:
        """One row per model, best first: log Z, se, and log BF of the best over this one."""
        has_ais = bool(np.any(np.isfinite(self.pareto_khat)))
        cols = ["rank", "model", "log Z", "se", "log BF (best / this)", "se (log BF)", "strength"]
        if has_ais:
            cols += ["ESS", "k-hat"]
        rows = []
        for i, name in enumerate(self.names):
            if i == 0:
                bf, se, strength = None, None, "best"
            else:
                bf, se = self.log_bayes_factor(self.best, name)
                strength = _bf_strength(bf)
            row = [i + 1, name, float(self.log_z[i]), float(self.log_z_se[i]), bf, se, strength]
            if has_ais:
                row += [_nan_none(self.ess[i]), _nan_none(self.pareto_khat[i])]
            rows.append(tuple(row))
        return Table(
            tuple(cols),
            tuple(rows),
            title="Model comparison (sorted by log Z)",
            note="log BF = log Z_best - log Z_this (natural log); se = sqrt(se_best^2 + "
            "se_this^2). Strength on the Kass-Raftery scale: < 1 barely worth mentioning, "
            "1-3 positive, 3-5 strong, > 5 very strong.",
        )

    @property
    def pairwise(self) -> Table:
        """log BF of the row model over the column model, ``value ± se``."""
        rows = []
        for a in self.names:
            cells = []
            for b in self.names:
                if a == b:
                    cells.append("")
                else:
                    v, se = self.log_bayes_factor(a, b)
                    cells.append(f"{_num(v)} ± {_num(se)}")
            rows.append((a, *cells))
        return Table(
            ("log BF (row / column)", *self.names),
            tuple(rows),
            title="Pairwise log Bayes factors",
        )

    def checks(self) -> tuple[Check, ...]:
        """Resolution of the top two models, and reliability of each AIS estimate."""
        out = []
        if len(self.names) >= 2:
            t = THRESHOLDS["bf_resolution"]
            v, se = self.log_bayes_factor(self.names[0], self.names[1])
            z = v / se if se > 0 else math.inf
            status = t.status(z)
            out.append(
                Check(
                    "compare.resolution",
                    status,
                    z,
                    f"log BF / se: {t.describe()}",
                    f"{self.names[0]} over {self.names[1]}: log BF {_num(v)} ± {_num(se)} "
                    f"({_num(z)} se)",
                    "the top two models are not resolved: reduce the se of both log Z (more "
                    "particles or annealing steps) before ranking them",
                    "top two models resolved",
                )
            )
        t = THRESHOLDS["pareto_khat"]
        for name, k in zip(self.names, self.pareto_khat, strict=True):
            status = "pass" if np.isnan(k) else t.status(float(k))
            if status != "pass":
                out.append(
                    Check(
                        f"compare.reliability.{name}",
                        status,
                        float(k),
                        f"k-hat: {t.describe()}",
                        f"k-hat {_num(k)} > {_num(t.limit(status))} for {name}: Bayes factors "
                        "involving it are " + ("unreliable" if status == "fail" else "uncertain"),
                        f"rerun {name} with more num_steps or an adaptive schedule",
                        f"log Z of {name} reliable",
                    )
                )
        return tuple(out)

    def section(self, plots: bool = True) -> Section:
        """The comparison as a report section."""
        items: list[Item] = [self.table]
        if len(self.names) >= 2:
            items.append(self.pairwise)
        if plots:
            from . import _report_plots as rp

            items.append(
                Figure(
                    "log Z per model",
                    rp.plot_comparison(self.names, self.log_z, self.log_z_se),
                    "log Z with ± 2 se error bars, best first",
                )
            )
        return Section("Model comparison", tuple(items))

    def to_text(self) -> str:
        parts = [self.table.to_text()]
        if len(self.names) >= 2:
            parts += ["", self.pairwise.to_text()]
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{n}: {_num(z)} ± {_num(s)}"
            for n, z, s in zip(self.names, self.log_z, self.log_z_se, strict=True)
        )
        return f"Comparison({inner})"

    def to_markdown(self) -> str:
        parts = [self.table.to_markdown()]
        if len(self.names) >= 2:
            parts += ["", self.pairwise.to_markdown()]
        return "\n".join(parts)

    def to_html(self) -> str:
        parts = [self.table.to_html()]
        if len(self.names) >= 2:
            parts.append(self.pairwise.to_html())
        return "".join(parts)

    def _repr_html_(self) -> str:
        return f'<div class="ebmppl-report"><style>{_CSS}</style>{self.to_html()}</div>'


def _nan_none(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def compare(results: Mapping[str, Any]) -> Comparison:
    """Compare models by their log Z: log Bayes factors with propagated standard errors.

    Args:
        results: ``{name: AISResult | (log_z, log_z_se) | InferenceData with an ais group}``.

    Returns:
        A :class:`Comparison` sorted by log Z (best first); ``log_bayes_factor(a, b)`` gives
        ``log Z_a - log Z_b`` with se ``sqrt(se_a**2 + se_b**2)``. Printable as text, Markdown
        and HTML; pass it to :func:`report` (alone or as ``comparison=``).
    """
    if _is_idata(results) or not isinstance(results, Mapping) or not results:
        raise TypeError("compare expects a non-empty dict {name: AISResult or (log_z, se)}")
    entries = []
    for name, res in results.items():
        if _is_idata(res):
            from .arviz import ais_result_from_arviz

            res = ais_result_from_arviz(res)
        if isinstance(res, AISResult):
            entries.append((str(name), res.log_z, res.log_z_se, res.pareto_khat, res.ess))
            continue
        try:
            lz, se = res
            lz, se = float(lz), float(se)
        except (TypeError, ValueError):
            raise TypeError(
                f"compare: entry {name!r} must be an AISResult or a (log_z, se) pair, "
                f"got {type(res).__name__}"
            ) from None
        if not math.isfinite(lz) or not se >= 0:
            raise ValueError(
                f"compare: entry {name!r} needs a finite log_z and se >= 0, got ({lz}, {se})"
            )
        entries.append((str(name), lz, se, math.nan, math.nan))
    entries.sort(key=lambda e: -e[1])
    cols = list(zip(*entries, strict=True))
    return Comparison(
        names=tuple(cols[0]),
        log_z=np.asarray(cols[1], dtype=np.float64),
        log_z_se=np.asarray(cols[2], dtype=np.float64),
        pareto_khat=np.asarray(cols[3], dtype=np.float64),
        ess=np.asarray(cols[4], dtype=np.float64),
    )


# --- log Z against the number of particles --------------------------------------------------
class SubsampleCurve(NamedTuple):
    """log Z of random particle subsets: per size, the mean and the 5 % / 95 % quantiles."""

    sizes: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def rise(self, fraction: int = 4) -> float:
        """``log Z(N) - mean log Z(N / fraction)``: how much log Z still grows with N (nats)."""
        n = int(self.sizes[-1])
        target = n // fraction
        hit = np.flatnonzero(self.sizes == target)
        if target < 1 or not hit.size:
            return math.nan
        return float(self.mean[-1] - self.mean[hit[0]])


def subsample_log_z(
    log_weights,
    *,
    num_repeats: int = SUBSAMPLE_REPEATS,
    smallest: int = SUBSAMPLE_SMALLEST,
    seed: int = 0,
) -> SubsampleCurve:
    """log Z estimated from random subsets (without replacement) of N/smallest .. N particles.

    ``log mean exp`` is biased low by about ``var / (2 n)`` at n particles, so the mean
    curve rises with n; a curve still rising steeply at N says the full estimate is biased
    low too (heavy-tailed weights). The last point is the full estimate.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    n = lw.size
    if n < 2:
        raise ValueError("the subsampling curve needs at least 2 particles")
    sizes = sorted({max(1, n // 2**k) for k in range(int(math.log2(smallest)) + 1)})
    rng = np.random.default_rng(seed)
    mean, lower, upper = [], [], []
    for m in sizes:
        if m == n:
            full = float(logsumexp(lw) - math.log(n))
            mean.append(full), lower.append(full), upper.append(full)
            continue
        idx = np.stack([rng.choice(n, m, replace=False) for _ in range(num_repeats)])
        vals = logsumexp(lw[idx], axis=1) - math.log(m)
        vals = np.where(np.isfinite(vals), vals, np.nan)
        if np.all(np.isnan(vals)):
            mean.append(math.nan), lower.append(math.nan), upper.append(math.nan)
            continue
        mean.append(float(np.nanmean(vals)))
        lower.append(float(np.nanquantile(vals, 0.05)))
        upper.append(float(np.nanquantile(vals, 0.95)))
    return SubsampleCurve(np.asarray(sizes), np.asarray(mean), np.asarray(lower), np.asarray(upper))


# --- the report builder -------------------------------------------------------------------
def _is_idata(obj) -> bool:
    from .arviz import is_inference_data

    return is_inference_data(obj)


def _is_mcmc(obj) -> bool:
    mod = type(obj).__module__
    return mod.startswith(("numpyro", "pyro")) and type(obj).__name__ == "MCMC"


def _max_tree_depth(mcmc) -> int | None:
    kernel = getattr(mcmc, "sampler", None) or getattr(mcmc, "kernel", None)
    depth = getattr(kernel, "_max_tree_depth", None)
    if isinstance(depth, tuple):
        depth = depth[-1]
    return int(depth) if depth is not None else None


def _first(mapping: Mapping[str, Any], keys: Sequence[str]):
    for k in keys:
        if k in mapping and mapping[k] is not None:
            return mapping[k]
    return None


class _Builder:
    """Collects checks, summary rows and sections."""

    def __init__(self, plots: bool, seed: int):
        self.plots = plots
        self.seed = seed
        self.checks: list[Check] = []
        self.summary: list[tuple[str, Any]] = []
        self.sections: list[Section] = []
        self.kinds: list[str] = []

    def check(self, name, key, value, message, fix, label, *, unit="", of="", status=None):
        t = THRESHOLDS[key]
        st = status or t.status(value)
        self.checks.append(Check(name, st, value, t.describe(unit, of), message, fix, label))

    def figure(self, items: list, title: str, make, caption: str = "") -> None:
        if not self.plots:
            return
        png = make()
        if png is not None:
            items.append(Figure(title, png, caption))

    # -- AIS ---------------------------------------------------------------------------
    def add_ais(self, res: AISResult) -> None:
        from . import _report_plots as rp

        self.kinds.append(f"AIS ({res.backend})")
        info = dict(res.info)
        n = res.num_particles
        lw = res.log_weights
        finite = np.isfinite(lw)
        ess, khat, se = float(res.ess), float(res.pareto_khat), float(res.log_z_se)

        # checks
        t = THRESHOLDS["pareto_khat"]
        st = t.status(khat) if math.isfinite(khat) else "fail"
        if st == "pass":
            msg = f"k-hat {_num(khat)} <= {_num(t.warn)}: weights well behaved"
        elif math.isfinite(khat):
            msg = f"k-hat {_num(khat)} > {_num(t.limit(st))}: " + (
                "heavy-tailed weights, log Z usable with care"
                if st == "warn"
                else "weight variance effectively infinite, log Z unreliable"
            )
        else:
            msg = "k-hat could not be estimated: too few particles with non-zero weight"
        self.check(
            "ais.pareto_khat",
            "pareto_khat",
            khat,
            msg,
            "increase num_steps or use an adaptive schedule (more HMC moves per step, "
            "num_mcmc_steps, also help)",
            "Pareto k-hat of final weights",
            status=st,
        )

        t_abs, t_rel = THRESHOLDS["ais_ess"], THRESHOLDS["ais_ess_fraction"]
        frac = ess / n
        st = _worst([t_abs.status(ess), t_rel.status(frac)])
        if t_abs.status(ess) == "fail":
            msg = f"ESS {_num(ess)} < {_num(t_abs.fail)} (of {n} particles)"
        elif st != "pass":
            msg = f"ESS {_num(ess)} is {frac:.1%} of N = {n} < {t_rel.warn:.0%}"
        else:
            msg = f"ESS {_num(ess)} of {n} particles ({frac:.0%})"
        self.checks.append(
            Check(
                "ais.ess",
                st,
                ess,
                f"fail < {_num(t_abs.fail)}, warn < {t_rel.warn:.0%} of N",
                msg,
                "use more annealing steps (num_steps) so the weights stay even, or more particles",
                "ESS of final weights",
            )
        )

        t = THRESHOLDS["log_z_se"]
        st = t.status(se) if math.isfinite(se) else "fail"
        self.check(
            "ais.log_z_se",
            "log_z_se",
            se,
            f"se {_num(se)} nats"
            + (f" > {_num(t.limit(st))}" if st != "pass" else "")
            + f"; log Z is biased low by about se^2/2 = {_num(se**2 / 2)}",
            "more particles (se falls as 1/sqrt(N)) or more annealing steps",
            "standard error of log Z",
            unit=" nats",
            status=st,
        )

        dropped = int(res.num_dropped or np.sum(~finite))
        t = THRESHOLDS["dropped_fraction"]
        where = ""
        at, counts = info.get("dropped_at_betas"), info.get("dropped_counts")
        if dropped and at is not None and np.size(at):
            pairs = [f"{int(c)} at beta {_num(float(b))}" for b, c in zip(at, counts, strict=True)]
            more = f" and {len(pairs) - 5} more betas" if len(pairs) > 5 else ""
            where = "; " + ", ".join(pairs[:5]) + more
        sites = info.get("dropped_sites")
        if dropped and sites:
            where += f"; non-finite site(s): {', '.join(map(str, sites))}"
        self.check(
            "ais.dropped",
            "dropped_fraction",
            dropped / n,
            f"{dropped} of {n} particles dropped (non-finite energy, weight 0){where}",
            "make the energy finite wherever the prior puts mass (e.g. clip its input) or "
            "pass a reference= distribution that stays where it is finite",
            "dropped particles",
            of="particles",
        )

        acc = np.asarray(res.acceptance_rate, dtype=np.float64)
        if acc.size and np.any(np.isfinite(acc)):
            i = int(np.nanargmin(acc))
            beta = res.betas[i + 1] if i + 1 < res.betas.size else math.nan
            self.check(
                "ais.acceptance",
                "min_step_acceptance",
                float(acc[i]),
                f"lowest per-step acceptance {_num(float(acc[i]))} at step {i + 1} "
                f"(beta {_num(float(beta))}); mean {_num(float(np.nanmean(acc)))}",
                "the moves stall there: use more annealing steps so the step size can adapt, "
                "a smaller initial step_size, or a lower target_accept",
                "per-step HMC acceptance",
            )

        curve = None
        if n >= 8 and finite.sum() >= 2:
            curve = subsample_log_z(lw, seed=self.seed)
            rise = curve.rise(4)
            if math.isfinite(rise):
                t = THRESHOLDS["subsample_rise"]
                st = t.status(rise)
                self.check(
                    "ais.subsampling",
                    "subsample_rise",
                    rise,
                    f"log Z rises by {_num(rise)} nats from N/4 to N particles"
                    + (
                        f" > {_num(t.warn)}: still biased low (about {_num(rise / 3)} remains at N)"
                        if st != "pass"
                        else ""
                    ),
                    "increase num_steps (flatter weights) or num_particles",
                    "log Z against N",
                    unit=" nats",
                )

        resampled = _first(info, RESAMPLING_KEYS)
        replicas = _first(info, REPLICA_KEYS)
        replica_se = _first(info, REPLICA_SE_KEYS)
        if replicas is not None:
            rz = np.atleast_1d(np.asarray(replicas, dtype=np.float64))
            if rz.size >= 2:
                spread = float(np.std(rz, ddof=1))
                if str(info.get("se_method", "")) == "replicas":
                    # SMC/adaptive runs: the reported se already comes from the replicas;
                    # per-replica weight-based se are known to understate it.
                    self.summary.append(
                        (
                            "log Z se method",
                            f"spread of {rz.size} independent replicas (sd {_num(spread)} nats)",
                        )
                    )
                elif replica_se is not None:
                    rse = np.atleast_1d(np.asarray(replica_se, dtype=np.float64))
                    ref = float(np.sqrt(np.mean(rse**2)))
                    ratio = spread / ref if ref > 0 else math.inf
                    self.check(
                        "ais.replicas",
                        "replica_spread",
                        ratio,
                        f"replicas spread {_num(spread)} nats = {_num(ratio)} x their "
                        f"typical se {_num(ref)}",
                        "the per-replica se understates the error: more annealing steps",
                        "replica spread vs se",
                    )
        gap = _first(info, BDMC_GAP_KEYS)
        upper = _first(info, BDMC_UPPER_KEYS)
        if gap is None and upper is not None:
            gap = float(upper) - res.log_z
        if gap is not None:
            gap = float(np.asarray(gap))
            self.check(
                "ais.bdmc_gap",
                "bdmc_gap",
                gap,
                f"BDMC gap (upper - lower bound) {_num(gap)} nats",
                "more annealing steps until forward and reverse estimates meet",
                "BDMC gap",
                unit=" nats",
            )

        # summary rows
        self.summary += [
            ("log Z", f"{_num(res.log_z)} ± {_num(se)}"),
            ("particles x steps", f"{n} x {res.num_steps}"),
            ("AIS ESS / k-hat", f"{_num(ess)} / {_num(khat)}"),
        ]

        # sections
        est = [
            ("log Z", res.log_z),
            ("standard error (nats)", se),
            ("Jensen bias of log Z ~ se^2/2", se**2 / 2),
            ("ESS of final weights", ess),
            ("ESS / N", frac),
            ("Pareto k-hat", khat),
            ("particles", n),
            ("annealing steps", res.num_steps),
            ("schedule", str(info.get("schedule", ""))),
            ("dropped particles", dropped),
            ("gradient evaluations per particle", int(res.gradient_evaluations)),
            ("backend", res.backend),
        ]
        for key in ("energy_sites", "observed_sites", "latent_sites", "reference"):
            if info.get(key) not in (None, "", ()):
                v = info[key]
                est.append((key.replace("_", " "), ", ".join(v) if isinstance(v, tuple) else v))
        if "wall_time" in info:
            est.append(("wall time (s)", float(info["wall_time"])))
        self.sections.append(
            Section("AIS estimate", (Table(("quantity", "value"), tuple(est)), KHAT_GUIDE))
        )

        items: list[Item] = []
        tail = int(np.ceil(min(0.2 * n, 3.0 * np.sqrt(n))))
        self.figure(
            items,
            "Log-weight histogram",
            lambda: rp.plot_log_weights(lw, tail_size=tail),
            f"final log weights relative to the largest; the {tail} largest form the tail "
            "k-hat is fitted to",
        )
        items.append(
            f"{dropped} of {n} particles dropped; the largest normalised weight is "
            f"{_num(float(np.max(res.normalized_weights)))}."
        )
        self.sections.append(Section("Importance weights", tuple(items)))

        if curve is not None:
            items = [
                (
                    "log Z from random subsets of the particles: the mean rises with N because "
                    "log mean exp is biased low (by about var/(2N)); a curve still rising at N "
                    "means the full estimate is biased low too."
                )
            ]
            self.figure(
                items,
                "log Z against number of particles",
                lambda: rp.plot_subsampling(
                    curve.sizes,
                    curve.mean,
                    curve.lower,
                    curve.upper,
                    log_z=res.log_z,
                    log_z_se=se,
                ),
            )
            items.append(
                Table(
                    ("N", "mean log Z", "5 %", "95 %", "below full estimate"),
                    tuple(
                        (int(s), m, lo, hi, float(curve.mean[-1] - m))
                        for s, m, lo, hi in zip(
                            curve.sizes, curve.mean, curve.lower, curve.upper, strict=True
                        )
                    ),
                    note=f"{SUBSAMPLE_REPEATS} random subsets per size (without replacement).",
                )
            )
            self.sections.append(Section("log Z against number of particles", tuple(items)))

        items = []
        self.figure(items, "Annealing schedule", lambda: rp.plot_schedule(res.betas))
        dropped_steps = _first(info, ("num_dropped_per_step",))
        if dropped_steps is not None:
            dropped_steps = np.asarray(dropped_steps)
            if not np.any(dropped_steps):
                dropped_steps = None
        res_mask = None
        if resampled is not None:
            r = np.asarray(resampled)
            if r.dtype == bool or (r.shape == acc.shape and set(np.unique(r)) <= {0, 1}):
                res_mask = r.astype(bool)
            else:
                res_mask = np.zeros(acc.shape, bool)
                res_mask[r.astype(int)[(r >= 0) & (r < acc.size)]] = True
            items.append(f"{int(res_mask.sum())} resampling events.")
        if acc.size:
            target = info.get("target_accept")
            self.figure(
                items,
                "Per-step statistics",
                lambda: rp.plot_step_stats(
                    acc,
                    res.step_size,
                    res.ess_trace,
                    n,
                    dropped=dropped_steps,
                    resampled=res_mask,
                    target_accept=float(target) if target is not None else None,
                ),
                "mean HMC acceptance, step size and weight ESS after each annealing step",
            )
            qs = np.linspace(0, acc.size - 1, min(acc.size, 6)).round().astype(int)
            items.append(
                Table(
                    ("step", "beta", "acceptance", "step size", "ESS"),
                    tuple(
                        (
                            int(i + 1),
                            float(res.betas[i + 1]),
                            float(acc[i]),
                            float(res.step_size[i]),
                            float(res.ess_trace[i]),
                        )
                        for i in np.unique(qs)
                    ),
                    title="selected steps",
                )
            )
        self.sections.append(Section("Annealing schedule and per-step statistics", tuple(items)))

        if replicas is not None:
            rz = np.atleast_1d(np.asarray(replicas, dtype=np.float64))
            rse = None if replica_se is None else np.atleast_1d(np.asarray(replica_se, float))
            items = [
                Table(
                    ("replica", "log Z", "se"),
                    tuple(
                        (i, float(z), None if rse is None else float(rse[i]))
                        for i, z in enumerate(rz)
                    ),
                )
            ]
            self.figure(items, "Replica spread", lambda: rp.plot_replicas(rz, rse))
            self.sections.append(Section("Replicas", tuple(items)))
        if gap is not None:
            self.sections.append(
                Section(
                    "BDMC gap",
                    (
                        (
                            f"Forward AIS (lower bound) {_num(res.log_z)}; gap to the reverse "
                            f"(upper) bound {_num(gap)} nats. On simulated data the true log Z "
                            "lies in between."
                        ),
                    ),
                )
            )

        post = self._ais_posterior(res)
        if post is not None:
            self.sections.append(Section("AIS posterior (weighted particles)", (post,)))

    @staticmethod
    def _ais_posterior(res: AISResult) -> Table | None:
        if not res.particles or not np.any(np.isfinite(res.log_weights)):
            return None
        rows = []
        for name, arr in res.particles.items():
            arr = np.asarray(arr, dtype=np.float64)
            flat = arr.reshape(arr.shape[0], -1)
            mean, mcse = diagnostics.weighted_expectation(res.log_weights, flat)
            second, _ = diagnostics.weighted_expectation(res.log_weights, flat**2)
            sd = np.sqrt(np.maximum(second - mean**2, 0.0))
            shape = arr.shape[1:]
            for j in range(flat.shape[1]):
                label = (
                    name
                    if not shape
                    else f"{name}[{','.join(map(str, np.unravel_index(j, shape)))}]"
                )
                rows.append((label, float(mean[j]), float(sd[j]), float(mcse[j])))
        total = len(rows)
        note = "self-normalised importance estimates from the final particles"
        if total > MAX_AIS_POSTERIOR_ROWS:
            rows = rows[:MAX_AIS_POSTERIOR_ROWS]
            note += f"; first {MAX_AIS_POSTERIOR_ROWS} of {total} components shown"
        return Table(("parameter", "mean", "sd", "mcse"), tuple(rows), note=note)

    # -- MCMC ----------------------------------------------------------------------------
    def add_mcmc(self, idata, max_tree_depth: int | None) -> None:
        from . import _report_plots as rp
        from . import arviz as eaz

        post = eaz.group_arrays(idata, "posterior")
        stats = eaz.group_arrays(idata, "sample_stats")
        attrs = eaz.group_attrs(idata, "posterior")
        first = next(iter(post.values()))
        chains, draws = first.shape[:2]
        lib = attrs.get("inference_library", "")
        sampler = attrs.get("sampler", "")
        self.kinds.append(" ".join(x for x in (str(lib), str(sampler), "MCMC") if x))
        self.summary += [
            ("chains x draws", f"{chains} x {draws}"),
            ("parameters", ", ".join(post)),
        ]

        labels, cols, vals = eaz.summary_table(idata, "posterior", HDI_PROB)
        summary_items: list[Item] = []
        if labels:
            col = {c: i for i, c in enumerate(cols)}
            self._mcmc_param_checks(labels, col, vals, chains)
            show = ["mean", "sd"] + [c for c in cols if c.startswith("hdi_")]
            show += ["r_hat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_sd"]
            show = [c for c in show if c in col]
            rows = [(lab, *(float(vals[i, col[c]]) for c in show)) for i, lab in enumerate(labels)]
            note = f"ArviZ summary, HDI probability {HDI_PROB}."
            if len(rows) > MAX_SUMMARY_ROWS:
                note += f" First {MAX_SUMMARY_ROWS} of {len(rows)} rows shown."
                rows = rows[:MAX_SUMMARY_ROWS]
            summary_items.append(Table(("parameter", *show), tuple(rows), note=note))
        self.sections.append(Section("Posterior summary", tuple(summary_items)))

        diag_items: list[Item] = []
        notes = []
        total = chains * draws
        div = stats.get("diverging")
        if div is not None:
            div = np.asarray(div, dtype=bool)
            count = int(div.sum())
            self.check(
                "mcmc.divergences",
                "divergence_fraction",
                count / total,
                f"{count} divergent transitions of {total} draws",
                "raise target_accept (e.g. 0.95) or reparametrise (non-centred)",
                "divergences",
                of="draws",
            )
        else:
            notes.append("No divergence information in sample_stats.")
        bf = eaz.bfmi(idata)
        if bf is not None:
            low = float(np.min(bf))
            t = THRESHOLDS["e_bfmi"]
            st = t.status(low)
            self.check(
                "mcmc.e_bfmi",
                "e_bfmi",
                low,
                f"lowest E-BFMI {_num(low)}"
                + (f" < {_num(t.limit(st))}" if st != "pass" else "")
                + f" (per chain: {', '.join(_num(b) for b in bf)})",
                "momentum resampling explores the energy poorly: reparametrise, or use a "
                "dense mass matrix",
                "E-BFMI",
            )
        else:
            notes.append(
                "E-BFMI not available: sample_stats has no energy (NumPyro: run with "
                "extra_fields=ebmppl.numpyro.NUTS_EXTRA_FIELDS; Pyro: use ebmppl.pyro.NUTS)."
            )
        depth = stats.get("tree_depth")
        max_depth = max_tree_depth or DEFAULT_MAX_TREE_DEPTH
        if depth is not None:
            sat = int(np.sum(np.asarray(depth) >= max_depth))
            self.check(
                "mcmc.tree_depth",
                "tree_depth_saturation",
                sat / total,
                f"{sat} of {total} draws hit the maximum tree depth {max_depth}",
                "raise max_tree_depth, or reparametrise / use a dense mass matrix (an "
                "efficiency problem, not a bias)",
                "tree depth saturation",
                of="draws",
            )
        rows = []
        for c in range(chains):
            row = [c, draws]
            row.append(int(np.sum(div[c])) if div is not None else None)
            for key in ("acceptance_rate", "step_size", "tree_depth"):
                v = stats.get(key)
                row.append(float(np.mean(v[c])) if v is not None else None)
            row.append(float(bf[c]) if bf is not None else None)
            rows.append(tuple(row))
        diag_items.append(
            Table(
                (
                    "chain",
                    "draws",
                    "divergences",
                    "mean acceptance",
                    "mean step size",
                    "mean tree depth",
                    "E-BFMI",
                ),
                tuple(rows),
            )
        )
        diag_items += notes
        self.sections.append(Section("Sampler diagnostics", tuple(diag_items)))

        items: list[Item] = []
        self.figure(
            items,
            "Trace plot",
            lambda: eaz.plot_trace_png(idata),
            "marginal densities and traces per chain (divergences marked)",
        )
        self.figure(
            items,
            "Rank plot",
            lambda: eaz.plot_rank_png(idata),
            "rank histograms per chain: uniform when the chains mix",
        )
        if items:
            self.sections.append(Section("Trace and rank plots", tuple(items)))
        if bf is not None and self.plots:
            items = []
            self.figure(
                items,
                "Energy plot",
                lambda: eaz.plot_energy_png(idata),
                "marginal energy vs energy transition distributions (E-BFMI)",
            )
            self.sections.append(Section("Energy (E-BFMI)", tuple(items)))

        energies = eaz.group_arrays(idata, "energy")
        if energies:
            items = [
                (
                    "Each energy factor's value E(x) per draw (the model's log density gets "
                    "-E/temperature); these are not data and are excluded from LOO/WAIC."
                )
            ]
            labels, cols, vals = eaz.summary_table(idata, "energy", HDI_PROB)
            if labels:
                col = {c: i for i, c in enumerate(cols)}
                show = [c for c in ("mean", "sd", "r_hat", "ess_bulk", "ess_tail") if c in col]
                items.append(
                    Table(
                        ("factor", *show),
                        tuple(
                            (lab, *(float(vals[i, col[c]]) for c in show))
                            for i, lab in enumerate(labels[:MAX_SUMMARY_ROWS])
                        ),
                    )
                )
            self.figure(items, "Energy factor traces", lambda: rp.plot_energy_factors(energies))
            self.sections.append(Section("Energy factors", tuple(items)))
        loglik = eaz.group_arrays(idata, "log_likelihood")
        if loglik:
            self.sections.append(
                Section(
                    "Observed data",
                    (
                        "Pointwise log-likelihood stored for: "
                        + ", ".join(loglik)
                        + " (use ArviZ loo/waic on this InferenceData).",
                    ),
                )
            )

    def _mcmc_param_checks(self, labels, col, vals, chains) -> None:
        if "r_hat" in col:
            r = vals[:, col["r_hat"]]
            if np.all(np.isnan(r)):
                self.checks.append(
                    Check(
                        "mcmc.r_hat",
                        "warn",
                        None,
                        THRESHOLDS["r_hat"].describe(),
                        f"R-hat not computable ({chains} chain{'s' * (chains != 1)})",
                        "run at least 2 chains (4 recommended)",
                        "R-hat (max)",
                    )
                )
            else:
                i = int(np.nanargmax(r))
                t = THRESHOLDS["r_hat"]
                st = t.status(float(r[i]))
                self.check(
                    "mcmc.r_hat",
                    "r_hat",
                    float(r[i]),
                    f"R-hat {float(r[i]):.3f}"
                    + (f" > {t.limit(st)}" if st != "pass" else "")
                    + f" ({labels[i]})",
                    "run longer chains (more warmup and samples) or reparametrise; chains stuck "
                    "in different modes of a multimodal target need AIS instead",
                    "R-hat (max)",
                )
        for key, label in (("ess_bulk", "bulk ESS (min)"), ("ess_tail", "tail ESS (min)")):
            if key not in col or np.all(np.isnan(vals[:, col[key]])):
                continue
            e = vals[:, col[key]]
            i = int(np.nanargmin(e))
            t = THRESHOLDS[key]
            st = t.status(float(e[i]))
            self.check(
                f"mcmc.{key}",
                key,
                float(e[i]),
                f"{key.replace('_', ' ')} {_num(float(e[i]))}"
                + (f" < {_num(t.limit(st))}" if st != "pass" else "")
                + f" ({labels[i]})",
                "run longer chains or reparametrise to reduce autocorrelation",
                label,
            )

    def add_comparison(self, cmp: Comparison) -> None:
        self.kinds.append(f"comparison of {len(cmp)} models")
        self.checks += list(cmp.checks())
        self.summary.append(("best model", f"{cmp.best} (log Z {_num(float(cmp.log_z[0]))})"))
        self.sections.append(cmp.section(self.plots))

    def build(self, title: str | None) -> Report:
        title = title or "ebmppl diagnostic report: " + " + ".join(self.kinds)
        summary = Table(("item", "value"), (("input", " + ".join(self.kinds)), *self.summary))
        return Report(title, tuple(self.checks), summary, tuple(self.sections))


def _ais_with_extras(idata) -> AISResult:
    """AISResult from the ``ais`` group, keeping its extra per-step arrays in ``info``."""
    from . import arviz as eaz

    res = eaz.ais_result_from_arviz(idata)
    known = {"log_weights", "betas", "acceptance_rate", "step_size", "ess"}
    extra = {k: v for k, v in eaz.group_arrays(idata, "ais").items() if k not in known}
    return replace(res, info={**res.info, **extra}) if extra else res


def report(
    obj,
    path: str | os.PathLike | None = None,
    *,
    ais: AISResult | None = None,
    comparison: Comparison | Mapping[str, Any] | None = None,
    title: str | None = None,
    max_tree_depth: int | None = None,
    plots: bool = True,
    seed: int = 0,
) -> Report:
    """Build a diagnostic report and, when ``path`` is given, write it as one HTML file.

    Args:
        obj: a NumPyro or Pyro ``MCMC`` (after ``run``), an :class:`~ebmppl.AISResult`, an
            InferenceData written by ebmppl (MCMC and/or ``ais`` groups; e.g. read with
            :func:`ebmppl.arviz.from_netcdf`), a :class:`Comparison`, or a dict accepted by
            :func:`compare`.
        path: where to write the self-contained HTML report (figures inlined as base64 PNG).
        ais: an AIS result to report beside an MCMC run.
        comparison: a :class:`Comparison` (or a dict for :func:`compare`) to include.
        title: report title (default: says what was reported).
        max_tree_depth: the NUTS maximum tree depth (read from an MCMC object when possible;
            default 10) for the saturation check.
        plots: render figures (False is faster: tables and checks only).
        seed: seed of the particle subsampling behind the log Z against N curve.

    Returns:
        The :class:`Report`: ``report.status`` is the worst check status; ``print(report)``
        shows the verdict with thresholds and fixes.
    """
    b = _Builder(plots=plots, seed=seed)
    if isinstance(obj, Comparison):
        b.add_comparison(obj)
    elif isinstance(obj, AISResult):
        b.add_ais(obj)
    elif _is_idata(obj) or _is_mcmc(obj):
        if _is_mcmc(obj):
            from .arviz import to_arviz

            max_tree_depth = max_tree_depth or _max_tree_depth(obj)
            obj = to_arviz(obj)
        from .arviz import group as _arviz_group
        from .arviz import groups as _groups

        groups = _groups(obj)
        if "posterior" not in groups and "ais" not in groups:
            raise ValueError(
                "this InferenceData has neither a 'posterior' nor an 'ais' group "
                f"(groups: {groups}); it was not written by ebmppl.to_arviz"
            )
        if "posterior" in groups and _arviz_group(obj, "posterior").data_vars:
            b.add_mcmc(obj, max_tree_depth)
        if "ais" in groups:
            b.add_ais(_ais_with_extras(obj))
    elif isinstance(obj, Mapping):
        b.add_comparison(compare(obj))
    else:
        raise TypeError(
            "report expects a NumPyro/Pyro MCMC, an AISResult, an InferenceData, a Comparison "
            f"or a dict of log Z estimates, got {type(obj).__module__}.{type(obj).__name__}"
        )
    if ais is not None:
        if not isinstance(ais, AISResult):
            raise TypeError(f"ais must be an AISResult, got {type(ais).__name__}")
        b.add_ais(ais)
    if comparison is not None:
        b.add_comparison(comparison if isinstance(comparison, Comparison) else compare(comparison))
    rep = b.build(title)
    if path is not None:
        rep.save(path)
    return rep

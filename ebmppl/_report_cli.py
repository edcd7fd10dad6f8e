"""``ebmppl report RUN.nc -o report.html [--strict]``: the report subcommand.

``ebmppl/cli.py`` wires it in with :func:`add_report_parser`; ``python -m ebmppl._report_cli``
runs it alone. Exit codes: 0 report written; 1 with ``--strict`` when a check fails; 2 when the
input is missing, is not an ebmppl/ArviZ netCDF file, or the report cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["add_report_parser", "main", "run_report"]

EXIT_OK = 0
EXIT_FAILED_CHECKS = 1
EXIT_BAD_INPUT = 2

_DESCRIPTION = (
    "Write a self-contained HTML diagnostic report for a saved run (an InferenceData netCDF "
    "file written by ebmppl.to_arviz(...).to_netcdf(...): MCMC and/or AIS) and print the "
    "verdict: every check pass/warn/fail with its threshold and a one-line fix."
)


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``subparsers`` (from ``parser.add_subparsers()``).

    Sets ``func=run_report`` as the parser default, so ``args.func(args)`` runs it.
    """
    parser = subparsers.add_parser(
        "report",
        help="diagnostic report (HTML + text verdict) for a saved run",
        description=_DESCRIPTION,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_report)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN.nc", help="InferenceData netCDF file written by ebmppl")
    parser.add_argument(
        "-o",
        "--output",
        metavar="REPORT.html",
        default=None,
        help="HTML file to write (default: RUN.html beside the input)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any check fails"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="tables and checks only (faster, smaller file)"
    )


def _error(message: str) -> int:
    print(f"ebmppl report: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_report(args: argparse.Namespace) -> int:
    """Run the subcommand for parsed ``args``; returns the exit code (0, 1 or 2)."""
    path = os.fspath(args.run)
    if not os.path.exists(path):
        return _error(f"{path}: no such file")
    if os.path.isdir(path):
        return _error(f"{path} is a directory, not a netCDF file")

    from .arviz import from_netcdf
    from .reporting import report

    try:
        idata = from_netcdf(path)
    except ValueError as err:  # from_netcdf says what the file is not
        return _error(str(err))
    except OSError as err:
        return _error(f"{path} is not an ebmppl/ArviZ netCDF file ({err})")
    try:
        rep = report(idata, plots=not getattr(args, "no_plots", False))
    except (ValueError, TypeError) as err:
        return _error(f"{path}: {err}")
    out = args.output or os.path.splitext(path)[0] + ".html"
    try:
        rep.save(out)
    except OSError as err:
        return _error(f"cannot write {out}: {err}")
    print(rep.verdict_text())
    print(f"report written to {out}")
    if getattr(args, "strict", False) and rep.failed:
        return EXIT_FAILED_CHECKS
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m ebmppl._report_cli RUN.nc [-o ...] [--strict]``."""
    parser = argparse.ArgumentParser(prog="ebmppl report", description=_DESCRIPTION)
    _add_arguments(parser)
    return run_report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

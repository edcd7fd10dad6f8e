"""Every tutorial runs end to end at a small size and passes its own checks."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))
NEEDS = {"numpyro": "numpyro", "pyro": "pyro"}


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, monkeypatch, capsys):
    for key, mod in NEEDS.items():
        if key in path.stem:
            pytest.importorskip(mod)
    monkeypatch.setenv("EBMPPL_TUTORIAL_SMALL", "1")
    monkeypatch.chdir(path.parent)
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "PASS" in out
    assert os.environ["EBMPPL_TUTORIAL_SMALL"] == "1"

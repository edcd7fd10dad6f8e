"""The README's example runs as written (so it cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    pytest.importorskip("numpyro")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    result = namespace["result"]
    import numpy as np
    from scipy import integrate, stats

    z0, _ = integrate.quad(
        lambda t: stats.norm.pdf(t, scale=2) * np.exp(-4 * (t * t - 1) ** 2), -np.inf, np.inf
    )
    exact = np.log(z0) - 0.5 * np.log(1 + 4)  # x1: N(0, 4) prior times exp(-x1^2 / 2)
    assert abs(result.log_z - exact) < 4.4 * result.log_z_se + 0.02
    from ebmppl.arviz import groups

    assert "energy" in groups(namespace["idata"])
    assert "log Z =" in capsys.readouterr().out


def test_readme_has_one_setup_and_one_test_command():
    text = README.read_text()
    block = re.search(r"## Set up, test, run\n\n```bash\n(.*?)```", text, flags=re.DOTALL).group(1)
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert lines[0].startswith("bash .ci/setup.sh")
    assert lines[1].startswith(".venv/bin/python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in ci and "bash .ci/setup.sh" in ci

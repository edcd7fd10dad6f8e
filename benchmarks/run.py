"""Single entry point for the benchmarks: ``python benchmarks/run.py [--quick] [names...]``.

Each benchmark prints a table and writes JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

BENCHMARKS = ("bench_ais", "bench_backends", "bench_peers", "bench_curves", "bench_overhead")


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("--")] or list(BENCHMARKS)
    for name in names:
        mod = importlib.import_module(name if name.startswith("bench_") else f"bench_{name}")
        print(f"\n=== {mod.__name__} ===")
        mod.main(quick=quick) if hasattr(mod, "main") else mod.run(quick)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

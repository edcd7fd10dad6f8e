"""Clear errors for a backend whose packages are missing."""

from __future__ import annotations

import importlib

_EXTRAS = {"numpyro": ("jax", "numpyro"), "pyro": ("torch", "pyro")}


def require(backend: str) -> None:
    """Import the packages of ``backend`` or raise ImportError naming the pip extra."""
    missing = []
    for mod in _EXTRAS[backend]:
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        pkgs = ", ".join("pyro-ppl" if m == "pyro" else m for m in missing)
        raise ImportError(
            f"ebmppl.{backend} needs {pkgs}, which is not installed. "
            f"Install the backend extra: pip install 'ebmppl[{backend}]'"
        )


def available(backend: str) -> bool:
    """Whether every package of ``backend`` imports."""
    try:
        require(backend)
    except ImportError:
        return False
    return True

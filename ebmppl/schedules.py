"""Annealing schedules: increasing arrays of inverse temperatures from 0 to 1 (NumPy only)."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["SCHEDULES", "make_schedule", "validate_betas"]

SCHEDULES = ("linear", "geometric", "sigmoidal")
ScheduleName = Literal["linear", "geometric", "sigmoidal"]


def validate_betas(betas, *, name: str = "schedule") -> np.ndarray:
    """Check a user-given schedule and return it as a float64 array of shape (num_steps + 1,).

    A schedule must be one-dimensional, finite, start at exactly 0, end at exactly 1 and be
    non-decreasing, with at least one step.
    """
    try:
        arr = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of floats, got {type(betas).__name__}") from err
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(
            f"{name} must be a 1-D array of at least two betas (0 and 1), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} contains a non-finite beta ({arr[bad]}) at index {bad}")
    if arr[0] != 0.0 or arr[-1] != 1.0:
        raise ValueError(
            f"{name} must start at beta=0 (the prior/reference) and end at beta=1 (the target); "
            f"got {arr[0]!r} ... {arr[-1]!r}"
        )
    diffs = np.diff(arr)
    if np.any(diffs < 0):
        bad = int(np.flatnonzero(diffs < 0)[0])
        raise ValueError(
            f"{name} must be non-decreasing; beta[{bad}]={arr[bad]} > beta[{bad + 1}]={arr[bad + 1]}"
        )
    return arr


def make_schedule(
    schedule: ScheduleName | np.ndarray | list[float] = "sigmoidal",
    num_steps: int | None = None,
    *,
    beta_min: float = 1e-4,
    sigmoid_scale: float = 4.0,
) -> np.ndarray:
    """Return an annealing schedule ``betas`` of shape (num_steps + 1,), from 0 to 1.

    Args:
        schedule: ``"linear"``, ``"geometric"`` (0 followed by ``num_steps`` geometrically
            spaced betas from ``beta_min`` to 1), ``"sigmoidal"`` (Neal 2001; Grosse et al.
            2015: a rescaled logistic curve over ``[-sigmoid_scale, sigmoid_scale]``, dense near
            both ends), or an explicit array of betas (then ``num_steps`` may be omitted, or must
            match ``len(schedule) - 1``).
        num_steps: number of transitions (annealing steps), at least 1.
    """
    if not isinstance(schedule, str):
        betas = validate_betas(schedule)
        if num_steps is not None and num_steps != betas.size - 1:
            raise ValueError(
                f"num_steps={num_steps} disagrees with the given schedule of {betas.size} betas "
                f"({betas.size - 1} steps); leave num_steps out or make them agree"
            )
        return betas
    if schedule not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule!r}; use one of {SCHEDULES} or an array of betas"
        )
    num_steps = check_positive_int(num_steps, "num_steps")
    if schedule == "linear":
        betas = np.linspace(0.0, 1.0, num_steps + 1)
    elif schedule == "geometric":
        if not 0.0 < beta_min < 1.0:
            raise ValueError(f"beta_min must lie in (0, 1), got {beta_min}")
        if num_steps == 1:
            betas = np.array([0.0, 1.0])
        else:
            betas = np.concatenate([[0.0], np.geomspace(beta_min, 1.0, num_steps)])
    else:
        if not sigmoid_scale > 0:
            raise ValueError(f"sigmoid_scale must be positive, got {sigmoid_scale}")
        s = 1.0 / (1.0 + np.exp(-np.linspace(-sigmoid_scale, sigmoid_scale, num_steps + 1)))
        betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return validate_betas(betas)


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)

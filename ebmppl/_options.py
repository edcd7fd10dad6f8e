"""AIS options shared by both backends: validation in one place (NumPy only)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .schedules import check_positive_int, make_schedule

ADAPTATION = ("pilot", "online")


def is_number(value) -> bool:
    """A real Python or NumPy scalar, not a bool (``True`` is not a step size)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


@dataclass(frozen=True)
class AISOptions:
    """Validated AIS options; see :class:`ebmppl.numpyro.AIS` for their meaning."""

    num_particles: int
    betas: np.ndarray
    schedule_name: str
    num_leapfrog_steps: int
    num_mcmc_steps: int
    step_size: float | None
    target_accept: float
    adapt_step_size: bool
    adapt_mass: bool
    adapt_rate: float
    step_size_jitter: float
    progress: bool | None
    adaptation: str = "pilot"
    chunk_size: int | None = None

    @classmethod
    def create(
        cls,
        *,
        num_particles: int = 1000,
        num_steps: int | None = 100,
        schedule="sigmoidal",
        num_leapfrog_steps: int = 3,
        num_mcmc_steps: int = 1,
        step_size: float | None = None,
        target_accept: float = 0.8,
        adapt_step_size: bool = True,
        adapt_mass: bool = True,
        adapt_rate: float = 1.0,
        step_size_jitter: float = 0.2,
        progress: bool | None = None,
        adaptation: str = "pilot",
        chunk_size: int | None = None,
    ) -> AISOptions:
        num_particles = check_positive_int(num_particles, "num_particles")
        if not isinstance(schedule, str):
            betas = make_schedule(schedule, None)
            if num_steps is not None and num_steps not in (100, betas.size - 1):
                make_schedule(schedule, num_steps)  # raises the mismatch error
            name = "custom"
        else:
            betas = make_schedule(schedule, num_steps)
            name = schedule
        num_leapfrog_steps = check_positive_int(num_leapfrog_steps, "num_leapfrog_steps")
        num_mcmc_steps = check_positive_int(num_mcmc_steps, "num_mcmc_steps")
        if step_size is not None:
            if not (is_number(step_size) and np.isfinite(step_size) and step_size > 0):
                raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
            step_size = float(step_size)
        if not (is_number(target_accept) and 0.0 < target_accept < 1.0):
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        if not (is_number(adapt_rate) and 0.0 <= adapt_rate <= 10.0):
            raise ValueError(f"adapt_rate must lie in [0, 10], got {adapt_rate!r}")
        if not (is_number(step_size_jitter) and 0.0 <= step_size_jitter < 1.0):
            raise ValueError(f"step_size_jitter must lie in [0, 1), got {step_size_jitter!r}")
        for flag, value in (("adapt_step_size", adapt_step_size), ("adapt_mass", adapt_mass)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, got {progress!r}")
        if adaptation not in ADAPTATION:
            raise ValueError(f"adaptation must be one of {ADAPTATION}, got {adaptation!r}")
        if chunk_size is not None:
            chunk_size = check_positive_int(chunk_size, "chunk_size")
        return cls(
            num_particles,
            betas,
            name,
            num_leapfrog_steps,
            num_mcmc_steps,
            step_size,
            float(target_accept),
            bool(adapt_step_size),
            bool(adapt_mass),
            float(adapt_rate),
            float(step_size_jitter),
            progress,
            adaptation,
            chunk_size,
        )

    @property
    def uses_pilot(self) -> bool:
        """Whether kernels are tuned on a pilot run (pilot adaptation of something)."""
        return self.adaptation == "pilot" and (self.adapt_step_size or self.adapt_mass)

    def describe(self) -> dict:
        """Options as plain metadata (for the result's ``info`` and ArviZ attributes)."""
        d = asdict(self)
        d.pop("betas")
        d.pop("progress")
        d["schedule"] = d.pop("schedule_name")
        d["num_steps"] = int(self.betas.size - 1)
        return d


def progress_printer(label: str, total: int):
    """Return ``report(done, info)`` printing one progress line to stderr."""
    start = time.perf_counter()
    tty = sys.stderr.isatty()

    def report(done: int, info) -> None:
        elapsed = time.perf_counter() - start
        acc = float(np.asarray(info.acceptance_rate)[-1])
        ess = float(np.asarray(info.ess)[-1])
        line = f"{label}: step {done}/{total} [{elapsed:.1f}s] acceptance {acc:.2f}, ESS {ess:.0f}"
        end = "\n" if (done >= total or not tty) else ""
        sys.stderr.write(("\r" if tty else "") + line + end)
        sys.stderr.flush()

    return report


RESAMPLING = ("systematic", "multinomial")
MOVES = ("hmc", "nuts")
DEFAULT_MAX_TREE_DEPTH = 10


@dataclass(frozen=True)
class SMCOptions:
    """Validated options of tempered SMC (AIS + adaptive schedule + resampling + replicas)."""

    base: AISOptions
    adaptive: bool
    target_cess: float
    max_steps: int
    resampling: str | None
    resample_threshold: float
    num_replicas: int
    move: str = "hmc"
    max_tree_depth: int | None = None  # NUTS only (None with move="hmc")

    @classmethod
    def create(
        cls,
        *,
        schedule="adaptive",
        num_steps: int | None = None,
        target_cess: float = 0.95,
        max_steps: int = 500,
        resampling: str | None = "systematic",
        resample_threshold: float = 0.5,
        num_replicas: int = 4,
        move: str = "hmc",
        max_tree_depth: int | None = None,
        **ais_options,
    ) -> SMCOptions:
        if not isinstance(move, str) or move not in MOVES:
            raise ValueError(f"move must be one of {MOVES}, got {move!r}")
        if move == "hmc" and max_tree_depth is not None:
            raise ValueError("max_tree_depth applies to move='nuts' only")
        if move == "nuts":
            if "num_leapfrog_steps" in ais_options:
                raise ValueError(
                    "num_leapfrog_steps fixes HMC trajectories; move='nuts' chooses its own "
                    "(cap them with max_tree_depth)"
                )
            if max_tree_depth is None:
                max_tree_depth = DEFAULT_MAX_TREE_DEPTH
            max_tree_depth = check_positive_int(max_tree_depth, "max_tree_depth")
            if max_tree_depth > 20:
                raise ValueError(f"max_tree_depth must be at most 20, got {max_tree_depth}")
        adaptive = isinstance(schedule, str) and schedule == "adaptive"
        max_steps = check_positive_int(max_steps, "max_steps")
        if adaptive:
            if num_steps is not None:
                raise ValueError(
                    "num_steps is chosen by the adaptive schedule; give max_steps (a cap) "
                    "instead, or a fixed schedule"
                )
            base = AISOptions.create(schedule="linear", num_steps=max_steps, **ais_options)
        else:
            base = AISOptions.create(
                schedule=schedule, num_steps=100 if num_steps is None else num_steps, **ais_options
            )
        if not (is_number(target_cess) and 0.0 < target_cess < 1.0):
            raise ValueError(f"target_cess must lie in (0, 1), got {target_cess!r}")
        if resampling is not None and resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {RESAMPLING} or None, got {resampling!r}")
        if not (is_number(resample_threshold) and 0.0 <= resample_threshold <= 1.0):
            raise ValueError(f"resample_threshold must lie in [0, 1], got {resample_threshold!r}")
        num_replicas = check_positive_int(num_replicas, "num_replicas")
        return cls(
            base,
            adaptive,
            float(target_cess),
            max_steps,
            resampling,
            float(resample_threshold),
            num_replicas,
            move,
            max_tree_depth,
        )

    def describe(self) -> dict:
        d = self.base.describe()
        if self.adaptive:
            d["schedule"] = "adaptive"
            d.pop("num_steps")
        d.update(
            target_cess=self.target_cess if self.adaptive else None,
            max_steps=self.max_steps,
            resampling=self.resampling or "none",
            resample_threshold=self.resample_threshold,
            num_replicas=self.num_replicas,
            move=self.move,
            max_tree_depth=self.max_tree_depth,
        )
        if self.move == "nuts":
            d["num_leapfrog_steps"] = None  # NUTS chooses each trajectory's length
        return d

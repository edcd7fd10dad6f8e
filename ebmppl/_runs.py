"""Long-run machinery shared by both backends (NumPy only): batches, checkpoints, Ctrl-C.

An AIS run is a sequence of *phases*: an optional pilot (to tune the kernels) and one or more
independent *batches* of ``num_particles`` particles, each annealed through the whole schedule
in segments of steps. :func:`drive` runs them through a backend's :class:`Engine` and

- stops adding batches when the standard error of log Z reaches ``target_se``, the time budget
  ``max_time`` would be exceeded, or ``max_batches`` batches are done (:class:`RunControl`);
- writes a checkpoint (particles, log weights, step index, random state, adaptation state,
  finished batches) every ``checkpoint_every`` steps, and resumes from it;
- on Ctrl-C saves the last completed segment and raises :class:`RunInterrupted`;
- stops early with a clear error when most particles' weights became zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from . import diagnostics
from ._options import is_number, progress_printer

__all__ = ["Engine", "RunControl", "RunInterrupted", "drive", "segment_length"]

CHECKPOINT_VERSION = 1


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the last completed segment was saved to ``checkpoint``.

    Call ``run`` again with the same arguments and ``checkpoint=<that path>`` to resume; the
    result is the one an uninterrupted run would have given.
    """

    def __init__(self, message: str, checkpoint: str) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def _positive_number(value, name: str, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RunControl:
    """How long a run goes on and where it saves itself; see :meth:`create`."""

    target_se: float | None = None
    max_time: float | None = None
    max_batches: int = 1
    checkpoint: str | None = None
    checkpoint_every: int | None = None

    @classmethod
    def create(
        cls,
        *,
        target_se: float | None = None,
        max_time: float | None = None,
        max_batches: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
    ) -> RunControl:
        """Validate the run-control arguments of ``AIS.run`` (errors name the argument).

        Args:
            target_se: keep adding independent batches of ``num_particles`` until the standard
                error of log Z is at most this (nats).
            max_time: wall-time budget in seconds: no new batch starts if it would end after it
                (the first batch always runs). Alone, it adds batches until the budget is spent.
            max_batches: cap on the number of batches (default 100 when ``target_se`` or
                ``max_time`` is given, else 1).
            checkpoint: file to save the run's state to (and to resume from if it exists).
            checkpoint_every: save every this many annealing steps (default: 10 saves per
                pass through the schedule).
        """
        target_se = _positive_number(target_se, "target_se")
        max_time = _positive_number(max_time, "max_time")
        if max_batches is None:
            max_batches = 100 if (target_se is not None or max_time is not None) else 1
        if isinstance(max_batches, bool) or not isinstance(max_batches, (int, np.integer)):
            raise TypeError(f"max_batches must be a positive integer, got {max_batches!r}")
        if max_batches < 1:
            raise ValueError(f"max_batches must be a positive integer, got {max_batches}")
        if checkpoint is not None:
            if not isinstance(checkpoint, (str, os.PathLike)):
                raise TypeError(
                    f"checkpoint must be a file path (str or os.PathLike), got {checkpoint!r}"
                )
            checkpoint = os.fspath(checkpoint)
            parent = Path(checkpoint).resolve().parent
            if not parent.is_dir():
                raise ValueError(f"checkpoint: directory {str(parent)!r} does not exist")
        if checkpoint_every is not None:
            if isinstance(checkpoint_every, bool) or not isinstance(
                checkpoint_every, (int, np.integer)
            ):
                raise TypeError(
                    f"checkpoint_every must be a positive integer, got {checkpoint_every!r}"
                )
            if checkpoint_every < 1:
                raise ValueError(
                    f"checkpoint_every must be a positive integer, got {checkpoint_every}"
                )
            if checkpoint is None:
                raise ValueError("checkpoint_every needs checkpoint=<file path> as well")
        return cls(target_se, max_time, int(max_batches), checkpoint, checkpoint_every)

    @property
    def batched(self) -> bool:
        return self.max_batches > 1


def segment_length(control: RunControl, num_steps: int, progress: bool) -> int:
    """Steps per compiled segment: checkpoints and progress lines fall on segment boundaries."""
    if control.checkpoint_every is not None:
        segment = control.checkpoint_every
    elif control.checkpoint is not None:
        segment = max(1, -(-num_steps // 10))
    else:
        segment = num_steps if not progress else max(1, -(-num_steps // 20))
    return min(segment, num_steps)


class Engine(Protocol):
    """What a backend provides to :func:`drive` (all arrays crossing it are NumPy)."""

    num_particles: int

    def initial(self, phase: str, batch: int) -> Any:
        """A fresh state for the start of ``phase`` (``"pilot"`` or ``"main"``), batch ``batch``."""

    def advance(
        self, state: Any, phase: str, batch: int, t0: int, t1: int, fixed
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """Run annealing steps ``t0 .. t1 - 1``; return the state and per-step info (t1-t0, ...).

        ``fixed``: per-step kernels ``(step_size (T,), inverse_mass (T, D))`` from the pilot, or
        None (adapt online). The info must hold ``acceptance_rate``, ``step_size``, ``ess``,
        ``num_dropped`` (particles with zero weight after the step), ``inverse_mass``.
        """

    def state_arrays(self, state: Any) -> dict[str, np.ndarray]:
        """The state as NumPy arrays (for a checkpoint)."""

    def state_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> Any:
        """Inverse of :meth:`state_arrays`."""

    def rng_arrays(self) -> dict[str, np.ndarray]:
        """The random state the next segment will use (saved with every checkpoint)."""

    def set_rng_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore a random state saved by :meth:`rng_arrays`."""

    def finish(self, state: Any, info: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Final ``(log_weights float64 (N,), unconstrained positions (N, D))`` of a batch."""

    def particles(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Constrained particles per site from unconstrained positions (M, D)."""

    def dropped_sites(self, positions: np.ndarray) -> list[str]:
        """Names of the sites that are non-finite at the given positions (M, D)."""


@dataclass
class Batch:
    """One finished batch: final log weights (N,), positions (N, D), per-step info."""

    log_weights: np.ndarray
    positions: np.ndarray
    info: dict[str, np.ndarray]
    wall_time: float


@dataclass
class DriveOutput:
    """What :func:`drive` returns to the backend's AIS."""

    batches: list[Batch]
    pilot_info: dict[str, np.ndarray] | None
    stopped_by: str
    resumed_from: int | None = None

    @property
    def log_weights(self) -> np.ndarray:
        return np.concatenate([b.log_weights for b in self.batches])

    @property
    def positions(self) -> np.ndarray:
        return np.concatenate([b.positions for b in self.batches])

    def combined_info(self) -> SimpleNamespace:
        """Per-step statistics over all batches: means, except ``num_dropped`` and ``ess`` (sums)."""
        infos = [b.info for b in self.batches]
        out = {}
        for name in infos[0]:
            stack = np.stack([np.asarray(i[name], dtype=np.float64) for i in infos])
            out[name] = stack.sum(0) if name in ("num_dropped", "ess") else stack.mean(0)
        out["num_dropped"] = out["num_dropped"].astype(np.int64)
        return SimpleNamespace(**out)


def fingerprint(items: Mapping[str, Any]) -> str:
    """A short hash of what must agree between a checkpoint and the run resuming from it."""
    text = json.dumps({k: repr(v) for k, v in sorted(items.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _concat_infos(infos: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not infos:
        return {}
    return {k: np.concatenate([np.asarray(i[k]) for i in infos]) for k in infos[0]}


def _save_checkpoint(path: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temporary file, then rename): an interrupted save leaves the old one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ebmppl-ckpt-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a checkpoint written by :func:`drive`: ``(meta, arrays)``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"checkpoint {path!r} is not a readable ebmppl checkpoint ({err}); "
            "delete it or pass another path"
        ) from err
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path!r} has format version {meta.get('version')}, this ebmppl writes "
            f"{CHECKPOINT_VERSION}; delete it to start afresh"
        )
    return meta, arrays


def _split(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {prefix + k: np.asarray(v) for k, v in arrays.items()}


# Test hook: called as hook(phase, batch, t) after every completed segment.
_segment_hook: Callable[[str, int, int], None] | None = None


def drive(
    engine: Engine,
    *,
    num_steps: int,
    betas: np.ndarray,
    pilot: bool,
    control: RunControl,
    segment: int,
    label: str | None,
    run_id: Mapping[str, Any],
    describe_site: Callable[[list[str]], str],
) -> DriveOutput:
    """Run the pilot (if any) and the batches of an AIS run; see the module docstring.

    Args:
        engine: the backend's engine.
        num_steps: annealing steps per pass; ``betas`` (num_steps + 1,) the schedule.
        pilot: tune the kernels on a pilot pass first.
        control: stopping rule and checkpointing.
        segment: steps per call of ``engine.advance`` (checkpoints and progress fall on
            segment boundaries).
        label: progress-line prefix such as ``"AIS (numpyro)"`` (the phase goes before the
            parenthesis), or None for no progress output.
        run_id: what must agree between a checkpoint and the run resuming from it.
        describe_site: maps site names to the text used in error messages.
    """
    start = time.perf_counter()
    n = engine.num_particles
    fp = fingerprint(run_id)
    phase, batch, t = ("pilot" if pilot else "main"), 0, 0
    state, infos, pilot_info, fixed = None, [], None, None
    batches: list[Batch] = []
    elapsed_before, resumed_from = 0.0, None
    path = control.checkpoint
    if path is not None and os.path.exists(path):
        meta, arrays = load_checkpoint(path)
        if meta["fingerprint"] != fp:
            raise ValueError(
                f"checkpoint {path!r} was written by a different run (model, options, schedule "
                "or number of particles differ); delete it or pass another checkpoint path"
            )
        phase, batch, t = meta["phase"], int(meta["batch"]), int(meta["t"])
        elapsed_before = float(meta["elapsed"])
        engine.set_rng_arrays(_split(arrays, "rng/"))
        if t > 0:
            state = engine.state_from_arrays(_split(arrays, "state/"))
            infos = [_split(arrays, "info/")]
        if meta["has_pilot"]:
            pilot_info = _split(arrays, "pilot/")
            fixed = (pilot_info["step_size"], pilot_info["inverse_mass"])
        for b in range(int(meta["num_batches"])):
            batches.append(
                Batch(
                    arrays[f"batch{b}/log_weights"],
                    arrays[f"batch{b}/positions"],
                    _split(arrays, f"batch{b}/info/"),
                    float(arrays[f"batch{b}/wall_time"]),
                )
            )
        resumed_from = t
        if label is not None:
            sys.stderr.write(
                f"resuming from checkpoint {path}: {phase} phase, batch {batch}, step {t}\n"
            )

    def snap(state_now, t_now: int) -> dict:
        """Everything a checkpoint needs, as of now (a consistent point of the run)."""
        return {
            "phase": phase,
            "batch": batch,
            "state": state_now,
            "t": t_now,
            "infos": list(infos) if state_now is not None else [],
            "rng": engine.rng_arrays(),
            "pilot_info": pilot_info,
            "batches": list(batches),
        }

    def save(at_path: str, sn: dict) -> None:
        arrays = _prefixed(sn["rng"], "rng/")
        if sn["state"] is not None and sn["t"] > 0:
            arrays.update(_prefixed(engine.state_arrays(sn["state"]), "state/"))
            arrays.update(_prefixed(_concat_infos(sn["infos"]), "info/"))
        if sn["pilot_info"] is not None:
            arrays.update(_prefixed(sn["pilot_info"], "pilot/"))
        for b, done in enumerate(sn["batches"]):
            arrays[f"batch{b}/log_weights"] = done.log_weights
            arrays[f"batch{b}/positions"] = done.positions
            arrays[f"batch{b}/wall_time"] = np.asarray(done.wall_time)
            arrays.update(_prefixed(done.info, f"batch{b}/info/"))
        meta = {
            "version": CHECKPOINT_VERSION,
            "fingerprint": fp,
            "phase": sn["phase"],
            "batch": sn["batch"],
            "t": sn["t"] if sn["state"] is not None else 0,
            "has_pilot": sn["pilot_info"] is not None,
            "num_batches": len(sn["batches"]),
            "elapsed": elapsed_before + time.perf_counter() - start,
        }
        _save_checkpoint(at_path, meta, arrays)

    every = control.checkpoint_every
    if path is not None and every is None:
        every = max(1, -(-num_steps // 10))
    stopped_by = "num_particles"
    # The last consistent point (after a whole segment or phase, with the random state the
    # next segment will use): what Ctrl-C saves. Replaced, never mutated, so an interrupt
    # between two statements below cannot leave it half-updated.
    snapshot = snap(state, t)
    try:
        while True:
            if state is None:
                if phase == "main" and batches:
                    reason = _stop_reason(
                        control, batches, elapsed_before + time.perf_counter() - start
                    )
                    if reason is not None:
                        stopped_by = reason
                        break
                state, t, infos = engine.initial(phase, batch), 0, []
            what = "pilot" if phase == "pilot" else f"batch {batch}"
            where = f"{what} run" if (phase == "pilot" or control.batched) else "run"
            report = None
            if label is not None and (phase == "pilot" or batch == 0):
                show = phase == "pilot" or control.batched
                prefix = label.replace(" (", f" {what} (", 1) if show else label
                report = progress_printer(prefix, num_steps)
            batch_start = time.perf_counter()
            while t < num_steps:
                t1 = min(t + segment, num_steps)
                state, info = engine.advance(state, phase, batch, t, t1, fixed)
                infos.append(info)
                t = t1
                snapshot = snap(state, t)
                _check_dropped(engine, state, info, betas, t, n, describe_site, where)
                if report is not None:
                    report(t, SimpleNamespace(**info))
                if path is not None and (t % every == 0 or t == num_steps):
                    save(path, snapshot)
                if _segment_hook is not None:
                    _segment_hook(phase, batch, t)
            info_all = _concat_infos(infos)
            if phase == "pilot":
                pilot_info = info_all
                fixed = (info_all["step_size"], info_all["inverse_mass"])
                phase = "main"
            else:
                log_w, pos = engine.finish(state, info_all)
                batches.append(Batch(log_w, pos, info_all, time.perf_counter() - batch_start))
                batch += 1
                if label is not None and control.batched:
                    _report_batches(
                        label, batches, control, elapsed_before + time.perf_counter() - start
                    )
            state, t, infos = None, 0, []
            snapshot = snap(None, 0)
            if path is not None:
                save(path, snapshot)
    except KeyboardInterrupt as err:
        if isinstance(err, RunInterrupted):
            raise
        sn = snapshot
        if path is None:
            fd, path = tempfile.mkstemp(prefix="ebmppl-interrupted-", suffix=".npz")
            os.close(fd)
        save(path, sn)
        where = f" (batch {sn['batch']})" if sn["phase"] == "main" else ""
        raise RunInterrupted(
            f"interrupted at step {sn['t']}/{num_steps} of the {sn['phase']} phase{where}; the "
            f"run was saved to {path!r}. Call run(...) again with the same arguments and "
            f"checkpoint={path!r} to resume",
            path,
        ) from None
    return DriveOutput(batches, pilot_info, stopped_by, resumed_from)


def _report_batches(label: str, batches: list[Batch], control: RunControl, elapsed: float):
    lw = np.concatenate([b.log_weights for b in batches])
    log_z, se = diagnostics.log_z_from_weights(lw) if np.isfinite(lw).any() else (np.nan, np.nan)
    target = f" (target {control.target_se:g})" if control.target_se is not None else ""
    sys.stderr.write(
        f"{label}: {len(batches)} batch(es), {lw.size} particles [{elapsed:.1f}s]: "
        f"log Z = {log_z:.4f} +- {se:.4f}{target}\n"
    )
    sys.stderr.flush()


def _stop_reason(control: RunControl, batches: list[Batch], elapsed: float) -> str | None:
    """Why to stop after the batches so far, or None to run another batch."""
    if not control.batched:
        return "num_particles"
    lw = np.concatenate([b.log_weights for b in batches])
    reached = (
        control.target_se is not None
        and np.isfinite(lw).any()
        and diagnostics.log_z_from_weights(lw)[1] <= control.target_se
    )
    if reached:
        return "target_se"
    if control.max_time is not None:
        per_batch = float(np.mean([b.wall_time for b in batches]))
        if elapsed + per_batch > control.max_time:
            return "max_time"
    if len(batches) >= control.max_batches:
        return "max_batches"
    return None


def _check_dropped(engine, state, info, betas, t, n, describe_site, what) -> None:
    """Fail as soon as more than half of the particles have zero weight."""
    dropped = np.asarray(info["num_dropped"])
    if dropped[-1] <= n // 2:
        return
    first = t - dropped.size + int(np.argmax(dropped > n // 2))
    log_w, pos = engine.finish(state, {k: np.asarray(v) for k, v in info.items()})
    sites = engine.dropped_sites(pos[~np.isfinite(log_w)])
    raise RuntimeError(
        f"{int(dropped[-1])} of {n} particles' weights became zero (non-finite energy) by "
        f"step {first + 1} (beta={betas[first + 1]:.4g}) of the {what}; non-finite at those "
        f"particles: {describe_site(sites)}. Make the energy finite where the tempered "
        "distributions put mass (e.g. clip or guard its input)"
    )


def dropped_summary(num_dropped_per_step: np.ndarray, betas: np.ndarray) -> dict[str, np.ndarray]:
    """Where particles were lost: ``dropped_at_betas`` and ``dropped_counts`` (new drops)."""
    counts = np.diff(np.concatenate([[0], np.asarray(num_dropped_per_step, dtype=np.int64)]))
    steps = np.flatnonzero(counts > 0)
    return {
        "dropped_at_betas": np.asarray(betas, np.float64)[steps + 1],
        "dropped_counts": counts[steps],
    }

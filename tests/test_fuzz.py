"""Property-based input fuzzing: every bad input gets a clear error naming the argument.

Options and schedules are checked once, in backend-neutral code; the backend tests check that
both backends route their inputs through those checks (and that energy shapes, dtypes and plate
layouts get errors naming the site), never a traceback from deep inside JAX or torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmppl import problems
from ebmppl._options import AISOptions, is_number
from ebmppl._runs import RunControl
from ebmppl.schedules import validate_betas

ANY_SCALAR = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.just(np.float32(0.5)),
    st.just(np.int64(3)),
    st.lists(st.integers(), max_size=2),
)


def _positive_int(v):
    return is_number(v) and float(v).is_integer() and isinstance(v, (int, np.integer)) and v >= 1


def _finite(v):
    return is_number(v) and math.isfinite(v)


# What each option accepts (the documented contract).
OPTION_SPECS = {
    "num_particles": _positive_int,
    "num_steps": _positive_int,
    "num_leapfrog_steps": _positive_int,
    "num_mcmc_steps": _positive_int,
    "chunk_size": lambda v: v is None or _positive_int(v),
    "step_size": lambda v: v is None or (_finite(v) and v > 0),
    "target_accept": lambda v: _finite(v) and 0 < v < 1,
    "adapt_rate": lambda v: _finite(v) and 0 <= v <= 10,
    "step_size_jitter": lambda v: _finite(v) and 0 <= v < 1,
    "adapt_mass": lambda v: isinstance(v, bool),
    "progress": lambda v: v is None or isinstance(v, bool),
    "adaptation": lambda v: v in ("pilot", "online") and isinstance(v, str),
}


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(OPTION_SPECS)), value=ANY_SCALAR)
def test_options_accept_valid_and_name_the_bad_argument(name, value):
    if OPTION_SPECS[name](value):
        AISOptions.create(**{name: value})
    else:
        with pytest.raises((TypeError, ValueError), match=name):
            AISOptions.create(**{name: value})


RUN_SPECS = {
    "target_se": lambda v: v is None or (_finite(v) and v > 0),
    "max_time": lambda v: v is None or (_finite(v) and v > 0),
    "max_batches": lambda v: v is None or _positive_int(v),
}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(RUN_SPECS)), value=ANY_SCALAR)
def test_run_control_names_the_bad_argument(name, value):
    if RUN_SPECS[name](value):
        RunControl.create(**{name: value})
    else:
        with pytest.raises((TypeError, ValueError), match=name):
            RunControl.create(**{name: value})


def test_checkpoint_arguments():
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        RunControl.create(checkpoint_every=5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        RunControl.create(checkpoint="x.npz", checkpoint_every=0)
    with pytest.raises(TypeError, match="checkpoint"):
        RunControl.create(checkpoint=3)
    with pytest.raises(ValueError, match="does not exist"):
        RunControl.create(checkpoint="/no/such/dir/x.npz")


BETA = st.one_of(
    st.floats(-0.5, 1.5),
    st.sampled_from([0.0, 1.0, math.nan, math.inf, -math.inf, 0.5]),
)


def _valid_schedule(betas) -> bool:
    a = np.asarray(betas, dtype=np.float64)
    return (
        a.ndim == 1
        and a.size >= 2
        and bool(np.all(np.isfinite(a)))
        and a[0] == 0.0
        and a[-1] == 1.0
        and bool(np.all(np.diff(a) >= 0))
    )


SCHEDULES = st.one_of(
    st.lists(BETA, max_size=8),
    # mostly-valid schedules with one corruption, so valid ones are drawn too
    st.lists(st.floats(0.0, 1.0), min_size=0, max_size=6).map(lambda xs: [0.0, *sorted(xs), 1.0]),
    st.tuples(
        st.lists(st.floats(0.0, 1.0), max_size=6).map(lambda xs: [0.0, *sorted(xs), 1.0]),
        st.integers(0, 7),
        BETA,
    ).map(lambda t: [t[2] if i == t[1] else b for i, b in enumerate(t[0])]),
)


@settings(max_examples=400, deadline=None)
@given(betas=SCHEDULES)
def test_schedules_are_accepted_iff_valid(betas):
    if _valid_schedule(betas):
        np.testing.assert_array_equal(validate_betas(betas), np.asarray(betas, np.float64))
        AISOptions.create(schedule=betas, num_steps=None)
    else:
        with pytest.raises((TypeError, ValueError), match="schedule"):
            AISOptions.create(schedule=betas, num_steps=None)


def test_schedule_of_wrong_type_or_shape():
    for bad in ([[0.0, 1.0]], "fast", 3, ["a", "b"]):
        with pytest.raises((TypeError, ValueError), match="schedule"):
            AISOptions.create(schedule=bad, num_steps=None)


# -- both backends: the same checks reach the user -------------------------------------------
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=st.sampled_from(sorted(OPTION_SPECS)), value=ANY_SCALAR)
def test_backend_ais_options_name_the_bad_argument(backend, name, value):
    model = backend.problem_model(problems.gaussian(2))
    if OPTION_SPECS[name](value):
        backend.make_ais(model, **{name: value})
    else:
        with pytest.raises((TypeError, ValueError), match=name):
            backend.make_ais(model, **{name: value})


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(sorted(RUN_SPECS)),
    value=ANY_SCALAR.filter(lambda v: not (v is None or RUN_SPECS["max_time"](v))),
)
def test_backend_run_arguments_name_the_bad_argument(backend, name, value):
    model = backend.problem_model(problems.gaussian(2))
    if RUN_SPECS[name](value):
        return
    with pytest.raises((TypeError, ValueError), match=name):
        backend.run_ais_control(model, 0, {name: value}, num_particles=4, num_steps=2)


def _shape_ok(plate_size, shape) -> bool:
    batch = () if plate_size is None else (plate_size,)
    return len(shape) <= len(batch) and (1,) * (len(batch) - len(shape)) + shape == batch


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plate_size=st.sampled_from([None, 1, 3]),
    shape=st.sampled_from([(), (1,), (3,), (2,), (3, 1), (1, 3), (3, 3)]),
    dtype=st.sampled_from(["float16", "float32", "int32", "bool", "complex64"]),
)
def test_energy_shapes_dtypes_and_plates(backend, plate_size, shape, dtype):
    model = backend.shaped_energy_model(plate_size, shape, dtype)
    if dtype == "complex64":
        with pytest.raises(TypeError, match="E_fuzz.*complex"):
            backend.trace_model(model)
    elif not _shape_ok(plate_size, shape):
        with pytest.raises(ValueError, match="E_fuzz"):
            backend.trace_model(model)
    else:
        backend.trace_model(model)


def test_step_size_zero_and_nonpositive_counts(backend):
    model = backend.problem_model(problems.gaussian(2))
    for name, value in [
        ("step_size", 0.0),
        ("num_particles", 0),
        ("num_particles", -3),
        ("num_steps", 0),
        ("num_leapfrog_steps", 0),
    ]:
        with pytest.raises((TypeError, ValueError), match=name):
            backend.run_ais(model, 0, **{name: value})

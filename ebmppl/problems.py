"""Energies with exactly known log partition functions, shared by tests, tutorials, benchmarks.

Every problem is a latent ``x`` with a proper prior (``Normal(0, prior_scale)`` per coordinate,
or a ``Gamma`` for the positive problem) and one energy factor ``E(x)``; ``log_z`` is

    log Z = log E_prior[exp(-E(x))] = log ∫ prior(x) exp(-E(x)) dx,

the evidence of the model ``x ~ prior; energy("E", E, x)`` on either backend. Energies are
written once, batch-aware (input (..., dim), output (...)), through a small array namespace,
and build the same model on NumPyro (:func:`ebmppl.numpyro.problem_model`) and Pyro
(:func:`ebmppl.pyro.problem_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import integrate, special, stats

from ._xp import namespace

__all__ = [
    "Problem",
    "all_problems",
    "banana",
    "double_well",
    "funnel",
    "gaussian",
    "gaussian_with_hole",
    "get_problem",
    "many_well",
    "mixture",
    "positive",
    "shifted",
]

LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True, eq=False)
class Problem:
    """A prior plus an energy with an exact log Z.

    Attributes:
        name: short identifier (e.g. ``"gaussian10"``).
        dim: dimension of the latent ``x`` (event shape ``(dim,)``; 0 means a scalar site).
        prior: ``"normal"`` (params: ``(scale,)``) or ``"gamma"`` (params: ``(shape, rate)``).
        energy_fn: ``energy_fn(x, xp) -> E``, batch-aware over leading axes.
        log_z: exact log Z (analytic or adaptive quadrature to ~1e-10).
        mean, var: exact posterior mean and variance of x where known (else None).
        multimodal: whether the target has well-separated modes.
    """

    name: str
    dim: int
    prior: str
    prior_params: tuple
    energy_fn: Callable = field(repr=False)
    log_z: float
    description: str = ""
    mean: np.ndarray | None = field(default=None, repr=False)
    var: np.ndarray | None = field(default=None, repr=False)
    multimodal: bool = False
    extra: dict = field(default_factory=dict, repr=False)
    sampler: Callable | None = field(default=None, repr=False)

    def sample(self, num: int, seed: int = 0) -> np.ndarray:
        """Exact draws from the normalised target, shape (num, dim) (or (num,) if dim == 0).

        Available for problems with a known sampler (Gaussians, the mixture, the positive
        latent); used for BDMC upper bounds and for checking samplers.
        """
        if self.sampler is None:
            raise NotImplementedError(f"problem {self.name!r} has no exact sampler")
        return self.sampler(num, np.random.default_rng(seed))

    def energy(self, x):
        """Energy of ``x`` (jax or torch array, shape (..., dim) or (...) if dim == 0)."""
        return self.energy_fn(x, namespace(x))

    @property
    def event_shape(self) -> tuple[int, ...]:
        return () if self.dim == 0 else (self.dim,)


def _random_spd(dim: int, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = np.exp(rng.uniform(np.log(lo), np.log(hi), size=dim))
    return (q * eig) @ q.T


def gaussian(dim: int = 2, *, prior_scale: float = 2.0, seed: int = 0) -> Problem:
    """Correlated Gaussian energy ``E = (x - m)^T P (x - m) / 2`` under a ``N(0, s^2 I)`` prior.

    ``Z = (2 pi)^{d/2} |P|^{-1/2} N(m; 0, s^2 I + P^{-1})``; the target is Gaussian with
    covariance ``(I / s^2 + P)^{-1}``.
    """
    rng = np.random.default_rng(1000 + seed + dim)
    cov = _random_spd(dim, rng, 0.1, 1.0)
    prec = np.linalg.inv(cov)
    prec = (prec + prec.T) / 2
    m = rng.normal(scale=0.7, size=dim)
    log_z = (
        0.5 * dim * LOG_2PI
        - 0.5 * np.linalg.slogdet(prec)[1]
        + stats.multivariate_normal(np.zeros(dim), prior_scale**2 * np.eye(dim) + cov).logpdf(m)
    )
    post_cov = np.linalg.inv(np.eye(dim) / prior_scale**2 + prec)
    post_mean = post_cov @ prec @ m

    def energy_fn(x, xp):
        d = x - xp.asarray(m)
        return 0.5 * xp.sum((d @ xp.asarray(prec)) * d, -1)

    return Problem(
        f"gaussian{dim}",
        dim,
        "normal",
        (prior_scale,),
        energy_fn,
        float(log_z),
        f"correlated Gaussian energy in {dim} dimensions",
        mean=post_mean,
        var=np.diag(post_cov).copy(),
        extra={"prec": prec, "m": m, "post_cov": post_cov},
        sampler=lambda num, rng: rng.multivariate_normal(post_mean, post_cov, size=num),
    )


def mixture(*, prior_scale: float = 3.0) -> Problem:
    """2-D mixture of three separated Gaussians with unequal weights (0.6, 0.3, 0.1).

    ``E = -log sum_k w_k exp(-|x - mu_k|^2 / (2 s^2))`` with ``s = 0.5``; exact log Z and the
    posterior mode weights (``extra["mode_weights"]``) are analytic.
    """
    w = np.array([0.6, 0.3, 0.1])
    mu = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.5]])
    s = 0.5
    comp = (
        np.log(w)
        + LOG_2PI
        + 2 * np.log(s)
        + stats.multivariate_normal(np.zeros(2), (prior_scale**2 + s**2) * np.eye(2)).logpdf(mu)
    )
    log_z = special.logsumexp(comp)
    mode_weights = np.exp(comp - log_z)
    shrink = prior_scale**2 / (prior_scale**2 + s**2)
    comp_mean = mu * shrink
    comp_var = s**2 * shrink
    mean = mode_weights @ comp_mean
    second = mode_weights @ (comp_mean**2 + comp_var)

    def energy_fn(x, xp):
        d = x[..., None, :] - xp.asarray(mu)
        return -xp.logsumexp(xp.log(xp.asarray(w)) - 0.5 * xp.sum(d * d, -1) / s**2, -1)

    return Problem(
        "mixture",
        2,
        "normal",
        (prior_scale,),
        energy_fn,
        float(log_z),
        "three separated 2-D Gaussians with weights 0.6/0.3/0.1",
        mean=mean,
        var=second - mean**2,
        multimodal=True,
        extra={"mode_weights": mode_weights, "mode_centers": mu},
        sampler=lambda num, rng: (
            comp_mean[rng.choice(3, size=num, p=mode_weights)]
            + np.sqrt(comp_var) * rng.normal(size=(num, 2))
        ),
    )


def _quad(fn, lo=-np.inf, hi=np.inf) -> float:
    val, _err = integrate.quad(fn, lo, hi, epsabs=0, epsrel=1e-11, limit=500)
    return float(val)


def double_well(*, barrier: float = 4.0, tilt: float = 0.5, prior_scale: float = 2.0) -> Problem:
    """2-D tilted double well ``E = a (x0^2 - 1)^2 + c x0 + x1^2 / 2``.

    Two wells at x0 ≈ ±1 with unequal mass (the tilt favours x0 < 0). log Z by quadrature.
    """
    a, c, s2 = barrier, tilt, prior_scale**2

    def marg(x0):
        return stats.norm.pdf(x0, scale=prior_scale) * np.exp(-a * (x0**2 - 1) ** 2 - c * x0)

    z0 = _quad(marg)
    log_z = np.log(z0) - 0.5 * np.log1p(s2)
    mean0 = _quad(lambda t: t * marg(t)) / z0
    var0 = _quad(lambda t: t * t * marg(t)) / z0 - mean0**2
    left = _quad(marg, -np.inf, 0.0) / z0

    def energy_fn(x, xp):
        return a * (x[..., 0] ** 2 - 1) ** 2 + c * x[..., 0] + 0.5 * x[..., 1] ** 2

    return Problem(
        "double_well",
        2,
        "normal",
        (prior_scale,),
        energy_fn,
        float(log_z),
        "tilted 2-D double well",
        mean=np.array([mean0, 0.0]),
        var=np.array([var0, s2 / (1 + s2)]),
        multimodal=True,
        extra={"left_mass": left},
    )


def many_well(num_wells: int = 4, **double_well_options) -> Problem:
    """``num_wells`` independent copies of :func:`double_well` (dimension ``2 * num_wells``,
    ``2 ** num_wells`` modes of unequal mass; Midgley et al. 2023's "many well").

    ``log Z = num_wells * log Z(double well)``; ``extra["left_mass"]`` is the mass of x_{2j} < 0
    in each copy, so mode masses are products of ``left_mass`` and ``1 - left_mass``.
    """
    base = double_well(**double_well_options)

    def energy_fn(x, xp):
        pairs = [base.energy_fn(x[..., 2 * j : 2 * j + 2], xp) for j in range(num_wells)]
        return xp.sum(xp.stack(pairs, -1), -1)

    return Problem(
        f"many_well{2 * num_wells}",
        2 * num_wells,
        "normal",
        base.prior_params,
        energy_fn,
        num_wells * base.log_z,
        f"{num_wells} independent tilted double wells ({2**num_wells} modes)",
        mean=np.tile(base.mean, num_wells),
        var=np.tile(base.var, num_wells),
        multimodal=True,
        extra={"left_mass": base.extra["left_mass"], "num_wells": num_wells},
    )


def banana(*, curvature: float = 1.0, prior_scale: float = 3.0) -> Problem:
    """2-D banana ``E = x0^2 / (2 s0^2) + (x1 - b (x0^2 - s0^2))^2 / (2 s1^2)``, s0=1.5, s1=0.5."""
    b, s0, s1 = curvature, 1.5, 0.5
    p2 = prior_scale**2

    def marg(x0):
        shift = b * (x0**2 - s0**2)
        inner = np.sqrt(2 * np.pi) * s1 * stats.norm.pdf(shift, scale=np.sqrt(p2 + s1**2))
        return stats.norm.pdf(x0, scale=prior_scale) * np.exp(-0.5 * x0**2 / s0**2) * inner

    log_z = np.log(_quad(marg))

    def energy_fn(x, xp):
        x0, x1 = x[..., 0], x[..., 1]
        return 0.5 * x0**2 / s0**2 + 0.5 * (x1 - b * (x0**2 - s0**2)) ** 2 / s1**2

    return Problem(
        "banana", 2, "normal", (prior_scale,), energy_fn, float(log_z), "curved 2-D banana"
    )


def funnel(dim: int = 5, *, prior_scale: float = 3.0) -> Problem:
    """Neal's funnel as an energy: ``E = -log N(v; 0, 3^2) - sum_i log N(x_i; 0, e^v)``.

    ``x = (v, x_1, ..., x_{dim-1})``; log Z = log E_funnel[prior density], by quadrature over v.
    """
    k = dim - 1
    p2 = prior_scale**2

    def integrand(v):
        return np.exp(
            stats.norm.logpdf(v, scale=3.0)
            + stats.norm.logpdf(v, scale=prior_scale)
            + k * stats.norm.logpdf(0.0, scale=np.sqrt(np.exp(v) + p2))
        )

    log_z = np.log(_quad(integrand, -60.0, 60.0))

    def energy_fn(x, xp):
        v, rest = x[..., 0], x[..., 1:]
        return (
            0.5 * v**2 / 9.0
            + 0.5 * LOG_2PI
            + np.log(3.0)
            + xp.sum(0.5 * rest**2, -1) * xp.exp(-v)
            + k * (0.5 * v + 0.5 * LOG_2PI)
        )

    return Problem(
        f"funnel{dim}", dim, "normal", (prior_scale,), energy_fn, float(log_z), "Neal's funnel"
    )


def positive(*, shape: float = 2.0, rate: float = 1.0, slope: float = 3.0, power: float = 4.0):
    """Positive latent ``lam ~ Gamma(a, b)`` with ``E = c lam - k log lam`` (Poisson-like).

    Z = b^a Gamma(a + k) / (Gamma(a) (b + c)^(a + k)); the target is Gamma(a + k, b + c).
    Exercises the constrained-to-unconstrained transform and its Jacobian.
    """
    a, b, c, k = shape, rate, slope, power
    log_z = a * np.log(b) + special.gammaln(a + k) - special.gammaln(a) - (a + k) * np.log(b + c)

    def energy_fn(x, xp):
        return c * x - k * xp.log(x)

    return Problem(
        "positive",
        0,
        "gamma",
        (a, b),
        energy_fn,
        float(log_z),
        "Gamma prior, Poisson-like energy",
        mean=np.array((a + k) / (b + c)),
        var=np.array((a + k) / (b + c) ** 2),
        sampler=lambda num, rng: rng.gamma(a + k, 1.0 / (b + c), size=num),
    )


def gaussian_with_hole(*, hole_mass: float = 0.01, prior_scale: float = 2.0) -> Problem:
    """A 2-D Gaussian energy that is NaN on a ball holding ``hole_mass`` of the target's mass.

    ``E = |x - m|^2 / 2`` with ``m = (1, 0)`` under a ``N(0, s^2 I)`` prior, except inside a
    ball off the target's centre, where the energy is NaN. ``log_z`` is the log normalising
    constant of the same model with zero density on the ball (a fault-injection problem:
    samplers must treat the NaN region as zero density, neither crash nor return NaN).
    """
    m = np.array([1.0, 0.0])
    prec = 1.0 / prior_scale**2 + 1.0  # isotropic target precision
    mu = m / prec
    centre = mu + np.array([0.8, 0.6]) / np.sqrt(prec)
    nc = float(np.sum((centre - mu) ** 2) * prec)
    radius = _brentq(lambda r: stats.ncx2.cdf(r**2 * prec, 2, nc) - hole_mass, 1e-6, 10.0)
    # Z without the hole: (2 pi)^{d/2} N(m; 0, (s^2 + 1) I), d = 2.
    cov = (prior_scale**2 + 1.0) * np.eye(2)
    full = LOG_2PI + stats.multivariate_normal(np.zeros(2), cov).logpdf(m)
    log_z = float(full + np.log1p(-hole_mass))

    def energy_fn(x, xp):
        e = 0.5 * xp.sum((x - xp.asarray(m)) ** 2, -1)
        inside = xp.sum((x - xp.asarray(centre)) ** 2, -1) < radius**2
        return xp.where(inside, xp.asarray(float("nan")), e)

    return Problem(
        "gaussian_with_hole",
        2,
        "normal",
        (prior_scale,),
        energy_fn,
        log_z,
        f"2-D Gaussian energy, NaN on a ball with {hole_mass:.0%} of the target mass",
        extra={"centre": centre, "radius": radius, "hole_mass": hole_mass},
    )


def _brentq(fn, lo: float, hi: float) -> float:
    from scipy.optimize import brentq

    return float(brentq(fn, lo, hi, xtol=1e-12))


def shifted(problem: Problem, offset: float) -> Problem:
    """``problem`` with ``offset`` added to its energy: ``log_z`` becomes ``log_z - offset``.

    Large offsets (1e4) test the numerical range of log weights and log Z.
    """
    base = problem.energy_fn

    def energy_fn(x, xp):
        return base(x, xp) + offset

    return Problem(
        f"{problem.name}_shifted",
        problem.dim,
        problem.prior,
        problem.prior_params,
        energy_fn,
        problem.log_z - offset,
        f"{problem.description} plus {offset:g}",
        mean=problem.mean,
        var=problem.var,
        multimodal=problem.multimodal,
        extra=problem.extra,
        sampler=problem.sampler,
    )


def all_problems() -> dict[str, Problem]:
    """The standard set: Gaussians in 2, 10 and 100 dimensions and the non-Gaussian problems."""
    probs = [
        gaussian(2),
        gaussian(10),
        gaussian(100),
        mixture(),
        double_well(),
        many_well(),
        banana(),
        funnel(),
        positive(),
    ]
    return {p.name: p for p in probs}


def get_problem(name: str) -> Problem:
    """Return the standard problem called ``name`` (see :func:`all_problems`)."""
    probs = all_problems()
    if name not in probs:
        raise KeyError(f"unknown problem {name!r}; choose from {sorted(probs)}")
    return probs[name]

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # A Q-function is an energy: the Boltzmann policy
#
# In maximum-entropy reinforcement learning the policy at a state `s` is a Boltzmann
# distribution over actions,
#
#     pi(a | s) = pi0(a) exp(Q(s, a) / T) / Z(s, T),    E(a | s) = -Q(s, a) / T,
#
# relative to a prior (behaviour) policy `pi0`. Its normaliser gives the *soft value*
# `V(s) = T log Z(s, T)`, and three quantities a posterior analyst cares about follow:
#
# * `E_pi[Q]`, the expected return of the policy;
# * `KL(pi || pi0) = E_pi[Q] / T - log Z`, the information the policy spends;
# * `V = E_pi[Q] - T KL`: the soft value trades return against that information.
#
# The temperature moves the policy between greedy (`T -> 0`: all mass on the best action)
# and the prior (`T -> inf`). We take a 1-D continuous action with a `Normal(0, 2)` prior
# policy and a Q-function with two good actions: a broad, safe optimum and a narrow, higher
# one. `ebmppl.energies.from_q_function` turns `Q` into the energy; AIS gives `log Z` and,
# through `result.expectation`, `E_pi[Q]` and the policy's mass on each action, all with
# Monte Carlo standard errors; 1-D quadrature gives the exact values.
#
# Runtime (2-core CPU): about 15 s; with `EBMPPL_TUTORIAL_SMALL=1` about 13 s (most of it is
# compiling one AIS program per temperature).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy import integrate, stats

from ebmppl import energies
from ebmppl.numpyro import AIS, energy

SMALL = os.environ.get("EBMPPL_TUTORIAL_SMALL", "") not in ("", "0")
NUM_PARTICLES = 1000 if SMALL else 4000
NUM_STEPS = 200 if SMALL else 400
TEMPERATURES = (0.1, 0.5, 2.0)
STATE = 0.8
PRIOR_SCALE = 2.0

# %% [markdown]
# ## The Q-function and the policy model
# `Q(s, a) = -(a - s)^2 / 2 + 2.5 exp(-(a + 1)^2 / (2 * 0.2^2))`: at `s = 0.8` the broad optimum
# is at `a = 0.8` (value 0) and the narrow one near `a = -1` (value ≈ 0.88). The same function
# serves JAX (inside the model) and NumPy (quadrature), written once with the array module
# as an argument.


# %%
def make_q(xp):
    def q(state, action):
        """Q(s, a) for actions of shape (...): -> (...)."""
        return -0.5 * (action - state) ** 2 + 2.5 * xp.exp(-0.5 * ((action + 1.0) / 0.2) ** 2)

    return q


q_jax, q_np = make_q(jnp), make_q(np)


def policy_model(temperature):
    a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SCALE))  # prior policy pi0
    energy("E", energies.from_q_function(q_jax, STATE, temperature), a)  # -Q(s, a) / T


# %% [markdown]
# ## Exact values by quadrature
# `Z(s, T) = ∫ pi0(a) exp(Q(s, a) / T) da` and `E_pi[h] = ∫ h pi0 exp(Q/T) da / Z`; we split the
# integrals at the narrow peak so the adaptive quadrature sees it.


# %%
def exact(temperature, h=None):
    def dens(a):
        return stats.norm.pdf(a, scale=PRIOR_SCALE) * np.exp(q_np(STATE, a) / temperature)

    def integral(fn):
        pieces = [(-np.inf, -2.0), (-2.0, -1.0), (-1.0, 0.0), (0.0, np.inf)]
        return sum(
            integrate.quad(fn, lo, hi, epsabs=0, epsrel=1e-12, limit=500)[0] for lo, hi in pieces
        )

    z = integral(dens)
    if h is None:
        return np.log(z)
    return integral(lambda a: h(a) * dens(a)) / z


def near_narrow_peak(a):
    """Indicator of the narrow optimum's basin, |a + 1| < 0.6."""
    return (np.abs(np.asarray(a) + 1.0) < 0.6).astype(float)


# %% [markdown]
# ## AIS at three temperatures
# One AIS run per temperature. Multimodality is no problem for AIS: particles start from the
# prior and the weights put the right mass on each optimum, even when HMC moves never hop
# between them.

# %%
rows = []
for i, temp in enumerate(TEMPERATURES):
    res = AIS(policy_model, num_particles=NUM_PARTICLES, num_steps=NUM_STEPS, progress=False).run(
        jax.random.PRNGKey(i), temp
    )
    eq, eq_se = res.expectation(lambda p: q_np(STATE, p["a"]))
    mass, mass_se = res.expectation(lambda p: near_narrow_peak(p["a"]))
    rows.append(
        {
            "T": temp,
            "result": res,
            "log_z": res.log_z,
            "log_z_se": res.log_z_se,
            "log_z_exact": exact(temp),
            "eq": float(eq),
            "eq_se": float(eq_se),
            "eq_exact": exact(temp, lambda a: q_np(STATE, a)),
            "mass": float(mass),
            "mass_se": float(mass_se),
            "mass_exact": exact(temp, near_narrow_peak),
        }
    )
    print(res)

# %% [markdown]
# ## How temperature changes the policy
# `V = T log Z` (soft value) and `KL = E_pi[Q]/T - log Z` are derived from the estimates; their
# standard errors follow from those of `log Z` and `E_pi[Q]` (the KL's adds them linearly, an
# upper bound since both come from one run).

# %%
header = (
    f"{'T':>5} | {'log Z (AIS)':>17} {'exact':>8} | {'V = T log Z':>11} | "
    f"{'E_pi[Q] (AIS)':>17} {'exact':>7} | {'KL(pi||pi0)':>11} | {'mass narrow':>15} {'exact':>6}"
)
print(header)
print("-" * len(header))
for r in rows:
    temp = r["T"]
    kl = r["eq"] / temp - r["log_z"]
    print(
        f"{temp:5.2f} | {r['log_z']:8.4f} ± {r['log_z_se']:6.4f} {r['log_z_exact']:8.4f} | "
        f"{temp * r['log_z']:11.4f} | {r['eq']:8.4f} ± {r['eq_se']:6.4f} {r['eq_exact']:7.4f} | "
        f"{kl:11.3f} | {r['mass']:6.3f} ± {r['mass_se']:5.3f} {r['mass_exact']:6.3f}"
    )
greedy = float(q_np(STATE, np.linspace(-4.0, 4.0, 800_001)).max())
prior_value = integrate.quad(
    lambda a: stats.norm.pdf(a, scale=PRIOR_SCALE) * q_np(STATE, a), -np.inf, np.inf, limit=500
)[0]
print(f"greedy value max_a Q = {greedy:.4f}; prior-policy value E_pi0[Q] = {prior_value:.4f}")

# %% [markdown]
# Cold (`T = 0.1`): almost all mass on the narrow, higher optimum; expected return near the
# greedy value, at a high information cost. Hot (`T = 2`): the broad optimum wins on volume
# and the policy drifts back towards the prior. `E_pi[Q]` falls as `T` rises (its derivative is
# `-Var_pi(Q) / T^2`), and so does the soft value `T log Z`, from the greedy value `max Q`
# (T -> 0) towards the prior policy's `E_pi0[Q]` (T -> inf); by Jensen's inequality it always
# lies between the two.
#
# ## The checks this tutorial relies on

# %%
checks = {}
for r in rows:
    res, temp = r["result"], r["T"]
    checks[f"T={temp}: log Z within 4.4 se (+0.02) of quadrature"] = (
        abs(r["log_z"] - r["log_z_exact"]) < 4.4 * r["log_z_se"] + 0.02
    )
    checks[f"T={temp}: E_pi[Q] within 4.4 se (+0.01) of quadrature"] = (
        abs(r["eq"] - r["eq_exact"]) < 4.4 * r["eq_se"] + 0.01
    )
    checks[f"T={temp}: narrow-optimum mass within 4.4 se (+0.01)"] = (
        abs(r["mass"] - r["mass_exact"]) < 4.4 * r["mass_se"] + 0.01
    )
    checks[f"T={temp}: ESS > 10% of particles, k-hat < 0.7"] = (
        res.ess > 0.1 * res.num_particles and res.pareto_khat < 0.7
    )
exact_eq = [r["eq_exact"] for r in rows]
soft_values = [r["T"] * r["log_z_exact"] for r in rows]
checks["exact E_pi[Q] and T log Z decrease with T"] = bool(
    np.all(np.diff(exact_eq) < 0) and np.all(np.diff(soft_values) < 0)
)
checks["E_pi0[Q] <= T log Z <= max Q at every T (exact)"] = all(
    prior_value <= v <= greedy for v in soft_values
)
for name, ok in checks.items():
    print(("PASS " if ok else "FAIL ") + name)
assert all(checks.values()), checks

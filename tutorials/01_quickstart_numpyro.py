# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Quickstart: an energy factor in a NumPyro model
#
# An energy `E(x)` defines a density `p(x) ∝ exp(-E(x))`. Here `E` is a tilted double well,
# placed on top of a `Normal(0, 2)` prior. We will
#
# 1. write the model with `ebmppl.numpyro.energy`,
# 2. sample it with NumPyro's own NUTS,
# 3. estimate its log normalising constant `log Z` with AIS and compare with the exact value,
# 4. look at the ArviZ summary and the diagnostics that tell us whether to trust the numbers.
#
# Runtime: about 30 s on a 2-core laptop (set `EBMPPL_TUTORIAL_SMALL=1` for a 10 s version).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import ebmppl
from ebmppl import problems
from ebmppl.numpyro import AIS, NUTS_EXTRA_FIELDS, energy

SMALL = os.environ.get("EBMPPL_TUTORIAL_SMALL", "") not in ("", "0")
NUM_PARTICLES = 500 if SMALL else 2000
NUM_SAMPLES = 300 if SMALL else 1000

# %% [markdown]
# ## The model
# The energy is any JAX function of the latent. `energy(name, fn, *args)` adds the factor
# `-fn(*args) / temperature` and tags the site, so inference can find it (and ArviZ does not
# mistake it for data).


# %%
def tilted_double_well(x):
    return 4.0 * (x[0] ** 2 - 1.0) ** 2 + 0.5 * x[0] + 0.5 * x[1] ** 2


def model():
    x = numpyro.sample("x", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    energy("E", tilted_double_well, x)


# The same problem ships with ebmppl, with its exact log Z (by quadrature):
exact = problems.double_well()
print(f"exact log Z = {exact.log_z:.4f}; mass of the left well = {exact.extra['left_mass']:.3f}")

# %% [markdown]
# ## NUTS, unchanged
# NumPyro's NUTS samples the model as it is. Ask for the extra fields so that ArviZ gets the
# full sample statistics (energy, tree depth, step size).

# %%
mcmc = MCMC(
    NUTS(model),
    num_warmup=NUM_SAMPLES,
    num_samples=NUM_SAMPLES,
    num_chains=2,
    chain_method="sequential",
    progress_bar=False,
)
mcmc.run(jax.random.PRNGKey(0), extra_fields=NUTS_EXTRA_FIELDS)
x = np.asarray(mcmc.get_samples()["x"])
print("NUTS: fraction of draws in the left well:", np.mean(x[:, 0] < 0).round(3))

# %% [markdown]
# ## log Z with annealed importance sampling
# AIS moves particles from the prior (beta = 0) to the model (beta = 1) through
# `prior(x) exp(-beta E(x))`, accumulating importance weights. `exp(log_z)` is unbiased for Z;
# `log_z_se` is its delta-method standard error. ESS and Pareto k-hat tell whether the weights
# can be trusted (k-hat < 0.5 good, > 0.7 unreliable).

# %%
result = AIS(model, num_particles=NUM_PARTICLES, num_steps=200, progress=False).run(
    jax.random.PRNGKey(1)
)
print(result)
err = result.log_z - exact.log_z
print(f"error {err:+.4f} = {err / result.log_z_se:+.2f} standard errors")

# Posterior quantities come from the weighted particles, with Monte Carlo errors:
left, left_se = result.expectation(lambda p: (p["x"][:, 0] < 0).astype(float))
print(f"AIS: left-well mass {left:.3f} ± {left_se:.3f} (exact {exact.extra['left_mass']:.3f})")

# %% [markdown]
# ## ArviZ
# `ebmppl.to_arviz` keeps the energy in its own group (`energy`), stores the AIS run beside the
# NUTS draws, and round-trips through netCDF.

# %%
idata = ebmppl.to_arviz(mcmc, ais=result)
print(ebmppl.arviz.groups(idata))
print(ebmppl.arviz.summary_text(idata))
print("mean energy under the posterior:", float(idata.energy["E"].mean()))

# %% [markdown]
# ## The checks this tutorial relies on
# The numbers above are only as good as these diagnostics; each must hold.

# %%
checks = {
    "AIS within 4.4 se (+0.02) of the exact log Z": abs(err) < 4.4 * result.log_z_se + 0.02,
    "AIS weight ESS > 10% of particles": result.ess > 0.1 * result.num_particles,
    "Pareto k-hat < 0.7": result.pareto_khat < 0.7,
    "left-well mass within 4.4 se": abs(left - exact.extra["left_mass"]) < 4.4 * left_se + 0.01,
    "no NUTS divergences": int(idata.sample_stats["diverging"].sum()) == 0,
    "energy group present, not in log_likelihood": "energy" in ebmppl.arviz.groups(idata)
    and "log_likelihood" not in ebmppl.arviz.groups(idata),
}
for name, ok in checks.items():
    print(("PASS " if ok else "FAIL ") + name)
assert all(checks.values()), checks
_ = jnp  # (jax.numpy is what energies are written in)

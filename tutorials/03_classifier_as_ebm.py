# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # A classifier is an energy-based model
#
# A softmax classifier with logits `f(x)` gives `p(y | x) = softmax(f(x))_y`. Read the logits
# as negative energies and it also defines densities over inputs (the "joint energy" view):
#
# * class-conditional: `E(x, y) = -f_y(x)`, `p(x | y) ∝ prior(x) exp(f_y(x))`, normaliser `Z(y)`;
# * marginal: `E(x) = -logsumexp_y f_y(x)`, `p(x) ∝ prior(x) Σ_y exp(f_y(x))`, `Z = Σ_y Z(y)`,
#   and the implied class prior is `p(y) = Z(y) / Z`.
#
# The classifier alone does not pin these down (adding any `c(x)` to every logit changes the
# densities, not the classifier), so whether they describe the data is an empirical question:
# we answer it with a *normalised* held-out log-likelihood, which needs `log Z(y)`.
#
# Steps: train a small classifier on synthetic 2-D data (plain gradient descent in JAX), turn
# its logits into energies with `ebmppl.energies.from_logits` under a `Normal(0, 3)` prior,
# sample `x | y` with NUTS, estimate `log Z` and every `log Z(y)` with AIS, check both against
# 2-D numerical quadrature, and score held-out points.
#
# Runtime (2-core CPU): about 25 s; with `EBMPPL_TUTORIAL_SMALL=1` about 20 s (mostly JAX
# compilation of the NUTS and AIS programs).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS
from scipy import special, stats

import ebmppl
from ebmppl import diagnostics, energies
from ebmppl.numpyro import AIS, NUTS_EXTRA_FIELDS, energy

SMALL = os.environ.get("EBMPPL_TUTORIAL_SMALL", "") not in ("", "0")
NUM_PARTICLES = 1000 if SMALL else 4000
NUM_SAMPLES = 200 if SMALL else 1000
PRIOR_SCALE = 3.0

# %% [markdown]
# ## Data and a small classifier
# Three Gaussian blobs (known, so we can also score held-out points under the true density),
# 300 training and 150 held-out points. The classifier is a one-hidden-layer tanh network
# trained by full-batch gradient descent (500 steps, compiled into one `fori_loop`).

# %%
rng = np.random.default_rng(0)
CENTERS = np.array([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.6]])
NOISE = 0.8


def make_data(n):
    y = rng.integers(0, 3, size=n)
    return CENTERS[y] + NOISE * rng.normal(size=(n, 2)), y


x_train, y_train = make_data(300)
x_test, y_test = make_data(150)


def init_params(key, hidden=16):
    k1, k2 = jax.random.split(key)
    return {
        "w1": 0.5 * jax.random.normal(k1, (2, hidden)),
        "b1": jnp.zeros(hidden),
        "w2": 0.5 * jax.random.normal(k2, (hidden, 3)),
        "b2": jnp.zeros(3),
    }


def logits_fn(params, x):
    """Logits (..., 3) of inputs x (..., 2)."""
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def loss(params, x, y):
    log_probs = jax.nn.log_softmax(logits_fn(params, x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


@jax.jit
def train(params, x, y):
    grad = jax.grad(loss)
    return jax.lax.fori_loop(
        0, 500, lambda _, p: jax.tree.map(lambda a, g: a - 0.5 * g, p, grad(p, x, y)), params
    )


params = train(init_params(jax.random.PRNGKey(0)), jnp.asarray(x_train), jnp.asarray(y_train))
accuracy = float(np.mean(np.argmax(logits_fn(params, x_test), -1) == y_test))
print(f"training loss {float(loss(params, x_train, y_train)):.3f}, test accuracy {accuracy:.3f}")


def f(x):
    """The trained classifier's logits: x (..., 2) -> (..., 3)."""
    return logits_fn(params, x)


# %% [markdown]
# ## Exact answers by quadrature
# In two dimensions `Z(y) = ∫ N(x; 0, 3² I) exp(f_y(x)) dx` is a smooth, fast-decaying integral:
# a Riemann sum on a fine grid over ±6 prior standard deviations is exact to many digits
# (we check it against a grid half as fine). The same grid gives the exact class-conditional
# means.


# %%
def grid_quadrature(num):
    g = np.linspace(-6 * PRIOR_SCALE, 6 * PRIOR_SCALE, num)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_cell = 2 * np.log(g[1] - g[0]) + stats.norm.logpdf(pts, scale=PRIOR_SCALE).sum(-1)
    log_mass = log_cell[:, None] + np.asarray(jax.jit(f)(jnp.asarray(pts)), dtype=np.float64)
    log_zy = special.logsumexp(log_mass, axis=0)  # (3,)
    probs = np.exp(log_mass - log_zy)
    return log_zy, probs.T @ pts  # log Z(y), E[x | y] (3, 2)


exact_log_zy, exact_means = grid_quadrature(601)
coarse_log_zy, _ = grid_quadrature(301)
exact_log_z = special.logsumexp(exact_log_zy)
print("exact log Z(y):", exact_log_zy.round(4), " log Z:", round(float(exact_log_z), 4))
print("quadrature check (fine - coarse grid):", np.abs(exact_log_zy - coarse_log_zy).max())
print("implied class prior p(y) = Z(y)/Z:", np.exp(exact_log_zy - exact_log_z).round(3))

# %% [markdown]
# ## Sampling x | y with NUTS
# One model holds all three class-conditionals: a plate over classes, one `x` per class and the
# class-conditional energy `-f_y(x)` with `y = 0, 1, 2` (the energy has one value per class, as
# the plate requires). The three blocks are independent, so one NUTS run samples all of them.


# %%
def class_conditional_model():
    with numpyro.plate("class", 3):
        x = numpyro.sample("x", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
        energy("E", energies.from_logits(f, y=jnp.arange(3)), x)


mcmc = MCMC(
    NUTS(class_conditional_model),
    num_warmup=NUM_SAMPLES,
    num_samples=NUM_SAMPLES,
    num_chains=2,
    chain_method="sequential",
    progress_bar=False,
)
mcmc.run(jax.random.PRNGKey(1), extra_fields=NUTS_EXTRA_FIELDS)
idata = ebmppl.to_arviz(mcmc)
print(ebmppl.arviz.summary_text(idata))
_, columns, table = ebmppl.arviz.summary_table(idata)  # rows x[0, 0], x[0, 1], x[1, 0], ...
mcse = table[:, columns.index("mcse_mean")].reshape(3, 2)
nuts_means = idata.posterior["x"].mean(("chain", "draw")).values  # (3, 2)
print("NUTS class means:\n", nuts_means.round(2), "\nexact:\n", exact_means.round(2))
print("training-data class means:\n", np.array([x_train[y_train == k].mean(0) for k in range(3)]))

# %% [markdown]
# The class-conditional densities put their mass far out, where the classifier is most
# confident (logits grow away from the decision boundaries until the tanh units saturate,
# and only the prior stops them), not where the training points are: a classifier's logits
# make a poor density model unless trained as one.
#
# ## log Z and every log Z(y) from one AIS run
# AIS on the *marginal* energy `-logsumexp_y f_y(x)` estimates `log Z`. Its weighted particles
# also give each class: `Z(y) = Z · E_p[softmax_y f(x)]`, so adding `log softmax_y f(x)` to each
# particle's log weight gives an unbiased AIS estimate of `Z(y)` with its own standard error.
# (A separate `AIS` run per class, on `from_logits(f, y=k)`, works too; it compiles once per
# class.)


# %%
def marginal_model():
    x = numpyro.sample("x", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    energy("E", energies.from_logits(f), x)


result = AIS(marginal_model, num_particles=NUM_PARTICLES, num_steps=200, progress=False).run(
    jax.random.PRNGKey(2)
)
print(result)
log_softmax = np.asarray(jax.nn.log_softmax(f(jnp.asarray(result.particles["x"]))), np.float64)
per_class = [
    diagnostics.log_z_from_weights(result.log_weights + log_softmax[:, k]) for k in range(3)
]
ais_log_zy = np.array([lz for lz, _ in per_class])
ais_log_zy_se = np.array([se for _, se in per_class])
for k in range(3):
    err_k = ais_log_zy[k] - exact_log_zy[k]
    print(
        f"class {k}: log Z(y) = {ais_log_zy[k]:.4f} ± {ais_log_zy_se[k]:.4f} "
        f"(exact {exact_log_zy[k]:.4f}, error {err_k / ais_log_zy_se[k]:+.2f} se)"
    )
err = result.log_z - exact_log_z
print(f"log Z error {err:+.4f} = {err / result.log_z_se:+.2f} standard errors")

# %% [markdown]
# ## Normalised held-out log-likelihood
# With `log Z(y)` in hand, `log p(x | y) = log N(x; 0, 9 I) + f_y(x) - log Z(y)` is a proper
# log density, comparable across models. The standard error of its mean over held-out points
# comes from the `log Z(y)` estimates (the per-class errors share one AIS run, so we add them
# linearly: an upper bound). For reference: the prior alone, and the true data density.


# %%
def heldout_loglik(log_zy):
    logits = np.asarray(f(jnp.asarray(x_test)), np.float64)
    log_prior = stats.norm.logpdf(x_test, scale=PRIOR_SCALE).sum(-1)
    return float(np.mean(log_prior + logits[np.arange(len(y_test)), y_test] - log_zy[y_test]))


frac = np.bincount(y_test, minlength=3) / len(y_test)
ll_ais = heldout_loglik(ais_log_zy)
ll_ais_se = float(frac @ ais_log_zy_se)
ll_exact = heldout_loglik(exact_log_zy)
ll_prior = float(np.mean(stats.norm.logpdf(x_test, scale=PRIOR_SCALE).sum(-1)))
ll_true = float(np.mean(stats.norm.logpdf(x_test, CENTERS[y_test], NOISE).sum(-1)))
print(f"held-out mean log p(x | y): EBM (AIS)        {ll_ais:.3f} ± {ll_ais_se:.3f}")
print(f"                            EBM (quadrature) {ll_exact:.3f}")
print(f"                            prior only       {ll_prior:.3f}")
print(f"                            true density     {ll_true:.3f}")

# %% [markdown]
# ## The checks this tutorial relies on
# NUTS means are checked against quadrature within 4.4 Monte Carlo standard errors (ArviZ's
# `mcse_mean`); AIS numbers within 4.4 of their reported standard errors (+0.02).

# %%
checks = {
    "classifier learned the task (test accuracy > 0.8)": accuracy > 0.8,
    "quadrature converged (fine vs coarse grid < 1e-6)": np.abs(exact_log_zy - coarse_log_zy).max()
    < 1e-6,
    "AIS log Z within 4.4 se (+0.02) of quadrature": abs(err) < 4.4 * result.log_z_se + 0.02,
    "AIS log Z(y) within 4.4 se (+0.02) for every class": bool(
        np.all(np.abs(ais_log_zy - exact_log_zy) < 4.4 * ais_log_zy_se + 0.02)
    ),
    "AIS weight ESS > 10% of particles": result.ess > 0.1 * result.num_particles,
    "Pareto k-hat < 0.7": result.pareto_khat < 0.7,
    "held-out log-lik (AIS) within 4.4 se (+0.02) of quadrature": abs(ll_ais - ll_exact)
    < 4.4 * ll_ais_se + 0.02,
    "NUTS class means within 4.4 MCSE (+0.02) of quadrature": bool(
        np.all(np.abs(nuts_means - exact_means) < 4.4 * mcse + 0.02)
    ),
    "no NUTS divergences": int(idata.sample_stats["diverging"].sum()) == 0,
}
for name, ok in checks.items():
    print(("PASS " if ok else "FAIL ") + name)
assert all(checks.values()), checks

"""Value-function adapters (ebmppl.energies): exact small cases on NumPy, JAX and torch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special, stats

from ebmppl import energies

RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 2))  # 3 classes, 2 features
B = RNG.normal(size=3)
Q_TABLE = np.array([0.3, -1.2, 2.0, 0.7, 1.1])  # Q(s, a) for 5 discrete actions at one state
X = RNG.normal(size=(7, 2))


def _np(v):
    """To a float64 NumPy array, whatever the library."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64)


# --- the same value functions in three libraries ------------------------------------------
def _np_logits(x):
    return x @ W.T + B


def _x64_context(jax):
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # older JAX
        from jax.experimental import enable_x64 as ctx
    return ctx(True)


@pytest.fixture
def x64():
    """Run the test with JAX in float64 (restored afterwards: other tests keep float32)."""
    try:
        import jax
    except ImportError:
        yield
        return
    with _x64_context(jax):
        yield


def _jax_logits():
    jnp = pytest.importorskip("jax.numpy")
    w, b = jnp.asarray(W), jnp.asarray(B)
    return lambda x: x @ w.T + b


def _torch_linear():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(2, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(W))
        lin.bias.copy_(torch.as_tensor(B))
    return lin


def _q_np(state, action):
    return state * Q_TABLE[action]


def _backend(name):
    """(logit_fn, to_array) for one library; skips when it is missing."""
    if name == "numpy":
        return _np_logits, np.asarray
    if name == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return _jax_logits(), jnp.asarray
    torch = pytest.importorskip("torch")
    return _torch_linear(), lambda a: torch.as_tensor(np.asarray(a))


LIBS = ["numpy", "jax", "torch"]


@pytest.mark.parametrize("name", LIBS)
def test_logits_marginal_is_minus_logsumexp(name, x64):
    logit_fn, arr = _backend(name)
    e = energies.from_logits(logit_fn)(arr(X))
    assert e.shape == (7,)
    np.testing.assert_allclose(_np(e), -special.logsumexp(_np_logits(X), axis=-1), rtol=1e-12)


@pytest.mark.parametrize("name", LIBS)
def test_logits_conditional_int_and_array_labels(name, x64):
    logit_fn, arr = _backend(name)
    logits = _np_logits(X)
    for y in range(3):
        e = energies.from_logits(logit_fn, y=y)(arr(X))
        np.testing.assert_allclose(_np(e), -logits[:, y], rtol=1e-12)
    labels = np.array([0, 2, 1, 1, 0, 2, 2])
    e = energies.from_logits(logit_fn, y=arr(labels) if name != "numpy" else labels)(arr(X))
    np.testing.assert_allclose(_np(e), -logits[np.arange(7), labels], rtol=1e-12)
    # a scalar array label broadcasts over the batch
    e = energies.from_logits(logit_fn, y=np.int64(2))(arr(X))
    np.testing.assert_allclose(_np(e), -logits[:, 2], rtol=1e-12)


def test_logits_class_partition_functions_sum_to_marginal():
    """Z = sum_y Z(y) under a N(0, I) prior in 2-D (Gauss-Hermite): the marginal is JEM's joint."""
    e_marg = energies.from_logits(_np_logits)

    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # ∫ N(t; 0, 1) h(t) dt
    weights = weights / np.sqrt(2 * np.pi)
    grid = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1)  # (80, 80, 2)
    w2 = np.log(weights[:, None] * weights[None, :])

    def log_z(energy):
        return special.logsumexp(w2 - energy(grid))

    per_class = [log_z(energies.from_logits(_np_logits, y=k)) for k in range(3)]
    np.testing.assert_allclose(special.logsumexp(per_class), log_z(e_marg), rtol=1e-8)
    # Gaussian prior, linear logits: Z(y) = exp(b_y + |w_y|^2 / 2) exactly
    np.testing.assert_allclose(per_class, B + 0.5 * np.sum(W**2, 1), atol=1e-7)


def test_boltzmann_policy_over_five_actions_by_enumeration():
    """Discrete actions, counting measure: log Z = logsumexp(Q / T), pi = softmax(Q / T)."""
    state, temperature = 1.5, 0.7
    e = energies.from_q_function(_q_np, state, temperature)
    actions = np.arange(5)
    energy = e(actions)
    np.testing.assert_allclose(energy, -state * Q_TABLE / temperature, rtol=1e-14)
    log_z = special.logsumexp(-energy)
    np.testing.assert_allclose(log_z, special.logsumexp(state * Q_TABLE / temperature), rtol=1e-14)
    policy = np.exp(-energy - log_z)
    np.testing.assert_allclose(policy, special.softmax(state * Q_TABLE / temperature), rtol=1e-12)
    # T log Z is the soft value; it tends to max Q as T -> 0
    cold = energies.from_q_function(_q_np, state, 1e-3)(actions)
    assert abs(1e-3 * special.logsumexp(-cold) - state * Q_TABLE.max()) < 1e-2


def test_boltzmann_policy_same_numbers_on_jax_and_torch(x64):
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    q_j, q_t = jnp.asarray(Q_TABLE), torch.as_tensor(Q_TABLE)
    e_j = energies.from_q_function(lambda s, a: s * q_j[a], 1.5, 0.7)(jnp.arange(5))
    e_t = energies.from_q_function(lambda s, a: s * q_t[a], 1.5, 0.7)(torch.arange(5))
    np.testing.assert_allclose(_np(e_j), _np(e_t), rtol=1e-14)
    np.testing.assert_allclose(
        float(jax.nn.logsumexp(-e_j)), float(torch.logsumexp(-e_t, 0)), rtol=1e-14
    )


def test_q_function_nn_module_continuous_action():
    torch = pytest.importorskip("torch")

    class Q(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

        def forward(self, state, action):
            return -((action - state * self.w) ** 2).sum(-1)

    q = Q()
    e = energies.from_q_function(q, torch.tensor(0.5, dtype=torch.float64), 0.25)
    assert isinstance(e, torch.nn.Module)
    assert [n for n, _ in e.named_parameters()] == ["q_fn.w"]
    a = torch.zeros(4, 2, dtype=torch.float64)
    expected = ((0.5 * q.w) ** 2).sum() / 0.25
    np.testing.assert_allclose(_np(e(a)), np.full(4, float(expected.detach())), rtol=1e-14)


def test_similarity_energy_and_exact_partition_function():
    """Cosine similarity in 3-D under N(0, I): Z = sinh(k) / k with k = 1 / T (uniform angles)."""
    anchor = np.array([0.0, 0.6, 0.8])
    temperature = 0.5

    def cosine(a, x):
        return np.sum(a * x, -1) / np.linalg.norm(x, axis=-1)

    e = energies.from_similarity(cosine, anchor, temperature)
    x = RNG.normal(size=(6, 3))
    np.testing.assert_allclose(e(x), -cosine(anchor, x) / temperature, rtol=1e-14)
    # the angle between x and the anchor: cos uniform on [-1, 1] under an isotropic Gaussian
    kappa = 1 / temperature
    z_quad = integrate.quad(lambda c: 0.5 * np.exp(kappa * c), -1, 1)[0]
    np.testing.assert_allclose(z_quad, np.sinh(kappa) / kappa, rtol=1e-12)
    # Monte Carlo check of E_prior[exp(-E)] against it
    draws = np.random.default_rng(1).normal(size=(200_000, 3))
    w = np.exp(-e(draws))
    se = w.std() / np.sqrt(w.size)
    assert abs(w.mean() - np.sinh(kappa) / kappa) < 4.4 * se


def test_discriminator_optimal_logit_recovers_the_data_density():
    """D = log p - log g: exp(-E) = p (Lebesgue Z = 1), and E_g[exp D] = 1 (generator Z)."""
    p, g = stats.norm(1.0, 0.7), stats.norm(0.0, 1.5)

    def d_fn(x):
        return p.logpdf(x) - g.logpdf(x)

    e_leb = energies.from_discriminator(d_fn, g.logpdf)
    xs = np.linspace(-3, 4, 9)
    np.testing.assert_allclose(np.exp(-e_leb(xs)), p.pdf(xs), rtol=1e-12)
    np.testing.assert_allclose(integrate.quad(lambda t: np.exp(-e_leb(t)), -20, 20)[0], 1.0)
    e_gen = energies.from_discriminator(d_fn)
    np.testing.assert_allclose(e_gen(xs), -d_fn(xs), rtol=1e-14)
    z_gen = integrate.quad(lambda t: g.pdf(t) * np.exp(-e_gen(t)), -30, 30)[0]
    np.testing.assert_allclose(z_gen, 1.0, rtol=1e-9)


def test_gating_logits_energy_over_experts():
    x = np.array([0.4, -1.3])
    e = energies.from_gating_logits(_np_logits, x)
    ks = np.arange(3)
    gates = _np_logits(x)
    np.testing.assert_allclose(e(ks), -gates, rtol=1e-14)
    np.testing.assert_allclose(e(1), -gates[1], rtol=1e-14)
    np.testing.assert_allclose(special.logsumexp(-e(ks)), special.logsumexp(gates), rtol=1e-14)
    np.testing.assert_allclose(np.exp(-e(ks) - special.logsumexp(-e(ks))), special.softmax(gates))


@pytest.mark.parametrize("name", LIBS)
def test_relative_to_gaussian_identity(name, x64):
    logit_fn, arr = _backend(name)
    """N(x; m, s) exp(-E_rel(x)) = exp(-E(x)) pointwise, on every backend."""
    base = energies.from_logits(logit_fn)
    mean, scale = np.array([0.5, -1.0]), np.array([2.0, 0.5])
    rel = energies.relative_to_gaussian(base, arr(mean), arr(scale))
    x = arr(X)
    log_n = stats.norm.logpdf(X, mean, scale).sum(-1)
    np.testing.assert_allclose(_np(rel(x)), _np(base(x)) + log_n, rtol=1e-12)
    # scalar latent
    rel0 = energies.relative_to_gaussian(lambda t: t**2, 0.3, 1.7, event_ndim=0)
    t = np.linspace(-2, 2, 5)
    np.testing.assert_allclose(rel0(t), t**2 + stats.norm.logpdf(t, 0.3, 1.7), rtol=1e-12)


def test_relative_to_gaussian_gives_lebesgue_partition_function():
    """Z under the Gaussian prior equals ∫ exp(-E) dx whatever the Gaussian (quadrature)."""
    a = 3.0

    def quartic(t):
        return a * t**4

    exact = np.log(2 * special.gamma(1.25) / a**0.25)  # ∫ exp(-a t^4) dt
    for mean, scale in [(0.0, 1.0), (0.5, 0.3), (-1.0, 3.0)]:
        rel = energies.relative_to_gaussian(quartic, mean, scale, event_ndim=0)
        z = integrate.quad(
            lambda t, m=mean, s=scale, r=rel: stats.norm.pdf(t, m, s) * np.exp(-r(t)),
            -np.inf,
            np.inf,
            epsrel=1e-12,
        )[0]
        np.testing.assert_allclose(np.log(z), exact, rtol=1e-9)


def test_torch_and_jax_adapters_agree(x64):
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    lin, f_j = _torch_linear(), _jax_logits()
    xt, xj = torch.as_tensor(X), jnp.asarray(X)
    pairs = [
        (energies.from_logits(lin), energies.from_logits(f_j)),
        (energies.from_logits(lin, 1), energies.from_logits(f_j, 1)),
        (
            energies.from_discriminator(lambda x: lin(x)[..., 0], lambda x: -(x**2).sum(-1)),
            energies.from_discriminator(lambda x: f_j(x)[..., 0], lambda x: -(x**2).sum(-1)),
        ),
        (
            energies.relative_to_gaussian(energies.from_logits(lin, 2), 0.0, 2.0),
            energies.relative_to_gaussian(energies.from_logits(f_j, 2), 0.0, 2.0),
        ),
    ]
    for e_t, e_j in pairs:
        np.testing.assert_allclose(_np(e_t(xt)), _np(e_j(xj)), rtol=1e-12)
    np.testing.assert_allclose(
        _np(energies.from_gating_logits(lin, xt[0])(torch.arange(3))),
        _np(energies.from_gating_logits(f_j, xj[0])(jnp.arange(3))),
        rtol=1e-12,
    )
    # jit-traceable, also with a traced label
    e_jit = jax.jit(lambda x, y: energies.from_logits(f_j, y)(x))
    np.testing.assert_allclose(_np(e_jit(xj, 2)), -_np_logits(X)[:, 2], rtol=1e-12)


def test_module_adapter_parameters_held_fixed_in_pyro_energy():
    """A wrapped nn.Module stays an nn.Module, so ebmppl.pyro.energy detaches its parameters."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyro")
    import pyro
    import pyro.distributions as dist

    from ebmppl.pyro import energy

    lin = _torch_linear()
    e = energies.from_logits(lin, y=0)
    assert isinstance(e, torch.nn.Module)
    assert {n for n, _ in e.named_parameters()} == {"logit_fn.weight", "logit_fn.bias"}

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1))
        energy("E", e, x)

    tr = pyro.poutine.trace(model).get_trace()
    x = tr.nodes["x"]["value"].requires_grad_(True)
    tr = pyro.poutine.trace(pyro.poutine.condition(model, {"x": x})).get_trace()
    log_factor = tr.nodes["E"]["fn"].log_factor
    (grad,) = torch.autograd.grad(tr.log_prob_sum(), x, retain_graph=True)
    np.testing.assert_allclose(_np(grad), W[0] - _np(x), rtol=1e-12)  # prior + f_0(x)
    # the factor's graph does not reach the module's parameters: they are held fixed
    (none,) = torch.autograd.grad(log_factor, lin.weight, allow_unused=True)
    assert none is None
    assert lin.weight.grad is None


def test_pyro_ais_and_jit_nuts_with_module_adapter():
    """Linear logits under a N(0, s^2 I) prior: Z(y) = exp(b_y + s^2 |w_y|^2 / 2) exactly."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyro")
    import warnings

    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC

    from ebmppl.pyro import AIS, NUTS, energy

    lin, scale, y = _torch_linear(), 1.5, 2
    e = energies.from_logits(lin, y=y)

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(2, dtype=torch.float64), scale).to_event(1))
        energy("E", e, x)

    res = AIS(model, num_particles=500, num_steps=50, progress=False).run(
        generator=torch.Generator().manual_seed(0)
    )
    exact = B[y] + 0.5 * scale**2 * np.sum(W[y] ** 2)
    assert abs(res.log_z - exact) < 4.4 * res.log_z_se + 0.02, (res, exact)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyro.set_rng_seed(0)
        mcmc = MCMC(
            NUTS(model, jit_compile=True, ignore_jit_warnings=True),
            num_samples=20,
            warmup_steps=20,
            disable_progbar=True,
        )
        mcmc.run()
    assert mcmc.get_samples()["x"].shape == (20, 2)
    assert lin.weight.grad is None


def test_numpyro_energy_site_with_adapter(x64):
    pytest.importorskip("numpyro")
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.util import log_density

    from ebmppl.numpyro import energy

    e = energies.from_q_function(lambda s, a: -((a - s) ** 2).sum(-1), 1.0, 0.5)

    def model():
        a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        energy("E", e, a)

    a = np.array([0.2, 0.7])
    lp, _ = log_density(model, (), {}, {"a": a})
    expected = stats.norm.logpdf(a).sum() - ((a - 1.0) ** 2).sum() / 0.5
    np.testing.assert_allclose(float(lp), expected, rtol=1e-10)


def test_bad_input():
    with pytest.raises(TypeError, match="logit_fn must be a callable"):
        energies.from_logits(3.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        energies.from_q_function(_q_np, 0.0, 0.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        energies.from_similarity(lambda a, x: x, 0.0, -1.0)
    with pytest.raises(ValueError, match="event_ndim"):
        energies.relative_to_gaussian(lambda x: x, 0.0, 1.0, event_ndim=2)
    with pytest.raises(ValueError, match="scale must be positive"):
        energies.relative_to_gaussian(lambda x: x, 0.0, 0.0)
    with pytest.raises(TypeError, match="log_generator_density"):
        energies.from_discriminator(lambda x: x, "not a function")
    assert "logsumexp" in repr(energies.from_logits(_np_logits))

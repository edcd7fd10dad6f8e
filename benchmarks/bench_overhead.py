"""Performance and scale, measured: what ebmppl adds on top of the model's own gradient cost.

a. AIS loop overhead: wall time of a full AIS run (``adaptation="online"``, no progress, warm:
   the compiled program reused) over the wall time of the same number of batched
   potential-and-gradient evaluations of the same model in a bare loop, in the same process
   (JAX: ``jax.jit`` + ``lax.fori_loop`` over ``vmap(value_and_grad(U))`` with ``U`` built from
   ``ebmppl.numpyro.ModelPotential(model).log_parts``; torch: a tight loop of batched
   ``torch.autograd.grad`` on ``ebmppl.pyro.ModelPotential(model).log_parts``). gaussian10
   and mixture at 1,000 and 100,000 particles (gaussian100 as an extra row). Targets: <= 1.2
   (JAX), <= 1.5 (torch). JAX rows also time the random draws AIS makes, alone.
b. Plugin overhead on NUTS: NumPyro NUTS on ``problem_model(gaussian10)`` vs the same model
   with plain ``numpyro.factor`` vs ``NUTS(potential_fn=...)`` with the potential written by
   hand; same initial points and keys; warm time per effective sample (ArviZ bulk ESS,
   minimum over coordinates). Target <= 1.05.
c. Scaling: AIS cost and peak memory against particles (10^2..10^5) and dimension (2..1000),
   and peak memory at 100 vs 1000 annealing steps. One fresh subprocess per configuration;
   memory is the device allocator's peak where there is one (GPU), else the process's peak
   RSS (``VmHWM``; see :func:`_peak_rss_mb`), next to the RSS after imports. The torch pair
   also runs with glibc's mmap threshold fixed (see :func:`memory_vs_steps`).
d. Sharding: JAX AIS with ``shard=True`` over 2 host devices
   (``XLA_FLAGS=--xla_force_host_platform_device_count=2``) vs one device, timed alternately
   in one process (and, without --quick, against a separate 1-device process).
e. torch hot loop: a source scan of ``ebmppl/pyro/_ais.py`` for host synchronisations, a
   dynamic count of tensor-to-host conversions during AIS at two schedule lengths (per-step
   syncs would make the count grow), CUDA sync-debug mode when a GPU is present, and
   ``torch.compile`` of a small ``nn.Module`` energy vs eager inside AIS (without --quick).

``python benchmarks/bench_overhead.py [--quick] [--sections=abcde]`` prints the tables and
writes ``benchmarks/results/overhead.json`` (``overhead_quick.json`` with ``--quick``; a run of
some sections updates those sections only). ``--gpu`` runs the short device check of
``benchmarks/gpu.sh`` instead (sections a and c at 10^5 particles and e's sync check, on CUDA
where each backend has it; a small CPU smoke run where neither has) and writes
``overhead_gpu.json``. Torch runs with one intra-op thread on CPU, as in ``bench_backends``
(the machine is small and shared). Every row carries the 1-minute load average when it was
measured.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np

RESULTS = Path(__file__).parent / "results"
# A control for the torch memory pair: with a fixed mmap threshold glibc returns freed (N, D)
# temporaries at once, so peak RSS measures live data only.
MMAP_THRESHOLD = 16384
TARGETS = {"jax_ais_overhead": 1.2, "torch_ais_overhead": 1.5, "nuts_plugin_overhead": 1.05}
_FUTURE = r"\s*ArviZ is undergoing a major refactor"


# -- shared helpers --------------------------------------------------------------------------
def load() -> float:
    """1-minute load average (2 cores here: above ~2, timings are inflated by other work)."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    """CPU model, cores, RAM, library versions (imports each library; call in the parent)."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("jax", "jaxlib", "numpyro", "torch", "pyro", "arviz"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "cpu": model,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": ram,
        "os": platform.platform(),
        "versions": versions,
    }


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _peak_rss_mb() -> float:
    """Peak resident set size of this process image in MiB.

    ``VmHWM`` from /proc where available: ``getrusage(...).ru_maxrss`` is the same high-water
    mark but, on Linux, carries over the parent's peak across fork + exec (so a subprocess of
    a big parent reports the parent's peak). Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on
    macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 2**20 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _rss_after_trim_mb() -> float | None:
    """RSS after asking glibc to return freed heap memory to the system (None elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return _rss_mb()


def _torch_setup(device: str) -> None:
    import torch

    if device == "cpu":
        torch.set_num_threads(1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def diag_gaussian(dim: int, prior_scale: float = 2.0):
    """A diagonal Gaussian energy with exact log Z (cheap in any dimension), as a Problem."""
    from scipy import stats

    from ebmppl.problems import LOG_2PI, Problem

    i = np.arange(dim)
    m = 0.5 * np.sin(i)
    v = 0.2 + 0.8 * np.cos(0.37 * i) ** 2  # target variances of the energy alone
    log_z = float(
        np.sum(0.5 * (LOG_2PI + np.log(v)) + stats.norm.logpdf(m, 0.0, np.sqrt(prior_scale**2 + v)))
    )

    def energy_fn(x, xp):
        return 0.5 * xp.sum((x - xp.asarray(m)) ** 2 / xp.asarray(v), -1)

    return Problem(f"diag_gaussian{dim}", dim, "normal", (prior_scale,), energy_fn, log_z)


def mlp_energy(dim: int = 8, hidden: int = 256):
    """A small neural energy (2 tanh layers of ``hidden`` units plus a quadratic), fixed
    random weights; log Z unknown (NaN). Shows the overhead ratio for a non-trivial energy."""
    from ebmppl.problems import Problem

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(dim, hidden)) / np.sqrt(dim)
    w2 = rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)
    w3 = rng.normal(size=(hidden,)) / np.sqrt(hidden)

    def energy_fn(x, xp):
        t = xp.exp  # tanh through exp keeps to the small shared namespace
        h = x @ xp.asarray(w1)
        h = 1.0 - 2.0 / (t(2.0 * h) + 1.0)
        h = h @ xp.asarray(w2)
        h = 1.0 - 2.0 / (t(2.0 * h) + 1.0)
        return 0.5 * xp.sum(x**2, -1) + 0.1 * (h @ xp.asarray(w3))

    return Problem(f"mlp{dim}", dim, "normal", (2.0,), energy_fn, float("nan"))


def get_problem(name: str):
    if name.startswith("mlp"):
        return mlp_energy(int(name.removeprefix("mlp")))
    if name.startswith("diag_gaussian"):
        return diag_gaussian(int(name.removeprefix("diag_gaussian")))
    from ebmppl import problems

    if name.startswith("gaussian"):
        return problems.gaussian(int(name.removeprefix("gaussian")))
    return problems.get_problem(name)


def pyro_model(prob, device: str):
    """``ebmppl.pyro.problem_model`` on CPU; on CUDA the same model with its prior on the GPU.

    (``torch.set_default_device`` would do it too, but it intercepts every torch call and
    would tax the timings.)
    """
    from ebmppl.pyro import problem_model

    if device == "cpu" or prob.prior != "normal":
        return problem_model(prob)
    import pyro
    import pyro.distributions as dist
    import torch

    from ebmppl.pyro import energy

    (scale,) = prob.prior_params
    loc = torch.zeros((), device=device)
    scale_t = torch.tensor(scale, device=device)

    def model():
        prior = dist.Normal(loc, scale_t)
        if prob.dim:
            prior = prior.expand([prob.dim]).to_event(1)
        x = pyro.sample("x", prior)
        energy("E", prob.energy, x)

    return model


def jax_on_gpu() -> bool:
    import jax

    return jax.default_backend() == "gpu"


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- a. AIS loop overhead ----------------------------------------------------------------------
def _jax_bare_loop(pot, evals: int):
    """``(U, bare)``: the potential ``U(z)`` of one particle and a jitted ``bare(z (N, D))``
    running ``evals`` batched value-and-gradient evaluations of it (the overhead's limit)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def u(z):
        lb, lr = pot.log_parts(z)
        return -(lb + lr)

    vg = jax.vmap(jax.value_and_grad(u))

    @jax.jit
    def bare(z):
        def body(_, carry):
            z, acc = carry
            v, g = vg(z)
            return z - 1e-3 * g, acc + v  # the next evaluation depends on this one

        return lax.fori_loop(0, evals, body, (z, jnp.zeros(z.shape[:1], z.dtype)))

    return u, bare


def _torch_bare_loop(pot, z0, evals: int, device: str):
    """``evals`` batched potential-and-gradient evaluations with torch autograd from ``z0``."""
    import pyro
    import torch

    z = z0
    with pyro.validation_enabled(False):
        for _ in range(evals):
            zl = z.detach().requires_grad_(True)
            lb, lr = pot.log_parts(zl)
            (g,) = torch.autograd.grad((-(lb + lr)).sum(), zl)
            z = zl.detach() - 1e-3 * g
    _sync(device)
    return z


def jax_overhead(name: str, n: int, steps: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax

    from ebmppl.numpyro import AIS, ModelPotential, problem_model

    prob = get_problem(name)
    model = problem_model(prob)
    ais = AIS(model, num_particles=n, num_steps=steps, adaptation="online", progress=False)
    res = ais.run(jax.random.PRNGKey(0))  # compiles
    evals = res.gradient_evaluations  # per particle; no pilot with adaptation="online"
    pot = ModelPotential(model)

    u, bare = _jax_bare_loop(pot, evals)

    opts = ais.options

    @jax.jit
    def draws(key):
        """Only the random numbers AIS draws (same calls, same shapes), for the breakdown."""

        def move(acc, k):
            k_mom, k_acc = jax.random.split(k)
            noise = jax.random.normal(k_mom, (n, pot.dim)).sum(1)
            return acc + noise + jax.random.uniform(k_acc, (n,)), None

        def body(t, acc):
            k_jit, k_moves = jax.random.split(jax.random.fold_in(key, t))
            acc = acc + jax.random.uniform(k_jit, (n,), minval=0.8, maxval=1.2)
            return lax.scan(move, acc, jax.random.split(k_moves, opts.num_mcmc_steps))[0]

        return lax.fori_loop(0, steps, body, jnp.zeros((n,)))

    z0 = jax.jit(pot.sample_base, static_argnums=1)(jax.random.PRNGKey(2), n)
    jax.block_until_ready(bare(z0))
    jax.block_until_ready(draws(jax.random.PRNGKey(3)))
    peer = _blackjax_hmc_loop(u, pot.dim, n, evals, opts.num_leapfrog_steps)
    if peer is not None:
        jax.block_until_ready(peer(z0, jax.random.PRNGKey(4)))
    t_ais, t_bare, t_rng, t_peer, loads = [], [], [], [], []
    for r in range(repeats):
        loads.append(load())
        t0 = time.perf_counter()
        res = ais.run(jax.random.PRNGKey(10 + r))
        t_ais.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(bare(z0))
        t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(draws(jax.random.PRNGKey(20 + r)))
        t_rng.append(time.perf_counter() - t0)
        if peer is not None:
            t0 = time.perf_counter()
            jax.block_until_ready(peer(z0, jax.random.PRNGKey(30 + r)))
            t_peer.append(time.perf_counter() - t0)
    row = _overhead_row(
        "jax", str(jax.devices()[0].platform), prob, n, steps, evals, t_ais, t_bare, loads, res
    )
    row["rng_s"] = min(t_rng)  # threefry draws alone (momenta, accept, jitter)
    row["rng_share_of_ais"] = row["rng_s"] / row["ais_s"]
    if t_peer:  # the peer's HMC over the same bare loop: what HMC itself costs beyond gradients
        row["blackjax_hmc_s"] = min(t_peer)
        row["blackjax_hmc_ratio"] = row["blackjax_hmc_s"] / row["bare_s"]
    return row


def _blackjax_hmc_loop(u, dim: int, n: int, evals: int, leap: int):
    """BlackJAX's HMC kernel (``vmap`` over particles, its per-chain keys, fixed step size,
    identity mass, ``leap`` leapfrogs) for ``evals // leap`` moves: about ``evals`` gradients
    per particle, like the AIS run. Returns a jitted ``run(z0, key)``; None without BlackJAX.
    No tempering and no adaptation, so it is a lower bound on a peer's tempered loop.
    """
    try:
        import blackjax
    except ImportError:
        return None
    import jax
    import jax.numpy as jnp
    from jax import lax

    kernel = blackjax.hmc(
        lambda z: -u(z),
        step_size=0.1,
        inverse_mass_matrix=jnp.ones(dim),
        num_integration_steps=leap,
    )
    moves = max(1, evals // leap)

    @jax.jit
    def run(z0, key):
        def body(state, k):
            state, _ = jax.vmap(kernel.step)(jax.random.split(k, n), state)
            return state, None

        state, _ = lax.scan(body, jax.vmap(kernel.init)(z0), jax.random.split(key, moves))
        return state.position

    return run


def torch_overhead(
    name: str, n: int, steps: int, repeats: int, device: str = "cpu", method: str = "ais"
) -> dict:
    """AIS (or SMC, ``method="smc"``, see :func:`_smc`) wall time over the bare loop of as many
    gradient evaluations, on the Pyro backend."""
    import torch

    from ebmppl.pyro import AIS, ModelPotential

    _torch_setup(device)
    prob = get_problem(name)
    model = pyro_model(prob, device)
    if method == "smc":
        ais = _smc("torch", model, n, steps)
    else:
        ais = AIS(model, num_particles=n, num_steps=steps, adaptation="online", progress=False)

    def gen(seed):
        return torch.Generator(device=device).manual_seed(seed)

    res = ais.run(generator=gen(0))
    evals = res.gradient_evaluations
    pot = ModelPotential(model, vectorize=res.info.get("vectorize", "auto"))
    z0 = pot.sample_base(n, gen(2))

    def bare():
        return _torch_bare_loop(pot, z0, evals, device)

    bare()
    t_ais, t_bare, loads = [], [], []
    for r in range(repeats):
        loads.append(load())
        t0 = time.perf_counter()
        res = ais.run(generator=gen(10 + r))
        t_ais.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t0)
    row = _overhead_row("torch", device, prob, n, steps, evals, t_ais, t_bare, loads, res)
    row["method"] = method
    row["torch_threads"] = torch.get_num_threads()
    return row


SMC_REPLICAS = 4


def _smc(backend: str, model, n: int, steps: int):
    """SMC (resampling at ESS < N/2, ``SMC_REPLICAS`` replicas of ``n / SMC_REPLICAS`` particles,
    i.e. ``n`` in all) on the AIS rows' schedule (``steps`` sigmoidal steps: the same loop
    length; the adaptive CESS schedule picks 10-30 steps here, too short a run to time the
    loop rather than the fixed per-call costs), online adaptation as the AIS rows."""
    if backend == "jax":
        from ebmppl.numpyro import SMC
    else:
        from ebmppl.pyro import SMC
    return SMC(
        model,
        num_particles=n // SMC_REPLICAS,
        num_replicas=SMC_REPLICAS,
        schedule="sigmoidal",
        num_steps=steps,
        adaptation="online",
        progress=False,
    )


def jax_smc_overhead(name: str, n: int, steps: int, repeats: int) -> dict:
    """SMC wall time over the bare loop of as many gradient evaluations (of ``n`` particles);
    BlackJAX's adaptive tempered SMC (same HMC moves) per gradient, over the same loop."""
    import jax

    from ebmppl.numpyro import ModelPotential, problem_model

    prob = get_problem(name)
    model = problem_model(prob)
    smc = _smc("jax", model, n, steps)
    res = smc.run(jax.random.PRNGKey(0))  # compiles
    evals = res.gradient_evaluations
    pot = ModelPotential(model)

    _, bare = _jax_bare_loop(pot, evals)

    z0 = jax.jit(pot.sample_base, static_argnums=1)(jax.random.PRNGKey(2), n)
    jax.block_until_ready(bare(z0))
    peer = None
    try:
        from bench_peers import blackjax_runner

        peer = blackjax_runner(prob, n // SMC_REPLICAS, 1, smc.options.base.num_leapfrog_steps)
        jax.block_until_ready(peer(jax.random.split(jax.random.PRNGKey(4), SMC_REPLICAS)))
    except ImportError:
        pass
    t_smc, t_bare, t_peer, peer_evals, loads = [], [], [], [], []
    for r in range(repeats):
        loads.append(load())
        t0 = time.perf_counter()
        res = smc.run(jax.random.PRNGKey(10 + r))
        t_smc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(bare(z0))
        t_bare.append(time.perf_counter() - t0)
        if peer is not None:
            t0 = time.perf_counter()
            _, steps_taken = jax.block_until_ready(
                peer(jax.random.split(jax.random.PRNGKey(30 + r), SMC_REPLICAS))
            )
            t_peer.append(time.perf_counter() - t0)
            # per step: the HMC init gradient at the new temperature, then L leapfrogs
            leap = smc.options.base.num_leapfrog_steps
            peer_evals.append(float(np.mean(np.asarray(steps_taken))) * (1 + leap))
    row = _overhead_row(
        "jax",
        str(jax.devices()[0].platform),
        prob,
        n,
        len(res.betas) - 1,
        evals,
        t_smc,
        t_bare,
        loads,
        res,
    )
    row["method"] = "smc"
    if t_peer:  # BlackJAX seconds per gradient over the bare loop's seconds per gradient
        i = int(np.argmin(t_peer))
        row["blackjax_smc_ratio"] = (t_peer[i] / peer_evals[i]) / (row["bare_s"] / evals)
    return row


def _overhead_row(backend, device, prob, n, steps, evals, t_ais, t_bare, loads, res) -> dict:
    ais, bare = min(t_ais), min(t_bare)
    return {
        "backend": backend,
        "device": device,
        "problem": prob.name,
        "num_particles": n,
        "num_steps": steps,
        "grad_evals_per_particle": int(evals),
        "ais_s": ais,
        "bare_s": bare,
        "ais_s_all": t_ais,
        "bare_s_all": t_bare,
        "ratio": ais / bare,
        "method": "ais",
        "target": TARGETS[f"{backend}_ais_overhead"],
        "bare_grad_evals_per_s": n * evals / bare,
        "log_z_error": res.log_z - prob.log_z,
        "log_z_se": res.log_z_se,
        "load": max(loads),
    }


def overhead_plan(quick: bool) -> dict:
    """(problem, num_particles, num_steps, repeats) per backend for section a.

    gaussian10 and mixture are the measured problems; gaussian100 (a dense 100-d quadratic,
    about 20x the potential cost of gaussian10) and mlp8 (a 2-layer, 256-unit tanh network)
    are extra rows showing how the ratio falls when the potential is not trivially cheap. Torch gets fewer steps (same ratio, less time).
    """
    if quick:
        jx = [(1_000, 250, 5), (100_000, 10, 3)]
        tc = [(1_000, 50, 3), (100_000, 5, 2)]
        extra = {"jax": (1_000, 50, 5), "torch": (1_000, 25, 3)}
    else:
        jx = [(1_000, 500, 7), (100_000, 25, 5)]
        tc = [(1_000, 200, 5), (100_000, 20, 3)]
        extra = {"jax": (1_000, 200, 5), "torch": (1_000, 100, 3)}
    plan = {}
    for backend, sizes in (("jax", jx), ("torch", tc)):
        plan[backend] = [(name, *size) for name in ("gaussian10", "mixture") for size in sizes]
        plan[backend].append(("gaussian100", *extra[backend]))
        plan[backend].append(("mlp8", *extra[backend]))
        smc_repeats = 2 if quick else 3
        for name in ("gaussian10", "mixture"):  # SMC rows: the AIS rows' loop lengths
            for size in sizes:
                plan[backend].append((f"smc:{name}", size[0], size[1], smc_repeats))
    return plan


def section_overhead(quick: bool, backends=("jax", "torch"), plan=None, device=None) -> list:
    """Rows of section a; ``plan``: see :func:`overhead_plan`."""
    plan = plan or overhead_plan(quick)
    rows = []
    for backend in backends:
        for name, n, steps, repeats in plan[backend]:
            t0 = time.perf_counter()
            if name.startswith("smc:"):
                if backend == "jax":
                    rows.append(jax_smc_overhead(name[4:], n, steps, repeats))
                else:
                    rows.append(
                        torch_overhead(name[4:], n, steps, repeats, device or "cpu", method="smc")
                    )
            elif backend == "jax":
                rows.append(jax_overhead(name, n, steps, repeats))
            else:
                rows.append(torch_overhead(name, n, steps, repeats, device or "cpu"))
            rows[-1]["section_wall_s"] = time.perf_counter() - t0
            rows[-1]["extra"] = name in ("gaussian100", "mlp8")
            _print_overhead(rows[-1])
    return rows


def _print_overhead(r: dict) -> None:
    print(
        f"  {r['backend']:5s} {r['device']:4s} {r['problem']:11s} N={r['num_particles']:<7d} "
        f"T={r['num_steps']:<4d} evals={r['grad_evals_per_particle']:<5d} "
        f"{r.get('method', 'ais').upper()} {r['ais_s']:7.3f}s "
        f"bare {r['bare_s']:7.3f}s ratio {r['ratio']:5.2f} (target <= {r['target']})"
        + (f" [RNG alone {r['rng_s']:.3f}s]" if "rng_s" in r else "")
        + (
            f" [BlackJAX HMC / bare {r['blackjax_hmc_ratio']:.2f}]"
            if "blackjax_hmc_ratio" in r
            else ""
        )
        + (
            f" [BlackJAX SMC per gradient / bare {r['blackjax_smc_ratio']:.2f}]"
            if "blackjax_smc_ratio" in r
            else ""
        )
        + f" load {r['load']:.1f}",
        flush=True,
    )


# -- b. NUTS plugin overhead -------------------------------------------------------------------
def _min_ess(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FUTURE, category=FutureWarning)
        import arviz as az

    return float(np.min(az.ess(az.convert_to_dataset({"x": x}))["x"].values))


def section_nuts(quick: bool) -> dict:
    """NumPyro NUTS on the model vs on the same potential written by hand.

    ``MCMC.run`` recompiles its sampling loop on every call (about 3 s here, more than the
    sampling itself), so the warm comparison drives each NUTS kernel's own ``init``/``sample``
    in one ``lax.scan`` (warmup adaptation included, exactly what ``MCMC`` runs), compiled once
    and timed on later seeds. ``MCMC.run`` times (compilation included) are reported too.
    """
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax import lax
    from numpyro.infer import MCMC, NUTS

    from ebmppl.numpyro import problem_model

    prob = get_problem("gaussian10")
    (s,) = prob.prior_params
    warmup, samples, seeds, reps = (500, 5000, 3, 4) if quick else (1000, 10000, 5, 5)

    def by_hand(x):  # -log prior (up to a constant) + E(x): the model's own potential
        return 0.5 * jnp.sum((x / s) ** 2) + prob.energy(x)

    def factor_model():  # the same model in plain NumPyro (numpyro.factor, no ebmppl)
        x = numpyro.sample("x", dist.Normal(0.0, s).expand([prob.dim]).to_event(1))
        numpyro.factor("E", -prob.energy(x))

    kernels = {
        "plugin": NUTS(problem_model(prob)),
        "factor": NUTS(factor_model),
        "hand": NUTS(potential_fn=by_hand),
    }

    def init(label, i):
        x0 = jax.random.uniform(jax.random.PRNGKey(100 + i), (prob.dim,), minval=-2, maxval=2)
        x0 = x0 if label == "hand" else {"x": x0}
        return kernels[label].init(jax.random.PRNGKey(i), warmup, x0, (), {})

    def make_run(kernel):
        def body(state, _):
            state = kernel.sample(state, (), {})
            z = state.z["x"] if isinstance(state.z, dict) else state.z
            return state, (z, state.num_steps)

        return jax.jit(lambda state: lax.scan(body, state, None, length=warmup + samples)[1])

    runs = {k: make_run(v) for k, v in kernels.items()}
    compile_s, hlo = {}, {}
    for label in kernels:
        t0 = time.perf_counter()
        jax.block_until_ready(runs[label](init(label, 0)))
        compile_s[label] = time.perf_counter() - t0
        text = runs[label].lower(init(label, 0)).compile().as_text()
        hlo[label] = {"fusions": text.count(" fusion("), "loops": text.count(" while(")}
    tot = {k: {"wall_s": 0.0, "min_ess": 0.0, "leapfrogs": 0} for k in kernels}
    per_leap = {k: [] for k in kernels}  # per seed: fastest of its repeats, s per leapfrog
    per_seed, loads = [], []
    for i in range(1, seeds + 1):
        loads.append(load())
        entry = {}
        order = list(kernels)[:: 1 if i % 2 else -1]  # alternate who goes first
        for label in order:
            state = init(label, i)
            walls = []
            for _ in range(reps):  # same seed repeatedly: the fastest is the least disturbed
                t0 = time.perf_counter()
                z, nsteps = jax.block_until_ready(runs[label](state))
                walls.append(time.perf_counter() - t0)
            wall = min(walls)
            ess = _min_ess(np.asarray(z)[None, warmup:])
            leap = int(np.sum(np.asarray(nsteps)))
            per_leap[label].append(wall / leap)
            for key, val in (("wall_s", wall), ("min_ess", ess), ("leapfrogs", leap)):
                tot[label][key] += val
            entry[label] = {"wall_s": wall, "min_ess": ess, "leapfrogs": leap}
        per_seed.append(entry)
    # Time per effective sample = time per leapfrog (median over seeds of each seed's fastest
    # repeat: robust to load spikes and to one lucky run) x leapfrogs per ESS (pooled).
    s_per_leap = {k: float(np.median(v)) for k, v in per_leap.items()}
    s_per_ess = {k: s_per_leap[k] * v["leapfrogs"] / v["min_ess"] for k, v in tot.items()}
    pooled = {k: v["wall_s"] / v["min_ess"] for k, v in tot.items()}
    # What a user waits for: MCMC.run, compilation included (once per run, see docstring).
    mcmc_run_s = {}
    kw = {"num_warmup": warmup, "num_samples": samples, "progress_bar": False}
    for label in ("plugin", "hand"):
        mcmc = MCMC(kernels[label], **kw)
        t0 = time.perf_counter()
        x0 = init(label, 0).z
        mcmc.run(jax.random.PRNGKey(0), init_params=x0)
        mcmc_run_s[label] = time.perf_counter() - t0
    out = {
        "problem": prob.name,
        "num_warmup": warmup,
        "num_samples": samples,
        "num_seeds": seeds,
        "first_call_s": compile_s,
        "compiled_program": hlo,
        "mcmc_run_s": mcmc_run_s,
        "totals": tot,
        "s_per_ess": s_per_ess,
        "s_per_leapfrog": s_per_leap,
        "ratio": s_per_ess["plugin"] / s_per_ess["hand"],
        "leapfrog_time_ratio": s_per_leap["plugin"] / s_per_leap["hand"],
        "plugin_over_factor": s_per_ess["plugin"] / s_per_ess["factor"],
        "factor_over_hand": s_per_ess["factor"] / s_per_ess["hand"],
        "pooled_s_per_ess_ratio": pooled["plugin"] / pooled["hand"],
        "ess_ratio": tot["plugin"]["min_ess"] / tot["hand"]["min_ess"],
        "mcmc_run_ratio": mcmc_run_s["plugin"] / mcmc_run_s["hand"],
        "target": TARGETS["nuts_plugin_overhead"],
        "per_seed": per_seed,
        "load": max(loads),
    }
    print(
        f"  NUTS gaussian10 ({seeds} seeds x {warmup}+{samples}, warm): plugin "
        f"{tot['plugin']['wall_s']:.2f}s / ESS {tot['plugin']['min_ess']:.0f}, by hand "
        f"{tot['hand']['wall_s']:.2f}s / ESS {tot['hand']['min_ess']:.0f}: time per ESS ratio "
        f"{out['ratio']:.3f} (target <= 1.05), time per leapfrog ratio "
        f"{out['leapfrog_time_ratio']:.3f}; plain numpyro.factor model / by hand "
        f"{out['factor_over_hand']:.3f}, ebmppl / numpyro.factor {out['plugin_over_factor']:.3f};"
        f" MCMC.run with compilation {mcmc_run_s['plugin']:.2f}s "
        f"vs {mcmc_run_s['hand']:.2f}s; load {out['load']:.1f}",
        flush=True,
    )
    return out


# -- c/d. subprocess workers -------------------------------------------------------------------
def _worker(cfg: dict) -> dict:
    """One AIS configuration in this (fresh) process: times and peak memory."""
    backend = cfg["backend"]
    prob = get_problem(cfg["problem"])
    n, steps = cfg["num_particles"], cfg["num_steps"]
    out = dict(cfg)
    if backend == "jax":
        import jax

        from ebmppl.numpyro import AIS, problem_model

        model = problem_model(prob)
        out["rss_after_import_mb"] = _rss_mb()
        ais = AIS(
            model,
            num_particles=n,
            num_steps=steps,
            adaptation="online",
            progress=False,
            shard=cfg.get("shard", False),
        )

        def run(seed):
            return ais.run(jax.random.PRNGKey(seed))

        out["device"] = jax.devices()[0].platform
        out["num_devices"] = len(jax.devices())
    else:
        import torch

        from ebmppl.pyro import AIS

        device = cfg.get("device", "cpu")
        _torch_setup(device)
        model = pyro_model(prob, device)
        out["rss_after_import_mb"] = _rss_mb()
        ais = AIS(model, num_particles=n, num_steps=steps, adaptation="online", progress=False)

        def run(seed):
            return ais.run(generator=torch.Generator(device=device).manual_seed(seed))

        out["device"] = device
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
    loads = [load()]
    t0 = time.perf_counter()
    res = run(0)
    out["cold_s"] = time.perf_counter() - t0
    if cfg.get("warm", True):
        times = []
        for r in range(cfg.get("repeats", 1)):
            loads.append(load())
            t0 = time.perf_counter()
            res = run(1 + r)
            times.append(time.perf_counter() - t0)
        out["warm_s"] = min(times)
        out["warm_s_all"] = times
    out["devices_used"] = res.info.get("devices", 1)
    out["grad_evals"] = int(n * res.gradient_evaluations)
    out["log_z_error"] = res.log_z - prob.log_z
    out["ess"] = res.ess
    out["peak_rss_mb"] = _peak_rss_mb()
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_end_mb"] = _rss_mb()
    out["rss_after_trim_mb"] = _rss_after_trim_mb()
    out["device_peak_mb"] = None
    if backend == "jax":
        stats = jax.local_devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    elif out["device"].startswith("cuda"):
        out["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["load"] = max(loads)
    return out


def spawn(cfg: dict, devices: int = 1, timeout: float = 600) -> dict:
    """Run :func:`_worker` in a fresh interpreter (so peak RSS is this configuration's own)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if cfg.get("malloc_mmap_threshold"):
        env["MALLOC_MMAP_THRESHOLD_"] = str(cfg["malloc_mmap_threshold"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {**cfg, "error": (proc.stderr or proc.stdout).strip()[-800:]}


def _print_scale(r: dict) -> None:
    if "error" in r:
        print(f"  {r['backend']} {r['problem']} N={r['num_particles']}: ERROR {r['error']}")
        return
    warm = f"{r['warm_s']:7.3f}" if "warm_s" in r else "      -"
    dev = f" device peak {r['device_peak_mb']:.1f} MiB" if r.get("device_peak_mb") else ""
    print(
        f"  {r['backend']:5s} {r['device']:4s} {r['problem']:17s} N={r['num_particles']:<7d} "
        f"T={r['num_steps']:<5d} cold {r['cold_s']:6.2f}s warm {warm}s peak RSS "
        f"{r['peak_rss_mb']:7.1f} MiB (after import {r['rss_after_import_mb']:6.1f}){dev} "
        f"load {r['load']:.1f}",
        flush=True,
    )


def scaling_configs(quick: bool, gpu: bool | int = False, torch_device_: str = "cpu") -> list:
    """Configurations of section c, each tagged with the sweep it belongs to.

    Sweeps: ``particles`` (gaussian10), ``dim`` (gaussian2/10/100 from ``ebmppl.problems``, and
    an inline diagonal Gaussian at 100 and 1000 dimensions) and ``steps`` (100 vs 1000 annealing
    steps at fixed particles, one run each, to compare peak memory).
    """
    steps = 20 if quick else 50
    if gpu:  # gpu.sh: 10^5 particles; its CPU smoke run (no GPU): 10^3, fewer configurations
        n = 10**5 if gpu is True else int(gpu)
        plan = {
            "particles": [n],
            "dims": ([100], [1000]) if n >= 10**5 else ([], [1000]),
            "dim_n": n,
            "mem_n": n,
        }
        plans = {"jax": plan, "torch": plan}
    elif quick:
        plans = {
            "jax": {
                "particles": [10**3, 10**5],
                "dims": ([], [1000]),
                "dim_n": 1000,
                "mem_n": 1000,
            },
            "torch": {"particles": [], "dims": ([], []), "dim_n": 1000, "mem_n": 1000},
        }
    else:
        full = {
            "particles": [10**2, 10**3, 10**4, 10**5],
            "dims": ([2, 10, 100], [100, 1000]),
            "dim_n": 1000,
            "mem_n": 10**4,
        }
        plans = {"jax": full, "torch": full}
    cfgs = []
    for backend, plan in plans.items():
        common = {"backend": backend}
        if backend == "torch":
            common["device"] = torch_device_
        for n in plan["particles"]:
            cfgs.append(
                {
                    **common,
                    "sweep": "particles",
                    "problem": "gaussian10",
                    "num_particles": n,
                    "num_steps": steps,
                }
            )
        dense, diag = plan["dims"]
        names = [f"gaussian{d}" for d in dense] + [f"diag_gaussian{d}" for d in diag]
        for name in names:
            cfgs.append(
                {
                    **common,
                    "sweep": "dim",
                    "problem": name,
                    "num_particles": plan["dim_n"],
                    "num_steps": steps,
                }
            )
        allocators = [None]
        if backend == "torch" and torch_device_ == "cpu":
            allocators.append(MMAP_THRESHOLD)  # glibc: see memory_vs_steps
        for alloc in allocators:
            for t in (100, 1000):
                cfg = {
                    **common,
                    "sweep": "steps",
                    "problem": "gaussian10",
                    "num_particles": plan["mem_n"],
                    "num_steps": t,
                    "warm": False,
                }
                if alloc:
                    cfg["malloc_mmap_threshold"] = alloc
                cfgs.append(cfg)
    return cfgs


def section_scaling(quick: bool, gpu: bool = False, torch_device_: str = "cpu") -> list[dict]:
    rows = []
    for cfg in scaling_configs(quick, gpu, torch_device_):
        rows.append(spawn(cfg))
        _print_scale(rows[-1])
    return rows


def memory_vs_steps(rows: list[dict]) -> list[dict]:
    """Peak memory at 100 vs 1000 steps, per backend (and allocator setting): ratio ~1 expected.

    Under glibc's default malloc settings peak RSS also counts freed memory the heap could not
    return (it grew 1.67x on torch while small per-step tensors were kept alive between freed
    (N, D) temporaries; ``malloc_trim`` handed it back, see ``rss_after_trim_mb``). The torch
    pair is therefore also run with ``MALLOC_MMAP_THRESHOLD_`` fixed, which measures live
    memory, as a control.
    """
    out = []
    groups: dict = {}
    for r in rows:
        if r.get("sweep") == "steps" and "error" not in r:
            key = (r["backend"], r.get("malloc_mmap_threshold"))
            groups.setdefault(key, {})[r["num_steps"]] = r
    for (backend, alloc), pair in groups.items():
        if 100 not in pair or 1000 not in pair:
            continue
        a, b = pair[100], pair[1000]
        key = "device_peak_mb" if a.get("device_peak_mb") else "peak_rss_mb"
        out.append(
            {
                "backend": backend,
                "allocator": f"MALLOC_MMAP_THRESHOLD_={alloc}" if alloc else "default",
                "num_particles": a["num_particles"],
                "memory": "device peak" if key == "device_peak_mb" else "peak RSS",
                "mb_100_steps": a[key],
                "mb_1000_steps": b[key],
                "ratio": b[key] / a[key],
                "delta_mb": b[key] - a[key],
                "after_trim_mb_1000_steps": b.get("rss_after_trim_mb"),
                # for scale: what keeping every step's (N, D) float32 particles would add
                "if_states_kept_mb": (1000 - 100) * a["num_particles"] * 10 * 4 / 2**20,
                "time_ratio": b["cold_s"] / a["cold_s"],
            }
        )
    return out


def _print_memory(mem: list[dict]) -> None:
    for m in mem:
        print(
            f"  {m['backend']} ({m['allocator']}), N={m['num_particles']}: {m['memory']} "
            f"{m['mb_100_steps']:.1f} MiB at 100 steps, {m['mb_1000_steps']:.1f} MiB at 1000 "
            f"(ratio {m['ratio']:.3f}; keeping every step's particles would add "
            f"{m['if_states_kept_mb']:.0f} MiB)"
        )


def _shard_worker(cfg: dict) -> dict:
    """In a process with 2 host devices: AIS with shard=False (one device) and shard=True (both),
    compiled once each, then timed alternately so that both see the same load."""
    import jax

    from ebmppl.numpyro import AIS, problem_model

    model = problem_model(get_problem(cfg["problem"]))
    kw = {"num_particles": cfg["num_particles"], "num_steps": cfg["num_steps"]}
    runs = {
        flag: AIS(model, adaptation="online", progress=False, shard=flag, **kw)
        for flag in (False, True)
    }
    times = {False: [], True: []}
    cores = {False: [], True: []}  # process CPU time / wall time: cores kept busy
    devices = {}
    for flag, ais in runs.items():
        devices[flag] = ais.run(jax.random.PRNGKey(0)).info["devices"]
    loads = []
    for r in range(cfg["repeats"]):
        loads.append(load())
        for flag in (False, True) if r % 2 == 0 else (True, False):
            t0, c0 = time.perf_counter(), time.process_time()
            runs[flag].run(jax.random.PRNGKey(1 + r))
            times[flag].append(time.perf_counter() - t0)
            cores[flag].append((time.process_time() - c0) / times[flag][-1])
    return {
        **cfg,
        "num_devices": len(jax.devices()),
        "devices_used": {"shard_false": devices[False], "shard_true": devices[True]},
        "shard_false_s": min(times[False]),
        "shard_true_s": min(times[True]),
        "shard_false_s_all": times[False],
        "shard_true_s_all": times[True],
        "pairwise_speedups": [a / b for a, b in zip(times[False], times[True], strict=True)],
        "cores_busy_shard_false": float(np.median(cores[False])),
        "cores_busy_shard_true": float(np.median(cores[True])),
        "load": max(loads),
    }


def section_sharding(quick: bool) -> dict:
    """JAX AIS on 2 host devices (shard=True) vs 1 device.

    Main figure: one process with 2 host devices, the unsharded (one device) and the sharded
    program timed alternately (the machine is shared, so alternating matters more than
    anything). Without --quick, a separate 1-device process is timed too.
    """
    n, steps, repeats = (100_000, 10, 4) if quick else (100_000, 20, 6)
    base = {"backend": "jax", "problem": "gaussian10", "num_particles": n, "num_steps": steps}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--shard-worker",
        json.dumps({**base, "repeats": repeats}),
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        err = (proc.stderr or proc.stdout).strip()[-800:]
        print(f"  sharding: ERROR {err}")
        return {"error": err}
    alt = json.loads(lines[-1][len("RESULT ") :])
    out = {**alt, "speedup": alt["shard_false_s"] / alt["shard_true_s"]}
    print(
        f"  2 host devices, N={n}, T={steps}: shard=False {alt['shard_false_s']:.3f}s, "
        f"shard=True {alt['shard_true_s']:.3f}s (devices used {alt['devices_used']}): "
        f"speed-up {out['speedup']:.2f}x (pairwise "
        + ", ".join(f"{x:.2f}" for x in alt["pairwise_speedups"])
        + f"); cores busy {alt['cores_busy_shard_false']:.2f} vs "
        f"{alt['cores_busy_shard_true']:.2f}; load {alt['load']:.1f}",
        flush=True,
    )
    if not quick:
        one = spawn({**base, "repeats": repeats, "shard": False}, devices=1)
        _print_scale(one)
        out["one_device_process"] = one
        if "warm_s" in one:
            out["speedup_vs_1_device_process"] = one["warm_s"] / alt["shard_true_s"]
            print(
                f"  speed-up vs a separate 1-device process: "
                f"{out['speedup_vs_1_device_process']:.2f}x",
                flush=True,
            )
    return out


# -- e. torch hot loop -------------------------------------------------------------------------
SYNC_PATTERNS = {
    ".item()": r"\.item\(\)",
    "float(": r"(?<![\w.])float\(",
    "int(": r"(?<![\w.])int\(",
    "bool(": r"(?<![\w.])bool\(",
    ".cpu()": r"\.cpu\(\)",
    ".numpy()": r"\.numpy\(\)",
    ".tolist()": r"\.tolist\(\)",
}


def static_sync_scan() -> dict:
    """Grep the functions that run once per annealing step for host-synchronising calls."""
    from ebmppl.pyro import _ais

    src = inspect.getsource(_ais._Engine.advance)
    loop = src[src.index("for t in range(t0, t1):") :]
    loop = loop[: loop.index("return state")]
    parts = {
        "_Engine.advance (loop body)": loop,
        "StepBuffers.put": inspect.getsource(_ais.StepBuffers.put),
    }
    for fn in (
        "forward_parts",
        "potential_from_parts",
        "build_potential",
        "build_hmc_move",
        "build_mutation",
        "weight_update",
        "kish_ess",
        "build_ais_step",
    ):
        parts[fn] = inspect.getsource(getattr(_ais, fn))
    hits = []
    for where, text in parts.items():
        for line in text.splitlines():
            code = line.split("#", 1)[0]
            if code.strip().startswith(('"', "'")) or not code.strip():
                continue
            for label, pat in SYNC_PATTERNS.items():
                if re.search(pat, code):
                    hits.append({"where": where, "pattern": label, "line": line.strip()})
    return {"scanned": list(parts), "hits": hits}


def dynamic_sync_count(n: int = 500, lengths=(10, 40), device: str = "cpu") -> dict:
    """Count Python-level tensor->host conversions during whole AIS runs of two lengths.

    ``Tensor.item``/``__bool__``/``__float__``/``__int__``/``tolist``/``numpy``/``cpu`` are
    wrapped for the duration of a run; a per-step sync would make the count grow with the
    number of steps. On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` counts syncs too.
    """
    import pyro
    import pyro.distributions as dist
    import torch

    from ebmppl.pyro import AIS, energy

    _torch_setup(device)
    # Only device tensors in the model (the problem energies turn NumPy constants into tensors
    # on every call, a host-to-device copy that is the model's, not the AIS loop's).
    loc, scale = torch.zeros(10, device=device), torch.tensor(2.0, device=device)

    def model():
        x = pyro.sample("x", dist.Normal(loc, scale).to_event(1))
        energy("E", lambda x: 0.5 * (x**2).sum(-1), x)

    names = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy", "cpu")
    counts: dict = {}
    originals = {k: getattr(torch.Tensor, k) for k in names}

    def wrap(k):
        orig = originals[k]

        def f(self, *a, **kw):
            if not getattr(self, "is_meta", False) and self.numel() > 0:
                counts[k] = counts.get(k, 0) + 1
            return orig(self, *a, **kw)

        return f

    out = {"device": device, "num_particles": n, "by_steps": {}}
    for steps in lengths:
        ais = AIS(model, num_particles=n, num_steps=steps, adaptation="online", progress=False)
        ais.run(generator=torch.Generator(device=device).manual_seed(0))  # warm-up
        counts.clear()
        cuda_syncs = None
        for k in names:
            setattr(torch.Tensor, k, wrap(k))
        try:
            if device.startswith("cuda"):
                with warnings.catch_warnings(record=True) as rec:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        ais.run(generator=torch.Generator(device=device).manual_seed(1))
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                cuda_syncs = sum("synchroniz" in str(w.message) for w in rec)
            else:
                ais.run(generator=torch.Generator(device=device).manual_seed(1))
        finally:
            for k in names:
                setattr(torch.Tensor, k, originals[k])
        out["by_steps"][str(steps)] = {
            "conversions": dict(counts),
            "total": sum(counts.values()),
            "cuda_syncs": cuda_syncs,
        }
    a, b = (out["by_steps"][str(t)] for t in lengths)
    out["per_step_conversions"] = (b["total"] - a["total"]) / (lengths[1] - lengths[0])
    if a["cuda_syncs"] is not None:
        out["per_step_cuda_syncs"] = (b["cuda_syncs"] - a["cuda_syncs"]) / (lengths[1] - lengths[0])
    return out


def _compile_worker(cfg: dict) -> dict:
    """AIS on a small MLP energy, eager vs ``torch.compile`` (in a subprocess with a timeout)."""
    import torch

    from ebmppl.pyro import AIS

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dim, n, steps = cfg["dim"], cfg["num_particles"], cfg["num_steps"]

    class MLPEnergy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(dim, 64),
                torch.nn.Tanh(),
                torch.nn.Linear(64, 64),
                torch.nn.Tanh(),
                torch.nn.Linear(64, 1),
            )

        def forward(self, x):
            return self.net(x).squeeze(-1) + 0.5 * (x**2).sum(-1)

    import pyro
    import pyro.distributions as dist

    from ebmppl.pyro import energy

    def make_model(fn):
        def model():
            x = pyro.sample("x", dist.Normal(torch.zeros(dim), 2.0).to_event(1))
            energy("E", fn, x)

        return model

    eager = MLPEnergy().requires_grad_(False)
    out = {**cfg}
    variants = (
        ("eager", lambda: eager),
        ("compiled", lambda: torch.compile(eager)),
        ("compiled_static", lambda: torch.compile(eager, dynamic=False)),
    )
    log_z = {}
    for label, make in variants:
        torch._dynamo.reset()
        ais = AIS(
            make_model(make()),
            num_particles=n,
            num_steps=steps,
            adaptation="online",
            progress=False,
        )
        t0 = time.perf_counter()
        ais.run(generator=torch.Generator().manual_seed(0))
        cold = time.perf_counter() - t0
        times = []
        for r in range(cfg["repeats"]):
            t0 = time.perf_counter()
            res = ais.run(generator=torch.Generator().manual_seed(1 + r))
            times.append(time.perf_counter() - t0)
        log_z[label] = res.log_z
        out[label] = {
            "cold_s": cold,
            "warm_s": min(times),
            "log_z": res.log_z,
            "log_z_se": res.log_z_se,
            "vectorize": res.info["vectorize"],
        }
    for label in ("compiled", "compiled_static"):
        out[label]["speedup"] = out["eager"]["warm_s"] / out[label]["warm_s"]
        out[label]["log_z_diff"] = log_z[label] - log_z["eager"]
    return out


def section_torch(quick: bool, compile_timeout: float = 150) -> dict:
    out = {"static": static_sync_scan(), "dynamic": dynamic_sync_count()}
    hits = out["static"]["hits"]
    print(f"  static scan of ebmppl/pyro/_ais.py hot loop: {len(hits)} host-sync call(s)")
    for h in hits:
        print(f"    {h['where']}: {h['pattern']}  | {h['line']}")
    d = out["dynamic"]
    print(
        "  dynamic count of tensor->host conversions per AIS run: "
        + ", ".join(f"{k} steps: {v['total']}" for k, v in d["by_steps"].items())
        + f" -> {d['per_step_conversions']:.2f} per step",
        flush=True,
    )
    if quick:
        out["compile"] = {"skipped": "torch.compile is measured without --quick (about a minute)"}
        print("  torch.compile: skipped with --quick (run without it: about a minute)")
        return out
    cfg = {"dim": 10, "num_particles": 1000, "num_steps": 100, "repeats": 2}
    import tempfile

    # A fresh Inductor cache, so that the first run pays the whole compilation (a warm cache
    # from an earlier run would hide it).
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="ebmppl-inductor-")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-worker", json.dumps(cfg)]
    t0 = time.perf_counter()
    load0 = load()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=compile_timeout, check=False
        )
        res = None
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("RESULT "):
                res = json.loads(line[len("RESULT ") :])
                break
        if res is None:
            res = {**cfg, "error": (proc.stderr or proc.stdout).strip()[-800:]}
    except subprocess.TimeoutExpired:
        res = {**cfg, "error": f"did not finish within {compile_timeout:.0f} s"}
    res["wall_s"] = time.perf_counter() - t0
    res["load"] = max(load0, load())
    out["compile"] = res
    if "error" in res:
        print(f"  torch.compile MLP energy: FAILED ({res['error'][-300:]})")
    else:
        e = res["eager"]
        print(
            f"  torch.compile of an MLP energy inside AIS (N={cfg['num_particles']}, "
            f"T={cfg['num_steps']}, 1 thread): eager {e['warm_s']:.2f}s; load {res['load']:.1f}"
        )
        for label in ("compiled", "compiled_static"):
            c = res[label]
            print(
                f"    {label:15s} warm {c['warm_s']:.2f}s (first run {c['cold_s']:.1f}s incl. "
                f"compilation): speed-up {c['speedup']:.2f}x, log Z diff {c['log_z_diff']:+.2g}",
                flush=True,
            )
    return out


# -- drivers -----------------------------------------------------------------------------------
def summary(out: dict) -> dict:
    """The headline ratios (what RESULTS.md reports against targets)."""
    s = {}
    for r in out.get("overhead", []):
        method = "" if r.get("method", "ais") == "ais" else f"_{r['method']}"
        s[f"{r['backend']}_{r['device']}_{r['problem']}_N{r['num_particles']}{method}"] = r["ratio"]
    if "nuts" in out:
        s["nuts_plugin_overhead"] = out["nuts"]["ratio"]
    if out.get("sharding", {}).get("speedup"):
        s["sharding_speedup_2_devices"] = out["sharding"]["speedup"]
    for m in out.get("memory_vs_steps", []):
        alloc = "" if m["allocator"] == "default" else "_fixed_mmap_threshold"
        s[f"{m['backend']}_memory_1000_over_100_steps{alloc}"] = m["ratio"]
    return s


def run(quick: bool = False, sections: str = "abcde") -> dict:
    out = {"quick": quick, "machine": machine(), "load_start": load(), "targets": TARGETS}
    t_start = time.perf_counter()
    if "a" in sections:
        print("a. AIS loop overhead (AIS wall time / bare potential+gradient loop)", flush=True)
        out["overhead"] = section_overhead(quick)
    if "b" in sections:
        print("b. NUTS plugin overhead (model vs potential by hand)", flush=True)
        out["nuts"] = section_nuts(quick)
    if "c" in sections:
        print("c. scaling (fresh subprocess per configuration)", flush=True)
        out["scaling"] = section_scaling(quick)
        out["memory_vs_steps"] = memory_vs_steps(out["scaling"])
        _print_memory(out["memory_vs_steps"])
    if "d" in sections:
        print("d. sharding over 2 host devices", flush=True)
        out["sharding"] = section_sharding(quick)
    if "e" in sections:
        print("e. torch: host syncs in the AIS loop, torch.compile", flush=True)
        out["torch"] = section_torch(quick)
    out["summary"] = summary(out)
    out["wall_s"] = time.perf_counter() - t_start
    out["load_end"] = load()
    return out


def _save_gpu(out: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead_gpu.json").write_text(json.dumps(out, indent=2, default=float))


def run_gpu() -> dict:
    """The short device check of benchmarks/gpu.sh (CUDA parts skipped where absent).

    Results are saved after every section (a time limit keeps what was measured).
    """
    out = {"machine": machine(), "load_start": load(), "targets": TARGETS, "skipped": []}
    t_start = time.perf_counter()
    jax_gpu, tdev = jax_on_gpu(), torch_device()
    out["jax_device"], out["torch_device"] = ("gpu" if jax_gpu else "cpu"), tdev
    if tdev == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name(0)
    elif jax_gpu:
        import jax

        out["gpu"] = jax.devices()[0].device_kind
    backends = tuple(b for b, ok in (("jax", jax_gpu), ("torch", tdev == "cuda")) if ok)
    for b, ok in (("jax", jax_gpu), ("torch", tdev == "cuda")):
        if not ok:
            out["skipped"].append(f"{b}: no CUDA device visible to {b}")
            print(f"skipping the {b} GPU parts: no CUDA device visible to {b}")
    n, steps, repeats = 100_000, 100, 3
    if not backends:
        print("no GPU: CPU smoke run of the same code path at 1,000 particles", flush=True)
        backends, n, steps, repeats = ("jax", "torch"), 1_000, 20, 1
    out["on_gpu"] = n == 100_000
    print(f"a. AIS loop overhead at {n} particles", flush=True)
    plan = {b: [(name, n, steps, repeats) for name in ("gaussian10", "mixture")] for b in backends}
    out["overhead"] = section_overhead(False, backends, plan, tdev)
    _save_gpu(out)
    print(f"c. scaling at {n} particles (fresh subprocess per configuration)", flush=True)
    rows = []
    for cfg in scaling_configs(True, gpu=n, torch_device_=tdev):  # 20 steps, except the pair
        if cfg["backend"] in backends:
            rows.append(spawn(cfg, timeout=120))
            _print_scale(rows[-1])
            out["scaling"] = rows
            _save_gpu(out)
    out["memory_vs_steps"] = memory_vs_steps(rows)
    _print_memory(out["memory_vs_steps"])
    if "torch" in backends:
        print("e. host synchronisations in the torch AIS loop", flush=True)
        d = dynamic_sync_count(n=n, device=tdev)
        out["torch"] = {"dynamic": d}
        print(
            f"  per step: CUDA syncs {d.get('per_step_cuda_syncs', 'n/a (CPU)')}, "
            f"tensor->host conversions {d['per_step_conversions']:.2f}"
        )
    out["summary"] = summary(out)
    out["wall_s"] = time.perf_counter() - t_start
    out["load_end"] = load()
    return out


def main(quick: bool = False, sections: str = "abcde") -> dict:
    out = run(quick, sections)
    path = RESULTS / ("overhead_quick.json" if quick else "overhead.json")
    path.parent.mkdir(exist_ok=True)
    if sections != "abcde" and path.exists():  # a partial run updates the stored sections
        prev = json.loads(path.read_text())
        prev.update({k: v for k, v in out.items() if k != "summary"})
        out = {**prev, "summary": summary(prev)}
    path.write_text(json.dumps(out, indent=2, default=float))
    print("summary (ratios):")
    for k, v in out["summary"].items():
        print(f"  {k:45s} {v:7.3f}")
    print(f"-> {path} ({out['wall_s']:.0f} s)")
    return out


if __name__ == "__main__":
    argv = sys.argv[1:]
    workers = {"--worker": _worker, "--compile-worker": _compile_worker}
    workers["--shard-worker"] = _shard_worker
    if argv and argv[0] in workers:
        fn = workers[argv[0]]
        print("RESULT " + json.dumps(fn(json.loads(argv[1])), default=float), flush=True)
    elif "--gpu" in argv:
        res = run_gpu()
        _save_gpu(res)
        print(f"-> {RESULTS / 'overhead_gpu.json'} ({res['wall_s']:.0f} s)")
    else:
        secs = next((a.split("=", 1)[1] for a in argv if a.startswith("--sections=")), "abcde")
        main(quick="--quick" in argv, sections=secs)

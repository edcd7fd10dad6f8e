"""Write ``benchmarks/RESULTS.md`` from the JSON files under ``benchmarks/results/``.

``python benchmarks/make_results.py`` after ``python benchmarks/run.py --quick`` (and, for the
fuller overhead numbers and the torch.compile check, ``python benchmarks/bench_overhead.py``
without ``--quick``; ``bash benchmarks/gpu.sh`` on a GPU machine adds the GPU section).
Missing JSON files are reported as not run. The results folder is git-ignored; RESULTS.md is
the committed record.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
OUT = HERE / "RESULTS.md"
OVERHEAD_FILE = "overhead.json"  # set by main(): the overhead run the tables come from
OTHER: dict = {}  # set by main(): the other overhead run's summary ratios, if any


def _other(key: str) -> str:
    v = OTHER.get("summary", {}).get(key)
    return "–" if v is None else f"{v:.2f}"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _f(x, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def _table(head: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _mtime(name: str) -> str:
    path = RESULTS / name
    if not path.exists():
        return "not run"
    return datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")


# -- machine ---------------------------------------------------------------------------------
def machine_section(ov: dict | None, gpu: dict | None) -> list[str]:
    m = (ov or gpu or {}).get("machine")
    if m is None:
        return ["## Machine", "", "(bench_overhead has not been run: no machine record)", ""]
    v = m["versions"]
    rows = [
        ["CPU", f"{m['cpu']} ({m['arch']}), {m['cores']} cores"],
        ["RAM", f"{m['ram_gib']} GiB"],
        ["OS", m["os"]],
        ["Python / NumPy", f"{v['python']} / {v['numpy']}"],
        ["JAX / jaxlib / NumPyro", f"{v['jax']} / {v['jaxlib']} / {v['numpyro']}"],
        ["torch / Pyro", f"{v['torch']} / {v['pyro']}"],
        ["ArviZ", v["arviz"]],
        ["GPU", (gpu or {}).get("gpu") if (gpu or {}).get("on_gpu") else "none"],
    ]
    out = ["## Machine", ""] + _table(["", ""], rows)
    out += [
        (
            "The machine is shared with other jobs (colleagues' test runs). Every timing below "
            "carries the 1-minute load average when it was taken; on 2 cores a load above 2 "
            "means other processes competed for the cores, which inflates and scatters wall "
            "times. Ratios are of the fastest of several interleaved repeats (the least "
            "disturbed run), both sides measured in the same process at the same time."
        ),
        "",
    ]
    return out


# -- targets ---------------------------------------------------------------------------------
def _overhead_reason(r: dict, ais_ratio: float | None = None) -> str:
    if r.get("method") == "smc":
        base = (
            "the AIS loop's costs"
            + (f" (AIS on this problem and N: {ais_ratio:.2f})" if ais_ratio else "")
            + " plus resampling (a gather of the (N, D) particles when the ESS falls below "
            "N/2) and per-replica ESS and adaptation bookkeeping"
        )
        if r.get("blackjax_smc_ratio"):
            base += (
                f"; BlackJAX's adaptive tempered SMC costs {r['blackjax_smc_ratio']:.2f}x the "
                "bare loop per gradient"
            )
        return base
    if r["backend"] == "jax" and "rng_s" in r:
        return (
            f"HMC's random numbers alone (threefry momenta, accept and jitter draws: "
            f"{r['rng_s']:.3f} s, {r['rng_s'] / r['ais_s']:.0%} of the run) cost "
            f"{r['rng_s'] / r['bare_s']:.0%} of all the gradients ({r['bare_s']:.3f} s) of this "
            f"cheap potential; the rest is leapfrog/accept/adaptation arithmetic on the (N, D) "
            f"arrays"
            + (
                f". BlackJAX's own HMC kernel (no tempering, no adaptation) costs "
                f"{r['blackjax_hmc_ratio']:.2f}x the same bare loop"
                if r.get("blackjax_hmc_ratio")
                else ""
            )
        )
    per_grad = r["bare_s"] / r["grad_evals_per_particle"] * 1e3
    return (
        f"eager torch runs each HMC update around the gradient (momentum, position, accept "
        f"test, selects, step/mass adaptation) as separate kernels over the (N, D) arrays; next "
        f"to a potential this cheap ({per_grad:.2f} ms per batched gradient incl. Pyro's "
        f"tracing) they add {r['ratio'] - 1:.0%}"
    )


def targets_section(ov: dict | None) -> list[str]:
    out = ["## Against the targets", ""]
    if ov is None:
        return out + ["bench_overhead has not been run.", ""]
    rows = []
    ais_ratio = {
        (r["backend"], r["problem"], r["num_particles"]): r["ratio"]
        for r in ov.get("overhead", [])
        if r.get("method", "ais") == "ais"
    }
    for r in ov.get("overhead", []):
        if r.get("extra"):
            continue
        met = r["ratio"] <= r["target"]
        rows.append(
            [
                (
                    f"{r.get('method', 'ais').upper()} overhead, {r['backend']}, {r['problem']}, "
                    f"N={r['num_particles']:,}"
                ),
                f"{r['ratio']:.2f}",
                _other(
                    f"{r['backend']}_{r['device']}_{r['problem']}_N{r['num_particles']}"
                    + ("_smc" if r.get("method") == "smc" else "")
                ),
                f"<= {r['target']}",
                "yes" if met else "**no**",
                ""
                if met
                else _overhead_reason(
                    r, ais_ratio.get((r["backend"], r["problem"], r["num_particles"]))
                ),
                _f(r["load"], ".1f"),
            ]
        )
    nuts = ov.get("nuts")
    if nuts:
        met = nuts["ratio"] <= nuts["target"]
        reason = _nuts_note(nuts)
        rows.append(
            [
                "NUTS plugin overhead, gaussian10 (time per ESS)",
                f"{nuts['ratio']:.2f}",
                _other("nuts_plugin_overhead"),
                f"<= {nuts['target']}",
                "yes" if met else "**no**",
                reason,
                _f(nuts["load"], ".1f"),
            ]
        )
    mem = ov.get("memory_vs_steps", [])
    for m in mem:
        met = m["ratio"] <= 1.05
        reason = ""
        if not met:
            fixed = [
                x
                for x in mem
                if x["backend"] == m["backend"] and x is not m and x["allocator"] != "default"
            ]
            reason = (
                f"{m['delta_mb'] / 900 * 1024:.0f} KiB per step: small per-step diagnostic "
                "tensors (acceptance, step size, ESS, mass) are kept until the end of the run"
            )
            if m["allocator"] == "default" and m.get("after_trim_mb_1000_steps"):
                reason = (
                    f"not live data: glibc keeps the freed (N, D) temporaries in its heap "
                    f"(after `malloc_trim` the 1000-step process holds "
                    f"{m['after_trim_mb_1000_steps']:.0f} MiB, below the 100-step peak of "
                    f"{m['mb_100_steps']:.0f} MiB)"
                )
                if fixed:
                    reason += f"; with {fixed[0]['allocator']} the ratio is {fixed[0]['ratio']:.3f}"
        rows.append(
            [
                (
                    f"memory, 1000 vs 100 steps, {m['backend']}, N={m['num_particles']:,}, "
                    f"{m['memory']}, allocator {m['allocator']}"
                ),
                (
                    f"{m['ratio']:.3f} ({m['delta_mb']:+.1f} MiB; keeping every step's particles: "
                    f"+{m['if_states_kept_mb']:.0f} MiB)"
                ),
                _other(
                    f"{m['backend']}_memory_1000_over_100_steps"
                    + ("" if m["allocator"] == "default" else "_fixed_mmap_threshold")
                ),
                "no growth (<= 1.05)",
                "yes" if met else "**no**",
                reason,
                "",
            ]
        )
    sh = ov.get("sharding", {})
    if sh.get("speedup"):
        rows.append(
            [
                "sharding speed-up, 2 host devices (no target)",
                f"{sh['speedup']:.2f}x",
                _other("sharding_speedup_2_devices"),
                "report",
                "–",
                _shard_reason(sh),
                _f(sh["load"], ".1f"),
            ]
        )
    dyn = ov.get("torch", {}).get("dynamic")
    if dyn:
        per = dyn["per_step_conversions"]
        rows.append(
            [
                "torch host syncs per AIS step",
                f"{per:.2f}",
                "",
                "0",
                "yes" if per == 0 else "**no**",
                "",
                "",
            ]
        )
    other = f"other run ({OTHER['name']})" if OTHER else "other run"
    head = ["check", "measured", other, "target", "met", "why not (or note)", "load"]
    out += _table(head, rows)
    if OTHER:
        out += [
            (
                f"Measured: from `{OVERHEAD_FILE}`; the other run's ratios (`{OTHER['name']}`, "
                "fewer repeats, smaller sizes for some rows such as the memory pair, possibly "
                "another load) show how far a number moves between runs on this shared machine."
            ),
            "",
        ]
    return out


# -- bench_overhead --------------------------------------------------------------------------
def overhead_section(ov: dict | None) -> list[str]:
    out = ["## Overhead and scale (`bench_overhead.py`)", ""]
    if ov is None:
        return out + ["Not run.", ""]
    mode = "--quick" if ov.get("quick") else "full (without --quick)"
    out += [
        (
            f"Run: {mode}, {_mtime(OVERHEAD_FILE)}, {ov.get('wall_s', 0):.0f} s, load "
            f"{ov.get('load_start')} at the start, {ov.get('load_end')} at the end."
        ),
        "",
    ]
    rows = ov.get("overhead", [])
    if rows:
        out += [
            "### a. AIS and SMC loop overhead",
            "",
            (
                'AIS (SMC) wall time (`adaptation="online"`, progress off, warm) over the wall time of '
                "the same number of batched potential-and-gradient evaluations in a bare compiled "
                "loop (JAX: `jit` + `fori_loop` over `vmap(value_and_grad(U))`, U from "
                "`ModelPotential(model).log_parts`; torch: a loop of batched `torch.autograd.grad` "
                "on `ebmppl.pyro.ModelPotential(model).log_parts`, one thread), same process. "
                '"RNG alone": the random draws AIS makes (same calls and shapes), timed by '
                'themselves. "BlackJAX HMC / bare": BlackJAX\'s own HMC kernel (`vmap` over '
                "particles, fixed step size, identity mass, the same leapfrogs per move, as many "
                "gradients per particle, no tempering, no adaptation) over the same bare loop: "
                "what a peer's HMC costs beyond its gradients. gaussian100 is an extra row (a "
                "potential about 20x as costly). SMC rows: `SMC` with 4 replicas of N/4 particles "
                "on the AIS rows' schedule and loop length (resampling when ESS < N/2, online "
                "adaptation); for them the peer column is BlackJAX's adaptive tempered SMC "
                "(same HMC moves, its own schedule), seconds per gradient over the bare loop's."
            ),
            "",
        ]
        out += _table(
            [
                "backend",
                "method",
                "problem",
                "N",
                "steps",
                "grad evals / particle",
                "run s",
                "bare s",
                "ratio",
                "target",
                "RNG alone s",
                "BlackJAX HMC (SMC) / bare",
                "load",
            ],
            [
                [
                    r["backend"],
                    r.get("method", "ais").upper(),
                    r["problem"] + (" (extra)" if r.get("extra") else ""),
                    f"{r['num_particles']:,}",
                    r["num_steps"],
                    r["grad_evals_per_particle"],
                    _f(r["ais_s"]),
                    _f(r["bare_s"]),
                    f"**{r['ratio']:.2f}**",
                    r["target"],
                    _f(r.get("rng_s")),
                    _f(r.get("blackjax_hmc_ratio", r.get("blackjax_smc_ratio")), ".2f"),
                    _f(r["load"], ".1f"),
                ]
                for r in rows
            ],
        )
    nuts = ov.get("nuts")
    if nuts:
        out += [
            "### b. NUTS plugin overhead",
            "",
            (
                f"NumPyro NUTS on gaussian10, {nuts['num_seeds']} seeds x ({nuts['num_warmup']} "
                f"warmup + {nuts['num_samples']} draws), one chain: the ebmppl model "
                "(`problem_model`), the same model with plain `numpyro.factor`, and "
                "`NUTS(potential_fn=...)` with the potential written by hand, same initial points "
                "and keys. Warm: each kernel's `init`/`sample` in one compiled `lax.scan` (what "
                "`MCMC` runs; `MCMC.run` itself recompiles its loop on every call). Time per "
                "effective sample = time per leapfrog (median over seeds of each seed's fastest "
                "repeat) x leapfrogs per ESS (ArviZ bulk ESS, minimum over coordinates, pooled "
                "over seeds)."
            ),
            "",
        ]
        hlo = nuts.get("compiled_program", {})
        trows = []
        for k, label in (
            ("plugin", "ebmppl model"),
            ("factor", "plain numpyro.factor model"),
            ("hand", "potential by hand"),
        ):
            t = nuts["totals"][k]
            trows.append(
                [
                    label,
                    _f(t["wall_s"], ".2f"),
                    f"{t['min_ess']:.0f}",
                    f"{t['leapfrogs']:,}",
                    _f(nuts["s_per_leapfrog"][k] * 1e6, ".2f"),
                    _f(nuts["s_per_ess"][k] * 1e6, ".1f"),
                    _f(nuts["s_per_ess"][k] / nuts["s_per_ess"]["hand"], ".3f"),
                    f"{hlo[k]['fusions']} / {hlo[k]['loops']}" if k in hlo else "–",
                ]
            )
        out += _table(
            [
                "sampler",
                "wall s (sum)",
                "min ESS (sum)",
                "leapfrogs",
                "µs / leapfrog",
                "µs / ESS",
                "vs by hand",
                "fused kernels / loops",
            ],
            trows,
        )
        out += [
            (
                f"`MCMC.run` (compilation included, what a user waits for): ebmppl model "
                f"{nuts['mcmc_run_s']['plugin']:.2f} s, potential by hand "
                f"{nuts['mcmc_run_s']['hand']:.2f} s. Load {nuts['load']:.1f}."
            ),
            "",
        ]
    scal = ov.get("scaling")
    if scal:
        out += scaling_tables(scal, ov.get("memory_vs_steps", []))
    sh = ov.get("sharding")
    if sh and "speedup" in sh:
        out += [
            "### d. Sharding over 2 host devices",
            "",
            (
                f"gaussian10, N={sh['num_particles']:,}, {sh['num_steps']} steps, in one "
                "process started with `XLA_FLAGS=--xla_force_host_platform_device_count=2`: "
                "`shard=False` (one device) and `shard=True` (devices used: "
                f"{sh['devices_used']['shard_true']}), timed alternately. Cores busy = process "
                "CPU time / wall time during a run."
            ),
            "",
        ]
        srows = [
            [
                "2-device process",
                _f(sh["shard_false_s"]),
                _f(sh["shard_true_s"]),
                f"**{sh['speedup']:.2f}x**",
                ", ".join(f"{x:.2f}" for x in sh["pairwise_speedups"]),
                (
                    f"{_f(sh.get('cores_busy_shard_false'), '.2f')} / "
                    f"{_f(sh.get('cores_busy_shard_true'), '.2f')}"
                ),
                _f(sh["load"], ".1f"),
            ]
        ]
        one = sh.get("one_device_process")
        if one and "warm_s" in one:
            srows.append(
                [
                    "separate 1-device process (unsharded) vs the above",
                    _f(one["warm_s"]),
                    _f(sh["shard_true_s"]),
                    f"{sh['speedup_vs_1_device_process']:.2f}x",
                    "",
                    "",
                    _f(one["load"], ".1f"),
                ]
            )
        out += _table(
            [
                "comparison",
                "1 device s",
                "2 devices s",
                "speed-up",
                "pairwise",
                "cores busy (1 / 2 devices)",
                "load",
            ],
            srows,
        )
    tor = ov.get("torch")
    if tor:
        out += torch_section(tor)
    return out


def _dim(problem: str) -> int:
    digits = re.search(r"(\d+)$", problem)
    return int(digits.group(1)) if digits else 2


def scaling_tables(scal: list[dict], mem: list[dict]) -> list[str]:
    out = [
        "### c. Scaling",
        "",
        (
            'One fresh process per configuration (`adaptation="online"`). Cold = first run '
            "(JAX: with compilation); warm = a second run. Memory: the device allocator's peak "
            "where it reports one (GPU), else the process's peak resident set (`VmHWM`, the same "
            "high-water mark as `getrusage` max RSS, which on Linux carries the parent's peak "
            "over fork + exec) and, for reference, the RSS after imports (the library baseline)."
            " Particle state = N x D float32 (positions; momenta and gradients are the same size),"
            " small next to the JAX/XLA and torch baselines and the compiler's working memory."
            " The torch steps pair is also run with glibc's `MALLOC_MMAP_THRESHOLD_` fixed, a "
            "control that returns freed (N, D) temporaries to the system at once (until "
            "2026-12-04 the torch loops kept small per-step statistics tensors alive between "
            "the freed temporaries, which pinned them in glibc's heap: 1.67x at 1000 steps; "
            "they are now written into buffers allocated once)."
        ),
        "",
    ]
    head = [
        "backend",
        "problem",
        "N",
        "steps",
        "cold s",
        "warm s",
        "grad evals / s (warm)",
        "particle state MiB",
        "peak MiB",
        "after import MiB",
        "log Z error",
        "ESS",
        "load",
    ]

    def row(r):
        if "error" in r:
            return [r["backend"], r["problem"], r["num_particles"], r["num_steps"], "error"] + [
                ""
            ] * 8
        warm = r.get("warm_s")
        peak = r["device_peak_mb"] if r.get("device_peak_mb") else r["peak_rss_mb"]
        return [
            r["backend"] + ("" if r.get("device", "cpu") == "cpu" else f" ({r['device']})"),
            r["problem"],
            f"{r['num_particles']:,}",
            r["num_steps"],
            _f(r["cold_s"], ".2f"),
            _f(warm),
            _f(r["grad_evals"] / warm, ".3g") if warm else "–",
            _f(r["num_particles"] * _dim(r["problem"]) * 4 / 2**20, ".2f"),
            _f(peak, ".0f"),
            _f(r["rss_after_import_mb"], ".0f"),
            _f(r.get("log_z_error"), "+.3f"),
            _f(r.get("ess"), ".0f"),
            _f(r["load"], ".1f"),
        ]

    for sweep, title in (
        ("particles", "Against particles (gaussian10, dense 10-d quadratic)"),
        ("dim", "Against dimension (gaussianD from `ebmppl.problems`; diag_gaussianD inline)"),
        ("steps", "Against annealing steps (memory should not grow)"),
    ):
        rows = [row(r) for r in scal if r.get("sweep") == sweep]
        if rows:
            out += [f"**{title}**", ""] + _table(head, rows)
        if rows and sweep == "dim":
            out += [
                (
                    "The few-dozen-step budget is far too small for an accurate log Z in high "
                    "dimension (see ESS and error); these rows measure cost only."
                ),
                "",
            ]
    if mem:
        out += _table(
            [
                "backend",
                "allocator",
                "N",
                "memory",
                "100 steps MiB",
                "1000 steps MiB",
                "ratio",
                "difference MiB",
                "1000 steps, after malloc_trim MiB",
                "if every step's particles were kept MiB",
            ],
            [
                [
                    m["backend"],
                    m.get("allocator", "default"),
                    f"{m['num_particles']:,}",
                    m["memory"],
                    _f(m["mb_100_steps"], ".1f"),
                    _f(m["mb_1000_steps"], ".1f"),
                    f"**{m['ratio']:.3f}**",
                    _f(m["delta_mb"], "+.1f"),
                    _f(m.get("after_trim_mb_1000_steps"), ".1f"),
                    _f(m.get("if_states_kept_mb"), ".0f"),
                ]
                for m in mem
            ],
        )
    return out


def _compile_comment(comp: dict) -> str:
    dyn, static = comp["compiled"], comp["compiled_static"]
    best = max(dyn["speedup"], static["speedup"])
    first = max(dyn["cold_s"], static["cold_s"])
    text = (
        f"It works on this CPU (first runs, which compile, take up to {first:.0f} s; the "
        "`dynamic=False` variant runs second in the same process and reuses some of the first "
        "one's compiled kernels); "
    )
    if best < 1.1:
        text += (
            "it does not pay here: at this size the MLP's matrix products dominate and there "
            "is little to fuse. "
        )
    else:
        text += f"the best variant is {best:.2f}x faster than eager once compiled. "
    if dyn["speedup"] < static["speedup"] - 0.1:
        text += (
            "With the default (automatic dynamic shapes) the model probe's 3-particle batch "
            "makes the particle axis symbolic, and that code is slower; `dynamic=False` "
            "compiles one graph per batch size."
        )
    return text.strip()


def _nuts_note(nuts: dict) -> str:
    """Where the NUTS time goes, and how noisy it is (shown whether or not the target is met)."""
    hlo = nuts.get("compiled_program", {})
    pf, fh = nuts["plugin_over_factor"], nuts["factor_over_hand"]
    same = bool(hlo) and hlo["plugin"] == hlo["factor"]
    note = f"ebmppl's `energy()` vs the same model with plain `numpyro.factor`: {pf:.2f}"
    if same:
        note += " (same fused-kernel and loop counts in the compiled sampler)"
    note += f"; NumPyro's model path vs a hand-written `potential_fn`: {fh:.2f}"
    if hlo:
        note += (
            f" ({hlo['factor']['fusions']} vs {hlo['hand']['fusions']} fused kernels, "
            f"{hlo['factor']['loops']} vs {hlo['hand']['loops']} loops; a leapfrog costs "
            f"{nuts['s_per_leapfrog']['hand'] * 1e6:.1f} µs)"
        )
    twins = [
        e["plugin"]["wall_s"] / e["factor"]["wall_s"]
        for e in nuts["per_seed"]
        if e["plugin"]["leapfrogs"] == e["factor"]["leapfrogs"]
    ]
    if twins:  # identical trajectories: their wall-time ratio is pure timing noise
        note += (
            ". Timing noise: the ebmppl and numpyro.factor chains follow identical "
            f"trajectories, yet their per-seed wall-time ratios span {min(twins):.2f}–"
            f"{max(twins):.2f}"
        )
    return note


def _shard_reason(sh: dict) -> str:
    busy1, busy2 = sh.get("cores_busy_shard_false"), sh.get("cores_busy_shard_true")
    if busy1 is not None and busy1 > 1.5:
        return (
            f"one device already keeps {busy1:.2f} of the 2 cores busy (XLA's intra-op threads "
            f"on the ({sh['num_particles']:,}, 10) arrays), two keep {busy2:.2f}: a second host "
            "device has almost nothing left to use; on GPUs each device brings its own compute"
        )
    text = f"2 host devices on 2 cores shared with other jobs (load {sh['load']:.1f})"
    if busy1 is not None:
        text += f"; cores busy: {busy1:.2f} unsharded vs {busy2:.2f} sharded"
    return text


def torch_section(tor: dict) -> list[str]:
    out = ["### e. torch: host synchronisation in the AIS loop, torch.compile", ""]
    st = tor.get("static")
    if st:
        out += [
            f"Source scan of `ebmppl/pyro/_ais.py` (the loop body of `{st['scanned'][0].split()[0]}` "
            f"and {', '.join(f'`{s}`' for s in st['scanned'][1:])}) for `.item()`, `float(`, `int(`, "
            f"`bool(`, `.cpu()`, `.numpy()`, `.tolist()`: **{len(st['hits'])} hit(s)**"
            + ("." if not st["hits"] else ":"),
            "",
        ]
        for h in st["hits"]:
            out.append(f"- {h['where']}: `{h['line']}`")
        out += [
            (
                "With `progress=True` the loop calls the progress printer every 1/20 of the "
                "schedule, which copies that slice's statistics to the host (by design, 20 syncs "
                "per run)."
            ),
            "",
        ]
    dyn = tor.get("dynamic")
    if dyn:
        counts = ", ".join(f"{k} steps: {v['total']}" for k, v in dyn["by_steps"].items())
        out += [
            (
                f"Dynamic check (`Tensor.item`/`__bool__`/`__float__`/`__int__`/`tolist`/`numpy`/"
                f"`cpu` wrapped during whole AIS runs, N={dyn['num_particles']}, {dyn['device']}): "
                f"{counts} conversions, i.e. **{dyn['per_step_conversions']:.2f} per step** (all "
                "are set-up and result gathering outside the loop)."
            ),
            "",
        ]
    comp = tor.get("compile")
    if comp:
        if "skipped" in comp:
            out += [f"torch.compile: {comp['skipped']}.", ""]
        elif "error" in comp:
            out += [f"torch.compile: failed or too slow: `{comp['error'][-300:]}`", ""]
        else:
            e = comp["eager"]
            out += [
                (
                    f"`torch.compile` of a small MLP energy (10 -> 64 -> 64 -> 1, tanh) inside AIS "
                    f"(N={comp['num_particles']:,}, {comp['num_steps']} steps, one thread, load "
                    f"{comp['load']:.1f}):"
                ),
                "",
            ]
            crows = [["eager", _f(e["cold_s"], ".2f"), _f(e["warm_s"], ".2f"), "1.00", "0"]]
            for label, name in (
                ("compiled", "`torch.compile(module)`"),
                ("compiled_static", "`torch.compile(module, dynamic=False)`"),
            ):
                c = comp[label]
                crows.append(
                    [
                        name,
                        _f(c["cold_s"], ".1f"),
                        _f(c["warm_s"], ".2f"),
                        f"{c['speedup']:.2f}x",
                        _f(c["log_z_diff"], ".2g"),
                    ]
                )
            out += _table(
                ["energy", "first run s (compiles)", "warm s", "speed-up", "log Z difference"],
                crows,
            )
            out += [_compile_comment(comp), ""]
    return out


# -- the run.py --quick benchmarks -------------------------------------------------------------
def ais_section(ais: dict | None) -> list[str]:
    out = ["## AIS on the exact problems (`bench_ais.py`)", ""]
    if ais is None:
        return out + ["Not run.", ""]
    out += [
        (
            f"NumPyro backend, pilot adaptation (default), {ais['machine']}, jax {ais['jax']}, "
            f"{_mtime('ais.json')}. Warm = second run of the compiled program; cold includes "
            "compilation."
        ),
        "",
    ]
    rows = [
        [
            r["problem"],
            r["num_particles"],
            r["num_steps"],
            _f(r["exact_log_z"], ".4f"),
            _f(r["error"], "+.4f"),
            _f(r["se"], ".4f"),
            _f(r["error_over_se"], "+.2f"),
            _f(r["ess"], ".0f"),
            _f(r["pareto_khat"], ".2f"),
            _f(r["wall_time_s"], ".2f"),
            _f(r["wall_time_cold_s"], ".2f"),
            _f(r["grad_evals_per_s"], ".3g"),
        ]
        for r in ais["rows"]
    ]
    head = ["problem", "N", "steps", "exact log Z", "error", "se", "error/se", "ESS", "k-hat"]
    head += ["warm s", "cold s", "grad evals/s"]
    return out + _table(head, rows)


def backends_section(bk: dict | None) -> list[str]:
    out = ["## Pyro vs NumPyro backends (`bench_backends.py`)", ""]
    if bk is None:
        return out + ["Not run.", ""]
    b = bk["budget"]
    out += [
        (
            f"{'--quick' if bk.get('quick') else 'full'}, {bk['machine']}, load "
            f"{bk['load_average'][0]:.1f} at the end, {_mtime('backends.json')}. AIS: "
            f"{b['particles']} particles x {b['steps']} steps (pilot adaptation)."
        ),
        "",
    ]
    out += _table(
        ["problem", "backend", "error", "se", "warm s", "cold s", "grad evals/s"],
        [
            [
                r["problem"],
                r["backend"],
                _f(r["error"], "+.4f"),
                _f(r["se"], ".4f"),
                _f(r["wall_time_s"], ".2f"),
                _f(r["wall_time_cold_s"], ".2f"),
                _f(r["grad_evals_per_s"], ".3g"),
            ]
            for r in bk["ais"]
        ],
    )
    out += [f"NUTS, {b['chains']} chains x ({b['warmup']} warmup + {b['samples']} draws):", ""]
    out += _table(
        ["problem", "sampler", "min ESS", "wall s", "ESS/s", "max abs mean error"],
        [
            [
                r["problem"],
                r["sampler"],
                f"{r['min_ess']:.0f}",
                _f(r["wall_time_s"], ".2f"),
                _f(r["ess_per_s"], ".1f"),
                _f(r["max_abs_mean_error"], ".3f"),
            ]
            for r in bk["nuts"]
        ],
    )
    out += _table(["ratio", "value"], [[k, _f(v, ".2f")] for k, v in bk["ratios"].items()])
    return out


def peers_section(pe: dict | None) -> list[str]:
    out = ["## log Z against peers (`bench_peers.py`)", ""]
    if pe is None:
        return out + ["Not run.", ""]
    out += [f"{pe['machine']}, jax {pe['jax']}, {_mtime('peers.json')}.", ""]
    rows = []
    for r in pe["rows"]:
        z = r["error"] / r["se"] if r["se"] and math.isfinite(r["se"]) else None
        rows.append(
            [
                r["problem"],
                r["method"],
                _f(r["error"], "+.4f"),
                _f(r["se"], ".4f"),
                _f(z, "+.2f"),
                _f(r["wall_time_s"], ".2f"),
                _f(r["evaluations"], ".3g"),
            ]
        )
    head = ["problem", "method", "error", "se", "error/se", "time s", "evaluations"]
    return out + _table(head, rows)


def _target_rows(rows: list[dict]) -> list[list]:
    out = []
    for r in rows:
        ratio = r["ratio_vs_ebmppl_best"]
        if r["reached"]:
            tail = f"{r['budget']}: RMSE {r['rmse']:.3f}, RMS se {r['rms_se']:.3f}"
        else:
            tail = r["note"]
        out.append(
            [
                r["problem"],
                r["method"],
                _f(r["time_s"], ".3f"),
                "–" if ratio is None else f"**{ratio:.1f}x**",
                tail,
            ]
        )
    return out


def curves_section(cu: dict | None) -> list[str]:
    out = ["## Accuracy against cost, and time to |log Z error| < 0.05 (`bench_curves.py`)", ""]
    if cu is None:
        return out + ["Not run.", ""]
    chk = cu.get("re_cache_check") or {}
    out += [
        (
            f"{cu['mode']} run, {cu['machine']}, jax {cu['jax']}, {_mtime('curves.json')}, "
            f"{cu['benchmark_wall_s']:.0f} s in all, one process; problems "
            f"{', '.join(cu['problems'])}; seeds {cu['seeds']} per budget. Times are warm "
            "(JAX compile excluded), the median over the seeds; `load` is the 1-minute load "
            "average after the point (2 cores: above 2, other jobs competed). Cost: gradient "
            "evaluations (`grad`) for ebmppl and BlackJAX (all particles, replicas, pilots), "
            "likelihood calls (`lik`, no gradients) for the nested samplers: not the same unit."
        ),
        "",
    ]
    rows = []
    for p in cu["points"]:
        unit = "grad" if p["cost_unit"] == "gradients" else "lik"
        rows.append(
            [
                p["problem"],
                p["method"],
                p["budget_str"],
                f"{p['evaluations']:.2g} {unit}",
                _f(p["time_s"], ".3f"),
                _f(p["rmse"], ".3f"),
                _f(p["rms_se"], ".3f"),
                _f(p["max_abs_z"], ".1f"),
                "yes" if p["honest"] else "**no**",
                "yes" if p["reached"] else "",
                _f(p["load"], ".1f"),
            ]
        )
    head = ["problem", "method", "budget", "cost", "time s", "RMSE", "RMS se", "max abs z"]
    out += _table(head + ["honest se", "< 0.05", "load"], rows)
    out += [
        (
            f"Time to target: per problem and method the fastest budget meeting it; ratio = "
            f"peer time / time of the fastest ebmppl method (below 1: the peer is faster). "
            f"Definition: {cu['honest_definition']}."
        ),
        "",
    ]
    head = ["problem", "method", "time s", "peer / ebmppl", "budget, or why not"]
    out += _table(head, _target_rows(cu["time_to_target"]))
    out += [
        (
            f"Certified: the same, and the run's own RMS reported se below {cu['target']:g} "
            "(a user could see the target is met)."
        ),
        "",
    ]
    out += _table(head, _target_rows(cu["time_to_target_certified"]))
    if chk:
        out += [
            (
                f"`ReplicaExchange.run` recompiles on every call (fresh jitted closures): a cold "
                f"run ({chk['problem']}, {chk['budget']}) took {chk['plain_cold_wall_s']:.1f} s, "
                f"{chk['plain_compile_s']:.1f} s of it compiling; the benchmark reuses the built "
                f"functions (same estimates: {chk['same_estimates']}), "
                f"{chk['cached_warm_wall_s']:.3f} s warm."
            ),
            "",
        ]
    notes = list(cu.get("notes", []))
    if notes:
        out += ["Notes: " + "; ".join(notes) + ".", ""]
    return out


def gpu_section(gpu: dict | None) -> list[str]:
    out = ["## GPU (`gpu.sh`)", ""]
    if gpu is None or not gpu.get("on_gpu"):
        note = "" if gpu is None else f" (last run {_mtime('overhead_gpu.json')}: CPU smoke only)"
        return out + [
            "Not measured on a GPU yet" + note + ": this machine has none. On a machine with "
            "one, `bash benchmarks/gpu.sh` (under 5 minutes) then "
            "`python benchmarks/make_results.py` fills this section.",
            "",
        ]
    out += [
        (
            f"{gpu['gpu']}, {_mtime('overhead_gpu.json')}, {gpu.get('wall_s', 0):.0f} s. "
            f"Skipped: {', '.join(gpu['skipped']) or 'nothing'}."
        ),
        "",
    ]
    out += _table(
        ["backend", "device", "problem", "N", "steps", "AIS s", "bare s", "ratio", "target"],
        [
            [
                r["backend"],
                r["device"],
                r["problem"],
                f"{r['num_particles']:,}",
                r["num_steps"],
                _f(r["ais_s"]),
                _f(r["bare_s"]),
                f"**{r['ratio']:.2f}**",
                r["target"],
            ]
            for r in gpu.get("overhead", [])
        ],
    )
    if gpu.get("scaling"):
        out += scaling_tables(gpu["scaling"], gpu.get("memory_vs_steps", []))
    dyn = gpu.get("torch", {}).get("dynamic")
    if dyn:
        out += [
            (
                f"torch CUDA syncs per AIS step (sync-debug mode): "
                f"{dyn.get('per_step_cuda_syncs')}; tensor->host conversions per step: "
                f"{dyn['per_step_conversions']:.2f}."
            ),
            "",
        ]
    return out


def main() -> int:
    # The full overhead run when there is one (more repeats), else the --quick one; the
    # targets table shows the other run's ratios next to them, a direct view of the scatter.
    runs = [n for n in ("overhead.json", "overhead_quick.json") if (RESULTS / n).exists()]
    ov_name = runs[0] if runs else "overhead.json"
    other_name = runs[1] if len(runs) > 1 else None
    ov, gpu = _load(ov_name), _load("overhead_gpu.json")
    global OVERHEAD_FILE, OTHER
    OVERHEAD_FILE = ov_name
    if other_name:
        OTHER = {"name": other_name, "summary": _load(other_name).get("summary", {})}
    lines = [
        "# Benchmark results",
        "",
        (
            "Generated by `python benchmarks/make_results.py` from `benchmarks/results/*.json` "
            f"on {datetime.date.today().isoformat()}; do not edit by hand. The tables come from "
            "`python benchmarks/run.py --quick` (every benchmark's table), "
            "`python benchmarks/bench_overhead.py` (overhead and scale; its run mode is stated) "
            "and `python benchmarks/run.py curves` (accuracy curves, full mode)."
        ),
        "",
    ]
    lines += machine_section(ov, gpu)
    lines += targets_section(ov)
    lines += overhead_section(ov)
    lines += ais_section(_load("ais.json"))
    lines += backends_section(_load("backends.json"))
    lines += peers_section(_load("peers.json"))
    lines += curves_section(_load("curves.json"))
    lines += gpu_section(gpu)
    OUT.write_text("\n".join(lines).rstrip() + "\n")
    print(f"-> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

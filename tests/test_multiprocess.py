"""``shard=True`` across processes: two CPU processes joined by ``jax.distributed`` (gloo).

Each process owns one CPU device; the particles are split over both. Both processes must
return the same result (each holds the whole result on its host), and it must agree with the
same run sharded over two devices of one process (bit for bit).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numpyro")

import jax

from ebmppl import problems
from ebmppl.numpyro import AIS, SMC, ReplicaExchange, problem_model

PT = {"num_temperatures": 8, "num_chains": 4, "num_warmup": 100, "num_samples": 100}

WORKER = """
import json, os, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, ckpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid,
                           initialization_timeout=60)
import numpy as np
from ebmppl import problems
from ebmppl.numpyro import AIS, SMC, ReplicaExchange, problem_model

PT = {PT!r}
model = problem_model(problems.mixture())
key = jax.random.PRNGKey(3)
ais = AIS(model, num_particles=512, num_steps=50, shard=True, progress=False).run(
    key, target_se=1e-6, max_batches=2, checkpoint=ckpt, checkpoint_every=20
)
smc = SMC(model, num_particles=256, num_replicas=2, shard=True, progress=False).run(key)
pt = ReplicaExchange(model, **PT, shard=True, progress=False).run(key)
out = {}
for name, res in (("ais", ais), ("smc", smc)):
    out[name] = {
        "log_z": res.log_z, "se": res.log_z_se, "devices": res.info["devices"],
        "log_weights": np.asarray(res.log_weights).tolist(),
        "x_mean": float(np.mean(res.particles["x"])),
    }
out["pt"] = {
    "log_z": pt.log_z, "log_z_ti": pt.log_z_ti, "devices": pt.info["devices"],
    "x": np.asarray(pt.samples["x"]).tolist(),
}
out["processes"] = jax.process_count()
try:  # a different key in each process is refused (by both processes)
    AIS(model, num_particles=512, num_steps=5, shard=True, progress=False).run(
        jax.random.PRNGKey(pid)
    )
    out["mismatch"] = None
except ValueError as err:
    out["mismatch"] = str(err).split(";")[0]
print("RESULT " + json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _in_process():
    model = problem_model(problems.mixture())
    key = jax.random.PRNGKey(3)
    ais = AIS(model, num_particles=512, num_steps=50, shard=True, progress=False).run(
        key, target_se=1e-6, max_batches=2
    )
    smc = SMC(model, num_particles=256, num_replicas=2, shard=True, progress=False).run(key)
    pt = ReplicaExchange(model, **PT, shard=True, progress=False).run(key)
    return {"ais": ais, "smc": smc, "pt": pt}


@pytest.mark.slow
def test_shard_across_two_processes(tmp_path):
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 JAX devices in this process (XLA_FLAGS set in conftest)")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("{PT!r}", repr(PT)))
    port = str(_free_port())
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(tmp_path / f"run{i}.npz")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two-process run did not finish in 300 s")
        assert p.returncode == 0, stderr[-3000:]
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
        outs.append(json.loads(line[len("RESULT ") :]))
    a, b = outs
    assert a["processes"] == b["processes"] == 2
    assert a["mismatch"] == b["mismatch"]
    assert "needs the same rng_key in every process" in a["mismatch"]
    assert a == b  # the same program on both processes: the same numbers, bit for bit
    local = _in_process()
    for name in ("ais", "smc"):
        got, ref = a[name], local[name]
        assert got["devices"] == ref.info["devices"] == 2
        assert len(got["log_weights"]) == ref.log_weights.shape[0]
        # The same partitioned program as in one process with two devices; a cross-device sum
        # of two partial results rounds the same either way round, so the gloo run must give
        # the in-process numbers exactly.
        np.testing.assert_array_equal(got["log_weights"], ref.log_weights)
        assert got["log_z"] == ref.log_z
        assert got["x_mean"] == float(np.mean(ref.particles["x"]))
    got, ref = a["pt"], local["pt"]
    assert got["devices"] == ref.info["devices"] == 2
    np.testing.assert_array_equal(got["x"], ref.samples["x"])
    assert (got["log_z"], got["log_z_ti"]) == (ref.log_z, ref.log_z_ti)

"""Batched SI and NTK kernels split over a device mesh equal the single-device kernels.

Two CPU devices are simulated in a subprocess (``XLA_FLAGS`` must be set before JAX is
imported): the sharded kernels' predictions must equal the unsharded ones, and the sharded
path must actually run (its call counter moves).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scimpute import _sharding

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import scimpute as si
    from scimpute import _sharding as S

    out = {"n_devices": len(jax.devices())}

    @jax.jit
    def kernel(a, b):
        return {"eig": jax.vmap(lambda x: jnp.linalg.eigh(x @ x.T + b)[0])(a), "n": a[:, 0, 0]}

    a = np.random.default_rng(0).normal(size=(7, 4, 4))  # odd: padded to 8
    ref = kernel(a, np.eye(4))
    with S.use_devices(2, concurrent=True):
        got = S.batched_call(kernel, (a,), (np.eye(4),))
    out["generic_diff"] = float(np.abs(np.asarray(got["eig"]) - np.asarray(ref["eig"])).max())
    out["generic_shape"] = list(np.asarray(got["eig"]).shape)
    out["generic_calls"] = S.SHARDED_CALLS["n"]

    grid = si.datasets.simulate_grid(4, 8, 10, noise=0.2, fraction_measured=0.6, random_state=3)
    # SI one device after the other (the CPU default), NTK in one shard_map program
    for method, concurrent in (("synthetic_interventions", None), ("ntk", True)):
        before = S.SHARDED_CALLS["n"]
        # NTK's CPU default is numpy/LAPACK (backend="auto"); its JAX kernel is the one sharded
        kw = {"backend": "jax"} if method == "ntk" else {}
        local = si.tl.impute(grid, method=method, copy=True, **kw)
        assert S.SHARDED_CALLS["n"] == before
        with S.use_devices("all", concurrent=concurrent):
            sharded = si.tl.impute(grid, method=method, copy=True, **kw)
        key = f"imputed_{method}"
        x, y = sharded.layers[key], local.layers[key]
        out[method] = {
            "max_rel_diff": float((np.abs(x - y) / np.maximum(np.abs(y), 1e-12)).max()),
            "same_source": bool(
                (sharded.obs[key + "_source"] == local.obs[key + "_source"]).all()
            ),
            "sharded_calls": S.SHARDED_CALLS["n"] - before,
        }
    try:
        S.make_mesh(3)
    except ValueError as e:
        out["too_many"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def two_devices():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow
def test_generic_batched_call_on_two_devices(two_devices):
    assert two_devices["n_devices"] == 2
    assert two_devices["generic_shape"] == [7, 4]  # padding dropped
    assert two_devices["generic_diff"] <= 1e-12
    assert two_devices["generic_calls"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["synthetic_interventions", "ntk"])
def test_sharded_method_equals_single_device(two_devices, method):
    r = two_devices[method]
    assert r["sharded_calls"] >= 1  # the kernels really ran on the mesh
    assert r["same_source"]
    assert r["max_rel_diff"] <= 1e-6


@pytest.mark.slow
def test_more_devices_than_exist_is_an_error(two_devices):
    assert "devices=3 but 2" in two_devices["too_many"]


def test_no_mesh_is_the_plain_call():
    calls = []

    def fn(a, b, *, k):
        calls.append((a.shape, b, k))
        return a * 2

    a = np.arange(5.0)
    np.testing.assert_array_equal(_sharding.batched_call(fn, (a,), (1,), static={"k": 3}), a * 2)
    with _sharding.use_devices(1):  # one device: no sharding either
        _sharding.batched_call(fn, (a,), (1,), static={"k": 3})
    assert calls == [((5,), 1, 3)] * 2
    assert _sharding.active_mesh() is None


@pytest.mark.parametrize(("bad", "err"), [("gpu", ValueError), (2.5, TypeError), ([], TypeError)])
def test_make_mesh_rejects_bad_specs(bad, err):
    with pytest.raises(err, match="devices must be"):
        _sharding.make_mesh(bad)

import numpy as np
import pytest

from scimpute.nn import (
    NetConfig,
    TrainConfig,
    TrainingDivergedError,
    build_network,
    decode,
    encode,
    latent_shift,
    network_from_arrays,
    network_to_arrays,
    select,
    shift_by_context,
    train_networks,
)

# The shapes and settings below match the grid tests (tests/methods/test_autoencoder.py) and
# the cell tests, so that the whole suite compiles few training loops (compilation dominates
# the run time of these tests).
CFG = NetConfig("autoencoder", 30, width=32, depth=2, latent_dim=8)
VAE = NetConfig("vae", 30, width=32, depth=2, latent_dim=8)


def _data(n=32, p=30, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    return (z @ rng.normal(size=(3, p)) + 0.05 * rng.normal(size=(n, p))).astype(np.float32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "gan"}, "model must be"),
        ({"model": "vae", "latent_dim": None}, "latent_dim"),
        ({"width": 0}, "width"),
        ({"dropout": 1.0}, "dropout"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_config_errors(kwargs, match):
    base = {"model": "autoencoder", "n_features": 5}
    with pytest.raises(ValueError, match=match):
        NetConfig(**{**base, **kwargs})


@pytest.mark.parametrize("cfg", [CFG, VAE])
def test_arrays_round_trip_and_config_dict(cfg):
    import jax

    net = build_network(cfg, jax.random.PRNGKey(3), mean=np.arange(30.0), scale=np.full(30, 2.0))
    arrays = network_to_arrays(net)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in arrays.values())
    assert "input_mean" in arrays
    cfg2 = NetConfig.from_dict(cfg.to_dict())
    assert cfg2 == cfg
    net2 = network_from_arrays(cfg2, arrays)
    X = _data()
    np.testing.assert_array_equal(encode(net, X), encode(net2, X))
    Z = encode(net, X)
    assert Z.shape == (32, cfg.n_latent)
    np.testing.assert_array_equal(decode(net, Z), decode(net2, Z))
    bad = dict(arrays)
    bad.pop(next(iter(bad)))
    with pytest.raises(ValueError, match="lack"):
        network_from_arrays(cfg, bad)


def test_encode_matches_numpy_reference():
    import jax

    net = build_network(CFG, jax.random.PRNGKey(0), mean=np.ones(30), scale=np.full(30, 3.0))
    a = network_to_arrays(net)
    X = _data()

    def leaky(h):
        return np.where(h > 0, h, 0.01 * h)

    def layer(h, name, i):
        return h @ a[f"{name}_layers_{i}_weight"].T + a[f"{name}_layers_{i}_bias"]

    h = leaky(layer((X - 1) / 3, "encoder", 0))
    z = layer(leaky(layer(h, "encoder", 1)), "encoder", 2)  # no activation on the code
    h = leaky(layer(leaky(layer(z, "decoder", 0)), "decoder", 1))
    xr = layer(h, "decoder", 2) * 3 + 1
    # full float32 matmuls (a GPU's default would be TF32, ~1e-3 relative)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(encode(net, X), z, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(decode(net, z), xr, rtol=1e-4, atol=1e-4)


def test_training_is_seeded_and_learns():
    X = _data()
    tc = TrainConfig(batch_size=32, max_epochs=200)
    r1 = train_networks(CFG, X, tc, seed=1, progress=False)
    r2 = train_networks(CFG, X, tc, seed=1, progress=False)
    r3 = train_networks(CFG, X, tc, seed=2, progress=False)
    a1, a2, a3 = (network_to_arrays(select(r.networks, 0)) for r in (r1, r2, r3))
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])
    assert any(not np.array_equal(a1[k], a3[k]) for k in a1)
    assert r1.train_loss[-1, 0] < 0.5 * r1.train_loss[0, 0]
    assert r1.train_loss.shape == (200, 1)


def test_early_stopping_keeps_best_epoch():
    X = _data()
    train = np.zeros((1, 32), np.float32)
    train[0, :24] = 1
    cfg = CFG
    kw = {"train_weights": train, "val_weights": 1 - train, "progress": False}
    # no epoch after the first improves by more than min_delta: stop after `patience` more
    tc = TrainConfig(batch_size=32, max_epochs=50, patience=3)
    res = train_networks(cfg, X, tc, min_delta=10.0, **kw)
    assert res.n_epochs == 4
    assert res.best_epoch[0] == 0
    net = select(res.networks, 0)
    rec = decode(net, encode(net, X[24:]))
    np.testing.assert_allclose(np.mean((rec - X[24:]) ** 2), res.val_loss[0, 0], rtol=1e-4)
    assert not np.isclose(res.val_loss[-1, 0], res.val_loss[0, 0])
    # without min_delta the kept epoch is the one with the lowest validation loss
    res = train_networks(cfg, X, tc.replace(max_epochs=30), **kw)
    assert res.val_loss[res.best_epoch[0], 0] == np.min(res.val_loss[:, 0])


def test_zero_weight_rows_do_not_influence_their_model():
    X = _data()
    W = np.ones((3, 32), np.float32)
    W[0, 5] = 0.0  # model 0 never learns from row 5
    tc = TrainConfig(max_epochs=5, batch_size=32)
    kw = {"config": tc, "train_weights": W, "progress": False, "seed": 4}
    r1 = train_networks(CFG, X, **kw)
    X2 = X.copy()
    X2[5] += 10.0
    r2 = train_networks(CFG, X2, **kw)
    a = network_to_arrays(select(r1.networks, 0))
    b = network_to_arrays(select(r2.networks, 0))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    a1 = network_to_arrays(select(r1.networks, 1))
    b1 = network_to_arrays(select(r2.networks, 1))
    assert any(not np.array_equal(a1[k], b1[k]) for k in a1)


def test_latent_shift_balancing():
    rng = np.random.default_rng(0)
    n = 300
    ctx = rng.integers(0, 3, size=n)
    grp = rng.integers(0, 2, size=n)
    Z = rng.normal(size=(n, 4)) + ctx[:, None] * 10 + grp[:, None]
    treated, control = grp == 1, grp == 0
    ref = np.mean(
        [Z[treated & (ctx == c)].mean(0) - Z[control & (ctx == c)].mean(0) for c in range(3)],
        axis=0,
    )
    s, used = latent_shift(Z, ctx, treated, control, 3)
    np.testing.assert_allclose(s, ref)
    assert used.all()
    s2, used2 = latent_shift(Z, ctx, treated, control, 3, exclude=np.array([True, False, False]))
    assert not used2[0]
    np.testing.assert_allclose(
        s2,
        np.mean(
            [Z[treated & (ctx == c)].mean(0) - Z[control & (ctx == c)].mean(0) for c in (1, 2)], 0
        ),
    )
    pooled, _ = latent_shift(Z, ctx, treated, control, 3, balance="pooled")
    np.testing.assert_allclose(pooled, Z[treated].mean(0) - Z[control].mean(0))
    r1, _ = latent_shift(
        Z, ctx, treated, control, 3, balance="resample", rng=np.random.default_rng(1)
    )
    r2, _ = latent_shift(
        Z, ctx, treated, control, 3, balance="resample", rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(r1, r2)
    assert np.abs(r1 - ref).max() < 0.5
    shifts, valid, _nt, _nc = shift_by_context(Z, ctx, treated, control & (ctx != 2), 3)
    assert valid.tolist() == [True, True, False]
    assert np.isnan(shifts[2]).all()
    with pytest.raises(ValueError, match="No context"):
        latent_shift(Z, ctx, treated & (ctx == 2), control & (ctx != 2), 3)
    with pytest.raises(ValueError, match="balance"):
        latent_shift(Z, ctx, treated, control, 3, balance="magic")


def test_generic_fit_recovers_a_line_and_keeps_the_best_epoch():
    import jax.numpy as jnp

    from scimpute.nn import fit

    x = np.linspace(-1, 1, 64, dtype=np.float32)
    data = {"x": x, "y": 3 * x + 1}

    def loss(p, d, idx, key, state):
        return jnp.mean((p["a"] * d["x"][idx] + p["b"] - d["y"][idx]) ** 2), {"a": p["a"]}

    def val(p, d, state):
        return jnp.mean((p["a"] * d["x"] + p["b"] - d["y"]) ** 2)

    cfg = TrainConfig(batch_size=16, max_epochs=400, patience=20, learning_rate=0.05)
    p0 = {"a": jnp.zeros(()), "b": jnp.zeros(())}
    res = fit(p0, loss, data, 64, cfg, val_fn=val, progress=False)
    np.testing.assert_allclose([res.params["a"], res.params["b"]], [3.0, 1.0], atol=1e-2)
    vl = res.history["val_loss"]
    assert vl[res.best_epoch] == vl.min()
    assert res.history["loss"].shape == res.history["a"].shape == (res.n_epochs,)
    # the parameters kept are those of the best epoch, whose validation loss is recomputed
    np.testing.assert_allclose(float(val(res.params, data, None)), vl.min(), atol=1e-9)
    # equal keys give equal results; a custom schedule sees every row once per epoch
    seen = []

    def schedule(key, epoch):
        seen.append(epoch)
        return np.arange(64).reshape(4, 16)

    r1 = fit(p0, loss, data, 64, cfg.replace(max_epochs=3), schedule=schedule, progress=False)
    r2 = fit(p0, loss, data, 64, cfg.replace(max_epochs=3), schedule=schedule, progress=False)
    assert seen == [0, 1, 2, 0, 1, 2]
    assert float(r1.params["a"]) == float(r2.params["a"])
    assert r1.best_epoch == 2 and not r1.stopped_early


def test_generic_fit_aux_step_updates_state_before_each_step():
    import jax.numpy as jnp

    from scimpute.nn import fit

    def aux(p, state, d, batch, key):
        return {"n": state["n"] + 1}, {"n": state["n"]}

    def loss(p, d, batch, key, state):
        return jnp.sum((p - state["n"]) ** 2)

    cfg = TrainConfig(batch_size=4, max_epochs=2, learning_rate=0.1)
    res = fit(
        jnp.zeros(()), loss, {"x": jnp.zeros(8)}, 8, cfg, aux_step=aux,
        state={"n": jnp.zeros(())}, progress=False,
    )  # fmt: skip
    assert float(res.state["n"]) == 4.0  # 2 epochs of 2 steps
    np.testing.assert_allclose(res.history["n"], [0.5, 2.5])  # mean of the value before each


@pytest.mark.parametrize("where", ["train", "val"])
def test_generic_fit_raises_on_divergence(where):
    import jax.numpy as jnp

    from scimpute.nn import fit

    def loss(p, d, idx, key, state):
        return jnp.mean(d["x"][idx] * p) + (jnp.nan if where == "train" else 0.0)

    def val(p, d, state):
        return jnp.log(-1.0 - p**2)  # NaN

    with pytest.raises(TrainingDivergedError, match="diverged.*epoch 1"):
        fit(jnp.ones(()), loss, {"x": jnp.ones(8)}, 8, TrainConfig(batch_size=4), val_fn=val,
            progress=False)  # fmt: skip


def test_train_networks_diverging_raises():
    X = _data() * 1e30  # squares overflow float32
    with pytest.raises(TrainingDivergedError, match="training loss is inf"):
        train_networks(CFG, X, TrainConfig(batch_size=32, max_epochs=3), progress=False)

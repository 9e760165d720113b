"""NTK matrix completion: kernel identities, numpy agreement, closed forms, recovery, I/O."""

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import scimpute as si
from scimpute.methods import get_method, grid_data
from scimpute.methods._ntk_numpy import ntk_kernel_numpy, ntk_numpy
from scimpute.methods.ntk import (
    NtkParams,
    _fit,
    _predict,
    _train_kernel,
    ntk_complete,
    ntk_kernel,
)
from scimpute.tl._data import to_grid_data


def _run(data, targets, **params):
    return get_method("ntk").fn(data, np.asarray(targets), NtkParams.from_kwargs("ntk", params))


@pytest.fixture(scope="module")
def sim():
    g = si.datasets.simulate_grid(6, 8, 40, fraction_measured=0.6, random_state=1)
    d, _ = to_grid_data(g)
    return g, d


@pytest.fixture(scope="module")
def combo_dose_grid():
    return si.datasets.simulate_grid(
        5, 6, 30, n_combinations=6, doses=[0.1, 1.0, 10.0], fraction_measured=0.7,
        noise=0.05, random_state=3,
    )  # fmt: skip


# ---------------------------------------------------------------- kernel
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_kernel_at_one_is_depth_plus_one(depth):
    assert float(ntk_kernel(1.0, depth)) == pytest.approx(depth + 1, abs=1e-6)


def test_kernel_at_zero_published_values():
    assert float(ntk_kernel(0.0, 1)) == pytest.approx(1 / np.pi, abs=1e-7)
    assert float(ntk_kernel(0.0, 2)) == pytest.approx(0.6857, abs=1e-4)
    assert float(ntk_kernel(0.0, 3)) == pytest.approx(1.0604, abs=1e-4)


def test_kernel_clips_and_is_monotone():
    x = jnp.linspace(-1, 1, 201)
    for d in (1, 2, 3):
        k = np.asarray(ntk_kernel(x, d))
        assert np.all(np.diff(k[100:]) >= -1e-7)  # increasing on [0, 1]
        assert float(ntk_kernel(1.7, d)) == pytest.approx(float(ntk_kernel(1.0, d)))
        assert float(ntk_kernel(-3.0, d)) == pytest.approx(float(ntk_kernel(-1.0, d)))
        np.testing.assert_allclose(k, ntk_kernel_numpy(np.asarray(x), d), atol=1e-6)


def test_kernel_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        ntk_kernel(0.5, 0)


def test_empirical_ntk_of_wide_relu_network_matches_kappa1():
    # f(x) = sqrt(2/m) sum_k v_k relu(w_k . x), NTK parametrisation, v, w ~ N(0, 1)
    m, d = 20000, 6
    key_w, key_v, key_x = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"W": jax.random.normal(key_w, (m, d)), "v": jax.random.normal(key_v, (m,))}
    X = jax.random.normal(key_x, (5, d))
    X = X / jnp.linalg.norm(X, axis=1, keepdims=True)

    def f(p, x):
        return jnp.sqrt(2.0 / m) * p["v"] @ jax.nn.relu(p["W"] @ x)

    J = jax.vmap(lambda x: jax.grad(f)(params, x))(X)
    flat = jnp.concatenate([J["W"].reshape(5, -1), J["v"]], axis=1)
    empirical = np.asarray(flat @ flat.T)
    expected = np.asarray(ntk_kernel(X @ X.T, 1))
    np.testing.assert_allclose(empirical, expected, atol=0.08)


# ---------------------------------------------------------------- closed forms
@pytest.mark.parametrize(("depth", "reg"), [(1, 0.0), (2, 0.1), (3, 1e-6)])
def test_identity_prior_is_scaled_mean(sim, depth, reg):
    _, d = sim
    targets = np.argwhere(~d.measured)
    res = _run(d, targets, prior="identity", center=None, depth=depth, reg=reg)
    Yo = d.Y[d.measured].astype(float)
    n = Yo.shape[0]
    k0, k1 = float(ntk_kernel(0.0, depth)), depth + 1
    c = n * k0 / (k1 - k0 + reg + n * k0)
    expected = np.broadcast_to(c * Yo.mean(axis=0), res.prediction.shape)
    np.testing.assert_allclose(res.prediction, expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(res.per_target["weight_sum"], c, rtol=1e-8)


def test_onehot_prior_matches_explicit_matrix_completion(sim):
    _, d = sim
    C, A, p = d.Y.shape
    Z = np.zeros((C * A, C + A))
    for c in range(C):
        for a in range(A):
            Z[c * A + a, c] = 1.0
            Z[c * A + a, C + a] = 2.0  # weight 2 on the perturbation block
    M = d.Y.reshape(C * A, p).T
    obs = np.broadcast_to(d.measured.reshape(-1), M.shape)
    completed, stats = ntk_complete(M, obs, Z, depth=2, reg=1e-4)
    assert stats["n_observed"].tolist() == [int(d.measured.sum())]
    targets = np.argwhere(~d.measured)
    res = _run(d, targets, prior="onehot", center=None, depth=2, reg=1e-4,
               weights={"perturbation": 2.0})  # fmt: skip
    np.testing.assert_allclose(
        res.prediction, completed.T[targets[:, 0] * A + targets[:, 1]], rtol=1e-8, atol=1e-8
    )


# ---------------------------------------------------------------- numpy reference
@pytest.mark.parametrize(
    "params",
    [
        {"prior": "onehot"},
        {"prior": "data"},
        {"prior": ["data", "onehot"], "center": "context", "depth": 2},
        {"prior": "components", "center": None, "reg": 0.3},
        {"prior": "components", "dose_transform": "linear", "center": "mean"},
        {"prior": "identity", "depth": 3},
    ],
)
@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_agrees_with_numpy_reference(combo_dose_grid, params, backend):
    d, _ = to_grid_data(combo_dose_grid)
    targets = np.argwhere(~d.measured)
    targets = targets[targets[:, 1] != d.control]
    res = _run(d, targets, **params, backend=backend)
    assert res.info["backend"] == backend
    ref = ntk_numpy(d, targets, NtkParams.from_kwargs("ntk", params))
    np.testing.assert_allclose(res.prediction, ref, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("reg", [1e-6, "auto"])
def test_numpy_backend_equals_jax_backend(sim, reg):
    """Issue 12: the CPU's LAPACK path computes what the JAX kernels compute."""
    _, d = sim
    t = np.argwhere(~d.measured)
    a = _run(d, t, prior="data", reg=reg, backend="jax")
    b = _run(d, t, prior="data", reg=reg, backend="numpy")
    np.testing.assert_allclose(b.prediction, a.prediction, rtol=1e-9, atol=1e-9)
    for k in ("weight_sum", "max_similarity"):
        np.testing.assert_allclose(b.per_target[k], a.per_target[k], rtol=1e-9, atol=1e-12)
    assert b.info["reg_selected"] == a.info["reg_selected"]
    pa, pb = a.info["patterns"], b.info["patterns"]
    np.testing.assert_allclose(pb["cond_lower_bound"], pa["cond_lower_bound"], rtol=1e-8)
    if reg == "auto":
        np.testing.assert_allclose(pb["loo_errors"], pa["loo_errors"], rtol=1e-6)


def test_auto_backend_rule_recorded(sim):
    _, d = sim
    res = _run(d, np.argwhere(~d.measured)[:3], prior="onehot")
    want = "numpy" if jax.default_backend() == "cpu" else "jax"
    assert res.info["backend"] == want
    assert "default_backend" in res.info["backend_rule"]
    forced = _run(d, np.argwhere(~d.measured)[:3], prior="onehot", backend="jax")
    assert forced.info["backend_rule"] == "backend='jax'"


def test_float32_close_to_float64(sim):
    _, d = sim
    t = np.argwhere(~d.measured)
    a = _run(d, t, prior="onehot", reg=1e-3).prediction
    b = _run(d, t, prior="onehot", reg=1e-3, dtype="float32").prediction
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(a).max())


def test_general_masks_one_factorisation_per_pattern():
    rng = np.random.default_rng(0)
    n_rows, n_cols = 30, 25
    Z = rng.normal(size=(n_cols, 4))
    M = rng.normal(size=(n_rows, n_cols))
    pats = rng.random((3, n_cols)) < 0.7
    obs = pats[rng.integers(0, 3, size=n_rows)]
    completed, stats = ntk_complete(M, obs, Z, depth=1, reg=1e-3)
    assert len(stats["n_observed"]) == len(np.unique(obs, axis=0))
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    Kall = ntk_kernel_numpy(Zn @ Zn.T, 1)
    for i in range(n_rows):  # direct per-row numpy solve
        o, m = obs[i], ~obs[i]
        alpha = np.linalg.solve(Kall[np.ix_(o, o)] + 1e-3 * np.eye(o.sum()), M[i, o])
        np.testing.assert_allclose(
            completed[i, m], Kall[np.ix_(m, o)] @ alpha, rtol=1e-6, atol=1e-7
        )
        np.testing.assert_array_equal(completed[i, o], M[i, o])
    # whole missing columns -> one pattern
    obs_cols = np.broadcast_to(rng.random(n_cols) < 0.6, M.shape)
    _, st = ntk_complete(M, obs_cols, Z)
    assert len(st["n_observed"]) == 1


# ---------------------------------------------------------------- recovery
def _hidden_r2(grid, key):
    m = grid.obs["measured"].to_numpy()
    return np.median(si.metrics.r2(grid.layers["truth"][~m], grid.layers[key][~m]))


def test_recovers_combinations_and_doses_better_than_means(combo_dose_grid):
    g = combo_dose_grid.copy()
    si.tl.impute(g, method="ntk", prior="components", key_added="ntk")
    si.tl.impute(g, method="context_mean", key_added="cm")
    si.tl.impute(g, method="perturbation_mean", key_added="pm")
    r_ntk = _hidden_r2(g, "ntk")
    assert r_ntk > 0.8
    assert r_ntk > _hidden_r2(g, "cm")
    assert r_ntk > _hidden_r2(g, "pm")


def test_components_generalise_to_unseen_combination():
    # one context, additive pairs: predict a pair whose label never occurs in training
    g = si.datasets.simulate_grid(
        1, 6, 60, n_combinations=12, interaction=0.0, noise=0.01, fraction_measured=1.0,
        control="control", random_state=5,
    )  # fmt: skip
    d, _ = to_grid_data(g)
    labels = list(d.perturbations)
    pairs = [j for j, lab in enumerate(labels) if "+" in lab]
    truth = g.layers["truth"].reshape(d.Y.shape)
    scores = {"ntk": [], "cm": []}
    for j in pairs:
        mask = d.measured.copy()
        mask[0, j] = False
        fold = d.with_measured(mask)
        for name, meth in (("ntk", "ntk"), ("cm", "context_mean")):
            pred = (
                get_method(meth).fn(fold, np.array([[0, j]]), NtkParams(prior="components"))
                if meth == "ntk"
                else get_method(meth).fn(fold, np.array([[0, j]]))
            )
            eff_t = truth[0, j] - truth[0, 0]
            scores[name].append(si.metrics.pearson(eff_t, pred.prediction[0] - truth[0, 0])[0])
    assert np.median(scores["ntk"]) > 0.8
    assert np.median(scores["ntk"]) > np.median(scores["cm"])


# ---------------------------------------------------------------- anndata, I/O, behaviour
def test_h5ad_round_trip(sim, tmp_path):
    g = sim[0].copy()
    si.tl.impute(g, method="ntk", prior="data", reg="auto")
    rec = g.uns["imputed_ntk"]
    assert rec["depth"] == 1
    assert rec["n_patterns"] == 1
    assert rec["reg"] == "auto"
    assert rec["reg_selected"] > 0
    assert "loo_errors" in rec["patterns"]
    g.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    np.testing.assert_array_equal(back.layers["imputed_ntk"], g.layers["imputed_ntk"])
    r2 = back.uns["imputed_ntk"]
    assert list(r2["prior"]) == ["data"]
    np.testing.assert_allclose(r2["patterns"]["loo_errors"], rec["patterns"]["loo_errors"])
    np.testing.assert_allclose(back.obs["imputed_ntk_weight_sum"], g.obs["imputed_ntk_weight_sum"])


def test_deterministic_and_permutation_equivariant(sim):
    _, d = sim
    t = np.argwhere(~d.measured)
    a = _run(d, t, prior="onehot").prediction
    b = _run(d, t, prior="onehot").prediction
    np.testing.assert_array_equal(a, b)
    perm = np.random.default_rng(0).permutation(d.n_contexts)
    inv = np.argsort(perm)
    dp = grid_data(d.Y[perm], d.measured[perm], control=d.control)
    tp = np.column_stack([inv[t[:, 0]], t[:, 1]])
    np.testing.assert_allclose(_run(dp, tp, prior="data").prediction,
                               _run(d, t, prior="data").prediction, atol=1e-9)  # fmt: skip


def test_no_recompilation_across_loo_folds(sim):
    _, d = sim
    cand = np.argwhere(d.treated_mask())

    def fold(k):
        mask = d.measured.copy()
        mask[tuple(cand[k])] = False
        return _run(d.with_measured(mask), cand[k : k + 1], prior="data", backend="jax")

    fold(0)
    sizes = (_train_kernel._cache_size(), _fit._cache_size(), _predict._cache_size())
    for k in range(1, 6):
        fold(k)
    assert (_train_kernel._cache_size(), _fit._cache_size(), _predict._cache_size()) == sizes


def test_user_features_obsm_obs_and_dataframe(sim, tmp_path):
    g = sim[0].copy()
    rng = np.random.default_rng(0)
    g.obsm["emb"] = rng.normal(size=(g.n_obs, 3))
    g.obs["dose"] = rng.random(g.n_obs)
    si.tl.impute(g, method="ntk", prior="onehot", features="emb", key_added="a")
    assert g.uns["a"]["prior_dims"]["features:pair"] == 3
    si.tl.impute(g, method="ntk", prior="onehot", features="dose", key_added="b")
    assert not np.allclose(g.layers["a"], g.layers["b"], equal_nan=True)
    perts = g.obs["perturbation"].cat.categories
    fp = pd.DataFrame(rng.normal(size=(len(perts), 4)), index=perts)
    g.uns["fingerprints"] = fp
    # tables in .uns are passed as objects, not by name (GridData carries no .uns)
    with pytest.raises(KeyError, match=r"features=grid.uns\[name\]"):
        si.tl.impute(g, method="ntk", prior="onehot", features="fingerprints", key_added="c")
    si.tl.impute(g, method="ntk", prior="onehot", features=g.uns["fingerprints"], key_added="c")
    si.tl.impute(g, method="ntk", prior="onehot", features=fp.sample(frac=1.0, random_state=0),
                 key_added="d")  # fmt: skip
    np.testing.assert_allclose(g.layers["c"], g.layers["d"])
    assert g.uns["d"]["prior_dims"]["features:perturbation"] == 4
    # the parameters recorded (a DataFrame with integer column names, an array) are h5ad-safe
    del g.uns["fingerprints"]  # the user's own table (integer column names) is not ours to fix
    g.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    np.testing.assert_allclose(back.uns["d"]["params"]["features"].to_numpy(), fp.sample(
        frac=1.0, random_state=0).to_numpy())  # fmt: skip
    # the obsm array reaches the method as a covariate in context-major pair order
    d, order = to_grid_data(g)
    np.testing.assert_array_equal(d.covariates["emb"], g.obsm["emb"][order])


@pytest.mark.parametrize(
    ("params", "err", "match"),
    [
        ({"prior": "kernel"}, ValueError, "ntk: prior must be one of 'auto', 'identity'"),
        ({"prior": []}, ValueError, "at least one prior"),
        ({"depth": 1.5}, ValueError, "ntk: depth must be an integer >= 1, got 1.5"),
        ({"reg": float("nan")}, ValueError, "not NaN"),
        ({"depth": 0}, ValueError, "depth"),
        ({"reg": -1.0}, ValueError, "reg"),
        ({"reg": "best"}, ValueError, "auto"),
        ({"dtype": "float16"}, ValueError, "dtype"),
        ({"center": "median"}, ValueError, "center"),
        ({"dose_transform": "sqrt"}, ValueError, "dose_transform"),
        ({"weights": {"gene": 1.0}}, ValueError, "weights must have keys among"),
        ({"weights": {"context": "big"}}, ValueError, "weights must be a mapping"),
        ({"weights": {"context": -1.0}}, ValueError, ">= 0"),
        ({"features": np.zeros((7, 2))}, ValueError, "rows"),
        ({"features": "nope"}, KeyError, "obsm"),
        ({"prior": "onehot", "gamma": 1}, TypeError, "unexpected"),
    ],
)
def test_errors_leave_grid_untouched(sim, params, err, match):
    g = sim[0].copy()
    before = (set(g.layers), set(g.obs.columns), set(g.uns))
    with pytest.raises(err, match=match):
        si.tl.impute(g, method="ntk", **params)
    assert (set(g.layers), set(g.obs.columns), set(g.uns)) == before


def test_data_prior_needs_two_contexts():
    g = si.datasets.simulate_grid(1, 8, 10, random_state=0)
    g.obs.loc[g.obs_names[[2, 5]], "measured"] = False
    with pytest.raises(ValueError, match="two contexts"):
        si.tl.impute(g, method="ntk", prior="data")
    si.tl.impute(g, method="ntk")  # auto -> components
    assert list(g.uns["imputed_ntk"]["prior"]) == ["components"]


def test_cross_validate_with_ntk(sim):
    g = sim[0].copy()
    df = si.tl.cross_validate(g, methods=["ntk", "context_mean"], holdout="random",
                              n_folds=3, progress=False)  # fmt: skip
    assert set(df["method"]) == {"ntk", "context_mean"}
    assert np.isfinite(df["r2"]).all()

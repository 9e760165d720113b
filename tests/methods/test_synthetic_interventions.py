"""Synthetic interventions: agreement with the per-pair numpy reference, recovery of
simulated truth, diagnostics, fallbacks, bad input, AnnData round trips and the plot."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scimpute as si
from scimpute import _keys
from scimpute._params import ParamError
from scimpute.methods import get_method, grid_data
from scimpute.methods._registry import _REGISTRY
from scimpute.methods._stats import validated_fallback
from scimpute.methods.baselines import context_mean
from scimpute.methods.synthetic_interventions import PRESETS, SIParams
from scimpute.methods.synthetic_interventions import _engine as E
from scimpute.methods.synthetic_interventions import synthetic_interventions as _si_fn
from scimpute.methods.synthetic_interventions._engine import greedy_paths
from scimpute.methods.synthetic_interventions._reference import reference_levels, reference_si
from scimpute.tl._data import default_targets, to_grid_data

SI = "synthetic_interventions"
PLAIN = {
    "select": "max_donors",
    "ridge": 0.0,
    "fallback": False,
    "sum_to_one": False,
    "min_train_units": 1,
}


def synthetic_interventions(data, targets, *, random_state=0, **kwargs):
    """The method called as the runner does: parameters checked by the spec, then passed."""
    return _si_fn(data, targets, SIParams.from_kwargs(SI, kwargs), random_state=random_state)


@pytest.fixture(scope="module")
def small():
    g = si.datasets.simulate_grid(
        8, 12, 30, rank=3, noise=0.3, fraction_measured=0.5, random_state=1
    )
    data, _ = to_grid_data(g)
    return data, default_targets(data)


def _truth(grid, data, order):
    return grid.layers["truth"][order].reshape(data.Y.shape)


# --------------------------------------------------------------------------------------
# batched == reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        PLAIN,
        {"min_train_units": 2},
        {"donors": "contexts", "min_train_units": 1, "min_win_fraction": 0.5},
        {
            "preset": "validated",
            "rank": ["gavish_donoho", 2],
            "ridge": [0.0, 0.1],
            "energy": 0.9,
            "max_donors": 4,
            "fallback_margin": 0.1,
        },
    ],
    ids=["default", "plain", "two_units", "contexts", "ranks"],
)
def test_batched_matches_reference(small, params):
    data, t = small
    res = synthetic_interventions(data, t, random_state=3, **params)
    folds = np.random.default_rng(3).permutation(np.arange(data.n_features) % 5)
    ref = reference_si(
        data.Y,
        data.measured,
        t,
        SIParams.from_kwargs(SI, params),
        control=data.control,
        feature_folds=folds,
    )
    np.testing.assert_allclose(res.prediction, ref["prediction"], rtol=1e-5, atol=1e-5)
    assert list(res.source) == list(ref["source"])
    for k in (
        "n_donors",
        "n_train",
        "r2_train",
        "r2_heldout",
        "validation_mse",
        "context_mean_validation_mse",
        "subspace_stat",
    ):
        np.testing.assert_allclose(res.per_target[k], ref[k], rtol=1e-6, atol=1e-8, err_msg=k)
    reasons = {r: int(np.sum(ref["reason"] == r)) for r in set(ref["reason"]) if r}
    assert {k: v for k, v in res.info["fallback_reasons"].items() if v} == reasons
    # the stored weights reproduce the predictions of the pairs imputed by SI
    W = res.info["donor_weights"]
    used = res.source == SI
    Yd = (
        data.Y
        if params.get("donors", "perturbations") == "perturbations"
        else np.swapaxes(data.Y, 0, 1)
    )
    t_d = t if params.get("donors", "perturbations") == "perturbations" else t[:, ::-1]
    for i in np.flatnonzero(used)[:10]:
        row = W.getrow(i)
        pred = row.data @ Yd[t_d[i, 0], row.indices] + res.info["donor_intercepts"][i]
        np.testing.assert_allclose(pred, res.prediction[i], rtol=1e-5, atol=1e-5)


_DIAG = (
    "n_donors",
    "n_train",
    "r2_train",
    "r2_heldout",
    "validation_mse",
    "context_mean_validation_mse",
    "subspace_stat",
)


def _dense(seed, n_c, n_p, p, fraction):
    """A float64 low-rank grid with a strong per-context component, control at index 0."""
    rng = np.random.default_rng(seed)
    g, v, h = rng.normal(size=(n_c, 3)), rng.normal(size=(n_p, 3)), rng.normal(size=(3, p))
    base = 3 * rng.normal(size=(n_c, 1, p))
    Y = base + np.einsum("cr,ar,rp->cap", g, v, h) + 0.3 * rng.normal(size=(n_c, n_p, p))
    M = rng.random((n_c, n_p)) < fraction
    M[:, 0] = True  # control measured everywhere
    M[0, 1:] &= rng.random(n_p - 1) < 0.8  # some asymmetry between contexts
    return grid_data(Y, M, control=0)


def _fit(data, t, host, monkeypatch, random_state=0, **params):
    """SI with every group on the per-group LAPACK path (host) or the padded JAX path."""
    monkeypatch.setattr(E, "HOST_MIN_DONORS", 1 if host else np.iinfo(np.int64).max)
    monkeypatch.setattr(E, "DIRECT_SINGLE_UNIT", host)
    return synthetic_interventions(data, t, random_state=random_state, **params)


def _assert_reference(res, data, t, params, seed):
    """``res`` equals the per-pair reference (predictions, sources, diagnostics)."""
    folds = np.random.default_rng(seed).permutation(np.arange(data.n_features) % 5)
    spec = SIParams.from_kwargs(SI, params)
    ref = reference_si(data.Y, data.measured, t, spec, control=data.control, feature_folds=folds)
    np.testing.assert_allclose(res.prediction, ref["prediction"], rtol=1e-6, atol=1e-8)
    assert list(res.source) == list(ref["source"])
    for k in _DIAG:
        np.testing.assert_allclose(res.per_target[k], ref[k], rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize(
    "params", [{}, PLAIN, {"donors": "contexts"}, {"rank": ["gavish_donoho", 2]}]
)
def test_host_groups_match_padded_batches_and_reference(monkeypatch, params):
    """The per-group numpy path equals the padded JAX path and the per-pair reference."""
    data = _dense(0, 5, 14, 25, 0.85)
    t = default_targets(data)
    host = _fit(data, t, True, monkeypatch, 3, **params)
    jaxp = _fit(data, t, False, monkeypatch, 3, **params)
    assert host.prediction.dtype == np.float64
    np.testing.assert_allclose(host.prediction, jaxp.prediction, rtol=1e-9, atol=1e-9)
    assert list(host.source) == list(jaxp.source)
    _assert_reference(host, data, t, params, 3)
    np.testing.assert_allclose(
        host.info["donor_weights"].toarray(), jaxp.info["donor_weights"].toarray(), atol=1e-9
    )


@pytest.mark.parametrize("params", [{}, {"preset": "published"}, {"ridge": [0.1, 1.0]}])
def test_cholesky_validation_equals_eigh_and_reference(monkeypatch, params):
    """Issue 12: ridge-only training sets solved by certified Cholesky equal eigh's solution.

    Every group on the LAPACK path, with leave-one-context-out and feature-fold levels;
    predictions, diagnostics and weights equal the all-eigh path and the reference.
    """
    from scimpute.methods.synthetic_interventions import _host

    data = _dense(4, 4, 40, 30, 0.9)
    t = default_targets(data)
    fast = _fit(data, t, True, monkeypatch, 1, **params)
    monkeypatch.setattr(_host, "_ridge_only", lambda cfg: False)
    slow = _fit(data, t, True, monkeypatch, 1, **params)
    np.testing.assert_allclose(fast.prediction, slow.prediction, rtol=1e-9, atol=1e-9)
    _assert_reference(fast, data, t, params, 1)
    np.testing.assert_allclose(
        fast.info["donor_weights"].toarray(), slow.info["donor_weights"].toarray(), atol=1e-9
    )


def test_deferred_single_unit_validation_matches_eager(monkeypatch):
    """Single-unit groups whose validation the selection ignores (donors < 1.5 x rank90)
    are validated only if a target selects them; the result equals eager validation."""
    from scimpute.methods.synthetic_interventions import _host

    rng = np.random.default_rng(0)
    M = np.ones((3, 20), dtype=bool)
    M[0, 5:8] = M[2, 5:8] = M[1, 10:12] = False  # (0, 5..7): one training context only
    data = grid_data(rng.normal(size=(3, 20, 40)), M)
    t = default_targets(data)
    params = {"preset": "published", "ridge": [0.0, 1.0]}
    calls = []
    validate = _host.validate_key

    def spy(b, cfg, ratio):
        out = validate(b, cfg, ratio)
        calls.append(out["deferred"])
        return out

    monkeypatch.setattr(_host, "validate_key", spy)
    lazy = _fit(data, t, True, monkeypatch, 1, **params)
    assert any(calls)  # some validation was deferred, then run for the selected groups
    monkeypatch.setattr(
        _host,
        "validate_key",
        lambda b, cfg, ratio: validate(b, cfg, None if ratio is None else 0.0),
    )
    eager = _fit(data, t, True, monkeypatch, 1, **params)
    np.testing.assert_allclose(lazy.prediction, eager.prediction, rtol=1e-12)
    np.testing.assert_allclose(
        lazy.info["donor_weights"].toarray(), eager.info["donor_weights"].toarray(), atol=1e-12
    )
    for k in _DIAG:
        np.testing.assert_allclose(lazy.per_target[k], eager.per_target[k], err_msg=k)


def test_cholesky_certificate_rejects_rank_deficient_sets():
    """A training set with more donors than rows is not solved by Cholesky (eigh instead)."""
    from scimpute.methods.synthetic_interventions import _host

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 8))
    Kc = X.T @ X  # rank 5 < 8 donors
    B = rng.normal(size=(2, 8)) @ Kc
    assert _host._ridge_solve(Kc, B, np.array([0.0, 0.1]), 8, False) is None
    X = rng.normal(size=(50, 8))
    Kc = X.T @ X
    got = _host._ridge_solve(Kc, B, np.array([0.0, 0.1]), 8, False)
    mu = 0.1 * np.trace(Kc) / 8
    want = np.concatenate(
        [np.linalg.solve(Kc, B.T), np.linalg.solve(Kc + mu * np.eye(8), B.T)], axis=1
    )
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_large_groups_are_not_padded_or_compiled():
    """Groups with >= HOST_MIN_DONORS donors skip the JAX kernels (no compilation)."""
    from scimpute.methods.synthetic_interventions import _kernels

    data = _dense(1, 4, 90, 12, 0.95)
    t = default_targets(data)
    n = _kernels.fit_keys._cache_size()
    res = synthetic_interventions(data, t)
    assert np.nanmin(res.per_target["n_donors"]) >= E.HOST_MIN_DONORS
    assert _kernels.fit_keys._cache_size() == n
    assert (res.source == SI).any()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_c=st.integers(3, 5),
    n_p=st.integers(6, 14),
    p=st.integers(8, 20),
    fraction=st.floats(0.6, 0.95),
    host=st.booleans(),
)
def test_grouped_equals_per_target(seed, n_c, n_p, p, fraction, host):
    """All targets at once (groups shared) equal each target alone and the per-pair reference.

    Property-based over random dense grids, for both the per-group LAPACK path and the
    padded JAX path (predictions to 1e-6 relative).
    """
    data = _dense(seed, n_c, n_p, p, fraction)
    t = default_targets(data)
    if not t.size:
        return
    with pytest.MonkeyPatch.context() as mp:
        grouped = _fit(data, t, host, mp)
        alone = np.concatenate(
            [_fit(data, t[i : i + 1], host, mp).prediction for i in range(len(t))]
        )
    folds = np.random.default_rng(0).permutation(np.arange(data.n_features) % 5)
    ref = reference_si(data.Y, data.measured, t, control=data.control, feature_folds=folds)
    scale = np.abs(ref["prediction"]).max()
    np.testing.assert_allclose(grouped.prediction, alone, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(grouped.prediction, ref["prediction"], rtol=1e-6, atol=1e-6 * scale)
    assert list(grouped.source) == list(ref["source"])


def test_greedy_paths_match_reference():
    rng = np.random.default_rng(0)
    for trial in range(20):
        M = rng.random((rng.integers(3, 9), rng.integers(3, 12))) < rng.uniform(0.3, 0.8)
        t = np.argwhere(~M)
        if t.size == 0:
            continue
        cap = None if trial % 3 else int(rng.integers(1, 4))
        paths = greedy_paths(M, t, cap)
        for i, (c, a) in enumerate(t):
            ref = reference_levels(M, c, a, max_donors=cap)
            sel = np.flatnonzero(paths.cand_target == i)
            sel = sel[np.argsort(paths.cand_step[sel])]
            assert len(sel) == len(ref)
            for j, (T, D) in zip(sel, ref, strict=True):
                k = paths.cand_key[j]
                got_T = paths.T_flat[paths.T_off[k] : paths.T_off[k + 1]]
                got_D = paths.D_flat[paths.D_off[k] : paths.D_off[k + 1]]
                assert sorted(got_T) == sorted(T)
                assert sorted(got_D) == sorted(D)


def test_greedy_rule_and_tie_breaking():
    # target (0, 3); units 1..3 measure it. Donor 0 is measured in units {1, 2, 3} (kept
    # first), donors 1 and 2 tie on 2 training units each; donor 2 is measured in more
    # units overall (it wins the tie), donor 1 would win on grid order alone.
    M = np.array(
        [
            [1, 1, 1, 0],
            [1, 1, 1, 1],
            [1, 1, 0, 1],
            [1, 0, 1, 1],
            [0, 0, 1, 0],
        ],
        dtype=bool,
    )
    levels = reference_levels(M, 0, 3)
    # then donor 1 (measured in unit 1 of the remaining {1, 3}) ends the path
    assert [(list(T), sorted(D)) for T, D in levels] == [
        ([1, 2, 3], [0]),
        ([1, 3], [0, 2]),
        ([1], [0, 1, 2]),
    ]
    paths = greedy_paths(M, np.array([[0, 3]]), None)
    got = [sorted(paths.D_flat[paths.D_off[k] : paths.D_off[k + 1]]) for k in paths.cand_key]
    assert got == [[0], [0, 2], [0, 1, 2]]
    # a cap of one donor stops after the first
    assert [sorted(D) for _, D in reference_levels(M, 0, 3, max_donors=1)] == [[0]]


# --------------------------------------------------------------------------------------
# accuracy on simulated truth
# --------------------------------------------------------------------------------------


def test_recovery_improves_as_noise_falls():
    med = []
    for noise in (1.0, 0.3, 0.1):
        g = si.datasets.simulate_grid(
            12, 20, 60, rank=3, noise=noise, fraction_measured=0.5, random_state=5
        )
        data, order = to_grid_data(g)
        t = default_targets(data)
        res = synthetic_interventions(data, t)
        truth = _truth(g, data, order)[t[:, 0], t[:, 1]]
        med.append(np.median(si.metrics.r2(truth, res.prediction)))
    assert med[0] < med[1] < med[2]
    assert med[2] > 0.95


def test_default_matches_or_beats_context_mean_with_strong_context_component():
    # strong per-context common component, noisy profiles, each perturbation measured in few
    # contexts: the published estimator (max donors, min-norm least squares) loses to
    # context_mean here; the validated default must not.
    g = si.datasets.simulate_grid(
        20, 40, 100, rank=5, noise=2.0, context_strength=5.0, fraction_measured=0.2, random_state=0
    )
    data, order = to_grid_data(g)
    t = default_targets(data)
    truth = _truth(g, data, order)[t[:, 0], t[:, 1]]

    def mse(pred):
        return float(np.mean((pred - truth) ** 2))

    cm = mse(context_mean(data, t).prediction)
    plain = mse(synthetic_interventions(data, t, **PLAIN).prediction)
    default = synthetic_interventions(data, t)
    assert plain > 1.2 * cm  # the trap is real
    assert mse(default.prediction) <= 1.01 * cm
    assert default.info["fallback_reasons"]["validation"] > 0


def _violating_grid(seed=0, C=12, A=20, p=80, r=3, noise=0.05, frac=0.6):
    """Low-rank grid where context 0 alone uses an extra latent direction."""
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(A, r + 1))
    U = 2 + 0.5 * rng.normal(size=(C, r + 1))
    U[1:, r] = 0.0
    U[0, r] = 3.0
    W = rng.normal(size=(r + 1, p)) / np.sqrt(r + 1)
    mu = 2 * rng.normal(size=(C, p))
    truth = mu[:, None, :] + np.einsum("ck,ak,kp->cap", U, V, W)
    Y = truth + noise * rng.normal(size=truth.shape)
    M = rng.random((C, A)) < frac
    Y[~M] = np.nan
    return grid_data(Y, M), truth


def test_subspace_diagnostic_separates_violating_pairs():
    data, truth = _violating_grid()
    t = np.argwhere(~data.measured)
    res = synthetic_interventions(data, t, preset="validated", fallback=False)
    stat = res.per_target["subspace_stat"]
    ok = res.per_target["subspace_pass"]
    bad = t[:, 0] == 0
    assert bad.sum() >= 3
    assert np.all(ok[bad] == 0)
    assert np.mean(ok[~bad]) >= 0.9
    assert np.median(stat[bad]) > 5 * np.quantile(stat[~bad], 0.9)
    err = np.mean((res.prediction - truth[t[:, 0], t[:, 1]]) ** 2, axis=1)
    assert np.median(err[bad]) > 100 * np.median(err[~bad])


def test_both_directions_combine_by_validation_error(small):
    data, t = small
    both = synthetic_interventions(data, t, donors="both", min_train_units=1)
    a = synthetic_interventions(data, t, preset="validated", min_train_units=1)
    c = synthetic_interventions(data, t, donors="contexts", min_train_units=1)
    share = both.per_target["action_share"]
    ok = ~np.isnan(share)
    assert ok.any()
    assert ((share[ok] >= 0) & (share[ok] <= 1)).all()
    mix = share[ok, None] * a.prediction[ok] + (1 - share[ok, None]) * c.prediction[ok]
    np.testing.assert_allclose(both.prediction[ok], mix, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both.prediction[~ok], a.prediction[~ok], rtol=1e-6)
    assert both.info["donor_axis"] == "both"


def test_permuting_contexts_permutes_results(small):
    data, t = small
    perm = np.random.default_rng(2).permutation(data.n_contexts)
    inv = np.argsort(perm)
    data2 = grid_data(data.Y[perm], data.measured[perm], control=data.control)
    t2 = np.column_stack([inv[t[:, 0]], t[:, 1]])
    a = synthetic_interventions(data, t)
    b = synthetic_interventions(data2, t2)
    np.testing.assert_allclose(a.prediction, b.prediction, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        a.per_target["subspace_stat"], b.per_target["subspace_stat"], atol=1e-8
    )


# --------------------------------------------------------------------------------------
# fallbacks and bad input
# --------------------------------------------------------------------------------------


def test_fallbacks_are_documented_and_counted():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(5, 6, 10))
    M = np.ones((5, 6), dtype=bool)
    M[:, 5] = False
    M[0, 5] = True  # perturbation 5 is measured in context 0 only: one training context
    M[4] = False  # context 4 measures nothing: no donors, and no context mean either
    data = grid_data(np.where(M[..., None], Y, np.nan), M, control=0)
    t = np.array([[1, 5], [4, 2]])
    res = synthetic_interventions(data, t, min_train_units=2)
    base = validated_fallback(data, t)  # the grid's best baseline by validation
    np.testing.assert_allclose(res.prediction, base.prediction, rtol=1e-6)
    assert list(res.source) == list(base.source)
    assert res.source[1] == "perturbation_mean"  # context 4 has no context mean
    reasons = res.info["fallback_reasons"]
    assert reasons["few_training_units"] == 1
    assert reasons["no_donors"] == 1
    # allowing single-context levels, the first pair gets a fit validated on held-out features
    res1 = synthetic_interventions(data, t, preset="validated", min_train_units=1, fallback=False)
    assert res1.source[0] == SI
    assert res1.per_target["n_train"][0] == 1
    assert np.isnan(res1.per_target["r2_heldout"][0])


def test_target_measured_nowhere_falls_back_to_context_mean():
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(4, 5, 8))
    M = np.ones((4, 5), dtype=bool)
    M[:, 4] = False
    data = grid_data(np.where(M[..., None], Y, np.nan), M)
    t = np.argwhere(~M)
    res = synthetic_interventions(data, t)
    assert set(res.source) == {"context_mean"}
    assert res.info["fallback_reasons"]["no_training_units"] == 4
    assert np.isnan(res.per_target["n_donors"]).all()
    assert res.info["donor_weights"].nnz == 0


def test_bad_input_errors(small):
    data, t = small
    Y = data.Y.copy()
    c, a = np.argwhere(data.measured)[3]
    Y[c, a, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        synthetic_interventions(grid_data(Y, data.measured, control=data.control), t)
    with pytest.raises(ValueError, match="never targets"):
        synthetic_interventions(data, np.array([[0, data.control]]))
    with pytest.raises(ValueError, match="nothing to learn"):
        synthetic_interventions(grid_data(data.Y, np.zeros_like(data.measured)), t)
    dup = grid_data(data.Y, data.measured, contexts=["a"] * data.n_contexts)
    with pytest.raises(ValueError, match="duplicate context"):
        synthetic_interventions(dup, t)
    for bad in (
        {"donors": "genes"},
        {"energy": 0.0},
        {"rank": 0},
        {"ridge": -1.0},
        {"select": "best"},
        {"n_feature_folds": 1},
        {"max_donors": 0},
        {"min_train_units": 0},
        {"fallback_margin": 1.0},
        {"preset": "fast"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            synthetic_interventions(data, t, **bad)


# --------------------------------------------------------------------------------------
# the typed spec
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("donors", 3),
        ("rank", 2.5),
        ("rank", True),
        ("rank", 0),
        ("rank", [2, 0]),
        ("rank", []),
        ("rank", "gd"),
        ("energy", "big"),
        ("energy", 1.5),
        ("energy", float("nan")),
        ("preset", None),
        ("ridge", [0.1, -1.0]),
        ("ridge", float("inf")),
        ("ridge", ()),
        ("select", "best"),
        ("fallback", "yes"),
        ("fallback", 1),
        ("fallback_margin", 1.0),
        ("min_train_units", 1.5),
        ("min_win_fraction", 2),
        ("single_unit_redundancy", -0.1),
        ("sum_to_one", 1),
        ("max_donors", 0),
        ("n_feature_folds", 1),
        ("subspace_energy", 0),
        ("subspace_threshold", 1.1),
    ],
)
def test_spec_rejects_ill_typed_and_out_of_range_values(name, value):
    with pytest.raises(ParamError, match=rf"^{SI}: {name} must .*, got "):
        SIParams.from_kwargs(SI, {name: value})


def test_spec_rejects_unknown_names_and_impute_checks_before_computing(small):
    with pytest.raises(TypeError, match="rnak"):
        SIParams.from_kwargs(SI, {"rnak": 2})
    g = si.datasets.simulate_grid(6, 8, 20, rank=2, fraction_measured=0.6, random_state=0)
    before = g.copy()
    with pytest.raises(TypeError, match="rnak"):
        si.tl.impute(g, method=SI, rnak=2)
    with pytest.raises(ValueError, match=f"^{SI}: energy must be a number > 0 and <= 1"):
        si.tl.impute(g, method=SI, energy=2.0)
    assert set(g.uns) == set(before.uns) and set(g.layers) == set(before.layers)
    data, t = small
    with pytest.raises(ValueError, match=f"^{SI}: n_feature_folds must be at most"):
        synthetic_interventions(data, t, n_feature_folds=data.n_features + 1)


def test_spec_accepts_numpy_and_list_values():
    spec = SIParams.from_kwargs(
        SI, {"rank": [np.int64(2), "gavish_donoho", None], "ridge": [0, np.float64(0.5)]}
    )
    assert spec.rank == (2, "gavish_donoho", None)
    assert spec.ridge == (0.0, 0.5)
    assert spec.regularisations == tuple(
        (r, g) for r in (2, "gavish_donoho", None) for g in (0.0, 0.5)
    )


def test_effective_defaults_are_the_public_ones(small):
    # the old checker had its own default (2.0) for single_unit_redundancy, against the
    # public 1.5: the spec's default is now the only one, at every layer
    public = SIParams.defaults()
    assert public["single_unit_redundancy"] == 1.5
    assert SIParams().resolved().single_unit_redundancy == 1.5
    assert get_method(SI).defaults == public
    data, t = small
    implicit = _si_fn(data, t)  # params=None
    explicit = _si_fn(data, t, SIParams(single_unit_redundancy=1.5))
    np.testing.assert_array_equal(implicit.prediction, explicit.prediction)
    ref = reference_si(data.Y, data.measured, t[:5], control=data.control)
    ref15 = reference_si(
        data.Y, data.measured, t[:5], SIParams(single_unit_redundancy=1.5), control=data.control
    )
    np.testing.assert_array_equal(ref["prediction"], ref15["prediction"])


def test_presets_resolve_in_one_place():
    for name, values in PRESETS.items():
        r = SIParams(preset=name).resolved()
        assert {k: getattr(r, k) for k in values} == values
    # an explicit value wins over the preset; the preset fills only what is left at None
    r = SIParams(preset="published", ridge=0.1, fallback=True).resolved()
    assert (r.ridge, r.fallback, r.select, r.sum_to_one) == (0.1, True, "max_donors", False)
    s = SIParams(preset="published").settings()
    assert s["preset"] == "published" and s["select"] == "max_donors"
    np.testing.assert_array_equal(s["ridge"], [0.0])


def test_registered_once_with_its_spec():
    m = get_method(SI)
    assert m.params is SIParams
    assert not getattr(m.fn, "_legacy_kwargs", False)
    assert sum(x.fn is m.fn for x in _REGISTRY.values()) == 1
    assert list(si.methods.available_methods().index).count(SI) == 1


def test_kernels_compile_once_across_regularisations(small):
    data, t = small
    from scimpute.methods.synthetic_interventions import _kernels

    synthetic_interventions(data, t, ridge=[0.0, 0.1], energy=0.9)
    n = _kernels.fit_keys._cache_size()
    synthetic_interventions(data, t, ridge=[0.5, 2.0], energy=0.8, rank=[3, "gavish_donoho"])
    assert _kernels.fit_keys._cache_size() == n  # traced settings: no new compilation


def test_records_use_the_key_constants(imputed_grid):
    rec = imputed_grid.uns["imputed_synthetic_interventions"]
    for name in (
        _keys.SI_DONOR_WEIGHTS,
        _keys.SI_TRAIN_UNITS,
        _keys.SI_DONOR_LABELS,
        _keys.SI_UNIT_LABELS,
        _keys.SI_DONOR_INTERCEPTS,
        _keys.SI_DONOR_AXIS,
        _keys.SI_TARGET_CONTEXTS,
        _keys.SI_TARGET_PERTURBATIONS,
        _keys.SI_FALLBACK_REASONS,
        _keys.SI_REGULARISATIONS,
        _keys.SI_SUBSPACE_THRESHOLD,
        _keys.SI_N_GROUPS,
        _keys.SI_SOLVERS,
        _keys.SI_SETTINGS,
    ):
        assert name in rec, name
    solvers = rec[_keys.SI_SOLVERS]  # every group is solved one way
    assert sum(int(solvers[k]) for k in ("dual", "primal_host", "primal_batched")) == int(
        rec[_keys.SI_N_GROUPS]
    )
    for name in _keys.SI_DIAGNOSTICS:
        assert _keys.Key.obs.diagnostic("imputed_synthetic_interventions", name) in (
            imputed_grid.obs
        )


# --------------------------------------------------------------------------------------
# AnnData plumbing, round trips, plot
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imputed_grid():
    g = si.datasets.simulate_grid(
        8, 12, 30, rank=3, noise=0.3, fraction_measured=0.5, random_state=1
    )
    si.tl.impute(g, method=SI)
    return g


def test_impute_writes_diagnostics_and_roundtrips(imputed_grid, tmp_path):
    g = imputed_grid
    key = "imputed_synthetic_interventions"
    rec = g.uns[key]
    imputed = ~g.obs["measured"].to_numpy() & (g.obs["perturbation"] != "control").to_numpy()
    for name in (
        "n_donors",
        "n_train",
        "r2_train",
        "r2_heldout",
        "subspace_stat",
        "subspace_pass",
        "validation_mse",
    ):
        col = g.obs[f"{key}_{name}"]
        assert col[~imputed].isna().all()
    assert g.obs[f"{key}_n_donors"][imputed].notna().any()
    W = rec["donor_weights"]
    assert sp.issparse(W)
    assert W.shape == (imputed.sum(), g.obs["perturbation"].nunique())
    assert rec["settings"]["preset"] == "validated"
    assert rec["settings"]["select"] == "validation"
    path = tmp_path / "g.h5ad"
    g.write_h5ad(path)
    back = ad.read_h5ad(path)
    r2 = back.uns[key]
    assert (sp.csr_matrix(r2["donor_weights"]) != W).nnz == 0
    assert (sp.csr_matrix(r2["train_units"]) != rec["train_units"]).nnz == 0
    assert r2["fallback_reasons"] == {k: int(v) for k, v in rec["fallback_reasons"].items()}
    np.testing.assert_array_equal(
        np.asarray(r2["target_contexts"]).astype(str),
        np.asarray(rec["target_contexts"]).astype(str),
    )
    np.testing.assert_allclose(back.layers[key], g.layers[key])


def test_cross_validate_accepts_si_variants():
    g = si.datasets.simulate_grid(
        8, 12, 30, rank=3, noise=0.1, fraction_measured=0.6, random_state=4
    )
    df = si.tl.cross_validate(
        g,
        methods={"si": SI, "plain": {"method": SI, **PLAIN}, "cm": "context_mean"},
        holdout="random",
        n_folds=3,
        progress=False,
    )
    s = si.tl.summarize_cross_validation(df)
    assert s.loc["si", "median_r2"] > s.loc["cm", "median_r2"]


def test_donors_plot(imputed_grid):
    import matplotlib.pyplot as plt

    g = imputed_grid
    key = "imputed_synthetic_interventions"
    row = g.obs[g.obs[f"{key}_source"] == SI].iloc[0]
    axs = si.pl.donors(g, row["context"], row["perturbation"], show=False)
    assert len(axs) == 2
    assert axs[0].patches
    _, ax = plt.subplots()
    assert si.pl.donors(g, row["context"], row["perturbation"], ax=ax, show=False) == [ax]
    with pytest.raises(ValueError, match="not a pair imputed"):
        si.pl.donors(g, "c0", "control")
    with pytest.raises(KeyError, match=r"run scimpute\.tl\.impute"):
        si.pl.donors(g, row["context"], row["perturbation"], key="nope")


# --------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------


@pytest.mark.data
def test_cmap_leave_one_out_sample_beats_context_mean(data_dir):
    adata = si.datasets.cmap()
    grid = si.pp.perturbation_grid(adata, "cell_id", "pert_id", control="DMSO")
    data, _ = to_grid_data(grid)
    pairs = np.argwhere(data.treated_mask())
    pick = pairs[np.random.default_rng(0).choice(len(pairs), size=12, replace=False)]
    rel = []
    for c, a in pick:
        mask = data.measured.copy()
        mask[c, a] = False
        fold = data.with_measured(mask)
        truth = data.Y[c, a][None].astype(float)
        cm = context_mean(fold, [[c, a]]).prediction
        res = synthetic_interventions(fold, [[c, a]], preset="validated")
        sse_cm = float(np.sum((cm - truth) ** 2))
        rel.append(float(np.sum((res.prediction - truth) ** 2)) / sse_cm)
        if res.source[0] == SI:  # affine weights sum to one
            np.testing.assert_allclose(res.info["donor_weights"].sum(), 1.0, rtol=1e-6)
    assert np.median(rel) < 0.8

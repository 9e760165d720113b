"""Issue 12 (scale): the lean paths of synthetic interventions equal the ones they replace.

- the published preset keys only each target's last usable level (``greedy_paths`` with
  ``last_min_units``), the same candidates as every level filtered afterwards;
- single-training-unit groups take their statistics from their own rows of the grid
  (``_direct_chunk``), the same numbers as the per-unit fold-Gram store;
- groups with many selected pairs are predicted by one numpy product each, the same
  predictions as the padded JAX batches;
- groups solved in the dual (the rows x rows kernel, chosen when the training rows are
  fewer than the donors) equal the primal and the per-pair reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scimpute.methods import grid_data
from scimpute.methods.synthetic_interventions import SIParams, synthetic_interventions
from scimpute.methods.synthetic_interventions import _direction as Dn
from scimpute.methods.synthetic_interventions import _engine as E
from scimpute.methods.synthetic_interventions._reference import reference_si
from scimpute.tl._data import default_targets


def _sparse(seed, n_c=8, n_a=40, p=23, fraction=0.35):
    rng = np.random.default_rng(seed)
    V, W = rng.normal(size=(n_a, 3)), rng.normal(size=(3, p))
    Y = rng.normal(size=(n_c, 1, p)) + np.einsum("cr,ar,rp->cap", rng.normal(size=(n_c, 3)), V, W)
    Y = Y + 0.3 * rng.normal(size=Y.shape)
    M = rng.random((n_c, n_a)) < fraction
    M[:, 0] = True
    return grid_data(Y, M, control=0)


def _candidates(paths):
    """(target, step, training units, donors) of every candidate, sorted."""
    rows = []
    for c in range(paths.cand_key.size):
        k = paths.cand_key[c]
        T = tuple(paths.T_flat[paths.T_off[k] : paths.T_off[k + 1]])
        D = tuple(paths.D_flat[paths.D_off[k] : paths.D_off[k + 1]])
        rows.append((int(paths.cand_target[c]), int(paths.cand_step[c]), T, D))
    return sorted(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_units", [1, 2])
@pytest.mark.parametrize("cap", [None, 3])
def test_last_level_paths_equal_filtered_full_paths(seed, min_units, cap):
    data = _sparse(seed)
    t = default_targets(data)
    Md = np.ascontiguousarray(data.measured)
    params = SIParams(preset="published", min_train_units=min_units, max_donors=cap).resolved()
    full = E.greedy_paths(Md, t, cap)
    lean = E.greedy_paths(Md, t, cap, min_units)
    np.testing.assert_array_equal(full.had_level, lean.had_level)
    np.testing.assert_array_equal(full.n_start, lean.n_start)
    kept = Dn._usable_levels(full, len(t), params)
    assert _candidates(kept) == _candidates(Dn._usable_levels(lean, len(t), params))
    assert lean.key_unit.size < full.key_unit.size  # the other levels are never keyed


@pytest.mark.parametrize("shape", [None, (16, 8, 8)])
def test_direct_single_unit_blocks_equal_store_blocks(shape):
    """Statistics from a group's own rows equal those read from the fold-Gram store."""
    data = _sparse(1)
    t = default_targets(data)
    paths = E.greedy_paths(np.ascontiguousarray(data.measured), t, None)
    folds = np.random.default_rng(0).permutation(np.arange(data.n_features) % 5)
    layout = E.FoldLayout.of(folds)
    counts = np.bincount(paths.cand_key, minlength=paths.key_unit.size)
    keys = np.flatnonzero((paths.n_T == 1) & (counts > 0))[:12]
    assert keys.size
    T = paths.T_flat[paths.T_off[keys]]
    store = E.build_store(data.Y, data.measured, folds, T, E._store_units(paths, keys))
    Np = int(counts[keys].max()) + 2
    cand = np.full((keys.size, Np), -1)
    for i, k in enumerate(keys):
        c = np.flatnonzero(paths.cand_key == k)
        cand[i, : c.size] = c
    if shape is None:  # unpadded, one key at a time (the host path)
        for i, k in enumerate(keys):
            c = cand[i][cand[i] >= 0]
            got = E.direct_blocks(data.Y, layout, paths, t, k, c)
            sh = (int(paths.n_D[k]), 5, c.size)
            want = E._gather(store, paths, t, np.array([k]), c[None], 1, sh, data.n_features)
            for f, x, y in zip(K_FIELDS, got, want, strict=True):
                np.testing.assert_allclose(x, y[0], rtol=1e-10, atol=1e-10, err_msg=f)
        return
    sh = (shape[0], shape[1], Np)
    got = E._direct_chunk(data.Y, layout, paths, t, keys, cand, sh)
    want = E._gather(store, paths, t, keys, cand, 1, sh, data.n_features)
    for f, x, y in zip(K_FIELDS, got, want, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10, err_msg=f)


K_FIELDS = E.K.Blocks._fields


@pytest.mark.parametrize("params", [{"preset": "published"}, {}])
def test_direct_and_host_prediction_equal_store_and_padded_batches(monkeypatch, params):
    """The whole call: direct statistics (chosen when the fold-Gram store would exceed its
    budget) and numpy predictions == the store and padded JAX batches."""
    data = _sparse(2, n_c=7, n_a=60, fraction=0.4)
    t = default_targets(data)
    spec = SIParams.from_kwargs("synthetic_interventions", params)
    monkeypatch.setattr(E, "FOLD_STORE_BUDGET", 0)  # auto: the store would be too large
    lean = synthetic_interventions(data, t, spec)
    monkeypatch.setattr(E, "DIRECT_SINGLE_UNIT", False)
    monkeypatch.setattr(E, "HOST_PREDICT_MIN_PAIRS", np.iinfo(np.int64).max)
    monkeypatch.setattr(E, "HOST_PREDICT_MAX_GROUPS", 0)
    old = synthetic_interventions(data, t, spec)
    assert (lean.source == "synthetic_interventions").any()
    np.testing.assert_allclose(lean.prediction, old.prediction, rtol=1e-9, atol=1e-9)
    assert list(lean.source) == list(old.source)
    for k, v in old.per_target.items():
        np.testing.assert_allclose(lean.per_target[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(
        lean.info["donor_weights"].toarray(), old.info["donor_weights"].toarray(), atol=1e-9
    )


# --------------------------------------------------------------------------------------
# the dual form (rows x rows kernel) equals the primal (donors x donors Gram)
# --------------------------------------------------------------------------------------

_DUAL_PARAMS = [
    {"preset": "published"},
    {},
    {"rank": [2, "gavish_donoho"], "ridge": [0.0, 0.5]},
    {"energy": 0.9, "ridge": 0.1},
    {"donors": "contexts"},
]


def _both_forms(monkeypatch, data, params, seed=0):
    """SI with every group on the host, solved in the primal and in the dual."""
    t = default_targets(data)
    spec = SIParams.from_kwargs("synthetic_interventions", params)
    monkeypatch.setattr(E, "HOST_MIN_DONORS", 1)
    out = []
    for dual in (False, True):
        monkeypatch.setattr(E, "DUAL", dual)
        out.append(synthetic_interventions(data, t, spec, random_state=seed))
    return out


def _assert_same(a, b, rtol=1e-6, diag_rtol=1e-5):
    """Predictions to ``rtol``; the diagnostics to ``diag_rtol``: a validation MSE of an
    ill-conditioned held-out fit (values in the thousands) carries the rounding of the two
    factorisations, measured up to 2e-6 relative (seed 3805 below)."""
    scale = np.abs(a.prediction).max()
    np.testing.assert_allclose(b.prediction, a.prediction, rtol=rtol, atol=rtol * scale)
    assert list(a.source) == list(b.source)
    for k, v in a.per_target.items():
        np.testing.assert_allclose(b.per_target[k], v, rtol=diag_rtol, atol=1e-9, err_msg=k)
    np.testing.assert_allclose(
        b.info["donor_weights"].toarray(), a.info["donor_weights"].toarray(), atol=1e-7
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n_c=st.integers(3, 7),
    n_a=st.integers(12, 50),
    p=st.integers(6, 30),
    fraction=st.floats(0.3, 0.8),
    which=st.integers(0, len(_DUAL_PARAMS) - 1),
)
@example(seed=3805, n_c=7, n_a=39, p=29, fraction=0.75, which=0)
def test_dual_equals_primal_on_random_grids(seed, n_c, n_a, p, fraction, which):
    """Property: on any grid, every preset and regularisation, the dual == the primal."""
    with pytest.MonkeyPatch.context() as mp:
        data = _sparse(seed, n_c=n_c, n_a=n_a, p=p, fraction=fraction)
        a, b = _both_forms(mp, data, _DUAL_PARAMS[which], seed)
    assert b.info["solvers"]["dual"] == b.info["n_groups"] or b.info["n_groups"] == 0
    assert a.info["solvers"]["dual"] == 0
    _assert_same(a, b)


def _wide(seed=0):
    """A dense grid with more donors than training rows: 4 contexts x 100 x 12 features."""
    return _sparse(seed, n_c=4, n_a=100, p=12, fraction=0.85)


@pytest.mark.parametrize("params", [{"preset": "published"}, {}], ids=["published", "validated"])
def test_dual_is_chosen_by_shape_and_equals_the_reference(params, monkeypatch):
    """Default rule: host groups (>= HOST_MIN_DONORS donors; every group here, so that no
    kernel compiles) with fewer training rows than donors are solved in the dual, recorded
    in ``info["solvers"]``; the result is the per-pair numpy reference's."""
    monkeypatch.setattr(E, "HOST_MIN_DONORS", 1)
    data = _wide()
    t = default_targets(data)
    spec = SIParams.from_kwargs("synthetic_interventions", params)
    res = synthetic_interventions(data, t, spec, random_state=3)
    paths = E.greedy_paths(np.ascontiguousarray(data.measured), t, None)
    rule = E.dual_groups(paths, data.n_features)
    np.testing.assert_array_equal(
        rule, (paths.n_D >= E.HOST_MIN_DONORS) & (paths.n_T * data.n_features < paths.n_D)
    )
    solvers = res.info["solvers"]
    assert solvers["dual"] > 0
    assert (
        sum(solvers[k] for k in ("dual", "primal_host", "primal_batched")) == res.info["n_groups"]
    )
    folds = np.random.default_rng(3).permutation(np.arange(data.n_features) % 5)
    rows = np.arange(0, len(t), 3)
    ref = reference_si(
        data.Y, data.measured, t[rows], spec, control=data.control, feature_folds=folds
    )
    np.testing.assert_allclose(res.prediction[rows], ref["prediction"], rtol=1e-6, atol=1e-6)
    assert list(res.source[rows]) == list(ref["source"])
    for k in ("n_donors", "n_train", "r2_train", "validation_mse", "subspace_stat"):
        np.testing.assert_allclose(res.per_target[k][rows], ref[k], rtol=1e-6, atol=1e-8, err_msg=k)


def test_dual_single_training_unit_needs_no_gram_store(monkeypatch):
    """Dual groups read their own rows: the per-unit Gram store holds none of their units."""
    data = _wide(1)
    t = default_targets(data)
    seen = {}
    build = E.build_store

    def spy(Yd, Md, folds, fold_units, need_units=None):
        seen["fold_units"], seen["need"] = np.asarray(fold_units), need_units
        return build(Yd, Md, folds, fold_units, need_units)

    monkeypatch.setattr(E, "build_store", spy)
    monkeypatch.setattr(E, "HOST_MIN_DONORS", 1)
    monkeypatch.setattr(E, "DUAL", True)
    res = synthetic_interventions(data, t, SIParams(preset="published"))
    assert res.info["solvers"]["dual"] == res.info["n_groups"]
    assert seen["fold_units"].size == 0 and np.asarray(seen["need"]).size == 0


def test_dual_deferred_single_unit_validation_matches_eager(monkeypatch):
    """In the dual too, single-unit groups the selection ignores (donors < 1.5 x rank90)
    are validated only if selected; the result equals eager validation and the primal."""
    from scimpute.methods.synthetic_interventions import _dual

    rng = np.random.default_rng(0)
    M = np.ones((3, 20), dtype=bool)
    M[0, 5:8] = M[2, 5:8] = M[1, 10:12] = False  # (0, 5..7): one training context only
    data = grid_data(rng.normal(size=(3, 20, 40)), M)
    t = default_targets(data)
    spec = SIParams(preset="published", ridge=(0.0, 1.0))
    monkeypatch.setattr(E, "HOST_MIN_DONORS", 1)
    monkeypatch.setattr(E, "DUAL", True)
    calls = []
    validate = _dual.validate_dual

    def spy(pb, cfg, ratio):
        out = validate(pb, cfg, ratio)
        calls.append(out["deferred"])
        return out

    monkeypatch.setattr(_dual, "validate_dual", spy)
    lazy = synthetic_interventions(data, t, spec, random_state=1)
    assert any(calls) and lazy.info["solvers"]["dual"] == lazy.info["n_groups"]
    monkeypatch.setattr(
        _dual, "validate_dual", lambda pb, cfg, r: validate(pb, cfg, None if r is None else 0.0)
    )
    eager = synthetic_interventions(data, t, spec, random_state=1)
    np.testing.assert_allclose(lazy.prediction, eager.prediction, rtol=1e-12)
    monkeypatch.setattr(E, "DUAL", False)
    _assert_same(synthetic_interventions(data, t, spec, random_state=1), lazy)


@pytest.mark.parametrize("dtype", [None, np.int32])
def test_gather_segments_equals_one_gather(dtype):
    """The block-by-block gather of the records equals ``src[ranges(starts, counts)]``."""
    rng = np.random.default_rng(0)
    src = rng.normal(size=500) if dtype is None else rng.integers(0, 99, size=500)
    counts = rng.integers(0, 7, size=300)
    starts = rng.integers(0, 500 - 7, size=300)
    old = Dn._CHUNK_SEGMENTS
    try:
        Dn._CHUNK_SEGMENTS = 17
        got = Dn._gather_segments(src, starts, counts, dtype)
    finally:
        Dn._CHUNK_SEGMENTS = old
    np.testing.assert_array_equal(got, src[E.ranges(starts, counts)])
    assert got.dtype == (src.dtype if dtype is None else dtype)

"""Baselines against hand-written numpy loops, fallbacks, invariances."""

import numpy as np
import pytest

import scimpute as si
from scimpute.methods import baselines, grid_data


def _random_grid(seed=0, C=7, A=9, p=12, frac=0.5, control=True):
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(C, A, p))
    measured = rng.random((C, A)) < frac
    if control:
        measured[:, 0] = True
        measured[2, 0] = False  # one context without measured control
    Y[~measured] = np.nan
    return grid_data(Y, measured, control=0 if control else None)


def _ref(data, c, a, kind):
    """Plain loops: the definitions of the docstrings."""
    Y, M, ctrl = data.Y, data.measured, data.control
    C, A, _ = Y.shape
    treated = [(i, j) for i in range(C) for j in range(A) if M[i, j] and j != ctrl]
    cm = [Y[c, j] for (i, j) in treated if i == c]
    pm = [Y[i, a] for (i, j) in treated if j == a]
    if kind == "context_mean":
        return np.mean(cm, 0) if cm else (np.mean(pm, 0) if pm else None)
    if kind == "perturbation_mean":
        return np.mean(pm, 0) if pm else (np.mean(cm, 0) if cm else None)
    if kind == "two_way_mean":
        if cm and pm:
            return 0.5 * (np.mean(cm, 0) + np.mean(pm, 0))
        return np.mean(cm or pm, 0) if (cm or pm) else None
    if kind == "additive":

        def base(i):
            if ctrl is not None:
                return Y[i, ctrl] if M[i, ctrl] else None
            rows = [Y[i, j] for (k, j) in treated if k == i]
            return np.mean(rows, 0) if rows else None

        bc = base(c)
        diffs = [Y[i, a] - base(i) for (i, j) in treated if j == a and base(i) is not None]
        if bc is None:
            return _ref(data, c, a, "perturbation_mean")
        if not diffs:
            return _ref(data, c, a, "context_mean")
        return bc + np.mean(diffs, 0)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["context_mean", "perturbation_mean", "two_way_mean", "additive"])
@pytest.mark.parametrize("control", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_baselines_match_numpy_reference(kind, control, seed):
    data = _random_grid(seed, control=control)
    mask = ~data.measured
    if control:
        mask[:, 0] = False
    targets = np.argwhere(mask)
    res = getattr(baselines, kind)(data, targets)
    for (c, a), pred, src in zip(targets, res.prediction, res.source, strict=True):
        ref = _ref(data, c, a, kind)
        if ref is None:
            assert src == "global_mean"
        else:
            np.testing.assert_allclose(pred, ref, rtol=1e-10, atol=1e-12)


def test_fallbacks_are_recorded():
    C, A, p = 3, 4, 5
    Y = np.arange(C * A * p, dtype=float).reshape(C, A, p)
    M = np.zeros((C, A), bool)
    M[:, 0] = True  # controls
    M[0, 1] = True
    M[1, 2] = True  # context 2 has nothing but its control; perturbation 3 nowhere
    data = grid_data(Y, M, control=0)
    t = np.array([[2, 1], [0, 3], [2, 3]])
    cm = baselines.context_mean(data, t)
    assert list(cm.source) == ["perturbation_mean", "context_mean", "global_mean"]
    np.testing.assert_allclose(cm.prediction[2], (Y[0, 1] + Y[1, 2]) / 2)
    add = baselines.additive(data, t)
    assert list(add.source) == ["additive", "context_mean", "global_mean"]
    np.testing.assert_allclose(add.prediction[0], Y[2, 0] + (Y[0, 1] - Y[0, 0]))


def test_permuting_contexts_permutes_predictions():
    data = _random_grid(3)
    targets = np.argwhere(~data.measured & (np.arange(data.n_perturbations) != 0))
    perm = np.random.default_rng(0).permutation(data.n_contexts)
    inv = np.argsort(perm)
    pdata = grid_data(data.Y[perm], data.measured[perm], control=0)
    ptargets = targets.copy()
    ptargets[:, 0] = inv[targets[:, 0]]
    for kind in ["context_mean", "perturbation_mean", "two_way_mean", "additive"]:
        a = getattr(baselines, kind)(data, targets).prediction
        b = getattr(baselines, kind)(pdata, ptargets).prediction
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_additive_recovers_additive_truth():
    rng = np.random.default_rng(0)
    C, A, p = 6, 8, 10
    Y = rng.normal(size=(C, 1, p)) + rng.normal(size=(1, A, p))
    Y[:, 0] = Y[:, 0] * 0 + rng.normal(size=(C, p))  # control = context baseline
    base = Y[:, 0]
    eff = rng.normal(size=(1, A, p))
    Y = base[:, None, :] + eff
    Y[:, 0] = base
    M = rng.random((C, A)) < 0.6
    M[:, 0] = True
    M[:, 1] = True
    data = grid_data(np.where(M[..., None], Y, np.nan), M, control=0)
    t = np.argwhere(~M)
    t = t[np.isin(t[:, 1], np.flatnonzero(M[:, 1:].any(0)) + 1)]
    res = baselines.additive(data, t)
    np.testing.assert_allclose(res.prediction, Y[t[:, 0], t[:, 1]], atol=1e-10)


def test_no_measured_pairs_is_an_error():
    data = grid_data(np.zeros((2, 2, 3)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="no measured pairs"):
        baselines.context_mean(data, [[0, 1]])


def test_registry_lists_baselines():
    table = si.methods.available_methods()
    for m in ["context_mean", "perturbation_mean", "two_way_mean", "additive"]:
        assert m in table.index
    with pytest.raises(ValueError, match="Did you mean 'context_mean'"):
        si.methods.get_method("contxt_mean")


# ----------------------------------------------------------------------------- GridData
def _arrays(C=2, A=3, p=4):
    return np.zeros((C, A, p)), np.ones((C, A), bool)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"Y": np.zeros((2, 3))}, "3-dimensional"),
        ({"Y": np.zeros((2, 3, 4), dtype=int)}, "hold floats"),
        ({"measured": np.ones((2, 3), int)}, "bool array of shape"),
        ({"measured": np.ones((3, 2), bool)}, "bool array of shape"),
        ({"control": 3}, "out of range"),
        ({"control": True}, "out of range"),
        ({"contexts": np.array(["a"])}, "contexts has 1 labels, expected 2"),
        ({"perturbations": np.array(["a"])}, "perturbations has 1 labels"),
        ({"features": np.array(["g"])}, "features has 1 labels"),
        ({"covariates": {"emb": np.zeros((5, 2))}}, r"covariates\['emb'\] must be an array with 6"),
        ({"combination_sep": ""}, "combination_sep"),
    ],
)
def test_griddata_is_valid_by_construction(change, match):
    from scimpute.methods import GridData

    Y, M = _arrays()
    kw = {
        "Y": Y,
        "measured": M,
        "control": 0,
        "contexts": np.array(["c0", "c1"]),
        "perturbations": np.array(["p0", "p1", "p2"]),
        **change,
    }
    with pytest.raises(ValueError, match=match):
        GridData(**kw)


def test_grid_data_casts_to_float():
    d = grid_data(np.ones((2, 2, 3), dtype=np.float16))
    assert d.Y.dtype == np.float32
    assert grid_data(np.ones((2, 2, 3), dtype=int)).Y.dtype == np.float64

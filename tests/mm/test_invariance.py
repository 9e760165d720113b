"""mm.invariant_features: the score's definition on simulated ground truth, intervals, p-values.

Most tests call the numeric core (:func:`feature_scores`) on embeddings built from the
simulator's known factors, so that what is tested is the definition, not a network's
training. The end-to-end tests run one short integration and replace its embeddings
(the score reads only ``obsm``: it is backbone-agnostic).
"""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import scimpute as si
from scimpute.mm._invariance import cross_fit, feature_scores, folds_of

KEY = "X_scimpute"


@pytest.fixture(scope="module")
def sim():
    return si.datasets.simulate_multimodal(
        300, (60, 40), n_private=2, shortcut_strength=2.0, noise=0.3, random_state=0
    )


def _views(m, noise: float = 0.2, seed: int = 0):
    """Oracle embeddings: each modality sees the shared factors (with its own noise)."""
    rng = np.random.default_rng(seed)
    s = m.obsm["shared_factors"]
    rows = {k: m[k].obs_names.get_indexer(m.obs_names) for k in ("m0", "m1")}
    z = {k: s[rows[k] >= 0] + noise * rng.normal(size=s.shape) for k in ("m0", "m1")}
    return z


def _scores(m, mod, z_self, z_other, seed=0, **kw):
    y = m[mod].X
    return feature_scores(y, z_self, z_other, rng=np.random.default_rng(seed), **kw)


def test_shared_vs_private_auroc_and_shortcuts_low(sim):
    z = _views(sim)
    # the own embedding also carries the modality's private factors and (m0) the shortcut:
    # the best an integration can do, and what a leaky one shows
    own0 = np.hstack([z["m0"], sim["m0"].obsm["private_factors"], sim["m0"].obs[["shortcut"]]])
    own1 = np.hstack([z["m1"], sim["m1"].obsm["private_factors"]])
    f0 = _scores(sim, "m0", own0, z["m1"], n_permutations=50, n_bootstrap=50)
    f1 = _scores(sim, "m1", own1, z["m0"], n_permutations=50, n_bootstrap=50)
    kind0 = sim["m0"].var["kind"].to_numpy()
    kind1 = sim["m1"].var["kind"].to_numpy()
    for f, kind in ((f0, kind0), (f1, kind1)):
        keep = kind != "shortcut"
        assert roc_auc_score(kind[keep] == "shared", f.score[keep]) >= 0.9
        assert np.median(f.score[kind == "shared"]) > 0.8
        assert np.median(f.score[kind == "private"]) < 0.1
        assert np.all((f.score >= 0) & (f.score <= 1))
    # shortcut features: present in m0 only and predictive of nothing in m1
    sc = kind0 == "shortcut"
    assert sc.sum() >= 5
    assert np.max(f0.score[sc]) < 0.2
    assert np.min(f0.r2_self[sc]) > 0.5  # their own modality predicts them well
    assert roc_auc_score(kind0 == "shared", f0.score) >= 0.9  # shortcuts among the negatives


def test_shortcut_scores_low_even_when_it_predicts_the_label(sim):
    """A shortcut that tracks the label (so a per-modality model would find it useful) is
    still scored low: the other modality does not carry it."""
    m = sim
    z = _views(m)
    label = m["m0"].obs["label"].cat.codes.to_numpy().astype(float)
    y = m["m0"].X.copy()
    sc = m["m0"].var["kind"].to_numpy() == "shortcut"
    # shortcut features now also follow an m0-only label readout (not the shared factors)
    y[:, sc] += (
        2.0
        * (label[:, None] == label.max())
        * np.random.default_rng(1).normal(size=(1, int(sc.sum())))
    )
    own = np.hstack([z["m0"], m["m0"].obs[["shortcut"]].to_numpy(), label[:, None]])
    f = feature_scores(y, own, np.random.default_rng(2).normal(size=z["m1"].shape),
                       n_bootstrap=0, n_permutations=0, rng=np.random.default_rng(0))  # fmt: skip
    assert np.max(f.score[sc]) < 0.2


def test_interval_brackets_and_pvalues(sim):
    z = _views(sim)
    own = np.hstack([z["m1"], sim["m1"].obsm["private_factors"]])
    f = _scores(sim, "m1", own, z["m0"], n_bootstrap=200, n_permutations=200)
    kind = sim["m1"].var["kind"].to_numpy()
    ok = np.isfinite(f.ci_low)
    assert ok.all()
    assert np.all(f.ci_low <= f.score + 1e-9)
    assert np.all(f.score <= f.ci_high + 1e-9)
    shared = kind == "shared"
    assert np.all(f.pvalue[shared] <= 1 / 201 + 1e-12)  # no permutation reaches them
    assert np.median(f.pvalue[~shared]) > 0.2
    assert np.all((f.pvalue > 0) & (f.pvalue <= 1))


def test_pvalue_is_calibrated_under_the_null():
    rng = np.random.default_rng(0)
    n, p = 120, 300
    z_other = rng.normal(size=(n, 4))
    y = rng.normal(size=(n, p))  # independent of z_other
    f = feature_scores(y, y[:, :5], z_other, n_bootstrap=0, n_permutations=99,
                       rng=np.random.default_rng(1))  # fmt: skip
    frac = np.mean(f.pvalue <= 0.05)
    assert 0.01 <= frac <= 0.10
    assert np.median(f.score) < 0.05


def test_duplicate_scores_one_and_independent_zero():
    rng = np.random.default_rng(0)
    n = 200
    s = rng.normal(size=(n, 3))
    y = s @ rng.normal(size=(3, 30)) + 0.3 * rng.normal(size=(n, 30))
    same = feature_scores(y, s, s, n_bootstrap=0, n_permutations=0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(same.score, 1.0)
    indep = feature_scores(y, s, rng.normal(size=(n, 3)), n_bootstrap=0, n_permutations=0,
                           rng=np.random.default_rng(0))  # fmt: skip
    assert np.max(indep.score) < 0.15


def test_cross_fit_is_out_of_fold_and_follows_clusters():
    """No cell is predicted by a map fitted on it; a cluster a linear map cannot isolate
    (a ring) is picked up by the neighbour regression."""
    rng = np.random.default_rng(0)
    n = 300
    angle = rng.uniform(0, 2 * np.pi, n)
    z = np.c_[np.cos(angle), np.sin(angle)] * rng.uniform(0.5, 2.0, (n, 1))
    y = (np.linalg.norm(z, axis=1) > 1.25).astype(float)[:, None]  # radius, not linear
    fold = folds_of(n, 5, rng)
    pred = cross_fit(z, y, fold)
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2 > 0.6
    # a memorising map would reach R2 1 on pure noise; out of fold it cannot
    noise = rng.normal(size=(n, 5))
    pn = cross_fit(rng.normal(size=(n, 3)), noise, fold)
    assert (1 - ((noise - pn) ** 2).sum(0) / ((noise - noise.mean(0)) ** 2).sum(0)).max() < 0.1


def test_same_seed_same_numbers(sim):
    z = _views(sim)
    a = _scores(sim, "m0", z["m0"], z["m1"], seed=3, n_bootstrap=30, n_permutations=30)
    b = _scores(sim, "m0", z["m0"], z["m1"], seed=3, n_bootstrap=30, n_permutations=30)
    c = _scores(sim, "m0", z["m0"], z["m1"], seed=4, n_bootstrap=30, n_permutations=30)
    for f in ("score", "ci_low", "ci_high", "pvalue"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.ci_low, c.ci_low)


# -- end to end: one short integration, embeddings replaced (the score reads only obsm)


@pytest.fixture(scope="module")
def fitted():
    # the scores read only the embeddings (replaced below): the closed-form linear backbone
    # writes a valid record without training a network
    m = si.datasets.simulate_multimodal(400, (60, 60), random_state=0)
    si.mm.integrate(m, pairing=0.5, backbone="linear", progress=False)
    return m


def _oracle(m):
    """Write oracle embeddings: shared factors (+ m0's shortcut as a leak in m0's private)."""
    rng = np.random.default_rng(0)
    for k in ("m0", "m1"):
        rows = m.obs_names.get_indexer(m[k].obs_names)
        s = m.obsm["shared_factors"][rows]
        m[k].obsm[KEY] = (s + 0.2 * rng.normal(size=s.shape)).astype(np.float32)
        priv = m[k].obsm["private_factors"]
        if k == "m0":
            priv = np.c_[priv, m["m0"].obs["shortcut"].to_numpy()]
        m[k].obsm[f"{KEY}_private"] = priv.astype(np.float32)
    return m


def test_end_to_end_columns_and_ground_truth(fitted):
    m = _oracle(fitted.copy())
    si.mm.invariant_features(m, n_bootstrap=50, n_permutations=50)
    for k in ("m0", "m1"):
        var = m[k].var
        for c in ("", "_r2_self", "_r2_cross", "_ci_low", "_ci_high", "_pvalue"):
            assert f"invariance{c}" in var.columns
        kind = var["kind"].to_numpy()
        assert roc_auc_score(kind == "shared", var["invariance"]) >= 0.9
        assert (var["invariance_ci_low"] <= var["invariance"] + 1e-9).all()
    sc = m["m0"].var["kind"] == "shortcut"
    assert m["m0"].var.loc[sc, "invariance"].max() < 0.2
    latent = m.uns["invariance"]["latent"]
    assert list(latent.columns) == [
        "modalities", "dimension", "ccc", "ci_low", "ci_high", "pvalue", "n_cells"
    ]  # fmt: skip
    assert (latent["pvalue"] < 0.05).all()  # oracle views agree on every dimension
    params = m.uns["invariance"]["params"]
    assert params["n_folds"] == 5 and params["n_permutations"] == 50


def test_end_to_end_round_trip_and_determinism(fitted, tmp_path):
    m = _oracle(fitted.copy())
    si.mm.invariant_features(m, n_bootstrap=20, n_permutations=20, random_state=5)
    first = m["m1"].var["invariance_ci_low"].to_numpy().copy()
    si.mm.invariant_features(m, n_bootstrap=20, n_permutations=20, random_state=5)
    np.testing.assert_array_equal(first, m["m1"].var["invariance_ci_low"].to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "inv.h5mu")
        back = md.read_h5mu(tmp_path / "inv.h5mu")
    pd.testing.assert_series_equal(back["m1"].var["invariance"], m["m1"].var["invariance"])
    assert "pvalue" in back.uns["invariance"]["latent"].columns


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"n_permutations": -1}, ValueError, r"^mm\.invariant_features: n_permutations must"),
        ({"n_folds": 1}, ValueError, r"^mm\.invariant_features: n_folds must"),
        ({"n_fold": 3}, TypeError, "n_fold"),
        ({"cells": np.ones(3, bool)}, ValueError, "one entry per cell"),
        ({"key": "nope"}, KeyError, r"run scimpute\.mm\.integrate"),
    ],
)
def test_errors(fitted, kwargs, err, match):
    m = fitted.copy()
    before = set(m["m0"].var.columns)
    with pytest.raises(err, match=match):
        si.mm.invariant_features(m, **kwargs)
    assert set(m["m0"].var.columns) == before
    assert "invariance" not in m.uns


def test_missing_embedding_and_too_few_cells(fitted):
    m = fitted.copy()
    del m["m1"].obsm[KEY]
    with pytest.raises(KeyError, match=r"obsm\['X_scimpute'\]"):
        si.mm.invariant_features(m)
    m = fitted.copy()
    mask = np.zeros(m.n_obs, bool)
    mask[:5] = True
    with pytest.raises(ValueError, match="at least 10 are needed"):
        si.mm.invariant_features(m, cells=mask)
    assert "invariance" not in m.uns


@pytest.mark.slow
def test_real_proteins_rank_by_what_rna_carries(data_dir):
    """On the CITE-seq set, with a CCA backbone fitted on half the cells: the lineage
    proteins whose gene RNA measures well (CD14, CD3) rank in the top 4 of 14 and the
    activation markers whose genes are barely detected (CD25, PD-1) in the bottom 4."""
    from scimpute.mm._unpaired import _pcs, rcca

    m = si.datasets.pbmc_citeseq()
    si.mm.normalize(m, n_top_features={"rna": 2000})
    rng = np.random.default_rng(0)
    anchors = np.zeros(m.n_obs, bool)
    anchors[rng.permutation(m.n_obs)[:100]] = True
    si.mm.integrate(m, layer="scimpute_norm", use_var="scimpute_features", pairing=anchors,
                    backbone="linear", progress=False)  # fmt: skip
    hv = m["rna"].var["scimpute_features"].to_numpy()
    pr = _pcs(m["rna"].layers["scimpute_norm"][:, hv], 30, 0)
    pp = _pcs(m["prot"].layers["scimpute_norm"], 13, 0)
    a, b, _, ma, mb = rcca(pr[anchors], pp[anchors], 10, 0.1)
    m["rna"].obsm[KEY] = ((pr - ma) @ a).astype(np.float32)
    m["prot"].obsm[KEY] = ((pp - mb) @ b).astype(np.float32)
    for k in ("rna", "prot"):
        m[k].obsm.pop(f"{KEY}_private", None)
    si.mm.invariant_features(m, n_bootstrap=0, n_permutations=0)
    rank = m["prot"].var["invariance"].rank(ascending=False)
    assert rank["CD14_TotalSeqB"] <= 4 and rank["CD3_TotalSeqB"] <= 4
    assert rank["CD25_TotalSeqB"] >= 11 and rank["PD-1_TotalSeqB"] >= 11


def test_plot_draws_the_intervals(fitted):
    from matplotlib.collections import LineCollection

    m = _oracle(fitted.copy())
    si.mm.invariant_features(m, n_bootstrap=30, n_permutations=0)
    ax = si.pl.invariance(m, modalities="m1", n_top=5, show=False)
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(bars) == 1
    segs = bars[0].get_segments()
    assert len(segs) == 5
    var = m["m1"].var.sort_values("invariance", ascending=False).iloc[:5]
    lows = sorted(min(s[:, 0]) for s in segs)
    np.testing.assert_allclose(lows, sorted(var["invariance_ci_low"]), atol=1e-6)
    assert "bootstrap interval" in ax.get_xlabel()

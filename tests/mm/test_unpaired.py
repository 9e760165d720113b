"""Unpaired alignment through feature links (mm._unpaired, integrate(pairing=False, links=))."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest

import scimpute as si
from scimpute.mm._unpaired import UnpairedParams, linked_matrices, match_cells, rcca

KEY = "X_scimpute"
#: same shapes and options as test_mm.py / test_pl_mm.py: the compiled epoch is reused
SIM = {"n_cells": 400, "n_features": (60, 60)}


def _linked_sim(seed: int = 0, n: int = 300, noise: float = 0.5):
    """Two modalities of the same cells from clustered shared factors; the first 8 features
    of ``b`` are noisy readouts of the first 8 of ``a`` (the links), the rest differ."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    s = 2.0 * rng.normal(size=(5, 4))[labels] + 0.7 * rng.normal(size=(n, 4))
    xa = s @ rng.normal(size=(4, 40)) + noise * rng.normal(size=(n, 40))
    xb = s @ rng.normal(size=(4, 30)) + noise * rng.normal(size=(n, 30))
    xb[:, :8] = 0.8 * xa[:, :8] + 2 * noise * rng.normal(size=(n, 8))
    names_a = pd.Index([f"a{i}" for i in range(40)])
    names_b = pd.Index([f"b{i}" for i in range(30)])
    table = pd.DataFrame({"feature_a": names_a[:8], "feature_b": names_b[:8], "weight": 1.0})
    return xa, xb, table, names_a, names_b, labels


def test_match_cells_recovers_pairs_with_links():
    xa, xb, table, na, nb, labels = _linked_sim()
    perm = np.random.default_rng(1).permutation(xb.shape[0])  # b's cells in another order
    la, lb, used = linked_matrices(xa, xb[perm], table, na, nb)
    assert used == list(na[:8])
    res = match_cells(xa, xb[perm], la, lb, rng=np.random.default_rng(0))
    truth = perm[res.rows_b]  # the cell of a that b's matched row really is
    assert np.mean(labels[truth] == labels[res.rows_a]) > 0.9  # right cell type
    eb = res.embedding_b[np.argsort(perm)]
    assert si.metrics.foscttm(res.embedding_a, eb) < 0.1
    # filtering keeps the best 80%, weights in (0, 1], sorted by row of a
    assert res.rows_a.size == round(0.8 * xa.shape[0])
    assert np.all(np.diff(res.rows_a) > 0)
    assert res.weight.max() == 1.0 and res.weight.min() > 0
    assert list(res.history["round"]) == [0, 1, 2, 3]


def test_refinement_beats_the_linked_features_alone():
    xa, xb, table, na, nb, _ = _linked_sim(seed=2, noise=1.0)
    la, lb, _ = linked_matrices(xa, xb, table, na, nb)
    fos = {}
    for n_iter in (0, 3):
        res = match_cells(xa, xb, la, lb, UnpairedParams(n_iter=n_iter),
                          rng=np.random.default_rng(0))  # fmt: skip
        fos[n_iter] = si.metrics.foscttm(res.embedding_a, res.embedding_b)
    assert fos[3] < fos[0]


def test_without_links_signal_matching_is_random():
    xa, xb, table, na, nb, labels = _linked_sim()
    rng = np.random.default_rng(0)
    la, lb = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))  # links that carry nothing
    res = match_cells(xa, xb, la, lb, rng=np.random.default_rng(0))
    assert si.metrics.foscttm(res.embedding_a, res.embedding_b) > 0.35


def test_match_cells_is_seeded():
    xa, xb, table, na, nb, _ = _linked_sim()
    la, lb, _ = linked_matrices(xa, xb, table, na, nb)
    runs = [match_cells(xa, xb, la, lb, rng=np.random.default_rng(s)) for s in (0, 0)]
    np.testing.assert_array_equal(runs[0].rows_b, runs[1].rows_b)
    np.testing.assert_array_equal(runs[0].embedding_a, runs[1].embedding_a)


def test_batches_and_unequal_sizes():
    xa, xb, table, na, nb, labels = _linked_sim(n=300)
    keep = np.arange(0, 300, 2)  # b has half the cells
    la, lb, _ = linked_matrices(xa, xb[keep], table, na, nb)
    res = match_cells(xa, xb[keep], la, lb, UnpairedParams(batch_size=80),
                      rng=np.random.default_rng(0))  # fmt: skip
    assert res.rows_b.size == round(0.8 * 150)
    assert len(np.unique(res.rows_b)) == res.rows_b.size  # one-to-one
    assert np.mean(labels[keep[res.rows_b]] == labels[res.rows_a]) > 0.8


def test_rcca_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x[:, :3] @ rng.normal(size=(3, 4)) + 0.5 * rng.normal(size=(200, 4))
    a, b, corr, mx, my = rcca(x, y, 3, 0.0)
    u, v = (x - mx) @ a, (y - my) @ b
    np.testing.assert_allclose(np.cov(u.T, bias=True), np.eye(3), atol=1e-8)
    r = [np.corrcoef(u[:, i], v[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(r, corr, atol=1e-8)
    assert np.all(np.diff(corr) <= 1e-12) and corr[0] > 0.9


# -- integrate(pairing=False, links=...)


def _with_links(seed: int = 0) -> md.MuData:
    """The simulator with links between the shared features of m0 and m1 whose loadings on
    the shared factors point the same way (cosine > 0.95)."""
    m = si.datasets.simulate_multimodal(**SIM, random_state=seed)
    load = m.uns["simulation"]["loadings"]
    w = {}
    for k in ("m0", "m1"):
        order = np.asarray(load[k]["order"])
        kind = np.asarray(m[k].var["kind"])
        ws = np.asarray(load[k]["shared"])  # (n_shared, n_shared_features), before the order
        names = m[k].var_names[kind == "shared"]
        cols = order[kind == "shared"]  # column c of X is column order[c] of the signal
        w[k] = (names, ws[:, cols] / np.linalg.norm(ws[:, cols], axis=0))
    cos = w["m0"][1].T @ w["m1"][1]
    i, j = np.nonzero(cos > 0.95)
    table = pd.DataFrame({"m0": w["m0"][0][i], "m1": w["m1"][0][j]})
    si.mm.link_features(m, "m0", "m1", by=table)
    return m


@pytest.mark.slow
def test_pairing_false_with_links_aligns_and_without_warns():
    m = _with_links()
    assert len(m.uns["links_m0_m1"]["links"]) >= 10
    plain = m.copy()
    fit = {"pairing": False, "learning_rate": 1e-3, "progress": False}
    si.mm.integrate(m, links="links_m0_m1", **fit)  # default epochs: about 0.13
    fos = si.metrics.foscttm(m["m0"].obsm[KEY], m["m1"][m["m0"].obs_names].obsm[KEY])
    assert fos < 0.2
    fit["max_epochs"] = 60
    rec = m.uns[KEY]["pseudo_anchors"]["m0|m1"]
    from scimpute.mm._params import IntegrateParams

    frac = IntegrateParams().validation_fraction
    assert rec["n_pairs"] == round(0.8 * (1 - frac) * 400)  # training cells, 80% kept
    assert m.uns[KEY]["fit"]["n_anchors"] == 0  # no true anchor was used
    with pytest.warns(UserWarning, match="distribution matching alone"):
        si.mm.integrate(plain, **fit)
    fos0 = si.metrics.foscttm(plain["m0"].obsm[KEY], plain["m1"][plain["m0"].obs_names].obsm[KEY])
    assert fos < fos0 - 0.1


def test_pseudo_anchor_record_survives_h5mu(tmp_path):
    m = _with_links()
    si.mm.integrate(m, pairing=False, links="links_m0_m1", max_epochs=2, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "u.h5mu")
        back = md.read_h5mu(tmp_path / "u.h5mu")
    rec = back.uns[KEY]["pseudo_anchors"]["m0|m1"]
    assert rec["n_pairs"] == m.uns[KEY]["pseudo_anchors"]["m0|m1"]["n_pairs"]
    assert list(pd.DataFrame(rec["history"])["round"]) == [0, 1, 2, 3]
    si.mm.translate(back, "m0", "m1")  # the model still loads


@pytest.mark.parametrize(
    ("links", "err", "match"),
    [
        ("nope", KeyError, r"run scimpute\.mm\.link_features"),
        (pd.DataFrame({"x": ["a"], "y": ["b"]}), ValueError, "two columns named after"),
        (pd.DataFrame({"m0": ["zz"], "m1": ["yy"]}), ValueError, "names features they have"),
        (3, TypeError, "links must be"),
    ],
)
def test_link_errors_stop_before_training(links, err, match):
    m = si.datasets.simulate_multimodal(60, (10, 8), random_state=0)
    with pytest.raises(err, match=match):
        si.mm.integrate(m, pairing=False, links=links, progress=False)
    assert KEY not in m.uns and KEY not in m.obsm


def test_links_between_other_modalities_are_an_error():
    m = si.datasets.simulate_multimodal(60, (10, 8, 6), modalities=("m0", "m1", "m2"),
                                        random_state=0)  # fmt: skip
    si.mm.link_features(m, "m0", "m2", by={"m0_f0": "m2_f0"})
    with pytest.raises(ValueError, match="not an integrated modality"):
        si.mm.integrate(m, modalities=["m0", "m1"], pairing=False, links="links_m0_m2",
                        progress=False)  # fmt: skip
    assert KEY not in m.uns


def test_no_free_cells_means_no_pseudo_anchors():
    from scimpute.mm._data import ROLES, cell_table
    from scimpute.mm._unpaired import pseudo_anchors

    m = si.datasets.simulate_multimodal(60, (10, 8), random_state=0)
    si.mm.link_features(m, "m0", "m1", by={"m0_f0": "m1_f0", "m0_f1": "m1_f1"})
    cells = cell_table(m, ["m0", "m1"])
    mats = {k: np.asarray(m[k].X) for k in ("m0", "m1")}
    layers = {"m0": None, "m1": None}
    args = (m, "links_m0_m1", ["m0", "m1"], mats, layers, cells.rows)
    every = np.full(m.n_obs, ROLES.index("anchor"))
    rows, summary = pseudo_anchors(*args, every, ROLES, UnpairedParams(), np.random.default_rng(0))
    assert rows.shape == (0, 2) and summary["m0|m1"]["n_pairs"] == 0
    free = np.full(m.n_obs, ROLES.index("train"))
    rows, summary = pseudo_anchors(*args, free, ROLES, UnpairedParams(), np.random.default_rng(0))
    assert rows.shape == (round(0.8 * 60), 2) and (rows >= 0).all()

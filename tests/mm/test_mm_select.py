"""Backbone choice of scimpute.mm.integrate by validation on the anchors (issue 11, part 1).

Seeded truths: with a linear link between the modalities the linear backbone is kept; with a
strongly nonlinear link and enough anchors a network is kept. The record of the
candidates survives an h5mu round trip, the linear backbone supports translate and
invariant_features, the default call is never worse than the validated linear fit, and the
same seed gives the same numbers. Which networks ``auto`` trains in full (section 5): a linear
link the linear backbone already solves skips them by the floor, and (floor off, more training
cells than ``screen_cells``) by the screen, with the reason and the screen scores recorded;
the screen's draws do not change the full fits it lets through.
"""

import warnings

import mudata as md
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import scimpute as si
from scimpute.mm._linear import fit_cca
from scimpute.mm._screen import floor_reason, screen_set, screen_verdict
from scimpute.mm._select import Candidate, choose, pair_score
from scimpute.mm._train import TrainingSet

KEY = "X_scimpute"
NET = {"max_epochs": 60, "learning_rate": 2e-3, "patience": 10, "progress": False}
DEEP = {**NET, "max_epochs": 150, "patience": 15}
#: the screen fits are short: a few epochs are enough to tell the rules apart
SHORT = {**NET, "max_epochs": 8}
#: the floor off: every candidate is trained in full, validation alone decides
ALL_FITTED = {**NET, "network_floor": 0.0}
#: every network fit of this module sees the same shapes (N cells, 30 + 30 features, the same
#: numbers of anchors, validation pairs and screen cells, the linear rank 2 of both truths):
#: compiling a network's epoch, not training it, is the cost, and it is paid once per
#: network (full fit and screen fit), not once per test
N, PAIRING, SCREEN = 400, 0.5, 100


def _mudata(n: int, nonlinear: bool, seed: int) -> md.MuData:
    """Two modalities driven by the same 2 factors; the second linearly or through cosines."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, 2))
    xa = s @ rng.normal(size=(2, 30)) + 0.3 * rng.normal(size=(n, 30))
    proj = s @ rng.normal(size=(2, 30))
    if nonlinear:
        proj = 2.0 * np.cos(1.5 * proj + rng.uniform(0, 2 * np.pi, 30))
    xb = proj + 0.3 * rng.normal(size=(n, 30))
    names = [f"c{i}" for i in range(n)]
    mods = {
        k: AnnData(
            X=x.astype(np.float32),
            obs=pd.DataFrame(index=names),
            var=pd.DataFrame(index=[f"{k}{j}" for j in range(x.shape[1])]),
        )
        for k, x in (("a", xa), ("b", xb))
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData(mods)


def _held_out_foscttm(m) -> float:
    held = m.obs[f"{KEY}_split"].astype(str).to_numpy() == "train"
    ia = m["a"].obs_names.get_indexer(m.obs_names[held])
    ib = m["b"].obs_names.get_indexer(m.obs_names[held])
    return si.metrics.foscttm(m["a"].obsm[KEY][ia], m["b"].obsm[KEY][ib])


def _candidates(m) -> pd.DataFrame:
    c = m.uns[KEY]["candidates"]
    return c[c["name"] != "linear-cv"].set_index("name")


@pytest.fixture(scope="module")
def linear_truth():
    m = _mudata(N, nonlinear=False, seed=0)
    si.mm.integrate(m, pairing=PAIRING, **ALL_FITTED)
    return m


@pytest.fixture(scope="module")
def nonlinear_truth():
    m = _mudata(N, nonlinear=True, seed=1)
    si.mm.integrate(m, pairing=PAIRING, **DEEP)
    return m


def test_linear_truth_keeps_the_linear_backbone(linear_truth):
    m = linear_truth
    assert m.uns[KEY]["backbone"] == "linear"
    cand = _candidates(m)
    assert set(cand.index) == {"linear", "guided", "autoencoder"}
    assert cand.loc["linear", "chosen"] and cand["chosen"].sum() == 1
    assert np.isfinite(cand["score"]).all()
    # the linear fit aligns the evaluation cells (their pairing was never used)
    assert _held_out_foscttm(m) < 0.05
    # every modality's embedding of every cell, joint = their mean
    za, zb = m["a"].obsm[KEY], m["b"].obsm[KEY]
    assert za.shape == zb.shape == (N, m.uns[KEY]["params"]["n_latent"])
    np.testing.assert_allclose(m.obsm[KEY], (za + zb) / 2, rtol=1e-5, atol=1e-6)


def test_nonlinear_truth_enough_anchors_keeps_a_network(nonlinear_truth):
    m = nonlinear_truth
    cand = _candidates(m)
    assert m.uns[KEY]["backbone"] in ("autoencoder", "guided"), cand
    assert cand.loc[m.uns[KEY]["backbone"], "score"] < cand.loc["linear", "score"]


def test_linear_backbone_translates_and_scores_invariance(linear_truth, tmp_path):
    m = linear_truth.copy()
    m.uns[KEY] = dict(linear_truth.uns[KEY])
    held = m.obs[f"{KEY}_split"].astype(str).to_numpy() == "train"
    pred = si.mm.translate(m, "a", "b")
    r = si.metrics.cross_modal_correlation(m["b"].X[held], pred.X[held])
    assert np.median(r) > 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "m.h5mu")
        back = md.read_h5mu(tmp_path / "m.h5mu")
    # the record, with its candidates, survives the file
    c0, c1 = m.uns[KEY]["candidates"], back.uns[KEY]["candidates"]
    pd.testing.assert_frame_equal(c0.reset_index(drop=True), c1.reset_index(drop=True))
    assert back.uns[KEY]["backbone"] == "linear"
    np.testing.assert_array_equal(si.mm.translate(back, "a", "b").X, pred.X)
    si.mm.invariant_features(back, n_bootstrap=10)
    assert np.isfinite(back["b"].var["invariance"]).all()


def test_default_never_worse_than_the_validated_linear_fit():
    # same shapes as the fixtures' fits: the compiled epochs are reused
    m = _mudata(N, nonlinear=True, seed=2)
    lin = m.copy()
    si.mm.integrate(m, pairing=PAIRING, **NET)
    si.mm.integrate(lin, pairing=PAIRING, backbone="linear", **NET)
    np.testing.assert_array_equal(m.obs[f"{KEY}_split"], lin.obs[f"{KEY}_split"])
    assert _held_out_foscttm(m) <= _held_out_foscttm(lin) + 0.01


def test_same_seed_same_numbers(linear_truth):
    m = _mudata(N, nonlinear=False, seed=0)
    si.mm.integrate(m, pairing=PAIRING, **ALL_FITTED)
    np.testing.assert_array_equal(m.obsm[KEY], linear_truth.obsm[KEY])
    a = m.uns[KEY]["candidates"][["name", "settings", "score"]]
    b = linear_truth.uns[KEY]["candidates"][["name", "settings", "score"]]
    pd.testing.assert_frame_equal(a, b)
    # the stored options (backbone kept) rerun the kept fit exactly
    again = _mudata(N, nonlinear=False, seed=0)
    si.mm.integrate(again, pairing=PAIRING, backbone="linear", **NET)
    np.testing.assert_array_equal(again.obsm[KEY], m.obsm[KEY])


def test_cca_recovers_a_planted_correlation():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(500, 1))
    a = np.hstack([s + 0.5 * rng.normal(size=(500, 1)), rng.normal(size=(500, 3))])
    b = np.hstack([rng.normal(size=(500, 2)), s + 0.5 * rng.normal(size=(500, 1))])
    lf = fit_cca({"a": a, "b": b}, rank=1, ridge=0.0)
    za, zb = lf.embed("a", a), lf.embed("b", b)
    r = np.corrcoef(za[:, 0], zb[:, 0])[0, 1]
    assert r == pytest.approx(0.8, abs=0.05)  # corr of s + e1, s + e2: 1 / 1.25
    assert lf.correlations[0] == pytest.approx(r, abs=1e-6)
    assert np.mean(np.concatenate([za, zb]).var(0)) == pytest.approx(1.0, rel=1e-6)


def test_choice_rule_takes_a_network_only_when_shown_better():
    base = np.full(50, 0.2)
    noise = np.random.default_rng(0).normal(0, 0.05, 50)

    def cand(name, v):
        return Candidate(name, name, "", float(v.mean()), 0.0, 0.0, v)

    # a slightly lower mean but well within the noise of the differences: keep the simplest
    assert choose([cand("linear", base), cand("autoencoder", base - 0.002 + noise)]) == 0
    # clearly better on the validation pairs: the network
    assert choose([cand("linear", base), cand("autoencoder", base - 0.05 + noise)]) == 1
    score, se, per_cell = pair_score(
        {"a": np.eye(3), "b": np.eye(3)}, {"a": np.arange(3), "b": np.arange(3)}
    )
    assert score == 0.0 and per_cell.size == 3


def test_cross_validation_scores_a_bounded_subset_of_large_folds(monkeypatch):
    # issue 11 section 5: the cost of scoring a fold must not grow with the data
    from scimpute.mm import _select

    sizes = []
    real = _select.pair_score

    def spy(z, rows):
        sizes.append(next(iter(rows.values())).size)
        return real(z, rows)

    monkeypatch.setattr(_select, "MAX_SCORED", 30)
    monkeypatch.setattr(_select, "pair_score", spy)
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 1))
    scores = {"a": s + 0.3 * rng.normal(size=(200, 4)), "b": s + 0.3 * rng.normal(size=(200, 4))}
    out = _select.cv_linear(scores, [(4, 1, 0.1), (4, 2, 0.1)], fit_cca, 2, rng)
    assert sizes == [30] * 4  # 2 candidates x 2 folds of 100 held-out anchors
    assert all(0 <= v < 0.2 for _, v in out)  # the planted shared factor aligns them


def test_capacity_cross_validation_fits_a_bounded_subset_of_anchors(monkeypatch):
    # issue 11 section 5: the candidates x folds grid must not fit on every anchor of a
    # large data set (below the cap nothing is drawn)
    from scimpute.mm import _select

    fitted = []

    def spy(sc, rank, ridge):
        fitted.append(next(iter(sc.values())).shape[0])
        return fit_cca(sc, rank, ridge)

    rng = np.random.default_rng(0)
    s = rng.normal(size=(300, 1))
    scores = {"a": s + 0.3 * rng.normal(size=(300, 4)), "b": s + 0.3 * rng.normal(size=(300, 4))}
    _select.cv_linear(scores, [(4, 1, 0.1)], spy, 2, np.random.default_rng(1))
    assert fitted == [150, 150]
    monkeypatch.setattr(_select, "MAX_CV_ANCHORS", 100)
    fitted.clear()
    out = _select.cv_linear(scores, [(4, 1, 0.1)], spy, 2, np.random.default_rng(1))
    assert fitted == [50, 50]  # 2 folds of a 100-anchor subset
    assert 0 <= out[0][1] < 0.2


def test_validation_loss_reads_a_bounded_subset(monkeypatch):
    from scimpute.mm import _train

    monkeypatch.setattr(_train, "MAX_VALIDATION_CELLS", 50)
    rows = np.arange(400)
    ts = _train.TrainingSet(
        inputs={"a": (np.zeros((400, 2)),), "b": (np.zeros((400, 2)),)},
        train_rows={"a": rows[:200], "b": rows[:200]},
        val_rows={"a": rows[200:], "b": rows[200:230]},
        anchors=rows[:100],
        cell_rows=np.stack([rows, rows], 1),
        val_pairs=rows[200:],
    )
    rng = np.random.default_rng(0)
    idx, aidx, _ = _train._validation_batch(ts, rng)
    assert idx["a"].shape == (50,) and set(np.asarray(idx["a"])) <= set(range(200, 400))
    np.testing.assert_array_equal(idx["b"], rows[200:230])  # under the cap: all, in order
    assert aidx["a"].shape == (50,)


# ------------------------------------------- which networks are trained in full (section 5)


def _cand(score: float, name: str = "x") -> Candidate:
    return Candidate(name, name, "", score, 0.0, 0.0)


def test_floor_skips_the_networks_and_records_why(tmp_path):
    m = _mudata(N, nonlinear=False, seed=0)
    si.mm.integrate(m, pairing=PAIRING, **NET)
    rec = m.uns[KEY]
    cand = _candidates(m)
    lin = cand.loc["linear", "score"]
    assert lin <= 0.005 and rec["backbone"] == "linear"
    assert np.isnan(cand.loc[["guided", "autoencoder"], "score"]).all()
    assert cand.loc["guided", "settings"].startswith("not trained: linear validation FOSCTTM")
    assert rec["network_screen"]["rule"] == "floor"
    assert "network_floor 0.005" in rec["network_screen"]["reason"]
    assert rec["params"]["network_floor"] == 0.005
    # the record survives the file (its read-back model is the linear one)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.write(tmp_path / "m.h5mu")
        back = md.read_h5mu(tmp_path / "m.h5mu")
    assert back.uns[KEY]["network_screen"]["rule"] == "floor"
    np.testing.assert_array_equal(si.mm.translate(back, "a", "b").X, si.mm.translate(m, "a", "b").X)


def test_screen_skips_networks_worse_than_linear_on_the_same_cells():
    m = _mudata(N, nonlinear=False, seed=0)
    si.mm.integrate(m, pairing=PAIRING, network_floor=0.0, screen_cells=SCREEN, **SHORT)
    rec = m.uns[KEY]
    c = m.uns[KEY]["candidates"].set_index("name")
    screen = rec["network_screen"]
    assert screen["rule"] == "screen" and screen["screen_cells"] == SCREEN
    lin = c.loc["linear-screen", "score"]
    assert f"{SCREEN} cells" in c.loc["linear-screen", "settings"]
    for b in ("guided", "autoencoder"):
        net = c.loc[f"{b}-screen", "score"]
        assert np.isfinite(net) and not c.loc[f"{b}-screen", "chosen"]
        assert (net > 1.25 * lin) == np.isnan(c.loc[b, "score"])  # the documented rule
        assert f"{b}: screen FOSCTTM" in screen["reason"]
    assert np.isnan(c.loc["autoencoder", "score"])  # 8 epochs on 100 cells do not come close
    assert rec["backbone"] == "linear"


def test_networks_let_through_the_screen_are_the_full_fits(nonlinear_truth):
    # screen_margin so large that every network passes: the full fits (and the choice)
    # are those of the same call without a screen, the screen's own fits are extra rows
    m = _mudata(N, nonlinear=True, seed=1)
    si.mm.integrate(m, pairing=PAIRING, screen_cells=SCREEN, screen_margin=1e6, **DEEP)
    plain = nonlinear_truth  # N cells <= screen_cells (2000): no screen
    assert plain.uns[KEY]["network_screen"]["rule"] == "full"
    assert m.uns[KEY]["network_screen"]["rule"] == "screen"
    a, b = _candidates(m), _candidates(plain)
    for name in ("linear", "guided", "autoencoder"):
        assert a.loc[name, "score"] == b.loc[name, "score"]
    assert {"linear-screen", "guided-screen", "autoencoder-screen"} <= set(a.index)
    np.testing.assert_array_equal(m.obsm[KEY], plain.obsm[KEY])


def test_screen_set_keeps_whole_cells_and_their_anchors():
    n = 50
    rows_b = np.full(n, -1)
    rows_b[:40] = np.arange(40)  # cells 40.. are measured in a only
    cell_rows = np.stack([np.arange(n), rows_b], 1)
    ts = TrainingSet(
        inputs={"a": (np.zeros((n, 2)),), "b": (np.zeros((40, 2)),)},
        train_rows={"a": np.arange(10, n), "b": np.arange(10, 40)},
        val_rows={"a": np.arange(10), "b": np.arange(10)},
        anchors=np.arange(10, 30),
        cell_rows=cell_rows,
        val_pairs=np.arange(10),
    )
    sub = screen_set(ts, 15, np.random.default_rng(0))
    kept = set(sub.train_rows["a"])
    assert len(kept) == 15 and kept <= set(range(10, n))
    # a paired cell keeps both of its rows; the anchors are the drawn anchors
    assert set(sub.train_rows["b"]) == kept & set(range(40))
    assert set(sub.anchors) == kept & set(range(10, 30))
    np.testing.assert_array_equal(sub.val_pairs, ts.val_pairs)
    np.testing.assert_array_equal(sub.val_rows["a"], ts.val_rows["a"])
    again = screen_set(ts, 15, np.random.default_rng(0))
    np.testing.assert_array_equal(again.train_rows["a"], sub.train_rows["a"])


def test_verdict_and_floor_rules():
    lin = _cand(0.10, "linear")
    assert screen_verdict(lin, _cand(0.124), 0.25)[0]  # within 25% of linear: train it
    assert screen_verdict(lin, _cand(0.08), 0.25)[0]
    full, why = screen_verdict(lin, _cand(0.126), 0.25)
    assert not full and "0.126 > (1 + screen_margin)" in why
    assert screen_verdict(lin, _cand(float("nan")), 0.25)[0]  # unscored: never skipped
    assert floor_reason(_cand(0.004), 0.005) is not None
    assert floor_reason(_cand(0.006), 0.005) is None
    assert floor_reason(_cand(0.0), 0.0) is None  # 0 disables the floor


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"network_floor": -0.1}, "network_floor"),
        ({"network_floor": 0.6}, "network_floor"),
        ({"screen_cells": 5}, "screen_cells"),
        ({"screen_margin": -1.0}, "screen_margin"),
    ],
)
def test_screen_options_are_checked(kwargs, name):
    m = _mudata(30, nonlinear=False, seed=0)
    before = m.copy()
    with pytest.raises(ValueError, match=rf"^mm\.integrate: {name} must"):
        si.mm.integrate(m, **kwargs)
    assert KEY not in m.uns
    pd.testing.assert_index_equal(m.obs_names, before.obs_names)

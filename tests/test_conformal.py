"""Conformal intervals, error score and trust score of ``auto`` on seeded simulations.

Exchangeable hold-outs: measured pairs hidden at random from a simulated grid are the
targets; the intervals must cover their measured values at the nominal rate (+-3%, averaged
over seeds), the error score must rank them by their real error, and pairs the simulator
makes hard (noisy contexts) must get larger predicted errors and lower trust.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import scimpute as si
from scimpute.tl._auto import AutoParams, assess
from scimpute.tl._auto._conformal import weighted_quantile
from scimpute.tl._data import to_grid_data

CHEAP = ("context_mean", "perturbation_mean", "two_way_mean", "additive")


def _holdout(data, seed, frac=0.25):
    rng = np.random.default_rng(seed)
    cand = np.argwhere(data.treated_mask())
    test = cand[rng.random(len(cand)) < frac]
    m = data.measured.copy()
    m[test[:, 0], test[:, 1]] = False
    return data.with_measured(m), test


@pytest.fixture(scope="module")
def exchangeable():
    """Three seeded grids, a random quarter of the measured pairs hidden, assessed at 0.9."""
    out = []
    for seed in range(3):
        g = si.datasets.simulate_grid(
            30, 20, 40, fraction_measured=0.7, noise=0.3, random_state=seed
        )
        data, _ = to_grid_data(g)
        fd, test = _holdout(data, seed)
        a = assess(fd, test, None, AutoParams(candidates=CHEAP), level=0.9, random_state=seed)
        out.append((a, data.Y[test[:, 0], test[:, 1]].astype(float)))
    return out


def test_weighted_quantile_is_the_corrected_empirical_quantile():
    rng = np.random.default_rng(0)
    x = rng.normal(size=257)
    for level in (0.5, 0.8, 0.9):
        expect = np.quantile(x, level * (1 + 1 / x.size), method="inverted_cdf")
        assert weighted_quantile(x, np.ones_like(x), level) == expect
    # weights: a heavy point pulls the quantile to itself
    w = np.ones_like(x)
    w[np.argmax(x)] = 1e6
    assert weighted_quantile(x, w, 0.5) == x.max()
    assert weighted_quantile(x[:5], np.ones(5), 0.9) == np.inf  # too few for the level


@pytest.mark.parametrize("level", [0.9, 0.7])
def test_intervals_cover_exchangeable_holdouts_at_the_nominal_rate(exchangeable, level):
    cov = []
    for a, y in exchangeable:
        lo, hi = a.difficulty.intervals(a.result.prediction, a.result.per_target["error"], level)
        cov.append(((y >= lo) & (y <= hi)).mean())
    assert abs(np.mean(cov) - level) <= 0.03, cov


def test_inner_calibration_record_is_near_nominal(exchangeable):
    for a, _ in exchangeable:
        rec = a.result.info["calibration"]
        np.testing.assert_allclose(rec["empirical"], rec["nominal"], atol=0.03)


def test_intervals_are_wider_for_pairs_predicted_harder(exchangeable):
    a, _ = exchangeable[0]
    width = (a.upper - a.lower).mean(axis=1)
    assert spearmanr(width, a.result.per_target["error"])[0] > 0.99


def test_error_score_ranks_pairs_by_their_real_error(exchangeable):
    rho = []
    for a, y in exchangeable:
        real = np.mean((a.result.prediction - y) ** 2 / a.oof.feature_var, axis=1)
        rho.append(spearmanr(a.result.per_target["error"], real)[0])
    assert np.mean(rho) >= 0.5, rho


def test_error_and_trust_separate_noisy_contexts_from_clean_ones():
    g = si.datasets.simulate_grid(20, 15, 30, fraction_measured=0.7, noise=0.1, random_state=0)
    data, _ = to_grid_data(g)
    rng = np.random.default_rng(0)
    y = data.Y.copy()
    y[:4] += rng.normal(0, 1.5, size=y[:4].shape)  # contexts 0-3 are hard
    noisy = data.__class__(**{**data.__dict__, "Y": y})
    fd, test = _holdout(noisy, 0, 0.3)
    a = assess(fd, test, None, AutoParams(candidates=CHEAP), level=0.9, random_state=0)
    hard = test[:, 0] < 4
    assert roc_auc_score(hard, a.result.per_target["error"]) > 0.9
    assert a.result.per_target["trust"][hard].mean() < a.result.per_target["trust"][~hard].mean()
    tc = a.result.info["trust_cv"]
    worse = ~np.asarray(tc["beats_baseline"])
    assert roc_auc_score(worse, 1 - np.asarray(tc["trust"])) > 0.6


def test_cross_validate_reports_outer_coverage_for_auto_and_a_fixed_method():
    g = si.datasets.simulate_grid(16, 12, 20, fraction_measured=0.7, noise=0.3, random_state=5)
    df = si.tl.cross_validate(
        g,
        methods=["additive", "auto"],
        holdout="random",
        n_folds=3,
        interval=0.9,
        candidates=CHEAP,
        progress=False,
    )
    from scimpute.tl._cross_validate import INTERVAL_COLUMNS

    assert set(INTERVAL_COLUMNS) <= set(df.columns)
    for _, d in df.groupby("method"):
        assert d["coverage"].between(0, 1).all() and (d["interval_width"] > 0).all()
        assert 0.8 < d["coverage"].mean() < 0.98
        assert d["trust"].between(0, 1).all()
    assert g.uns["cross_validation"]["params"]["interval"] == 0.9
    with pytest.raises(si._params.ParamError, match="cross_validate: interval"):
        si.tl.cross_validate(g, methods=["additive"], interval=2.0)


def test_linear_models_match_scikit_learn():
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from scimpute.tl._auto._features import logistic, ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)) * [1, 2, 3, 4]
    y = x @ [1.0, -0.5, 0.2, 0.0] + rng.normal(size=200)
    z = StandardScaler().fit_transform(x)
    np.testing.assert_allclose(
        ridge(x, y, alpha=2.0).predict(x), Ridge(alpha=2.0).fit(z, y).predict(z), rtol=1e-8
    )
    lab = (y > 0).astype(float)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(z, lab)
    np.testing.assert_allclose(
        logistic(x, lab).predict_proba(x), ref.predict_proba(z)[:, 1], atol=1e-5
    )


# --- the judgement layer's features and models (neighbours, disagreement, model choice) ---


def test_candidate_disagreement_is_zero_when_candidates_agree():
    from scimpute.tl._auto._features import pair_features

    rng = np.random.default_rng(0)
    p, base, var = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), np.ones(5)
    sup = np.ones((6, 2))
    x, names = pair_features(sup, {"a": p, "b": p.copy()}, base, {}, var)
    np.testing.assert_allclose(x[:, names.index("candidate_spread")], 0.0)
    x2, _ = pair_features(sup, {"a": p, "b": p + rng.normal(size=p.shape)}, base, {}, var)
    assert np.all(x2[:, names.index("candidate_spread")] > 0)


def _neighbours(n_ctx=4, n_pert=31, p=3, seed=0):
    from scimpute.tl._auto._features import Neighbours

    rng = np.random.default_rng(seed)
    pairs = np.array([(c, a) for c in range(n_ctx) for a in range(n_pert)])
    n = len(pairs)
    return Neighbours(
        pairs,
        np.arange(n) % 5,
        rng.normal(size=(n, p)),
        rng.normal(size=n),
        rng.normal(size=n),
        np.zeros((n_pert, n_pert)),
        (n_ctx, n_pert),
    )


def test_neighbour_errors_leave_the_pairs_own_fold_out():
    nb = _neighbours()
    f = nb.features(nb.pairs, nb.pred, nb.fold)
    for i in (0, 17, 100):
        c, a = nb.pairs[i]
        row = (nb.pairs[:, 0] == c) & (nb.fold != nb.fold[i])
        col = (nb.pairs[:, 1] == a) & (nb.fold != nb.fold[i])
        np.testing.assert_allclose(f[i, 0], nb.log_err[row].mean())
        np.testing.assert_allclose(f[i, 1], nb.log_err[col].mean())
        d = np.mean((nb.pred - nb.pred[i]) ** 2, axis=1)
        d[nb.fold == nb.fold[i]] = np.inf
        names = nb.names()
        for k in nb.counts:
            nn = np.argsort(d)[:k]
            np.testing.assert_allclose(
                f[i, names.index(f"nearest_error@{k}")], nb.log_err[nn].mean()
            )
            np.testing.assert_allclose(
                f[i, names.index(f"nearest_error_ratio@{k}")], nb.log_ratio[nn].mean()
            )
    assert np.all(np.isnan(f[:, 2]))  # no perturbation shares a component
    # a target (not a hold-out pair) uses every hold-out pair of its row
    t = nb.features(np.array([[1, 3]]), nb.pred[:1])
    np.testing.assert_allclose(t[0, 0], nb.log_err[nb.pairs[:, 0] == 1].mean())


def test_row_mean_needs_enough_groups_and_nearest_counts_above_the_holdout_are_missing():
    small = _neighbours(n_ctx=1, n_pert=12)  # 12 pairs, 5 folds: 9 or 10 in the other folds
    names = small.names()
    f = small.features(small.pairs, small.pred, small.fold)
    assert np.all(np.isnan(f[:, 0]))  # one row: a row mean would mirror the pair's own fold
    k20 = [i for i, n in enumerate(names) if n.endswith("@20")]
    k5 = [i for i, n in enumerate(names) if n.endswith("@5")]
    assert np.all(np.isnan(f[:, k20])) and np.all(np.isfinite(f[:, k5]))


def _nearest_case(kind, n=300, seed=0):
    """Errors that are a sharp function of the prediction, or of a pair feature only."""
    from scimpute.tl._auto._features import Neighbours

    rng = np.random.default_rng(seed)
    pairs = np.column_stack([np.zeros(n, int), np.arange(n)])
    fold = np.arange(n) % 10
    pred = rng.uniform(-1, 1, size=(n, 2))
    feat = rng.normal(size=n)
    if kind == "prediction":
        y = np.sin(6 * pred[:, 0]) * np.cos(6 * pred[:, 1])
    else:
        y = feat + 0.3 * rng.normal(size=n)
    nb = Neighbours(pairs, fold, pred, y, rng.normal(size=n), np.zeros((n, n)), (1, n))
    x = np.column_stack([feat, nb.features(pairs, pred, fold)])
    return x, y, fold, nb.groups(1, x.shape[1])


def test_nearest_count_is_the_inner_cv_argmax_and_follows_the_data():
    """The number of nearest pairs (or none) is chosen by the inner CV, not fixed."""
    from scimpute.tl._auto._learn import SEP, WITHOUT, designs, select, weighted_spearman

    chosen = {}
    for kind in ("prediction", "feature"):
        x, y, fold, groups = _nearest_case(kind)
        w = np.ones(y.size)
        best, cv, scores = select(
            x, y, w, fold, lambda p, y=y, w=w: weighted_spearman(p, y, w), groups
        )
        assert len(scores) == 5 * len(designs(x.shape[1], groups))  # families x designs
        assert scores[best] == max(scores.values())  # the argmax of the inner criterion
        np.testing.assert_allclose(weighted_spearman(cv, y, w), scores[best])
        chosen[kind] = best.partition(SEP)[2]
    # errors that vary sharply with the prediction: a few nearest pairs; otherwise none
    assert chosen["prediction"] in ("nearest_3", "nearest_5")
    assert chosen["feature"] == WITHOUT


def test_model_choice_is_deterministic_and_follows_the_signal():
    from scimpute.tl._auto._learn import select, weighted_spearman

    rng = np.random.default_rng(1)
    n = 120
    x = rng.normal(size=(n, 12))
    y = np.exp(x[:, 0]) + 0.1 * rng.normal(size=n)  # monotone, non-linear, one feature
    fold = np.arange(n) % 10
    w = np.ones(n)
    crit = lambda p: weighted_spearman(p, y, w)  # noqa: E731
    a, pa, sa = select(x, y, w, fold, crit)
    b, pb, sb = select(x, y, w, fold, crit)
    assert a == b and sa == sb
    np.testing.assert_array_equal(pa, pb)
    assert sa[a] == max(sa.values()) and sa[a] > 0.9
    np.testing.assert_allclose(weighted_spearman(x[:, 0], y), spearmanr(x[:, 0], y)[0])


def test_trust_learns_from_the_error_ratio_when_few_pairs_lose():
    from scimpute.tl._auto._trust import fit_trust

    rng = np.random.default_rng(2)
    n = 80
    x = rng.normal(size=(n, 3))
    r = 0.8 * x[:, 0] + 0.2 * rng.normal(size=n)
    ratio = r - (np.sort(r)[-3] + np.sort(r)[-2]) / 2  # exactly two pairs lose
    beats = ratio <= 0
    assert (~beats).sum() == 2  # too few losers for a classifier
    t = fit_trust(x, np.zeros(n), beats, ratio, np.arange(n) % 10, np.ones(n))
    assert t.kind.startswith("ratio:")
    assert spearmanr(t.trust_cv, -ratio)[0] > 0.8
    new = np.array([[-2.0, 0, 0], [0.0, 0, 0], [3.0, 0, 0]])
    tr = t.predict(new, np.zeros(3))
    assert tr[0] > tr[1] > tr[2] and np.all((tr >= 0) & (tr <= 1))


def test_trust_calibration_keeps_the_ranking_of_its_scores():
    from scimpute.tl._auto._trust import fit_trust

    rng = np.random.default_rng(3)
    n = 150
    x = rng.normal(size=(n, 4))
    ratio = x[:, 1] + 0.5 * rng.normal(size=n)
    beats = ratio <= 0
    t = fit_trust(x, np.zeros(n), beats, ratio, np.arange(n) % 10, np.ones(n))
    assert roc_auc_score(beats, t.trust_cv) > 0.8
    # Platt scaling is monotone: trust orders pairs as the model's score does
    d = np.column_stack([x, np.zeros(n)])
    s = t._score(d)
    tr = t.predict(x, np.zeros(n))
    o = np.argsort(s)
    assert np.all(np.diff(tr[o]) >= -1e-12)
    # calibrated: mean trust close to the share of pairs beating the baseline
    assert abs(tr.mean() - beats.mean()) < 0.1


def test_column_spearman_and_fill_match_numpy_references():
    from scipy.stats import rankdata

    from scimpute.tl._auto._features import fill_missing
    from scimpute.tl._auto._learn import column_spearman

    rng = np.random.default_rng(4)
    x, y, w = rng.normal(size=(50, 3)), rng.normal(size=50), rng.uniform(0.5, 2, 50)
    for j in range(3):
        a, b = rankdata(x[:, j]), rankdata(y)
        c = np.cov(a, b, aweights=w)
        np.testing.assert_allclose(
            column_spearman(x, y, w)[j], c[0, 1] / np.sqrt(c[0, 0] * c[1, 1])
        )
    x[[3, 7], 1] = np.nan
    x[5, 2] = np.inf
    filled, fill = fill_missing(x)
    np.testing.assert_allclose(
        fill, [np.median(x[:, 0]), np.nanmedian(x[:, 1]), np.median(np.delete(x[:, 2], 5))]
    )
    assert np.isfinite(filled).all() and filled[3, 1] == fill[1]
    # a later input missing where training was complete gets the training median
    new, _ = fill_missing(np.array([[np.nan, 0.0, 0.0]]), fill)
    assert new[0, 0] == np.median(x[:, 0])

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

import numpy as np
import pytest
from scipy.spatial.distance import cosine as scipy_cosine
from scipy.stats import pearsonr
from sklearn.metrics import mean_squared_error, r2_score

from scimpute import metrics


@pytest.fixture
def pairs():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(6, 40))
    p = t + rng.normal(scale=0.5, size=t.shape)
    return t, p


def test_against_sklearn_and_scipy(pairs):
    t, p = pairs
    np.testing.assert_allclose(
        metrics.r2(t, p), [r2_score(a, b) for a, b in zip(t, p, strict=True)]
    )
    np.testing.assert_allclose(
        metrics.mse(t, p), [mean_squared_error(a, b) for a, b in zip(t, p, strict=True)]
    )
    np.testing.assert_allclose(
        metrics.pearson(t, p), [pearsonr(a, b)[0] for a, b in zip(t, p, strict=True)]
    )
    np.testing.assert_allclose(
        metrics.cosine(t, p), [1 - scipy_cosine(a, b) for a, b in zip(t, p, strict=True)]
    )
    np.testing.assert_allclose(metrics.sse(t, p), ((t - p) ** 2).sum(1))


def test_score_pairs(pairs):
    t, p = pairs
    b = np.ones_like(t)
    s = metrics.score_pairs(t, p, baseline=b, reference_pred=np.zeros_like(t))
    np.testing.assert_allclose(s["r2_effect"], metrics.r2(t - 1, p - 1))
    np.testing.assert_allclose(s["pearson_effect"], metrics.pearson(t - 1, p - 1))
    np.testing.assert_allclose(s["relative_mse"], ((t - p) ** 2).sum(1) / (t**2).sum(1))
    assert set(s) == set(metrics.METRICS)
    # perfect prediction
    perfect = metrics.score_pairs(t, t)
    np.testing.assert_allclose(perfect["r2"], 1)
    assert np.isnan(perfect["relative_mse"]).all()


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        metrics.r2(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.fixture
def clouds():
    rng = np.random.default_rng(1)
    return rng.normal(size=(30, 4)), rng.normal(loc=0.7, size=(25, 4))


def test_edistance_against_numpy(clouds):
    from scipy.spatial.distance import cdist

    x, y = clouds
    ref = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    np.testing.assert_allclose(metrics.edistance(x, y), ref, rtol=1e-7)
    sq = 2 * cdist(x, y, "sqeuclidean").mean()
    sq -= cdist(x, x, "sqeuclidean").mean() + cdist(y, y, "sqeuclidean").mean()
    np.testing.assert_allclose(metrics.edistance(x, y, squared=True), sq, rtol=1e-7)
    # squared version: twice the squared distance between the means (V-statistics)
    np.testing.assert_allclose(sq, 2 * np.sum((x.mean(0) - y.mean(0)) ** 2), rtol=1e-10)
    assert metrics.edistance(x, x) == pytest.approx(0, abs=1e-6)
    assert metrics.edistance(x, y) > 0
    with pytest.raises(ValueError, match="columns"):
        metrics.edistance(x, y[:, :3])


def test_mmd_against_numpy(clouds):
    x, y = clouds

    def k(a, b, g):
        return np.exp(-g * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    g = 0.3
    ref = k(x, x, g).mean() + k(y, y, g).mean() - 2 * k(x, y, g).mean()
    np.testing.assert_allclose(metrics.mmd_rbf(x, y, gamma=g), ref, rtol=1e-10)
    assert metrics.mmd_rbf(x, x) == pytest.approx(0, abs=1e-12)
    assert metrics.mmd_rbf(x, y) > 0
    with pytest.raises(ValueError, match="gamma"):
        metrics.mmd_rbf(x, y, gamma=-1)


def test_weighted_change_scores_by_hand():
    t = np.array([1.0, -2.0, 0.0, 0.5])
    p = np.array([0.5, -1.0, 0.2, 0.5])
    w = np.abs(t)
    out = metrics.weighted_change_scores(p, t)
    err = np.sum(w * (p - t) ** 2)
    tbar = np.sum(w * t) / w.sum()
    assert out["wmse_change"] == pytest.approx(err / w.sum())
    assert out["wr2_change"] == pytest.approx(1 - err / np.sum(w * (t - tbar) ** 2))
    assert metrics.weighted_change_scores(t, t)["wr2_change"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weights"):
        metrics.weighted_change_scores(p, t, weights=-w)


def test_transfer_scores_perfect_and_no_change():
    rng = np.random.default_rng(2)
    ctrl = rng.normal(scale=3.0, size=120) + rng.normal(size=(40, 120))
    real = ctrl + rng.normal(scale=0.2, size=ctrl.shape)
    real[:, :10] += 2.0
    s = metrics.transfer_scores(real, real, ctrl, perturbed_mean=real.mean(0) - 0.5)
    assert set(s) == set(metrics.TRANSFER_METRICS)
    for name in ("r2_all", "r2_top20", "r2_top100", "pearson_change_all",
                 "pearson_change_top100", "wr2_change", "pearson_change_vs_perturbed_all"):  # fmt: skip
        assert s[name] == pytest.approx(1.0), name
    assert s["edistance"] == pytest.approx(0, abs=1e-10)
    none = metrics.transfer_scores(ctrl, real, ctrl)
    assert none["wr2_change"] < 0.5 < none["r2_all"]  # r2 of the means rewards no change
    assert none["edistance"] > 0
    np.testing.assert_array_equal(np.sort(metrics.top_changed_genes(real, ctrl, 10)), np.arange(10))
    assert metrics.r2_of_means(real.mean(0), real.mean(0) * 2 + 1) == pytest.approx(1.0)


def test_pca_basis_is_orthonormal_and_deterministic():
    X = np.random.default_rng(3).normal(size=(20, 8))
    c, V = metrics.pca_basis(X, 5)
    np.testing.assert_allclose(V.T @ V, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(c, X.mean(0))
    np.testing.assert_array_equal(metrics.pca_basis(X, 5)[1], V)

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

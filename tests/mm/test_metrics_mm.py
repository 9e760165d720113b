import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from scimpute import metrics


def _foscttm_loop(x, y):
    """Brute-force reference (the loop of Yang et al.'s code), both directions."""
    n = len(x)
    out = []
    for a, b in ((x, y), (y, x)):
        for i in range(n):
            d = np.sqrt(((a[i] - b) ** 2).sum(1))
            out.append(np.sum(d < d[i]) / (n - 1))
    return np.mean(out)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5))
    return x, x + 0.7 * rng.normal(size=x.shape)


def test_foscttm_matches_brute_force(pair):
    x, y = pair
    assert metrics.foscttm(x, y) == pytest.approx(_foscttm_loop(x, y), abs=1e-12)
    fx, fy = metrics.foscttm_per_cell(x, y)
    assert fx.shape == fy.shape == (150,)
    assert (fx.mean() + fy.mean()) / 2 == pytest.approx(metrics.foscttm(x, y))


def test_foscttm_perfect_and_random():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    assert metrics.foscttm(x, x) == 0.0
    assert metrics.foscttm(x, rng.normal(size=x.shape)) == pytest.approx(0.5, abs=0.04)


def test_foscttm_block_size_does_not_change_result(pair):
    x, y = pair
    cx, cy = metrics._closer_counts(x, y, block_size=7)
    cx2, cy2 = metrics._closer_counts(x, y)
    np.testing.assert_array_equal(cx, cx2)
    np.testing.assert_array_equal(cy, cy2)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matching_accuracy_matches_sklearn(pair, k):
    x, y = pair
    hits = []
    for a, b in ((x, y), (y, x)):
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(b)
        idx = nn.kneighbors(a, return_distance=False)
        hits.append(np.mean([i in idx[i] for i in range(len(a))]))
    assert metrics.knn_matching_accuracy(x, y, k=k) == pytest.approx(np.mean(hits))


def test_label_transfer_matches_sklearn():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 3))
    lab = np.where(ref[:, 0] > 0, "a", "b")
    lab[ref[:, 1] > 1] = "c"
    query = rng.normal(size=(80, 3))
    truth = np.where(query[:, 0] > 0, "a", "b")
    for k in (1, 4, 7):
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(ref, lab)
        np.testing.assert_array_equal(
            metrics.transfer_labels(ref, lab, query, k=k), clf.predict(query)
        )
        assert metrics.label_transfer_accuracy(ref, lab, query, truth, k=k) == pytest.approx(
            np.mean(clf.predict(query) == truth)
        )


def test_cross_modal_correlation_matches_scipy(pair):
    x, y = pair
    per_feature = metrics.cross_modal_correlation(x, y)
    ref = [pearsonr(x[:, j], y[:, j])[0] for j in range(x.shape[1])]
    np.testing.assert_allclose(per_feature, ref, atol=1e-12)
    per_cell = metrics.cross_modal_correlation(x, y, by="cell")
    np.testing.assert_allclose(per_cell[:3], [pearsonr(x[i], y[i])[0] for i in range(3)])
    with pytest.raises(ValueError, match="by must be"):
        metrics.cross_modal_correlation(x, y, by="gene")


def test_metric_input_errors(pair):
    x, y = pair
    with pytest.raises(ValueError, match="same cell"):
        metrics.foscttm(x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.foscttm(np.full_like(x, np.nan), y)
    with pytest.raises(ValueError, match="k must"):
        metrics.knn_matching_accuracy(x, y, k=0)

"""The trust score: the estimated probability that a pair's prediction beats the baseline.

Label of a held-out pair of the inner hold-out: ``beats = SSE(prediction) <= SSE(baseline)``,
the baseline being the grid's validated best one
(:func:`~scimpute.methods._stats.validated_order`); a pair whose prediction *is* the
baseline's (a fallback) ties, which counts as beating. A logistic regression of the label on
the pre-measurement features and the log predicted error (weighted by the hold-out's
importance weights) gives the probability; it is fitted fold by fold for the
cross-validated trust of the hold-out (``uns[key]["trust_cv"]``) and once on every pair for
the targets. When every held-out pair has the same label, the trust is that label's
(smoothed) frequency for every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._features import fill_missing, logistic


def _design(x: np.ndarray, log_err: np.ndarray) -> np.ndarray:
    return np.column_stack([x, log_err])


def _fit(x, y, w):
    if y.min() == y.max():
        return float((y.sum() * 1.0 + 0.5) / (y.size + 1.0))
    return logistic(x, y, w)


def _proba(model, x):
    if isinstance(model, float):
        return np.full(x.shape[0], model)
    return model.predict_proba(x)


@dataclass
class Trust:
    """The fitted trust model and the cross-validated record of the hold-out."""

    model: object
    fill: np.ndarray
    trust_cv: np.ndarray
    beats: np.ndarray

    def predict(self, x: np.ndarray, log_err: np.ndarray) -> np.ndarray:
        """Trust of pairs with features ``x`` and log predicted errors ``log_err``."""
        xf, _ = fill_missing(_design(x, log_err), self.fill)
        return _proba(self.model, xf)


def beats_baseline(truth, pred, base_pred) -> np.ndarray:
    """Whether each prediction's SSE is at most the baseline's (ties count as beating)."""
    sse = np.sum((truth - pred) ** 2, axis=1)
    sse_b = np.sum((truth - base_pred) ** 2, axis=1)
    return sse <= sse_b * (1 + 1e-9)


def fit_trust(x, log_err_cv, beats, fold, weight) -> Trust:
    """Fit the trust model (module docstring); cross-fitted trust for the hold-out."""
    d = _design(x, log_err_cv)
    y = beats.astype(float)
    cv = np.zeros(y.size)
    folds = np.unique(fold)
    for f in folds:
        test, train = fold == f, fold != f
        if not train.any() or len(folds) == 1:
            train = np.ones(y.size, dtype=bool)
        xf, fill = fill_missing(d[train])
        cv[test] = _proba(_fit(xf, y[train], weight[train]), fill_missing(d[test], fill)[0])
    xf, fill = fill_missing(d)
    return Trust(_fit(xf, y, weight), fill, cv, beats)

"""The trust score: the estimated probability that a pair's prediction beats the baseline.

Label of a held-out pair of the inner hold-out: ``beats = SSE(prediction) <= SSE(baseline)``,
the baseline being the grid's validated best one
(:func:`~scimpute.methods._stats.validated_order`); a pair whose prediction *is* the
baseline's (a fallback) ties, which counts as beating. Two kinds of model are compared on
the pre-measurement features and the log predicted error, each fitted fold by fold (the
model that scores fold ``f`` never saw fold ``f``) with the hold-out's importance weights:

``logistic``
    L2-penalised logistic regression of the label.
``ratio:<family>``
    A regression (:mod:`._learn` family) of the log error ratio
    ``log(SSE(prediction) / SSE(baseline))``, the continuous quantity behind the label: it
    learns from every pair, also when few pairs lose to the baseline. Its score is minus the
    predicted log ratio.

The model whose cross-fitted scores have the highest weighted AUROC for the label is kept
(with fewer than :data:`MIN_MINORITY` pairs of one label the AUROC is noise, and the ratio
regression with the best weighted Spearman correlation with the ratio is kept). The score is
turned into a probability by Platt scaling on the cross-fitted scores (a monotone 1-D
logistic regression, so that the ranking of pairs is the model's); when every held-out pair
has the same label, by ``Phi(-m / s)`` of the predicted log ratio ``m`` and the RMS ``s`` of
its cross-fitted residuals. The model is refitted on every pair for the targets; the
cross-validated trust of the hold-out is ``uns[key]["trust_cv"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._features import fill_missing, logistic
from ._learn import (
    SEP,
    cross_fit,
    cross_predict,
    designs,
    families,
    fit_all,
    model_name,
    pick,
    weighted_spearman,
)

#: fewest pairs of the rarer label for the AUROC to choose the trust model.
MIN_MINORITY = 3


def _design(x: np.ndarray, log_err: np.ndarray) -> np.ndarray:
    return np.column_stack([x, log_err])


def _fit_logistic(x, y, w):
    xf, fill = fill_missing(x)
    if y.min() == y.max():
        return float((y.sum() + 0.5) / (y.size + 1.0)), fill
    return logistic(xf, y, w), fill


def _logit_score(model, fill, x):
    if isinstance(model, float):
        return np.full(x.shape[0], np.log(model / (1 - model)))
    return model.decision(fill_missing(x, fill)[0])


def _cross_logistic(d, y, w, fold):
    def fit_predict(xtr, ytr, wtr, xte):
        m, fill = _fit_logistic(xtr, ytr, wtr)
        return _logit_score(m, fill, xte)

    return cross_predict(fit_predict, d, y, w, fold)


def weighted_auroc(score: np.ndarray, label: np.ndarray, w: np.ndarray) -> float:
    """Weighted AUROC of ``score`` for ``label`` (NaN with a single label)."""
    if label.min() == label.max():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label, score, sample_weight=w))


@dataclass
class Trust:
    """The fitted trust model and the cross-validated record of the hold-out."""

    kind: str  # "logistic[|design]" or "ratio:<family>[|design]"
    model: object
    calibrator: object  # Platt model on the score, or None (Gaussian ratio)
    sigma: float  # RMS of the ratio model's cross-fitted residuals
    trust_cv: np.ndarray
    beats: np.ndarray
    kind_scores: dict

    def _score(self, d: np.ndarray) -> np.ndarray:
        if self.kind.startswith("logistic"):
            model, fill, cols = self.model
            return _logit_score(model, fill, d[:, cols])
        return -self.model.predict(d)

    def _proba(self, score: np.ndarray) -> np.ndarray:
        if self.calibrator is not None:
            return self.calibrator.predict_proba(score[:, None])
        from scipy.stats import norm

        return norm.cdf(score / self.sigma)

    def predict(self, x: np.ndarray, log_err: np.ndarray) -> np.ndarray:
        """Trust of pairs with features ``x`` and log predicted errors ``log_err``."""
        return self._proba(self._score(_design(x, log_err)))


def beats_baseline(truth, pred, base_pred) -> np.ndarray:
    """Whether each prediction's SSE is at most the baseline's (ties count as beating)."""
    sse = np.sum((truth - pred) ** 2, axis=1)
    sse_b = np.sum((truth - base_pred) ** 2, axis=1)
    return sse <= sse_b * (1 + 1e-9)


def log_ratio(truth, pred, base_pred) -> np.ndarray:
    """``log(SSE(pred) / SSE(baseline))`` per pair (0 where both are 0)."""
    sse = np.sum((truth - pred) ** 2, axis=1)
    sse_b = np.sum((truth - base_pred) ** 2, axis=1)
    return np.log(np.maximum(sse, 1e-300) / np.maximum(sse_b, 1e-300))


def fit_trust(x, log_err_cv, beats, ratio, fold, weight, optional=None) -> Trust:
    """Fit the trust model (module docstring); cross-fitted trust for the hold-out.

    ``optional``: ``{group: mask}`` of the optional column groups of ``x`` (the nearest-pair
    features per number of nearest pairs; :func:`~._learn.designs`).
    """
    w = np.asarray(weight, float)
    d = _design(x, log_err_cv)
    opt = (
        None
        if not optional
        else {g: np.r_[np.asarray(m, bool), False] for g, m in optional.items()}
    )
    y = beats.astype(float)
    minority = min(int(y.sum()), int(y.size - y.sum()))
    by_auroc = minority >= MIN_MINORITY
    scores, crit = {}, {}
    for dname, cols in designs(d.shape[1], opt).items():
        if by_auroc:
            scores[model_name("logistic", dname)] = _cross_logistic(d[:, cols], y, w, fold)
        for fam in families(y.size):
            scores[model_name(f"ratio:{fam}", dname)] = -cross_fit(fam, d[:, cols], ratio, w, fold)
    for k, s in scores.items():
        crit[k] = weighted_auroc(s, y, w) if by_auroc else weighted_spearman(s, -ratio, w)
    best = pick(crit)
    fam, _, dname = best.partition(SEP)
    cols = designs(d.shape[1], opt)[dname]
    if fam == "logistic":
        model = (*_fit_logistic(d[:, cols], y, w), cols)
        sigma = 1.0
    else:
        model = fit_all(best.split(":", 1)[1], d, ratio, w, opt)
        res = ratio + scores[best]
        sigma = float(max(np.sqrt(np.average(res**2, weights=w)), 1e-6))
    calibrator = logistic(scores[best][:, None], y, w) if y.min() != y.max() else None
    t = Trust(best, model, calibrator, sigma, np.zeros(y.size), beats, crit)
    t.trust_cv = t._proba(scores[best])
    return t

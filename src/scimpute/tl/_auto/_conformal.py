"""Conformal intervals and the per-pair error score of ``auto`` (and of any method).

Procedure (CV+ / jackknife+ style, on out-of-fold residuals, normalised):

1. Residuals ``r_ij = y_ij - yhat_ij`` of the (cross-fitted) out-of-fold predictions of every
   held-out pair ``i`` and feature ``j`` of the inner hold-out.
2. A *difficulty model*: a regression of the pair's log normalised error
   ``e_i = mean_j r_ij^2 / v_j`` (``v_j``: the feature's variance over the measured profiles)
   on the pre-measurement features, fitted fold by fold (the model that scores fold ``f`` never
   saw fold ``f``) and once on every pair for the targets. The family (ridge, ridge on
   rank-transformed features, shallow boosted trees; :mod:`._learn`) is the one whose
   cross-fitted predictions have the highest weighted Spearman correlation with ``e_i``.
   ``exp`` of its prediction is the pair's predicted error (``obs[f"{key}_error"]``).
3. Per-feature scales ``tau_j``: the RMS over pairs of ``r_ij / sqrt(ehat_i)``.
4. Non-conformity scores ``s_ij = |r_ij| / (sqrt(ehat_i) * tau_j)``; ``q`` is their weighted
   ``(1 - alpha)(1 + 1/n)`` quantile (the finite-sample correction of split conformal
   prediction), weights the hold-out's importance weights (weighted conformal prediction,
   Tibshirani et al. 2019).
5. The interval of feature ``j`` of a target ``t`` is ``yhat_tj +- q * sqrt(ehat_t) * tau_j``:
   wide for pairs the difficulty model finds hard, narrow for easy ones.

Guarantee: if the targets' (pair, feature) entries are exchangeable with the held-out entries
of the inner hold-out (after the importance weighting), an entry falls in its interval with
probability at least ``1 - alpha`` up to the usual CV+ slack (Barber et al. 2021: at least
``1 - 2 alpha`` in the worst case, close to ``1 - alpha`` in practice). Coverage is marginal
over pairs and features, not conditional on one pair. It fails when the real gaps differ
from every hidden pair (a context with no measured pair at all). The weighted quantile is a
few lines here because crepes and MAPIE do not take the covariate-shift weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._learn import fit_all, select, weighted_spearman


def weighted_quantile(x: np.ndarray, w: np.ndarray, level: float) -> float:
    """The weighted conformal quantile: smallest ``x`` with weighted CDF >= ``level (1 + 1/n)``.

    ``x`` are the scores (any shape), ``w`` their weights (same shape). Infinite when the
    corrected level exceeds 1 (too few scores for the level).
    """
    x, w = np.ravel(x), np.ravel(w)
    n = x.size
    target = level * (1 + 1 / max(n, 1))
    if target >= 1 or n == 0:
        return float("inf")
    o = np.argsort(x)
    cw = np.cumsum(w[o]) / w.sum()
    return float(x[o][min(np.searchsorted(cw, target), n - 1)])


@dataclass
class Difficulty:
    """The fitted difficulty model, feature scales and the score sample of the hold-out."""

    model: object  # a :class:`~._learn.Fitted` (its family in ``model.kind``)
    tau: np.ndarray
    scores: np.ndarray  # (n, p) non-conformity scores of the hold-out
    weights: np.ndarray  # (n,) importance weights
    error_cv: np.ndarray  # (n,) cross-fitted predicted errors of the hold-out pairs
    family_scores: dict  # cross-fitted weighted Spearman of every family compared

    def error(self, x: np.ndarray) -> np.ndarray:
        """Predicted normalised error of pairs with features ``x``."""
        return np.exp(self.model.predict(x))

    def quantile(self, level: float) -> float:
        w = np.broadcast_to(self.weights[:, None], self.scores.shape)
        return weighted_quantile(self.scores, w, level)

    def intervals(self, pred: np.ndarray, err: np.ndarray, level: float):
        """``(lower, upper)`` of predictions ``pred`` with predicted errors ``err``."""
        half = self.quantile(level) * np.sqrt(err)[:, None] * self.tau[None, :]
        return pred - half, pred + half

    def coverage(self, levels, fold: np.ndarray) -> list[float]:
        """Weighted fraction of hold-out entries inside intervals calibrated on other folds.

        For each inner fold, the quantile comes from the scores of the other folds only and
        is checked on that fold (cross-conformal); the honest check of the whole procedure is
        an outer fold (:func:`scimpute.tl.cross_validate` with ``interval``).
        """
        w = np.broadcast_to(self.weights[:, None], self.scores.shape)
        folds = np.unique(fold)
        out = []
        for lv in levels:
            hit = tot = 0.0
            for f in folds:
                te, tr = fold == f, fold != f
                if not tr.any():
                    tr = te
                q = weighted_quantile(self.scores[tr], w[tr], lv)
                hit += float((w[te] * (self.scores[te] <= q)).sum())
                tot += float(w[te].sum())
            out.append(hit / tot if tot else float("nan"))
        return out


def fit_difficulty(
    residual: np.ndarray,
    x: np.ndarray,
    fold: np.ndarray,
    weight: np.ndarray,
    feature_var: np.ndarray,
    optional: dict[str, np.ndarray] | None = None,
) -> Difficulty:
    """Fit the difficulty model on out-of-fold residuals (module docstring, steps 2-4).

    ``optional``: ``{group: boolean mask}`` of the optional column groups of ``x``, tried
    one at a time and left out (:func:`~._learn.designs`; the nearest-pair features of each
    number of nearest pairs).
    """
    y = np.log(np.maximum(np.mean(residual**2 / feature_var, axis=1), 1e-12))
    w = np.asarray(weight, float)
    kind, cv, fam = select(x, y, w, fold, lambda p: weighted_spearman(p, y, w), optional)
    model = fit_all(kind, x, y, w, optional)
    err_cv = np.exp(cv)
    unit = residual / np.sqrt(err_cv)[:, None]
    tau = np.sqrt(np.average(unit**2, axis=0, weights=w))
    tau = np.maximum(tau, max(float(np.median(tau)) * 1e-3, 1e-12))
    scores = np.abs(unit) / tau[None, :]
    return Difficulty(model, tau, scores, w, err_cv, fam)

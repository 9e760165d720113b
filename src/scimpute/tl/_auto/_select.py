"""Choose how ``auto`` combines its candidates: one per grid, one per pair, or a stack.

Every rule is scored by *nested* cross-validation on the out-of-fold predictions
(:class:`~scimpute.tl._auto._oof.OOFRecord`): the rule is fitted on the pairs of all inner
folds but one and scored on the held-out fold, so that the choice among rules is made on
predictions the rule never saw. Score: weighted median over pairs of the pair's R2
(1 - SSE/SST over features), with the hold-out's importance weights.

``grid``
    The candidate with the best score.
``per_pair``
    For each candidate, a ridge regression of the log normalised error of its predictions
    (:meth:`OOFRecord.nmse`) on the pre-measurement features
    (:func:`~scimpute.tl._auto._features.pair_features`); each pair takes the candidate with
    the lowest predicted error.
``stack``
    Convex weights (``w_m >= 0``, ``sum_m w_m = 1``) of the candidates' predictions fitted
    by least squares over every feature of every pair (weighted; non-negative least squares
    with the sum enforced by a heavy extra row). Convex so that the stack cannot shrink
    predictions towards zero, which the inner hold-out (sparser than the real gaps) would
    reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...metrics import r2
from ._features import fill_missing, ridge
from ._oof import OOFRecord


def weighted_median(x: np.ndarray, w: np.ndarray | None = None) -> float:
    """Median of the finite ``x`` with weights ``w`` (plain median when ``w`` is None)."""
    x = np.asarray(x, dtype=float)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    ok = np.isfinite(x)
    x, w = x[ok], w[ok]
    if x.size == 0:
        return float("nan")
    o = np.argsort(x)
    cw = np.cumsum(w[o])
    return float(x[o][np.searchsorted(cw, 0.5 * cw[-1])])


def score(oof: OOFRecord, pred: np.ndarray, idx: np.ndarray | None = None) -> float:
    """Weighted median R2 of ``pred`` over the OOF pairs (or the pairs ``idx``)."""
    idx = np.arange(oof.truth.shape[0]) if idx is None else idx
    return weighted_median(r2(oof.truth[idx], pred), oof.weight[idx])


@dataclass
class Rule:
    """A fitted way of combining the candidates' predictions."""

    kind: str
    candidates: list[str]
    chosen: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    fill: np.ndarray | None = None

    def predict(self, preds: dict[str, np.ndarray], x: np.ndarray | None):
        """Combined predictions and, per pair, the candidate used (``"stack"`` for stacks)."""
        n = next(iter(preds.values())).shape[0]
        if self.kind == "grid":
            return preds[self.chosen], np.full(n, self.chosen, dtype=object)
        if self.kind == "stack":
            out = sum(w * preds[c] for c, w in self.weights.items() if w > 0)
            return np.asarray(out, dtype=np.float64), np.full(n, "stack", dtype=object)
        xf, _ = fill_missing(x, self.fill)
        err = np.stack([self.models[c].predict(xf) for c in self.candidates], axis=1)
        pick = np.argmin(err, axis=1)
        out = np.stack([preds[c] for c in self.candidates])[pick, np.arange(n)]
        return out, np.asarray(self.candidates, dtype=object)[pick]

    def describe(self) -> dict:
        """h5ad-safe description of the rule (what ``uns[key]["auto"]`` records)."""
        if self.kind == "grid":
            return {"chosen": self.chosen}
        if self.kind == "stack":
            return {"weights": {c: float(w) for c, w in self.weights.items()}}
        return {
            "description": "each pair takes the candidate with the lowest error predicted by a "
            "ridge regression on pre-measurement features (log row/column supports, distance "
            "to the baseline, candidate spread, candidates' diagnostics)",
            "candidates": list(self.candidates),
        }


def fit_rule(kind: str, oof: OOFRecord, x: np.ndarray, idx: np.ndarray) -> Rule:
    """Fit rule ``kind`` on the OOF pairs ``idx`` (``x``: their features, all pairs' rows)."""
    names = oof.candidates
    w = oof.weight[idx]
    if kind == "grid" or len(names) == 1:
        scores = {c: score(oof, oof.preds[c][idx], idx) for c in names}
        best = max(names, key=lambda c: (np.nan_to_num(scores[c], nan=-np.inf), -names.index(c)))
        return Rule("grid", names, chosen=best)
    if kind == "stack":
        from scipy.optimize import nnls

        sw = np.sqrt(w)[:, None]
        a = np.stack([(oof.preds[c][idx] * sw).ravel() for c in names], axis=1)
        b = (oof.truth[idx] * sw).ravel()
        big = np.sqrt(np.sum(b**2) + 1.0) * 1e3  # weights sum to one (convex combination)
        coef, _ = nnls(np.vstack([a, np.full((1, len(names)), big)]), np.r_[b, big])
        return Rule("stack", names, weights=dict(zip(names, coef.tolist(), strict=True)))
    xf, fill = fill_missing(x[idx])
    models = {}
    for c in names:
        y = np.log(np.maximum(oof.nmse(oof.preds[c])[idx], 1e-12))
        models[c] = ridge(xf, y, w)
    return Rule("per_pair", names, models=models, fill=fill)


def _subset(preds: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in preds.items()}


def cross_fit(kind: str, oof: OOFRecord, x: np.ndarray):
    """Predictions of rule ``kind`` for every OOF pair by a rule fitted on the other folds."""
    n = oof.truth.shape[0]
    pred = np.zeros_like(oof.truth)
    src = np.empty(n, dtype=object)
    for f in range(oof.n_folds):
        test = np.flatnonzero(oof.fold == f)
        train = np.flatnonzero(oof.fold != f)
        if train.size == 0:
            train = test
        rule = fit_rule(kind, oof, x, train)
        pred[test], src[test] = rule.predict(_subset(oof.preds, test), x[test])
    return pred, src


def select_rule(oof: OOFRecord, x: np.ndarray, rules, tolerance: float):
    """The rule that wins the nested cross-validation, fitted on every OOF pair.

    Returns ``(rule, rule_scores, cross-fitted predictions, cross-fitted sources)``; a
    ``per_pair`` or ``stack`` rule must beat ``grid`` by ``tolerance`` (median R2).
    """
    kinds = [k for k in ("grid", "per_pair", "stack") if k in rules]
    if len(oof.candidates) == 1:
        kinds = ["grid"]
    fitted = {k: cross_fit(k, oof, x) for k in kinds}
    scores = {k: score(oof, fitted[k][0]) for k in kinds}
    best = kinds[0]
    for k in kinds[1:]:
        if scores[k] > scores[best] + tolerance:
            best = k
    rule = fit_rule(best, oof, x, np.arange(oof.truth.shape[0]))
    return rule, scores, fitted[best][0], fitted[best][1]

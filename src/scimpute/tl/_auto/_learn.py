"""The small models of ``auto``'s judgement layer, chosen by inner cross-validation.

The difficulty model (:mod:`._conformal`) and the trust model (:mod:`._trust`) each compare a
few model families on the inner hold-out, fitted fold by fold (the model that scores fold
``f`` never saw fold ``f``), and keep the family whose cross-fitted predictions rank the
held-out pairs best (weighted Spearman correlation for the error, weighted AUROC for the
trust). Nothing is tuned to a particular grid: the grid in the call decides.

Families (:data:`REGRESSORS`):

``ridge_<alpha>``
    Ridge regression on standardised features (:func:`~._features.ridge`), penalty
    ``alpha`` in 1, 10, 100.
``rank_ridge_10``
    Ridge regression on rank-transformed features (each feature mapped to its empirical
    CDF over the training pairs): monotone effects of any shape, robust to outliers.
``top5_ridge``
    Ridge regression on the :data:`N_SCREENED` features most correlated (weighted Spearman)
    with the target on the training folds: for small hold-outs with many features.

Each family is fitted on several column sets (:func:`designs`): the features without any
nearest-pair features, and those plus the nearest-pair features of ``k`` nearest pairs for
each ``k`` of :data:`~._features.NEAREST_COUNTS` (:class:`~._features.Neighbours`), so that
the inner validation decides whether those help on the grid in the call and how many nearest
pairs to average: the number of nearest pairs is a hyper-parameter of the error and trust
models, chosen with the family as the argmax of the inner cross-validated criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._features import fill_missing, ridge

#: model families compared by the difficulty and trust models.
REGRESSORS = ("ridge_10", "ridge_1", "ridge_100", "rank_ridge_10", "top5_ridge")
#: separates a family from its column set in a model's name (h5ad keys cannot hold "/").
SEP = "|"
#: features kept by the screened family (highest |weighted Spearman| with the target).
N_SCREENED = 5


@dataclass
class RankRidge:
    """Ridge regression on features mapped to their empirical CDF over the training pairs."""

    sorted_x: np.ndarray  # (n, k) training columns, sorted
    model: object

    @staticmethod
    def transform(sorted_x: np.ndarray, x: np.ndarray) -> np.ndarray:
        n = sorted_x.shape[0]
        out = np.empty_like(x, dtype=float)
        for j in range(x.shape[1]):
            lo = np.searchsorted(sorted_x[:, j], x[:, j], side="left")
            hi = np.searchsorted(sorted_x[:, j], x[:, j], side="right")
            out[:, j] = (lo + hi) / (2.0 * n)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(self.transform(self.sorted_x, x))


@dataclass
class Screened:
    """Ridge regression on the few features most correlated with the target in training."""

    keep: np.ndarray
    model: object

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x[:, self.keep])


def fit_regressor(kind: str, x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Fit family ``kind`` (:data:`REGRESSORS`) to ``(x, y)`` with sample weights ``w``."""
    if kind == "top5_ridge":
        r = np.abs(np.nan_to_num(column_spearman(x, y, w)))
        keep = np.sort(np.argsort(-r, kind="stable")[:N_SCREENED])
        return Screened(keep, ridge(x[:, keep], y, w))
    if kind.startswith("ridge_"):
        return ridge(x, y, w, alpha=float(kind.split("_")[-1]))
    if kind.startswith("rank_ridge_"):
        s = np.sort(x, axis=0)
        return RankRidge(
            s, ridge(RankRidge.transform(s, x), y, w, alpha=float(kind.split("_")[-1]))
        )
    raise ValueError(f"unknown model family {kind!r}")


def families(n: int) -> list[str]:
    """The families compared on an inner hold-out of ``n`` pairs."""
    del n
    return list(REGRESSORS)


def cross_predict(fit_predict, x: np.ndarray, y: np.ndarray, w: np.ndarray, fold: np.ndarray):
    """Cross-fitted ``fit_predict(x_train, y_train, w_train, x_test)`` over the folds.

    Each fold is predicted by a model fitted on the other folds (on every pair when there is
    one fold only).
    """
    out = np.zeros(y.size)
    folds = np.unique(fold)
    for f in folds:
        test, train = fold == f, fold != f
        if not train.any() or len(folds) == 1:
            train = np.ones(y.size, dtype=bool)
        out[test] = fit_predict(x[train], y[train], w[train], x[test])
    return out


def cross_fit(kind: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, fold: np.ndarray):
    """Cross-fitted predictions of family ``kind`` (each fold by a model fitted on the others)."""

    def fit_predict(xtr, ytr, wtr, xte):
        xf, fill = fill_missing(xtr)
        return fit_regressor(kind, xf, ytr, wtr).predict(fill_missing(xte, fill)[0])

    return cross_predict(fit_predict, x, y, w, fold)


@dataclass
class Fitted:
    """A family fitted on every pair (on the columns ``cols``), with its missing-value fill."""

    kind: str
    model: object
    fill: np.ndarray
    cols: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(fill_missing(x[:, self.cols], self.fill)[0])


#: name of the design without any optional column group.
WITHOUT = "without_nearest"


def designs(k: int, optional: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Column sets compared, by name (the part of a model's name after :data:`SEP`).

    ``optional``: ``{group name: boolean mask over the k columns}``, groups of columns that
    are tried one at a time (the nearest-pair features for each candidate number of nearest
    pairs, :meth:`~._features.Neighbours.groups`). Sets: the columns in no group alone
    (:data:`WITHOUT`), and those plus each group's. Without groups, one set: every column
    (named ``""``).
    """
    if not optional:
        return {"": np.arange(k)}
    masks = {g: np.asarray(m, dtype=bool) for g, m in optional.items()}
    base = ~np.any(np.stack(list(masks.values())), axis=0)
    out = {WITHOUT: np.flatnonzero(base)}
    for g, m in masks.items():
        out[g] = np.flatnonzero(base | m)
    return out


def model_name(family: str, design: str) -> str:
    """``family`` or ``family|design`` (the names :func:`select` gives its models)."""
    return family + (SEP + design if design else "")


def fit_all(kind: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, optional=None) -> Fitted:
    """Model ``kind`` (``family[|design]``, as :func:`select` names it) fitted on every pair."""
    fam, _, design = kind.partition(SEP)
    cols = designs(x.shape[1], optional)[design]
    xf, fill = fill_missing(x[:, cols])
    return Fitted(kind, fit_regressor(fam, xf, y, w), fill, cols)


def column_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """``(k,)`` weighted Spearman correlation of each column of ``x`` with ``y`` (NaN if constant)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(np.asarray(x).reshape(len(y), -1), axis=0), rankdata(y)
    w = np.ones(ry.size) if w is None else np.asarray(w, float)
    w = w / w.sum()
    rx, ry = rx - w @ rx, ry - w @ ry
    den = np.sqrt((w @ rx**2) * (w @ ry**2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (w @ (rx * ry[:, None])) / den, np.nan)


def weighted_spearman(a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted Pearson correlation of the ranks of ``a`` and ``b`` (NaN when one is constant)."""
    return float(column_spearman(np.asarray(a)[:, None], np.asarray(b), w)[0])


def select(x, y, w, fold, criterion, optional=None) -> tuple[str, np.ndarray, dict[str, float]]:
    """The model whose cross-fitted predictions maximise ``criterion(pred)``.

    Models: every family of :func:`families` on every column set of :func:`designs`
    (``optional``: the groups of optional columns), named by :func:`model_name`. Returns
    ``(model name, its cross-fitted predictions, every model's criterion)``; the chosen model
    is the argmax of the criterion (:func:`pick`: ties and NaN criteria go to the earlier
    model).
    """
    scores, preds = {}, {}
    for dname, cols in designs(x.shape[1], optional).items():
        for fam in families(y.size):
            kind = model_name(fam, dname)
            preds[kind] = cross_fit(fam, x[:, cols], y, w, fold)
            scores[kind] = float(criterion(preds[kind]))
    best = pick(scores)
    return best, preds[best], scores


def pick(scores: dict[str, float]) -> str:
    """The name with the highest finite score (the earliest on ties; the first if none)."""
    best = next(iter(scores))
    for kind, v in scores.items():
        if np.isfinite(v) and (not np.isfinite(scores[best]) or v > scores[best] + 1e-9):
            best = kind
    return best

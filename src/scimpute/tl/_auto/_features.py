"""Pre-measurement features of a pair: what is known about it before it is measured."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _log_disagreement(a: np.ndarray, b: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.log1p(np.mean((a - b) ** 2 / var, axis=1))


def context_difficulty(
    data, pairs: np.ndarray, feature_var: np.ndarray, *, gm=None, order=None
) -> np.ndarray:
    """``(n, 2)`` log mean leave-one-out error of the best baseline in each pair's row and column.

    Computed on ``data`` as given (the pairs themselves unmeasured there), in units of
    ``feature_var``: noisy contexts and hard perturbations show here before any pair of them is
    predicted. Rows or columns without a scorable pair get NaN (filled later). ``gm`` and
    ``order``: the group means and :func:`~scimpute.methods._stats.validated_order` of
    ``data`` when the caller has them (computed otherwise).
    """
    from ...methods._stats import baseline_loo_residuals, group_means, validated_order

    gm = group_means(data) if gm is None else gm
    loo_pairs, res = baseline_loo_residuals(data, gm)
    out = np.full((pairs.shape[0], 2), np.nan)
    if loo_pairs.shape[0] == 0:
        return out
    best = (validated_order(data, gm) if order is None else order)[0]
    best = best if best in res else "context_mean"
    e = np.mean(res[best] ** 2 / feature_var, axis=1)
    for axis, n in ((0, data.n_contexts), (1, data.n_perturbations)):
        s = np.bincount(loo_pairs[:, axis], weights=e, minlength=n)
        k = np.bincount(loo_pairs[:, axis], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, axis] = np.log(s / k)[pairs[:, axis]]
    return out


def component_support(data, pairs: np.ndarray) -> np.ndarray:
    """``(n,)`` ``log1p`` count of measured pairs of each pair's context sharing a component.

    Components are the names of a perturbation label (``"A@1+B@2"``: ``A`` and ``B``, doses
    dropped; :func:`scimpute._labels.parse_perturbation`): a combination whose drugs were
    measured in other combinations, or a dose whose drug was measured at other doses, has
    neighbours a method can borrow from. Counted on ``data.treated_mask()`` as given (the
    pairs unmeasured there), the pair's own perturbation excluded; 0 for every pair of a grid
    whose labels share no component (a constant feature, ignored by the models).
    """
    counts = data.treated_mask().astype(float) @ share_matrix(data)  # (C, A)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return np.log1p(counts[pairs[:, 0], pairs[:, 1]])


def share_matrix(data) -> np.ndarray:
    """``(A, A)`` 1.0 where two perturbations share a component (not itself, not the control)."""
    from ..._labels import parse_perturbation

    sep = getattr(data, "combination_sep", "+")
    names = [[n for n, _ in parse_perturbation(str(lab), sep=sep)] for lab in data.perturbations]
    col = {n: i for i, n in enumerate(dict.fromkeys(n for ns in names for n in ns))}
    inc = np.zeros((data.n_perturbations, len(col)))
    for k, ns in enumerate(names):
        inc[k, [col[n] for n in ns]] = 1.0
    share = (inc @ inc.T > 0).astype(float)
    np.fill_diagonal(share, 0.0)
    if data.control is not None:
        share[:, data.control] = 0.0
        share[data.control, :] = 0.0
    return share


#: candidate numbers of nearest out-of-fold pairs (in prediction space) averaged by
#: :class:`Neighbours`; which one (or none) the error and trust models use is chosen by their
#: inner cross-validation (:func:`~._learn.designs`), on the grid in the call.
NEAREST_COUNTS = (3, 5, 10, 20)
#: a row (column) neighbour error is used only with at least this many rows (columns) that
#: hold two or more out-of-fold pairs: with fewer, a leave-fold-out group mean mostly mirrors
#: the pair's own fold instead of a difference between groups.
MIN_GROUPS = 3


@dataclass
class Neighbours:
    """The chosen rule's cross-fitted errors on the inner hold-out, as features of other pairs.

    A pair's neighbours are the hold-out pairs of *other* inner folds (for a target: every
    hold-out pair): those in its row, its column, those whose perturbation shares a component
    with its own (:func:`share_matrix`), and the ``k`` whose cross-fitted predictions are
    nearest to the pair's prediction (mean squared distance in units of the feature
    variances), for each ``k`` of :data:`NEAREST_COUNTS`. Features (:meth:`features`,
    :meth:`names`): the mean log error of the rule on the row, column and component
    neighbours, and for each ``k`` the mean log error of the ``k`` nearest, their mean log
    error ratio to the baseline and the log mean distance to them. Each is known before the
    pair is measured: it uses measured pairs only, predicted without their own values. The
    nearest-pair features come in one group per ``k`` (:meth:`groups`): the models try each
    group and none, and keep what their inner cross-validation scores best.
    """

    pairs: np.ndarray  # (n, 2)
    fold: np.ndarray  # (n,)
    pred: np.ndarray  # (n, p) cross-fitted predictions / sqrt(feature_var)
    log_err: np.ndarray  # (n,)
    log_ratio: np.ndarray  # (n,)
    share: np.ndarray  # (A, A)
    shape: tuple[int, int]  # (contexts, perturbations)

    counts: tuple[int, ...] = NEAREST_COUNTS

    GROUP_NAMES = ("neighbour_row_error", "neighbour_col_error", "neighbour_component_error")
    NEAREST_NAMES = ("nearest_error", "nearest_error_ratio", "nearest_log_distance")

    def names(self) -> list[str]:
        """Names of the :meth:`features` columns (``nearest_*@k`` for ``k`` nearest pairs)."""
        return [*self.GROUP_NAMES] + [f"{n}@{k}" for k in self.counts for n in self.NEAREST_NAMES]

    def groups(self, offset: int, total: int) -> dict[str, np.ndarray]:
        """``{"nearest_<k>": mask}`` of the nearest-pair columns of each ``k``.

        ``offset``: where the :meth:`features` columns start in a design of ``total``
        columns (the masks are over that design).
        """
        out = {}
        for j, k in enumerate(self.counts):
            m = np.zeros(total, dtype=bool)
            lo = offset + len(self.GROUP_NAMES) + 3 * j
            m[lo : lo + 3] = True
            out[f"nearest_{k}"] = m
        return out

    def _group(self, axis: int, pairs: np.ndarray, fold: np.ndarray | None) -> np.ndarray:
        n = self.shape[axis]
        g = self.pairs[:, axis]
        v = self.log_err
        if np.sum(np.bincount(g, minlength=n) >= 2) < MIN_GROUPS:
            return np.full(pairs.shape[0], np.nan)
        s, k = np.bincount(g, v, n), np.bincount(g, minlength=n).astype(float)
        s, k = s[pairs[:, axis]], k[pairs[:, axis]]
        if fold is not None:  # leave the pair's own fold out
            idx = g * (self.fold.max() + 1) + self.fold
            m = n * (self.fold.max() + 1)
            sf, kf = np.bincount(idx, v, m), np.bincount(idx, minlength=m)
            own = pairs[:, axis] * (self.fold.max() + 1) + fold
            s, k = s - sf[own], k - kf[own]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k > 0, s / np.maximum(k, 1), np.nan)

    def _component(self, pairs: np.ndarray, fold: np.ndarray | None) -> np.ndarray:
        if not self.share.any():
            return np.full(pairs.shape[0], np.nan)
        per = self.pairs[:, 1]
        share = self.share[pairs[:, 1]][:, per]  # (m, n)
        if fold is not None:
            share = share * (fold[:, None] != self.fold[None, :])
        k = share.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k > 0, share @ self.log_err / np.maximum(k, 1), np.nan)

    def _nearest(self, pred: np.ndarray, fold: np.ndarray | None) -> np.ndarray:
        counts = self.counts
        out = np.full((pred.shape[0], 3 * len(counts)), np.nan)
        if not counts or self.pred.shape[0] == 0:
            return out
        p = self.pred.shape[1]
        sq = np.sum(self.pred**2, axis=1)
        for lo in range(0, pred.shape[0], 1024):
            b = pred[lo : lo + 1024]
            rows = slice(lo, lo + len(b))
            d = (np.sum(b**2, axis=1)[:, None] + sq[None, :] - 2.0 * b @ self.pred.T) / p
            d = np.maximum(d, 0.0)
            if fold is not None:
                d[fold[rows, None] == self.fold[None, :]] = np.inf
            avail = int(np.isfinite(d).sum(axis=1).min())
            kmax = min(max(counts), avail)
            if kmax < 1:
                continue
            nn = np.argpartition(d, kmax - 1, axis=1)[:, :kmax]
            dn = np.take_along_axis(d, nn, axis=1)
            o = np.argsort(dn, axis=1, kind="stable")  # nearest first
            nn, dn = np.take_along_axis(nn, o, axis=1), np.take_along_axis(dn, o, axis=1)
            for j, k in enumerate(counts):
                if k > avail:  # fewer pairs than k in the other folds: left missing
                    continue
                out[rows, 3 * j] = self.log_err[nn[:, :k]].mean(axis=1)
                out[rows, 3 * j + 1] = self.log_ratio[nn[:, :k]].mean(axis=1)
                out[rows, 3 * j + 2] = np.log(np.maximum(dn[:, :k].mean(axis=1), 1e-12))
        return out

    def features(
        self, pairs: np.ndarray, pred: np.ndarray, fold: np.ndarray | None = None
    ) -> np.ndarray:
        """``(m, 3 + 3 * len(counts))`` features (:meth:`names`) of ``pairs``, predictions ``pred``.

        ``pred``: the pairs' predictions divided by the square root of the feature variances.

        ``fold``: the pairs' own inner folds when they are hold-out pairs themselves (their
        fold is left out); ``None`` for targets.
        """
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return np.column_stack(
            [
                self._group(0, pairs, fold),
                self._group(1, pairs, fold),
                self._component(pairs, fold),
                self._nearest(pred, fold),
            ]
        )


def pair_features(
    support: np.ndarray,
    preds: dict[str, np.ndarray],
    base_pred: np.ndarray,
    diagnostics: dict[str, dict[str, np.ndarray]],
    feature_var: np.ndarray,
    diag_names: list[tuple[str, str]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``(n, k)`` features of pairs and their names.

    ``log1p`` of the row and column supports (the first two columns of ``support``; further
    columns, e.g. :func:`context_difficulty` and :func:`component_support`, are taken as they
    are); for each candidate, ``log1p`` of its mean
    squared distance to the baseline's prediction (in units of ``feature_var``); the spread of
    the candidates' predictions; and the candidates' own per-pair diagnostics
    (``diag_names``: ``(candidate, diagnostic)`` pairs, default every one present; missing
    values stay NaN and are filled by :func:`fill_missing`).
    """
    cols = [np.log1p(support[:, 0]), np.log1p(support[:, 1])]
    names = ["log_row_support", "log_col_support"]
    extra = ["log_row_difficulty", "log_col_difficulty", "log_component_support"]
    for j in range(2, support.shape[1]):  # context_difficulty columns, when given
        cols.append(support[:, j])
        names.append(extra[j - 2] if j - 2 < len(extra) else f"extra_{j}")
    for name, p in preds.items():
        cols.append(_log_disagreement(p, base_pred, feature_var))
        names.append(f"{name}:distance_to_baseline")
    if len(preds) > 1:
        stack = np.stack(list(preds.values()))
        cols.append(np.log1p(np.mean(stack.var(axis=0) / feature_var, axis=1)))
        names.append("candidate_spread")
    if diag_names is None:
        diag_names = [(c, k) for c, d in diagnostics.items() for k in d]
    n = support.shape[0]
    for c, k in diag_names:
        v = diagnostics.get(c, {}).get(k)
        cols.append(np.full(n, np.nan) if v is None else np.asarray(v, dtype=float))
        names.append(f"{c}:{k}")
    return np.stack(cols, axis=1), names


def fill_missing(x: np.ndarray, fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-finite entries replaced by ``fill`` (default: the column medians of ``x``, 0 if none)."""
    bad = ~np.isfinite(x)
    if fill is None:
        fill = np.median(x, axis=0) if x.shape[0] else np.zeros(x.shape[1])
        for j in np.flatnonzero(bad.any(axis=0)):  # (nanmedian is slow on small arrays)
            v = x[~bad[:, j], j]
            fill[j] = np.median(v) if v.size else 0.0
    return (np.where(bad, fill, x) if bad.any() else x), fill


@dataclass
class Linear:
    """A standardised linear model ``y = ((x - mean) / scale) @ coef + intercept``.

    New inputs are clipped to the range of the training features first: a feature that barely
    varies among the held-out pairs (e.g. a row statistic of a one-context grid) must not
    extrapolate wildly on the targets.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    lo: np.ndarray
    hi: np.ndarray

    def decision(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(x, self.lo, self.hi)
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted values (ridge) of pairs with features ``x``."""
        return self.decision(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (logistic) of pairs with features ``x``."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.decision(x), -30, 30)))


def _standardise(x, w):
    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    # a feature that varies by less than 1e-6 of its size is treated as constant
    scale = np.where(scale > 1e-6 * np.maximum(np.abs(mean), 1e-6), scale, np.inf)
    return (x - mean) / scale, mean, scale


def ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, alpha: float = 1.0) -> Linear:
    """Weighted ridge regression on standardised features (closed form; intercept free).

    The same estimator as scikit-learn's ``StandardScaler`` + ``Ridge(alpha)`` with sample
    weights, solved directly: the models here have a handful of features and are fitted
    dozens of times per call, where the pipeline's checks dominate.
    """
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
    z, mean, scale = _standardise(x, w)
    ym = np.average(y, weights=w)
    a = (z * w[:, None]).T @ z + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(a, (z * w[:, None]).T @ (y - ym))
    zm = np.average(z, axis=0, weights=w)
    return Linear(mean, scale, coef, float(ym - zm @ coef), x.min(axis=0), x.max(axis=0))


def logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, alpha: float = 1.0
) -> Linear:
    """Weighted L2-penalised logistic regression on standardised features (Newton steps).

    The penalty ``alpha / 2 * |coef|^2`` matches scikit-learn's ``LogisticRegression(C)``
    with ``C = 1 / alpha`` when the weights sum to the number of samples.
    """
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
    z, mean, scale = _standardise(x, w)
    d = np.column_stack([z, np.ones(len(y))])
    beta = np.zeros(d.shape[1])
    pen = alpha * np.eye(d.shape[1])
    pen[-1, -1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(d @ beta, -30, 30)))
        grad = d.T @ (w * (p - y)) + pen @ beta
        hess = (d * (w * p * (1 - p))[:, None]).T @ d + pen + 1e-9 * np.eye(d.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Linear(mean, scale, beta[:-1], float(beta[-1]), x.min(axis=0), x.max(axis=0))

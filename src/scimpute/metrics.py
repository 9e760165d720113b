"""Scores of predicted profiles, row by row (one row per pair).

Plain functions on ``(n_pairs, n_features)`` arrays; each returns one value per row. They are
checked against scikit-learn and scipy in the tests.
"""

from __future__ import annotations

import numpy as np

from ._keys import Key


def _rows(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    p = np.atleast_2d(np.asarray(y_pred, dtype=np.float64))
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}.")
    return t, p


def mse(y_true, y_pred) -> np.ndarray:
    """Mean squared error over features, per row."""
    t, p = _rows(y_true, y_pred)
    return np.mean((t - p) ** 2, axis=1)


def sse(y_true, y_pred) -> np.ndarray:
    """Sum of squared errors over features, per row."""
    t, p = _rows(y_true, y_pred)
    return np.sum((t - p) ** 2, axis=1)


def r2(y_true, y_pred) -> np.ndarray:
    """Coefficient of determination ``1 - SSE / SST`` over features, per row.

    ``SST`` is the sum of squares of the true row around its own mean, as in
    :func:`sklearn.metrics.r2_score` applied to one pair's profile.
    """
    t, p = _rows(y_true, y_pred)
    sst = np.sum((t - t.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - np.sum((t - p) ** 2, axis=1) / sst


def pearson(y_true, y_pred) -> np.ndarray:
    """Pearson correlation over features, per row (NaN for a constant row)."""
    t, p = _rows(y_true, y_pred)
    tc = t - t.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(tc * pc, axis=1) / np.sqrt(np.sum(tc**2, axis=1) * np.sum(pc**2, axis=1))


def cosine(y_true, y_pred) -> np.ndarray:
    """Cosine similarity over features, per row (NaN for a zero row)."""
    t, p = _rows(y_true, y_pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(t * p, axis=1) / np.sqrt(np.sum(t**2, axis=1) * np.sum(p**2, axis=1))


#: metrics reported by :func:`scimpute.tl.cross_validate`, in column order.
METRICS = ("r2", "r2_effect", "pearson_effect", "cosine_effect", "mse", "relative_mse")


def score_pairs(
    y_true,
    y_pred,
    *,
    baseline=None,
    reference_pred=None,
) -> dict[str, np.ndarray]:
    """All cross-validation scores of predicted profiles.

    Parameters
    ----------
    y_true, y_pred
        ``(n, p)`` measured and predicted profiles.
    baseline
        ``(n, p)`` profiles subtracted from both to form effects (the context's control
        profile), NaN rows where there is none; ``None`` when the profiles are effects already.
    reference_pred
        ``(n, p)`` predictions of the reference method (``context_mean``) for
        ``relative_mse``; ``None`` gives NaN.

    Returns
    -------
    Dict with ``r2``, ``r2_effect``, ``pearson_effect``, ``cosine_effect``, ``mse`` and
    ``relative_mse`` (``SSE(y_pred) / SSE(reference_pred)``), one value per row.

    """
    t, p = _rows(y_true, y_pred)
    if baseline is None:
        et, ep = t, p
    else:
        b = np.atleast_2d(np.asarray(baseline, dtype=np.float64))
        et, ep = t - b, p - b
    out = {
        "r2": r2(t, p),
        "r2_effect": r2(et, ep),
        "pearson_effect": pearson(et, ep),
        "cosine_effect": cosine(et, ep),
        "mse": mse(t, p),
    }
    if reference_pred is None:
        out["relative_mse"] = np.full(t.shape[0], np.nan)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["relative_mse"] = sse(t, p) / sse(t, reference_pred)
    return out


def fold_scores(data, label: str, hidden, prediction, source, reference_pred, fold: int):
    """The cross-validation table of one fold: one row per hidden pair, scored.

    The one table builder of :func:`scimpute.tl.cross_validate` and of the grouped
    refits: ``method``, ``context``, ``perturbation``, ``fold``, ``source`` and
    :data:`METRICS`, with effects taken against the context's measured control.

    Parameters
    ----------
    data
        The full grid (a :class:`~scimpute.methods.GridData`).
    label
        Value of the ``method`` column.
    hidden
        ``(n, 2)`` pairs of the fold.
    prediction, source
        ``(n, p)`` predictions and ``(n,)`` estimator names.
    reference_pred
        ``(n, p)`` predictions of ``context_mean`` on the same fold (for ``relative_mse``).
    fold
        Value of the ``fold`` column.

    Returns
    -------
    A :class:`pandas.DataFrame`.

    """
    import pandas as pd

    hidden = np.asarray(hidden, dtype=np.int64).reshape(-1, 2)
    truth = np.asarray(data.Y[hidden[:, 0], hidden[:, 1]], dtype=np.float64)
    if data.control is None:
        base = None
    else:
        has = data.measured[hidden[:, 0], data.control]
        base = np.where(has[:, None], data.Y[hidden[:, 0], data.control], np.nan)
    scores = score_pairs(truth, prediction, baseline=base, reference_pred=reference_pred)
    return pd.DataFrame(
        {
            Key.table.method: label,
            Key.table.context: np.asarray(data.contexts)[hidden[:, 0]].astype(str),
            Key.table.perturbation: np.asarray(data.perturbations)[hidden[:, 1]].astype(str),
            Key.table.fold: fold,
            Key.table.source: np.asarray(source).astype(str),
            **{k: scores[k] for k in METRICS},
        }
    )


# --------------------------------------------------------------------------------------------
# Multi-modal integration: agreement of two embeddings of the same cells
# --------------------------------------------------------------------------------------------


def _matched(x, y) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"x and y must be 2-d (cells x dimensions), got shapes {a.shape} and {b.shape}."
        )
    if a.shape != b.shape:
        raise ValueError(
            f"x has shape {a.shape} but y has shape {b.shape}: row i of both must be the same "
            "cell, embedded in the same space."
        )
    if a.shape[0] < 2:
        raise ValueError("At least 2 matched cells are needed.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x and y must not contain NaN or infinite values.")
    return a, b


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _closer_counts(x, y, block_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each cell, how many cells of the other embedding are strictly closer than its match.

    Returns ``(cx, cy)``: ``cx[i] = #{j != i : |x_i - y_j| < |x_i - y_i|}`` and
    ``cy[i] = #{j != i : |y_i - x_j| < |y_i - x_i|}`` (Euclidean distances), computed in
    blocks of rows so memory stays ``O(block_size * n)``.
    """
    a, b = _matched(x, y)
    n = a.shape[0]
    cx = np.empty(n, dtype=np.int64)
    cy = np.empty(n, dtype=np.int64)
    for s in range(0, n, block_size):
        e = min(n, s + block_size)
        rows = np.arange(e - s)
        dx = _sqdist(a[s:e], b)  # x_i (i in block) to every y_j
        cx[s:e] = (dx < dx[rows, s + rows][:, None]).sum(1)
        dy = _sqdist(b[s:e], a)  # y_i to every x_j
        cy[s:e] = (dy < dy[rows, s + rows][:, None]).sum(1)
    return cx, cy


def foscttm_per_cell(x, y) -> tuple[np.ndarray, np.ndarray]:
    """FOSCTTM of every cell, in both directions.

    Parameters
    ----------
    x, y
        ``(n, d)`` embeddings of the same ``n`` cells from two modalities (row ``i`` of ``x``
        and row ``i`` of ``y`` are the same cell), in a common space.

    Returns
    -------
    ``(fx, fy)``, each of shape ``(n,)``: ``fx[i]`` is the fraction of the other ``n - 1``
    cells ``j`` whose ``y_j`` is strictly closer (Euclidean) to ``x_i`` than its true match
    ``y_i``; ``fy[i]`` is the same with the roles of ``x`` and ``y`` swapped.

    """
    cx, cy = _closer_counts(x, y)
    n = cx.size
    return cx / (n - 1), cy / (n - 1)


def foscttm(x, y) -> float:
    """Fraction Of Samples Closer Than the True Match, averaged over cells and both directions.

    0 means every cell's true partner is its nearest neighbour in the other modality; a
    random embedding gives 0.5 in expectation. See :func:`foscttm_per_cell` for the exact
    per-cell definition (Liu et al. 2019; used by Yang et al., Nat Commun 2021).

    Parameters
    ----------
    x, y
        ``(n, d)`` embeddings of the same cells (row ``i`` is the same cell in both).

    Returns
    -------
    ``(mean(fx) + mean(fy)) / 2``.

    """
    fx, fy = foscttm_per_cell(x, y)
    return float((fx.mean() + fy.mean()) / 2.0)


def knn_matching_accuracy(x, y, *, k: int = 1) -> float:
    """Fraction of cells whose true partner is among its ``k`` nearest cells of the other modality.

    Averaged over both directions (``x`` to ``y`` and ``y`` to ``x``). A cell counts as
    matched when fewer than ``k`` cells of the other modality are strictly closer to it than
    its partner. A random embedding gives about ``k / n``.

    Parameters
    ----------
    x, y
        ``(n, d)`` embeddings of the same cells (row ``i`` is the same cell in both).
    k
        Number of neighbours.

    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    cx, cy = _closer_counts(x, y)
    return float(((cx < k).mean() + (cy < k).mean()) / 2.0)


def transfer_labels(x_ref, labels_ref, x_query, *, k: int = 5) -> np.ndarray:
    """Predict labels of query cells by majority vote of their ``k`` nearest reference cells.

    Euclidean distance; ties between labels go to the first label in sorted order (as in
    :class:`sklearn.neighbors.KNeighborsClassifier` with uniform weights).

    Parameters
    ----------
    x_ref
        ``(n_ref, d)`` embedding of labelled cells (for example one modality).
    labels_ref
        ``(n_ref,)`` their labels.
    x_query
        ``(n_query, d)`` embedding of the cells to label (for example the other modality).
    k
        Number of neighbours (at most ``n_ref``).

    Returns
    -------
    ``(n_query,)`` predicted labels.

    """
    a = np.asarray(x_ref, dtype=np.float64)
    q = np.asarray(x_query, dtype=np.float64)
    lab = np.asarray(labels_ref)
    if a.ndim != 2 or q.ndim != 2 or a.shape[1] != q.shape[1]:
        raise ValueError(
            f"x_ref and x_query must be 2-d with the same number of columns, got {a.shape} "
            f"and {q.shape}."
        )
    if lab.shape != (a.shape[0],):
        raise ValueError(f"labels_ref has shape {lab.shape}, expected ({a.shape[0]},).")
    k = int(k)
    if not 1 <= k <= a.shape[0]:
        raise ValueError(f"k must be between 1 and the number of reference cells, got {k}.")
    classes, codes = np.unique(lab, return_inverse=True)
    out = np.empty(q.shape[0], dtype=np.int64)
    for s in range(0, q.shape[0], 2048):
        d = _sqdist(q[s : s + 2048], a)
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]
        votes = np.zeros((d.shape[0], classes.size), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(d.shape[0]), k), codes[nn].ravel()), 1)
        out[s : s + 2048] = votes.argmax(1)
    return classes[out]


def label_transfer_accuracy(x_ref, labels_ref, x_query, labels_query, *, k: int = 5) -> float:
    """Accuracy of k-nearest-neighbour label transfer from reference to query cells.

    Fraction of query cells whose label predicted by :func:`transfer_labels` (majority of
    the ``k`` nearest reference cells) equals their true label. Used across modalities:
    reference = one modality's embedding with known labels, query = the other modality's
    embedding of different cells.

    Parameters
    ----------
    x_ref, labels_ref
        ``(n_ref, d)`` labelled reference embedding and its ``(n_ref,)`` labels.
    x_query, labels_query
        ``(n_query, d)`` query embedding and its ``(n_query,)`` true labels.
    k
        Number of neighbours.

    """
    truth = np.asarray(labels_query)
    if truth.shape != (np.asarray(x_query).shape[0],):
        raise ValueError("labels_query must have one label per row of x_query.")
    pred = transfer_labels(x_ref, labels_ref, x_query, k=k)
    return float(np.mean(pred.astype(str) == truth.astype(str)))


def cross_modal_correlation(y_true, y_pred, *, by: str = "feature") -> np.ndarray:
    """Pearson correlation between measured and cross-modally predicted profiles.

    Parameters
    ----------
    y_true
        ``(n_cells, n_features)`` measured profiles of the target modality.
    y_pred
        ``(n_cells, n_features)`` profiles predicted from another modality (for example by
        :func:`scimpute.mm.translate`).
    by
        ``"feature"``: one correlation per feature, across cells (how well the variation of
        each feature between cells is predicted); ``"cell"``: one per cell, across features.

    Returns
    -------
    ``(n_features,)`` or ``(n_cells,)`` correlations; NaN where either side is constant.

    """
    t, p = _rows(y_true, y_pred)
    if by == "feature":
        return pearson(t.T, p.T)
    if by == "cell":
        return pearson(t, p)
    raise ValueError(f"by must be 'feature' or 'cell', got {by!r}.")


# --------------------------------------------------------------------------------------------
# Predicted cells against real cells: distributional and mean-change scores
# --------------------------------------------------------------------------------------------


def _cells(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-d (cells x dimensions) array, got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must not contain NaN or infinite values.")
    return a


def _mean_dist(a: np.ndarray, b: np.ndarray, squared: bool, block: int = 2048) -> float:
    total = 0.0
    for s in range(0, a.shape[0], block):
        d = _sqdist(a[s : s + block], b)
        total += float(d.sum() if squared else np.sqrt(d).sum())
    return total / (a.shape[0] * b.shape[0])


def edistance(x, y, *, squared: bool = False) -> float:
    """Energy distance between two sets of cells ``2 E|x - y| - E|x - x'| - E|y - y'|``.

    Expectations are means over all pairs (V-statistics, the ``i = j`` pairs included), as
    in Peidli et al. (scPerturb, Nat Methods 2024). ``squared=True`` uses squared Euclidean
    distances (pertpy's ``Distance("edistance")``; then the value is twice the squared
    distance between the means and ignores the spread), the default the plain Euclidean
    distance, which is zero only when the two distributions are equal.

    Parameters
    ----------
    x, y
        ``(n, d)`` and ``(m, d)`` cells in one space (e.g. principal components).
    squared
        Use squared Euclidean distances (pertpy's convention).

    """
    a, b = _cells(x, "x"), _cells(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} columns but y has {b.shape[1]}.")
    return 2.0 * _mean_dist(a, b, squared) - _mean_dist(a, a, squared) - _mean_dist(b, b, squared)


def mmd_rbf(x, y, *, gamma: float | None = None) -> float:
    """Squared maximum mean discrepancy with the RBF kernel ``exp(-gamma |u - v|^2)``.

    The biased (V-statistic) estimate ``mean K(x, x') + mean K(y, y') - 2 mean K(x, y)``.
    ``gamma=None`` takes the median heuristic: one over the median squared distance between
    the pooled cells.

    Parameters
    ----------
    x, y
        ``(n, d)`` and ``(m, d)`` cells in one space.
    gamma
        Kernel width (> 0).

    """
    a, b = _cells(x, "x"), _cells(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} columns but y has {b.shape[1]}.")
    dxx, dyy, dxy = _sqdist(a, a), _sqdist(b, b), _sqdist(a, b)
    if gamma is None:
        pooled = np.concatenate([dxx.ravel(), dyy.ravel(), dxy.ravel(), dxy.ravel()])
        med = float(np.median(pooled[pooled > 0])) if (pooled > 0).any() else 1.0
        gamma = 1.0 / med
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}.")
    return float(
        np.exp(-gamma * dxx).mean() + np.exp(-gamma * dyy).mean() - 2 * np.exp(-gamma * dxy).mean()
    )


def r2_of_means(pred_mean, true_mean) -> float:
    """ScGen's score: r^2 of the least-squares line between predicted and true mean profiles.

    The squared Pearson correlation of the two ``(p,)`` vectors. A prediction that repeats
    the control already scores high when most genes do not change (0.86 on Kang's CD4T).
    """
    r = pearson(np.ravel(true_mean)[None], np.ravel(pred_mean)[None])[0]
    return float(r * r)


def weighted_change_scores(pred_change, true_change, weights=None) -> dict[str, float]:
    """Weighted MSE and weighted R^2 of a predicted mean change against the true one.

    ``wmse = sum w (p - t)^2 / sum w``; ``wr2 = 1 - sum w (p - t)^2 / sum w (t - tbar_w)^2``
    with ``tbar_w`` the weighted mean of ``t``. Default weights ``|t|`` (genes that change
    count more, as in the weighted scores of the systematic-variation critique).

    Returns
    -------
    ``{"wmse_change": ..., "wr2_change": ...}``.

    """
    p = np.ravel(np.asarray(pred_change, dtype=np.float64))
    t = np.ravel(np.asarray(true_change, dtype=np.float64))
    if p.shape != t.shape:
        raise ValueError(f"pred_change has shape {p.shape} but true_change has {t.shape}.")
    w = np.abs(t) if weights is None else np.ravel(np.asarray(weights, dtype=np.float64))
    if w.shape != t.shape or (w < 0).any() or not w.sum() > 0:
        raise ValueError("weights must be non-negative, one per gene, not all zero.")
    err = float(np.sum(w * (p - t) ** 2))
    tbar = float(np.sum(w * t) / w.sum())
    sst = float(np.sum(w * (t - tbar) ** 2))
    return {
        "wmse_change": err / float(w.sum()),
        "wr2_change": 1.0 - err / sst if sst > 0 else float("nan"),
    }


def top_changed_genes(real, control, n: int) -> np.ndarray:
    """Indices of the ``n`` genes with the largest Welch t-statistic (in absolute value).

    ``(mean(real) - mean(control)) / sqrt(var(real) / n_r + var(control) / n_c)``: a fast
    stand-in for a Wilcoxon ranking of differentially expressed genes.
    """
    r, c = np.asarray(real, dtype=np.float64), np.asarray(control, dtype=np.float64)
    se = np.sqrt(r.var(0, ddof=1) / max(len(r), 1) + c.var(0, ddof=1) / max(len(c), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(r.mean(0) - c.mean(0)) / se
    t = np.where(np.isfinite(t), t, 0.0)
    return np.argsort(-t, kind="stable")[: int(n)]


#: scores of :func:`transfer_scores`, in column order
TRANSFER_METRICS = (
    "r2_all",
    "r2_top20",
    "r2_top100",
    "pearson_change_all",
    "pearson_change_top20",
    "pearson_change_top100",
    "pearson_change_vs_perturbed_all",
    "pearson_change_vs_perturbed_top100",
    "wmse_change",
    "wr2_change",
    "edistance",
    "mmd",
)


def transfer_scores(
    predicted,
    real,
    control,
    *,
    perturbed_mean=None,
    degs=None,
    basis=None,
    center=None,
    tops: tuple[int, ...] = (20, 100),
) -> dict[str, float]:
    """Every score of predicted cells against the real cells they stand for.

    Parameters
    ----------
    predicted, real, control
        ``(n_pred, p)``, ``(n_real, p)`` and ``(n_ctrl, p)`` expression of the predicted
        cells, the real perturbed cells and the context's control cells (same genes).
    perturbed_mean
        ``(p,)`` mean of all perturbed cells of the other contexts: the reference of the
        systematic-variation check (``pearson_change_vs_perturbed_*``: how well the
        prediction's deviation from the generic perturbed profile matches the truth's). NaN
        when ``None``.
    degs
        Gene indices ranked by differential expression (best first); default
        :func:`top_changed_genes` of ``real`` vs ``control``. The first 20 / 100 give the
        ``top20`` / ``top100`` scores.
    basis, center
        ``(p, k)`` orthonormal gene loadings and the ``(p,)`` centre of a PCA fitted without
        the real cells, for ``edistance`` and ``mmd`` (:func:`pca_basis`); default the
        30 leading components of ``control`` (which never saw the real cells).
    tops
        The numbers of top genes scored.

    Returns
    -------
    Dict with :data:`TRANSFER_METRICS`: ``r2_*`` (:func:`r2_of_means`), ``pearson_change_*``
    (Pearson of ``mean(predicted) - mean(control)`` against ``mean(real) - mean(control)``),
    ``pearson_change_vs_perturbed_*``, :func:`weighted_change_scores`, :func:`edistance`
    and :func:`mmd_rbf` on the PCA coordinates.

    """
    P, R, C = (_cells(predicted, "predicted"), _cells(real, "real"), _cells(control, "control"))
    if not P.shape[1] == R.shape[1] == C.shape[1]:
        raise ValueError("predicted, real and control must have the same genes (columns).")
    mp, mr, mc = P.mean(0), R.mean(0), C.mean(0)
    rank = top_changed_genes(R, C, max(tops)) if degs is None else np.asarray(degs)
    out: dict[str, float] = {"r2_all": r2_of_means(mp, mr)}
    sets = {"all": slice(None), **{f"top{k}": rank[:k] for k in tops}}
    for name, g in sets.items():
        if name != "all":
            out[f"r2_{name}"] = r2_of_means(mp[g], mr[g])
        out[f"pearson_change_{name}"] = float(pearson((mr - mc)[g][None], (mp - mc)[g][None])[0])
    for name in ("all", f"top{max(tops)}"):
        g = sets[name]
        if perturbed_mean is None:
            v = float("nan")
        else:
            pm = np.ravel(np.asarray(perturbed_mean, dtype=np.float64))
            v = float(pearson((mr - pm)[g][None], (mp - pm)[g][None])[0])
        out[f"pearson_change_vs_perturbed_{name}"] = v
    out.update(weighted_change_scores(mp - mc, mr - mc))
    if basis is None:
        center, basis = pca_basis(C, 30)
    center = np.zeros(P.shape[1]) if center is None else np.asarray(center, dtype=np.float64)
    proj = [(m - center) @ basis for m in (P, R)]
    out["edistance"] = edistance(*proj)
    out["mmd"] = mmd_rbf(*proj)
    return {k: out[k] for k in TRANSFER_METRICS if k in out}


def pca_basis(X, n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(center, loadings)`` of a PCA of ``X``: the ``(p,)`` mean and ``(p, k)`` components.

    ``k = min(n_comps, n - 1, p)``, by scikit-learn's randomized SVD (fixed seed); the
    signs are fixed (largest loading positive) so the result is deterministic.
    """
    from sklearn.utils.extmath import randomized_svd

    A = _cells(X, "X")
    center = A.mean(0)
    k = int(max(1, min(n_comps, A.shape[0] - 1, A.shape[1])))
    _, _, vt = randomized_svd(A - center, k, n_iter=6, random_state=0)
    V = vt[:k].T
    sign = np.sign(V[np.abs(V).argmax(0), np.arange(k)])
    return center, V * np.where(sign == 0, 1.0, sign)

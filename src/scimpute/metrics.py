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

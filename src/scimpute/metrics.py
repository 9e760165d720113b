"""Scores of predicted profiles, row by row (one row per pair).

Plain functions on ``(n_pairs, n_features)`` arrays; each returns one value per row. They are
checked against scikit-learn and scipy in the tests.
"""

from __future__ import annotations

import numpy as np


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

"""The inner hold-out of ``auto``: folds of measured pairs weighted to look like the gaps.

Scheme
------
1. The measured non-control pairs are shuffled into ``n_folds`` folds (every pair is hidden
   exactly once; fold ``f`` is predicted from the others, like a real gap).
2. Each hidden pair is described by its *support*: how many measured non-control pairs its
   row (context) and its column (perturbation) keep while its fold is hidden
   (:func:`support`). The real targets are described the same way on the grid as given.
3. A random hold-out gives the hidden pairs more support than the real gaps have when the gaps
   sit in sparse rows or columns, which flatters donor methods. To correct this, each hidden
   pair gets an importance weight ``w = p(target | support) / p(hidden | support)``
   (a logistic regression on ``log1p`` of the two counts separates targets from hidden pairs;
   covariate-shift weighting as in weighted conformal prediction, Tibshirani et al. 2019).
   Weights are clipped to ``[0.05, 20]`` times their mean and normalised to mean 1, and every
   score, stack, difficulty model and conformal quantile of ``auto`` uses them. With fewer
   than :data:`MIN_TARGETS` targets (e.g. one pair left out by an outer leave-one-out) the
   weights are 1: the hold-out is then already as sparse as the targets.

Weighting can only re-balance supports that some hidden pairs have: a gap in a row with no
measured pair at all has no hidden counterpart, and its interval rests on the nearest supports.
"""

from __future__ import annotations

import numpy as np

from ...methods import GridData

#: below this many targets the hold-out is not re-weighted.
MIN_TARGETS = 10
#: clip of the importance weights (times their mean).
WEIGHT_CLIP = (0.05, 20.0)


def inner_folds(data: GridData, n_folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The measured non-control pairs, shuffled into ``n_folds`` folds of ``(n, 2)`` indices."""
    cand = np.argwhere(data.treated_mask())
    if cand.shape[0] < 2:
        raise ValueError(
            "auto: the grid needs at least 2 measured non-control pairs for its inner hold-out, "
            f"got {cand.shape[0]}."
        )
    perm = rng.permutation(cand.shape[0])
    k = min(n_folds, cand.shape[0])
    return [cand[np.sort(f)] for f in np.array_split(perm, k)]


def support(treated: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(n, 2)`` counts of measured non-control pairs in each pair's row and column.

    ``treated`` is the measured non-control mask the pairs are predicted from (the pairs
    themselves unmeasured in it).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    rows, cols = treated.sum(axis=1), treated.sum(axis=0)
    return np.stack([rows[pairs[:, 0]], cols[pairs[:, 1]]], axis=1).astype(float)


def hidden_support(data: GridData, folds: list[np.ndarray]) -> np.ndarray:
    """:func:`support` of every hidden pair, with its own fold hidden (fold order)."""
    out = []
    for hidden in folds:
        m = data.treated_mask()
        m[hidden[:, 0], hidden[:, 1]] = False
        out.append(support(m, hidden))
    return np.concatenate(out) if out else np.zeros((0, 2))


def importance_weights(hidden: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Weights that make the hidden pairs' supports look like the targets' (module docstring)."""
    n = hidden.shape[0]
    if targets.shape[0] < MIN_TARGETS or n == 0:
        return np.ones(n)
    x = np.log1p(np.concatenate([hidden, targets]))
    y = np.r_[np.zeros(n), np.ones(targets.shape[0])]
    if np.ptp(x, axis=0).max() == 0:
        return np.ones(n)
    from ._features import logistic

    balanced = np.where(y == 1, 0.5 * y.size / y.sum(), 0.5 * y.size / (y.size - y.sum()))
    p = np.clip(logistic(x, y, balanced).predict_proba(x[:n]), 1e-6, 1 - 1e-6)
    w = p / (1 - p)
    w = np.clip(w / w.mean(), *WEIGHT_CLIP)
    return w / w.mean()

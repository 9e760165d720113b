"""Choice of the backbone of :func:`scimpute.mm.integrate` by validation on the anchors alone.

The known pairs (the cells ``pairing`` selects) are split once by
:func:`scimpute.mm._data.assign_roles`: *anchors* (fitted on) and *validation* pairs (never
fitted on). Cells whose pairing was not given are never used to score anything.

- The linear backbone's capacity (PCA dimensions, rank, ridge) is chosen by ``k``-fold
  cross-validation *within the anchors* (:func:`cv_linear`), closed form, cheap.
- Every candidate (linear, autoencoder, autoencoder guided by the linear solution) is then
  scored on the validation pairs by FOSCTTM (:func:`pair_score`: mean over pairs of
  modalities and both directions, with its standard error over cells).
- :func:`choose` applies a paired one-standard-error rule: the simplest candidate whose
  per-cell validation FOSCTTM is worse than the best candidate's by less than one standard
  error of the per-cell differences (candidates are listed from simplest to most complex),
  so that a network is only taken when the validation pairs show it is better.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import foscttm_per_cell

__all__ = ["Candidate", "choose", "cv_linear", "pair_score"]

#: most held-out anchors a cross-validation fold is scored on (a random subset beyond it):
#: FOSCTTM is a fraction, estimated as well from 2,000 cells as from all, and the cost of
#: scoring stays bounded on large data (the distances are computed in row blocks anyway).
MAX_SCORED = 2000

#: most anchors the linear backbone's capacity is cross-validated on (a seeded random subset
#: beyond it; the chosen capacity is then fitted once on every anchor). The grid of
#: candidates x folds is the cost that grows with the data; 5,000 anchors already give the
#: covariances of <= 100 PCA dimensions per modality a relative error of a few percent.
MAX_CV_ANCHORS = 5000


@dataclass(frozen=True)
class Candidate:
    """One backbone tried by ``integrate``, and its validation score."""

    name: str
    backbone: str
    settings: str
    score: float  # FOSCTTM on the validation pairs (lower is better), NaN if not scored
    se: float
    fit_s: float
    per_cell: np.ndarray | None = None  # per-cell validation FOSCTTM (not stored)

    def to_uns(self, chosen: bool) -> dict:
        """An h5ad-safe dict."""
        return {
            "name": self.name,
            "backbone": self.backbone,
            "settings": self.settings,
            "score": float(self.score),
            "se": float(self.se),
            "fit_seconds": float(self.fit_s),
            "chosen": bool(chosen),
        }


def pair_score(
    z: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray]
) -> tuple[float, float, np.ndarray]:
    """``(FOSCTTM, standard error, per-cell values)`` of embeddings ``z`` on cells ``rows``.

    ``z[m]`` are the latents of modality ``m``'s cells and ``rows[m]`` the rows of the scored
    cells in it (``-1`` when absent). FOSCTTM is computed for every pair of modalities on
    the cells measured in both, averaged over both directions; the standard error is that
    of the mean of the per-cell values.
    """
    mods = list(z)
    per_cell = []
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            both = (rows[a] >= 0) & (rows[b] >= 0)
            if both.sum() < 3:
                continue
            fa, fb = foscttm_per_cell(z[a][rows[a][both]], z[b][rows[b][both]])
            per_cell.append((fa + fb) / 2)
    if not per_cell:
        return float("nan"), float("nan"), np.zeros(0)
    v = np.concatenate(per_cell)
    return float(v.mean()), _se(v), v


def _se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0


def cv_linear(
    scores: Mapping[str, np.ndarray],
    candidates: Sequence[tuple[int, int, float]],
    fit: Callable,
    n_folds: int,
    rng: np.random.Generator,
) -> list[tuple[tuple[int, int, float], float]]:
    """Cross-validated FOSCTTM of every ``(n_pcs, rank, ridge)`` over the anchor cells.

    ``scores[m]`` are the ``(n_anchors, p_max)`` PCA scores of the anchors (row ``i`` the
    same cell in every modality); ``fit(scores, rank, ridge)`` returns an object with
    ``embed(m, scores)``. Folds are drawn from ``rng``; each fold is scored on its held-out
    anchors (on a random :data:`MAX_SCORED` of them when it has more, drawn once per fold, so
    every candidate is scored on the same cells). With more than :data:`MAX_CV_ANCHORS`
    anchors the folds are drawn from a random subset of that many.
    """
    n = next(iter(scores.values())).shape[0]
    if n > MAX_CV_ANCHORS:
        sub_rows = np.sort(rng.choice(n, MAX_CV_ANCHORS, replace=False))
        scores = {m: s[sub_rows] for m, s in scores.items()}
        n = MAX_CV_ANCHORS
    folds = np.array_split(rng.permutation(n), n_folds)
    scored = [
        hold if hold.size <= MAX_SCORED else np.sort(rng.choice(hold, MAX_SCORED, replace=False))
        for hold in folds
    ]
    out = []
    for p, k, r in candidates:
        vals = []
        for hold, rows in zip(folds, scored, strict=True):
            keep = np.setdiff1d(np.arange(n), hold)
            sub = {m: s[:, :p] for m, s in scores.items()}
            lf = fit({m: s[keep] for m, s in sub.items()}, k, r)
            z = {m: lf.embed(m, s[rows]) for m, s in sub.items()}
            idx = {m: np.arange(rows.size) for m in sub}
            vals.append(pair_score(z, idx)[0] * hold.size)
        out.append(((p, k, r), float(np.sum(vals) / n)))
    return out


def choose(candidates: Sequence[Candidate]) -> int:
    """Index of the simplest candidate not shown worse than the best one on the validation pairs.

    ``candidates`` go from simplest to most complex; unscored ones (NaN) are skipped. A
    simpler candidate ``i`` is kept over the best one ``b`` when the mean of the per-cell
    differences ``foscttm_i - foscttm_b`` is at most one standard error of those differences.
    With no scored candidate, the first one.
    """
    scored = [i for i, c in enumerate(candidates) if np.isfinite(c.score)]
    if not scored:
        return 0
    best = min(scored, key=lambda i: candidates[i].score)
    for i in scored:
        if i == best:
            return i
        d = candidates[i].per_cell - candidates[best].per_cell
        if d.mean() <= _se(d):
            return i
    return best

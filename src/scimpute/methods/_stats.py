"""Grid statistics and the fallback chain shared by every method.

Group sums and counts of the measured non-control profiles (one sparse indicator product),
per-context baseline profiles, and :func:`fallback_chain`, the one place where a method's
fallback order is resolved pair by pair. Names here are public within the package: methods
import them from this module, never from another method's module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._base import GridData, MethodResult, as_targets

#: the baselines a pair can fall back to, in the order tried by default.
CONTEXT_FIRST = ("context_mean", "perturbation_mean", "global_mean")
#: order for pairs whose context has no baseline profile.
PERTURBATION_FIRST = ("perturbation_mean", "context_mean", "global_mean")
#: the baselines :func:`validated_order` chooses among (the best baseline of a grid).
VALIDATED_BASELINES = ("context_mean", "perturbation_mean", "two_way_mean")


@dataclass
class GroupMeans:
    """Sums and counts of measured non-control profiles by context and by perturbation."""

    ctx_sum: np.ndarray  # (C, p)
    ctx_n: np.ndarray  # (C,)
    pert_sum: np.ndarray  # (A, p)
    pert_n: np.ndarray  # (A,)
    global_mean: np.ndarray  # (p,)

    def context_mean(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and counts of the contexts ``c`` (NaN rows where the count is 0)."""
        n = self.ctx_n[c]
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.ctx_sum[c] / n[:, None], n

    def perturbation_mean(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and counts of the perturbations ``a`` (NaN rows where the count is 0)."""
        n = self.pert_n[a]
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.pert_sum[a] / n[:, None], n


def indicator(codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """``(n_groups, n)`` sparse 0/1 matrix with a one at ``(codes[i], i)`` (group sums)."""
    return sp.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n_groups, codes.size)
    )


def measured_rows(data: GridData, mask: np.ndarray | None = None):
    """Indices and float64 profiles of the pairs in ``mask`` (default: treated measured)."""
    mask = data.treated_mask() if mask is None else mask
    ci, ai = np.nonzero(mask)
    return ci, ai, np.asarray(data.Y[ci, ai], dtype=np.float64)


def group_means(data: GridData) -> GroupMeans:
    """Context and perturbation sums of the measured non-control profiles."""
    ci, ai, ym = measured_rows(data)
    if ci.size == 0:
        ci, ai, ym = measured_rows(data, data.measured)
        if ci.size == 0:
            raise ValueError(
                "The grid has no measured pairs: nothing to learn from. Check obs['measured']."
            )
        gm = ym.mean(axis=0)
        p = data.n_features
        return GroupMeans(
            np.zeros((data.n_contexts, p)),
            np.zeros(data.n_contexts),
            np.zeros((data.n_perturbations, p)),
            np.zeros(data.n_perturbations),
            gm,
        )
    return GroupMeans(
        ctx_sum=np.asarray(indicator(ci, data.n_contexts) @ ym),
        ctx_n=np.bincount(ci, minlength=data.n_contexts).astype(float),
        pert_sum=np.asarray(indicator(ai, data.n_perturbations) @ ym),
        pert_n=np.bincount(ai, minlength=data.n_perturbations).astype(float),
        global_mean=ym.mean(axis=0),
    )


def _fill(pred, source, ok, values, name):
    take = ~ok & np.isfinite(values).all(axis=1)
    pred[take] = values[take]
    source[take] = name
    return ok | take


def fallback_chain(
    data: GridData, targets: np.ndarray, order: list[str], gm: GroupMeans | None = None
) -> MethodResult:
    """Predict each target by the first estimator of ``order`` that is defined for it.

    ``order`` names estimators among ``"context_mean"``, ``"perturbation_mean"``,
    ``"two_way_mean"`` (their average, defined where both are) and ``"global_mean"``;
    ``source`` records which one served each pair and ``per_target["n_averaged"]`` how many
    profiles it averaged.
    """
    t = as_targets(targets)
    gm = group_means(data) if gm is None else gm
    c, a = t[:, 0], t[:, 1]
    pred = np.full((len(t), data.n_features), np.nan)
    source = np.full(len(t), "", dtype=object)
    ok = np.zeros(len(t), dtype=bool)
    support = np.zeros(len(t))
    for name in order:
        if name == "context_mean":
            vals, n = gm.context_mean(c)
        elif name == "perturbation_mean":
            vals, n = gm.perturbation_mean(a)
        elif name == "two_way_mean":
            (cm, cn), (pm, pn) = gm.context_mean(c), gm.perturbation_mean(a)
            vals, n = 0.5 * (cm + pm), np.where((cn > 0) & (pn > 0), cn + pn, 0.0)
        else:
            vals, n = np.broadcast_to(gm.global_mean, pred.shape), np.zeros(len(t))
        new = ~ok & (n > 0) if name != "global_mean" else ~ok
        support[new] = n[new]
        ok = _fill(pred, source, ok, vals, name)
    return MethodResult(prediction=pred, source=source, per_target={"n_averaged": support})


def baseline_profiles(data: GridData, gm: GroupMeans) -> tuple[np.ndarray, np.ndarray]:
    """Per-context baseline b(c): the control profile, or the context mean without control."""
    if data.control is not None:
        has = data.measured[:, data.control].copy()
        b = np.where(has[:, None], np.nan_to_num(data.Y[:, data.control].astype(float)), np.nan)
    else:
        has = gm.ctx_n > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            b = gm.ctx_sum / gm.ctx_n[:, None]
    return b, has


def default_fallback(
    data: GridData, targets, gm: GroupMeans | None = None, order=CONTEXT_FIRST
) -> MethodResult:
    """Fallback predictions for ``targets`` by ``order``, the one fallback every method uses.

    Pairs whose context has no measured control try the perturbation mean first (their
    context mean would mix effects).
    """
    t = as_targets(targets)
    gm = group_means(data) if gm is None else gm
    res = fallback_chain(data, t, list(order), gm)
    if data.control is not None:
        no_b = ~data.measured[t[:, 0], data.control]
        if no_b.any():
            alt = fallback_chain(data, t[no_b], list(PERTURBATION_FIRST), gm)
            res.prediction[no_b] = alt.prediction
            res.source[no_b] = alt.source
            res.per_target["n_averaged"][no_b] = alt.per_target["n_averaged"]
    return res


def baseline_loo_residuals(
    data: GridData, gm: GroupMeans | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Leave-one-out residuals of :data:`VALIDATED_BASELINES` on the measured treated pairs.

    Closed form (no refit): hiding a measured non-control pair ``(c, a)`` removes its profile
    from the sums of context ``c`` and perturbation ``a``, so its leave-one-out context mean is
    ``(S_c - y) / (n_c - 1)``. Returns the ``(n, 2)`` pairs where every baseline stays
    defined (``n_c > 1`` and ``n_a > 1``) and, per baseline, their ``(n, p)`` residuals.
    """
    gm = group_means(data) if gm is None else gm
    ci, ai, ym = measured_rows(data)
    cn, pn = gm.ctx_n[ci], gm.pert_n[ai]
    ok = (cn > 1) & (pn > 1)
    ci, ai, ym, cn, pn = ci[ok], ai[ok], ym[ok], cn[ok], pn[ok]
    cm = (gm.ctx_sum[ci] - ym) / (cn - 1)[:, None]
    pm = (gm.pert_sum[ai] - ym) / (pn - 1)[:, None]
    preds = {"context_mean": cm, "perturbation_mean": pm, "two_way_mean": 0.5 * (cm + pm)}
    return np.stack([ci, ai], axis=1), {k: v - ym for k, v in preds.items()}


def baseline_loo_errors(data: GridData, gm: GroupMeans | None = None) -> dict[str, float]:
    """Leave-one-out mean squared error of each of :data:`VALIDATED_BASELINES` on ``data``.

    Over the pairs of :func:`baseline_loo_residuals`; an empty dict when there is none.
    """
    pairs, res = baseline_loo_residuals(data, gm)
    if pairs.shape[0] == 0:
        return {}
    return {k: float(np.mean(v**2)) for k, v in res.items()}


def validated_order(data: GridData, gm: GroupMeans | None = None) -> tuple[str, ...]:
    """The fallback order of ``data``: its best baseline by leave-one-out, then the others.

    The best of :data:`VALIDATED_BASELINES` by :func:`baseline_loo_errors` comes first (ties
    and grids without a scorable pair keep :data:`CONTEXT_FIRST`), followed by the two
    group means (best first) and ``global_mean``, so that every pair gets a prediction. On a
    grid of many contexts and few perturbations this is ``perturbation_mean``; on a grid of
    few contexts, ``context_mean``.
    """
    err = baseline_loo_errors(data, gm)
    if not err:
        return CONTEXT_FIRST
    ranked = sorted(VALIDATED_BASELINES, key=lambda k: (err[k], VALIDATED_BASELINES.index(k)))
    singles = [k for k in ranked if k != "two_way_mean"]
    return tuple(dict.fromkeys([ranked[0], *singles, "global_mean"]))


def validated_fallback(data: GridData, targets, gm: GroupMeans | None = None) -> MethodResult:
    """:func:`default_fallback` with the grid's validated order (:func:`validated_order`).

    The fallback of every learned method (synthetic interventions, the autoencoders): each
    target gets the baseline that validation on ``data`` found best, not a fixed one.
    """
    gm = group_means(data) if gm is None else gm
    return default_fallback(data, targets, gm, order=validated_order(data, gm))

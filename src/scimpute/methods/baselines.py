"""Baselines every claim is measured against: group means and the additive model.

All four are exact closed forms computed with one sparse indicator product over the measured
profiles (no loop over pairs). For a target pair (c, a) that is not measured:

``context_mean``
    Mean of context c's measured non-control profiles ("mean over actions").
``perturbation_mean``
    Mean of perturbation a's measured profiles in other contexts ("mean over contexts").
``two_way_mean``
    Average of the two.
``additive``
    Fixed-effect model: ``b(c) + mean_{c'} (y[c', a] - b(c'))`` over contexts c' where a and
    b(c') are measured, with ``b(c)`` the control profile of c (or, when the grid has no
    control, c's context mean).

Fallbacks (recorded per pair in ``source``): ``context_mean`` -> ``perturbation_mean`` ->
``global_mean`` (mean of all measured non-control profiles); ``perturbation_mean`` ->
``context_mean`` -> ``global_mean``; ``two_way_mean`` uses whichever of its two parts exists;
``additive`` -> ``context_mean`` when a is measured in no other context with a baseline, and
-> ``perturbation_mean`` when c has no baseline profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._params import NoParams
from .._utils import RandomState
from ._base import GridData, MethodResult, as_targets
from ._registry import register

_REF_SI = "Squires et al., CLeaR 2022 (baselines of the CMap causal-imputation benchmark)"


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


def _indicator(codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
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
        ctx_sum=np.asarray(_indicator(ci, data.n_contexts) @ ym),
        ctx_n=np.bincount(ci, minlength=data.n_contexts).astype(float),
        pert_sum=np.asarray(_indicator(ai, data.n_perturbations) @ ym),
        pert_n=np.bincount(ai, minlength=data.n_perturbations).astype(float),
        global_mean=ym.mean(axis=0),
    )


def _fill(pred, source, ok, values, name):
    take = ~ok & np.isfinite(values).all(axis=1)
    pred[take] = values[take]
    source[take] = name
    return ok | take


def _chain(
    data: GridData, targets: np.ndarray, order: list[str], gm: GroupMeans | None = None
) -> MethodResult:
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
        else:
            vals, n = np.broadcast_to(gm.global_mean, pred.shape), np.zeros(len(t))
        new = ~ok & (n > 0) if name != "global_mean" else ~ok
        support[new] = n[new]
        ok = _fill(pred, source, ok, vals, name)
    return MethodResult(prediction=pred, source=source, per_target={"n_averaged": support})


@register(
    "context_mean",
    description="Mean of the context's other measured non-control profiles (mean over actions).",
    reference=_REF_SI,
)
def context_mean(
    data: GridData, targets, params: NoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Predict each target (c, a) by the mean of c's measured non-control profiles.

    Parameters
    ----------
    data
        The grid's arrays.
    targets
        ``(n, 2)`` (context index, perturbation index) pairs to predict.
    random_state
        Unused (the estimator is deterministic); accepted for a uniform signature.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["n_averaged"]``.

    """
    return _chain(data, targets, ["context_mean", "perturbation_mean", "global_mean"])


@register(
    "perturbation_mean",
    description="Mean of the perturbation's measured profiles in other contexts (mean over contexts).",
    reference=_REF_SI,
)
def perturbation_mean(
    data: GridData, targets, params: NoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Predict each target (c, a) by the mean of a's measured profiles in other contexts.

    See :func:`context_mean` for the parameters.
    """
    return _chain(data, targets, ["perturbation_mean", "context_mean", "global_mean"])


@register(
    "two_way_mean",
    description="Average of context_mean and perturbation_mean.",
    reference=_REF_SI,
)
def two_way_mean(
    data: GridData, targets, params: NoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Predict each target by the average of its context mean and its perturbation mean.

    Where only one of the two exists, that one is used (``source`` says which).
    See :func:`context_mean` for the parameters.
    """
    t = as_targets(targets)
    gm = group_means(data)
    cm, cn = gm.context_mean(t[:, 0])
    pm, pn = gm.perturbation_mean(t[:, 1])
    both = (cn > 0) & (pn > 0)
    res = _chain(data, t, ["context_mean", "perturbation_mean", "global_mean"], gm)
    res.prediction[both] = 0.5 * (cm[both] + pm[both])
    res.source[both] = "two_way_mean"
    res.per_target["n_averaged"][both] = cn[both] + pn[both]
    return res


def _baseline_profiles(data: GridData, gm: GroupMeans) -> tuple[np.ndarray, np.ndarray]:
    """Per-context baseline b(c): the control profile, or the context mean without control."""
    if data.control is not None:
        has = data.measured[:, data.control].copy()
        b = np.where(has[:, None], np.nan_to_num(data.Y[:, data.control].astype(float)), np.nan)
    else:
        has = gm.ctx_n > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            b = gm.ctx_sum / gm.ctx_n[:, None]
    return b, has


@register(
    "additive",
    description="Fixed-effect model: context baseline + mean effect of the perturbation elsewhere.",
    reference=_REF_SI,
)
def additive(
    data: GridData, targets, params: NoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Predict ``b(c) + mean_{c'}(y[c', a] - b(c'))`` (the additive fixed-effect model).

    ``b(c)`` is the control profile of context c; on grids without a control it is c's
    context mean, which makes this the two-way additive model
    ``row effect + column effect``. See the module docstring for fallbacks and
    :func:`context_mean` for the parameters.
    """
    t = as_targets(targets)
    gm = group_means(data)
    b, has_b = _baseline_profiles(data, gm)
    ci, ai, ym = measured_rows(data)
    keep = has_b[ci]
    ci, ai, ym = ci[keep], ai[keep], ym[keep]
    eff_sum = np.asarray(_indicator(ai, data.n_perturbations) @ (ym - b[ci]))
    eff_n = np.bincount(ai, minlength=data.n_perturbations).astype(float)
    c, a = t[:, 0], t[:, 1]
    res = _chain(data, t, ["context_mean", "perturbation_mean", "global_mean"], gm)
    # contexts without a baseline profile: perturbation_mean first
    no_b = ~has_b[c]
    if no_b.any():
        alt = _chain(data, t[no_b], ["perturbation_mean", "context_mean", "global_mean"], gm)
        res.prediction[no_b] = alt.prediction
        res.source[no_b] = alt.source
        res.per_target["n_averaged"][no_b] = alt.per_target["n_averaged"]
    ok = has_b[c] & (eff_n[a] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        res.prediction[ok] = b[c[ok]] + eff_sum[a[ok]] / eff_n[a[ok], None]
    res.source[ok] = "additive"
    res.per_target["n_averaged"][ok] = eff_n[a[ok]]
    return res

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

import numpy as np

from .._params import NoParams
from .._utils import RandomState
from ._base import GridData, MethodResult, as_targets
from ._registry import register
from ._stats import (
    CONTEXT_FIRST,
    PERTURBATION_FIRST,
    baseline_profiles,
    default_fallback,
    fallback_chain,
    group_means,
    indicator,
    measured_rows,
)

__all__ = ["additive", "context_mean", "group_means", "perturbation_mean", "two_way_mean"]

_REF_SI = "Squires et al., CLeaR 2022 (baselines of the CMap causal-imputation benchmark)"


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
    params
        Unused (the method has no parameters).
    random_state
        Unused (the estimator is deterministic); accepted for a uniform signature.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["n_averaged"]``.

    """
    return fallback_chain(data, targets, list(CONTEXT_FIRST))


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
    return fallback_chain(data, targets, list(PERTURBATION_FIRST))


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
    res = fallback_chain(data, t, list(CONTEXT_FIRST), gm)
    res.prediction[both] = 0.5 * (cm[both] + pm[both])
    res.source[both] = "two_way_mean"
    res.per_target["n_averaged"][both] = cn[both] + pn[both]
    return res


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
    b, has_b = baseline_profiles(data, gm)
    ci, ai, ym = measured_rows(data)
    keep = has_b[ci]
    ci, ai, ym = ci[keep], ai[keep], ym[keep]
    eff_sum = np.asarray(indicator(ai, data.n_perturbations) @ (ym - b[ci]))
    eff_n = np.bincount(ai, minlength=data.n_perturbations).astype(float)
    c, a = t[:, 0], t[:, 1]
    # contexts without a baseline profile try perturbation_mean first
    res = default_fallback(data, t, gm)
    ok = has_b[c] & (eff_n[a] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        res.prediction[ok] = b[c[ok]] + eff_sum[a[ok]] / eff_n[a[ok], None]
    res.source[ok] = "additive"
    res.per_target["n_averaged"][ok] = eff_n[a[ok]]
    return res

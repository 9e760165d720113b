"""Baselines for combinations and doses: additive combination and log-dose interpolation.

Both read the grid's perturbation labels as components and doses (``"A@1.5+B@6"``, parsed with
:func:`scimpute.pp.parse_perturbation`). Effects are profiles minus the context's control
profile; on a grid without control the profiles are the effects.

``additive_combination``
    A combination target ``(c, "A@dA+B@dB")`` is predicted as
    ``baseline(c) + effect(c, "A@dA") + effect(c, "B@dB")``: the sum of its singles' effects
    measured in the same context (Korkut et al. 2015's additive reference). For each
    component, in order of preference (``source`` records the least preferred step used):

    1. ``additive_combination``: the single at the same dose, measured in context c;
    2. ``additive_combination_nearest_dose``: the single at the nearest measured dose in c
       (distance in log dose);
    3. ``additive_combination_other_contexts``: the single's mean effect (same dose, else
       nearest dose) over the other contexts where it and a baseline are measured;
    4. a component found nowhere contributes zero effect (``..._missing_component``).

    Targets that are not combinations, and contexts without a baseline (no measured control
    on a grid with a control), fall back to the ``additive`` fixed-effect baseline and carry its
    ``source``.

``dose_interpolation``
    A target ``(c, "A@d")`` is predicted by linear interpolation in ``log(dose)`` between the
    two nearest measured doses of A in context c that bracket d (``dose_interpolation``), the
    nearest measured dose when d lies outside the measured range (``..._nearest_dose``), and
    otherwise (no other dose of A measured in c) the ``additive`` baseline's chain (baseline of
    c + the label's mean effect in other contexts, ...). Combinations are interpolated on the dose of their first
    component among labels with the same other components and doses.
"""

from __future__ import annotations

import numpy as np

from .._labels import parse_perturbation
from .._params import NoParams
from .._utils import RandomState
from ._base import GridData, MethodResult, as_targets
from ._registry import register
from ._stats import baseline_profiles, group_means
from .baselines import additive

_REF_KORKUT = "Korkut et al., eLife 2015 (additive reference of drug-pair responses)"


def _parsed_labels(data: GridData) -> list[list[tuple[str, float | None]]]:
    sep = data.combination_sep
    return [parse_perturbation(str(lab), sep=sep) for lab in data.perturbations]


def _treated(parsed: list, data: GridData):
    """``(index, components)`` of the non-control labels."""
    return [(k, comps) for k, comps in enumerate(parsed) if k != data.control]


def applies_combination(data: GridData) -> str | None:
    """``None`` when some perturbation label is a combination (``"A+B"``), else the reason."""
    if any(len(comps) >= 2 for _, comps in _treated(_parsed_labels(data), data)):
        return None
    return (
        f"no perturbation label is a combination (components joined by "
        f"{data.combination_sep!r}, e.g. 'A{data.combination_sep}B')"
    )


def _dose_groups(data: GridData) -> tuple[dict[tuple, list[tuple[float, int]]], dict]:
    """Labels grouped by everything but the first component's (positive) dose.

    Returns ``groups`` (key -> [(dose, perturbation index)]) and ``keyof`` (perturbation
    index -> (key, dose)).
    """
    groups: dict[tuple, list[tuple[float, int]]] = {}
    keyof = {}
    for k, comps in _treated(_parsed_labels(data), data):
        name, dose = comps[0]
        if dose is None or dose <= 0:
            continue
        key = (name, tuple(comps[1:]))
        keyof[k] = (key, dose)
        groups.setdefault(key, []).append((dose, k))
    return groups, keyof


def applies_dose(data: GridData) -> str | None:
    """``None`` when some drug has two or more positive doses among the labels, else why not."""
    groups, _ = _dose_groups(data)
    if not groups:
        return "no perturbation label carries a positive dose (e.g. 'A@1.5')"
    if max(len({d for d, _ in v}) for v in groups.values()) < 2:
        return "no perturbation occurs at two or more doses, so there is nothing to interpolate"
    return None


def _effects(data: GridData) -> tuple[np.ndarray, np.ndarray]:
    """``(C, A, p)`` effects (NaN where unusable) and the ``(C, p)`` baseline profiles."""
    gm = group_means(data)
    if data.control is None:
        base = np.zeros((data.n_contexts, data.n_features))
        has = np.ones(data.n_contexts, dtype=bool)
    else:
        base, has = baseline_profiles(data, gm)
        base = np.nan_to_num(base)
    ok = data.measured & has[:, None]
    if data.control is not None:
        ok[:, data.control] = False
    eff = np.where(ok[:, :, None], np.asarray(data.Y, dtype=np.float64) - base[:, None, :], np.nan)
    return eff, np.where(has[:, None], base, np.nan)


def _single_index(parsed) -> dict[str, list[tuple[float | None, int]]]:
    """Component name -> [(dose, perturbation index)] of the single-component labels."""
    out: dict[str, list[tuple[float | None, int]]] = {}
    for k, comps in enumerate(parsed):
        if len(comps) == 1:
            name, dose = comps[0]
            out.setdefault(name, []).append((dose, k))
    return out


def _log_distance(d1: float | None, d2: float | None) -> float:
    if d1 is None or d2 is None:
        return 0.0 if d1 == d2 else np.inf
    if d1 <= 0 or d2 <= 0:
        return 0.0 if d1 == d2 else np.inf
    return abs(np.log(d1) - np.log(d2))


def _component_effect(eff, singles, c, name, dose):
    """Effect of one component in context c and the preference step (0-3) that gave it."""
    cands = singles.get(name, [])
    if not cands:
        return None, 3
    order = sorted(cands, key=lambda dk: _log_distance(dk[0], dose))
    for dk in order:
        if _log_distance(dk[0], dose) > 0:
            break
        if np.isfinite(eff[c, dk[1], 0]):
            return eff[c, dk[1]], 0
    for dk in order:
        if np.isfinite(eff[c, dk[1], 0]):
            return eff[c, dk[1]], 1
    others = np.arange(eff.shape[0]) != c
    for dk in order:
        e = eff[others, dk[1]]
        e = e[np.isfinite(e[:, 0])]
        if e.shape[0]:
            return e.mean(axis=0), 2
    return None, 3


_STEPS = (
    "additive_combination",
    "additive_combination_nearest_dose",
    "additive_combination_other_contexts",
    "additive_combination_missing_component",
)


@register(
    "additive_combination",
    description="Combination = context baseline + sum of its singles' effects in the same context.",
    reference=_REF_KORKUT,
    applies=applies_combination,
)
def additive_combination(
    data: GridData, targets, params: NoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Predict a combination by the sum of its components' single effects (see module doc).

    The arguments are those of every method (:attr:`scimpute.methods.Method.fn`); the grid's
    labels are ``"A+B"`` or ``"A@dA+B@dB"``. The method has no parameters
    (:class:`~scimpute._params.NoParams`) and is deterministic.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["n_components"]`` (number of
    components whose effect was found) and ``source`` naming the step used.

    """
    t = as_targets(targets)
    parsed = _parsed_labels(data)
    res = additive(data, t)  # fallback for singles and contexts without baseline
    res.per_target = {"n_components": np.zeros(len(t))}
    if not len(t):
        return res
    eff, base = _effects(data)
    singles = _single_index(parsed)
    for k, (c, a) in enumerate(t):
        comps = parsed[a]
        if len(comps) < 2 or not np.isfinite(base[c, 0]):
            continue
        total = np.zeros(data.n_features)
        worst, found = 0, 0
        for name, dose in comps:
            e, step = _component_effect(eff, singles, c, name, dose)
            worst = max(worst, step)
            if e is not None:
                total += e
                found += 1
        if found == 0:
            continue
        res.prediction[k] = base[c] + total
        res.source[k] = _STEPS[worst]
        res.per_target["n_components"][k] = found
    return res


@register(
    "dose_interpolation",
    description="Linear interpolation in log dose between the measured doses of the same drug.",
    reference="Dose-response interpolation baseline",
    applies=applies_dose,
)
def dose_interpolation(
    data: GridData, targets, params: NoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Predict ``(c, "A@d")`` by interpolating A's measured doses in c in log dose.

    See the module docstring for the fallbacks; parameters as :func:`additive_combination`.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["dose_gap"]``: the log-dose
    distance to the nearest measured dose used (0 for an exact interpolation bracket's end).

    """
    t = as_targets(targets)
    res = additive(data, t)
    res.per_target = {"dose_gap": np.full(len(t), np.nan)}
    if not len(t):
        return res
    Y = np.asarray(data.Y, dtype=np.float64)
    groups, keyof = _dose_groups(data)
    for k, (c, a) in enumerate(t):
        if a not in keyof:
            continue
        key, dose = keyof[a]
        cand = [(dd, kk) for dd, kk in groups[key] if kk != a]
        meas = sorted((np.log(dd), kk) for dd, kk in cand if data.measured[c, kk])
        x = np.log(dose)
        if meas:
            xs = np.array([m[0] for m in meas])
            lo = np.nonzero(xs <= x)[0]
            hi = np.nonzero(xs >= x)[0]
            if lo.size and hi.size:
                i, j = lo[-1], hi[0]
                if i == j:
                    pred = Y[c, meas[i][1]]
                else:
                    f = (x - xs[i]) / (xs[j] - xs[i])
                    pred = (1 - f) * Y[c, meas[i][1]] + f * Y[c, meas[j][1]]
                res.prediction[k] = pred
                res.source[k] = "dose_interpolation"
                res.per_target["dose_gap"][k] = min(x - xs[i], xs[j] - x)
            else:
                i = int(np.argmin(np.abs(xs - x)))
                res.prediction[k] = Y[c, meas[i][1]]
                res.source[k] = "dose_interpolation_nearest_dose"
                res.per_target["dose_gap"][k] = abs(xs[i] - x)
    return res

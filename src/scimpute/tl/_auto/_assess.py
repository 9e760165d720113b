"""``auto`` end to end: out-of-fold predictions, rule, final fit, intervals, trust, records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import _keys as keys
from ..._params import Params
from ..._utils import RandomState, check_random_state
from ...methods import GridData, Method, MethodResult, as_targets
from ...methods._stats import fallback_chain, group_means, validated_order
from .._run import run_method
from ._conformal import Difficulty, fit_difficulty
from ._features import (
    Neighbours,
    component_support,
    context_difficulty,
    pair_features,
    share_matrix,
)
from ._holdout import support
from ._oof import OOFRecord, candidate_specs, out_of_fold
from ._params import AutoParams
from ._select import Rule, score, select_rule
from ._trust import Trust, beats_baseline, fit_trust, log_ratio

#: nominal levels of ``uns[key]["calibration"]``.
CALIBRATION_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass
class Assessment:
    """What ``auto`` (or ``interval=`` of any method) computes for the targets.

    ``result``: predictions and sources, with ``per_target["error"]`` and
    ``per_target["trust"]`` and the records in ``info``; ``lower``/``upper``: ``(n, p)``
    interval bounds (``None`` without a level); plus the fitted pieces for reuse.
    """

    result: MethodResult
    lower: np.ndarray | None
    upper: np.ndarray | None
    oof: OOFRecord
    rule: Rule
    difficulty: Difficulty
    trust: Trust


def _used(rule: Rule) -> list[str]:
    if rule.kind == "grid":
        return [rule.chosen]
    if rule.kind == "stack":
        return [c for c, w in rule.weights.items() if w > 0] or [rule.candidates[0]]
    return list(rule.candidates)


def _difficulty_features(
    sup, preds, rule_pred, base_pred, diags, var, nb, pairs, fold=None, names=None
):
    """Features of the difficulty and trust models.

    :func:`~._features.pair_features` of every candidate, the rule's distance to the baseline
    and to the candidates' mean, and the :class:`~._features.Neighbours` features.
    """
    x, n = pair_features(sup, preds, base_pred, diags, var, names)
    mean = np.mean(np.stack(list(preds.values())), axis=0)
    d_base = np.log1p(np.mean((rule_pred - base_pred) ** 2 / var, axis=1))
    d_mean = np.log1p(np.mean((rule_pred - mean) ** 2 / var, axis=1))
    xn = nb.features(pairs, rule_pred / np.sqrt(var), fold)
    return np.column_stack([x, d_base, d_mean, xn]), n


@dataclass
class Fitted:
    """What ``auto`` learns from the measured pairs alone, before any target is predicted.

    The out-of-fold record, the chosen rule (and the candidates it uses), the difficulty and
    trust models, and the records for ``.uns``. :func:`apply_assessment` turns it into
    predictions, intervals, errors and trust for any targets (the same grid, or the grid with
    a few more pairs hidden, as in a leave-one-out benchmark).
    """

    oof: OOFRecord
    rule: Rule
    used: list[str]
    candidates: dict[str, tuple[Method, Params]]
    sel_names: list[str]
    d_names: list[tuple[str, str]]
    difficulty: Difficulty
    trust: Trust
    info: dict
    neighbours: Neighbours | None = None


def _diag_names(names) -> list[tuple[str, str]]:
    return [
        tuple(n.split(":", 1))
        for n in names
        if n.count(":") and not n.endswith("distance_to_baseline")
    ]


def fit_assessment(
    data: GridData,
    targets,
    candidates: dict[str, tuple[Method, Params]] | None = None,
    params: AutoParams | None = None,
    *,
    random_state: RandomState = 0,
) -> Fitted:
    """The inner cross-validation of ``auto`` on ``data``: OOF, rule, difficulty, trust.

    ``targets`` only set the importance weights of the hold-out (their supports). See
    :func:`assess` for the parameters.
    """
    opts = AutoParams() if params is None else params
    t = as_targets(targets)
    skipped: dict[str, str] = {}
    if candidates is None:
        candidates, skipped = candidate_specs(data, opts.candidates, opts.exclude)
    with blas_threads(data):  # the CLI and benchmarks call this directly
        oof = out_of_fold(
            data,
            candidates,
            targets=t,
            n_folds=opts.n_folds,
            screen_margin=opts.screen_margin if len(candidates) > 1 else None,
            random_state=random_state,
            progress=opts.progress,
        )
    oof.skipped.update(skipped)
    return fit_from_oof(data, oof, candidates, opts)


def fit_from_oof(
    data: GridData,
    oof: OOFRecord,
    candidates: dict[str, tuple[Method, Params]],
    params: AutoParams | None = None,
) -> Fitted:
    """The rule, difficulty and trust models of :func:`fit_assessment` from its OOF record.

    Everything after the candidates' out-of-fold runs (cheap: no candidate is run).
    """
    opts = AutoParams() if params is None else params
    x_sel, sel_names = pair_features(
        oof.support, oof.preds, oof.baseline_pred, oof.diagnostics, oof.feature_var
    )
    rule, rule_scores, cv_pred, _ = select_rule(oof, x_sel, opts.rules, opts.tolerance)
    used = _used(rule)
    # difficulty and trust: on the cross-fitted predictions of the chosen rule
    ratio = log_ratio(oof.truth, cv_pred, oof.baseline_pred)
    nb = Neighbours(
        oof.pairs,
        oof.fold,
        cv_pred / np.sqrt(oof.feature_var),
        np.log(np.maximum(oof.nmse(cv_pred), 1e-12)),
        ratio,
        share_matrix(data),
        (data.n_contexts, data.n_perturbations),
    )
    x_d, d_names = _difficulty_features(
        oof.support,
        oof.preds,
        cv_pred,
        oof.baseline_pred,
        oof.diagnostics,
        oof.feature_var,
        nb,
        oof.pairs,
        oof.fold,
    )
    n_nb = len(nb.names())  # the Neighbours columns come last
    nearest = nb.groups(x_d.shape[1] - n_nb, x_d.shape[1])
    diff = fit_difficulty(oof.truth - cv_pred, x_d, oof.fold, oof.weight, oof.feature_var, nearest)
    beats = beats_baseline(oof.truth, cv_pred, oof.baseline_pred)
    trust = fit_trust(x_d, np.log(diff.error_cv), beats, ratio, oof.fold, oof.weight, nearest)
    info = {
        keys.AUTO_RECORD: {
            "candidates": oof.candidates,
            "screened_out": [c for c in oof.screen if c not in oof.preds],
            "not_applicable": dict(oof.skipped),
            "cv_scores": {c: score(oof, oof.preds[c]) for c in oof.candidates},
            "screen_scores": dict(oof.screen),
            "rule": rule.kind,
            "rule_scores": rule_scores,
            **rule.describe(),
            "baseline": oof.baseline,
            "n_folds": oof.n_folds,
            "n_heldout": int(oof.truth.shape[0]),
            "error_model": diff.model.kind,
            "error_model_scores": dict(diff.family_scores),
            "trust_model": trust.kind,
            "trust_model_scores": dict(trust.kind_scores),
        },
        keys.CALIBRATION: {
            "nominal": list(CALIBRATION_LEVELS),
            "empirical": diff.coverage(CALIBRATION_LEVELS, oof.fold),
            "n": int(oof.truth.shape[0]),
        },
        keys.TRUST_CV: {
            "context": np.asarray(data.contexts)[oof.pairs[:, 0]].astype(str),
            "perturbation": np.asarray(data.perturbations)[oof.pairs[:, 1]].astype(str),
            "trust": trust.trust_cv,
            "error": oof.nmse(cv_pred),
            "predicted_error": diff.error_cv,
            "beats_baseline": beats,
        },
    }
    return Fitted(
        oof, rule, used, candidates, sel_names, _diag_names(d_names), diff, trust, info, nb
    )


def apply_assessment(
    fitted: Fitted,
    data: GridData,
    targets,
    *,
    level: float | None = 0.9,
    final: dict[str, MethodResult] | None = None,
    random_state: RandomState = 0,
) -> Assessment:
    """Predictions, intervals, errors and trust of ``targets`` from a :class:`Fitted`.

    The candidates the rule uses are run on ``data`` for ``targets`` unless ``final`` holds
    their results already.
    """
    t = as_targets(targets)
    oof, rule, used = fitted.oof, fitted.rule, fitted.used
    final = dict(final or {})
    ran = list(oof.preds)  # every candidate: their disagreement is a feature of the error
    with blas_threads(data):
        for name in ran:
            if name not in final:
                m, typed = fitted.candidates[name]
                final[name] = run_method(m, data, t, random_state=random_state, params=typed)
    preds_t = {c: np.asarray(final[c].prediction, dtype=np.float64) for c in ran}
    diags_t = {
        c: {
            k: np.asarray(final[c].per_target[k], float)
            for k in oof.diagnostics[c]
            if k in final[c].per_target
        }
        for c in ran
    }
    sup_t = np.column_stack(
        [
            support(data.treated_mask(), t),
            context_difficulty(data, t, oof.feature_var),
            component_support(data, t),
        ]
    )
    gm = group_means(data)
    base_t = fallback_chain(data, t, list(validated_order(data, gm)), gm).prediction
    x_sel_t = None
    if rule.kind == "per_pair":
        names = _diag_names(fitted.sel_names)
        x_sel_t, _ = pair_features(sup_t, preds_t, base_t, diags_t, oof.feature_var, names)
    pred_t, picked = rule.predict(preds_t, x_sel_t)
    source = picked.copy()
    for c in used:  # a candidate's own fallbacks keep their names
        here = picked == c
        source[here] = np.asarray(final[c].source, dtype=object)[here]
    x_dt, _ = _difficulty_features(
        sup_t,
        preds_t,
        pred_t,
        base_t,
        diags_t,
        oof.feature_var,
        fitted.neighbours,
        t,
        None,
        fitted.d_names,
    )
    diff = fitted.difficulty
    err_t = diff.error(x_dt)
    trust_t = fitted.trust.predict(x_dt, np.log(err_t))
    lower = upper = None
    info = dict(fitted.info)
    if level is not None:
        lower, upper = diff.intervals(pred_t, err_t, level)
        info[keys.INTERVAL] = {
            "level": float(level),
            "quantile": diff.quantile(level),
            "baseline": oof.baseline,
        }
    res = MethodResult(
        prediction=pred_t,
        source=source,
        per_target={keys.ERROR: err_t, keys.TRUST: trust_t},
        info=info,
    )
    return Assessment(res, lower, upper, oof, rule, diff, fitted.trust)


def assess(
    data: GridData,
    targets,
    candidates: dict[str, tuple[Method, Params]] | None = None,
    params: AutoParams | None = None,
    *,
    level: float | None = 0.9,
    final: dict[str, MethodResult] | None = None,
    random_state: RandomState = 0,
) -> Assessment:
    """Choose, fit and assess the candidates for ``targets`` (the steps of ``auto``).

    :func:`fit_assessment` (the inner cross-validation) then :func:`apply_assessment`.

    Parameters
    ----------
    data
        The grid's arrays (targets unmeasured).
    targets
        ``(n, 2)`` pairs to predict.
    candidates
        ``{name: (method, typed params)}``; ``None``: :func:`~._oof.candidate_specs` with
        ``params.candidates`` / ``params.exclude``.
    params
        :class:`AutoParams` (defaults when ``None``).
    level
        Nominal coverage of the intervals, or ``None`` for none.
    final
        Results of candidates already run on ``data`` for ``targets`` (not re-run).
    random_state
        Seed of the inner folds and the candidates.

    """
    rng = check_random_state(random_state)
    with blas_threads(data):
        fitted = fit_assessment(
            data, targets, candidates, params, random_state=int(rng.integers(0, 2**31 - 1))
        )
        seed = int(rng.integers(0, 2**31 - 1))
        return apply_assessment(fitted, data, targets, level=level, final=final, random_state=seed)


#: grids with at most this many measured pairs are assessed with one BLAS thread.
ONE_THREAD_MAX = 2000


def blas_threads(data: GridData):
    """One BLAS thread for grids of at most :data:`ONE_THREAD_MAX` measured pairs.

    ``auto`` factorises many small matrices (the candidates' kernels, one per inner fold);
    multithreaded OpenBLAS spins on them and runs 10-100x slower on a busy machine (an
    eigendecomposition of 326 x 326: 4.8 s with 2 threads vs 0.05 s with one, at load 20 on
    2 cores). Predictions do not change.
    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    return threadpool_limits(1 if int(data.measured.sum()) <= ONE_THREAD_MAX else None)


def auto_method(
    data: GridData, targets, params: AutoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """The registered ``auto`` method: :func:`assess` without intervals, its result only."""
    return assess(data, targets, None, params, level=None, random_state=random_state).result

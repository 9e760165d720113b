"""Hide measured pairs fold by fold, impute them with each method, score the predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._keys import AUTO_METHOD, ERROR, TRUST, Key
from .._params import Params, check_random_state_value, param
from .._utils import RandomState, check_random_state, h5ad_safe
from ..methods import GridData, Method, MethodResult, get_method
from ..methods._stats import fallback_chain, group_means, validated_order
from ..metrics import METRICS, fold_scores
from ._data import to_grid_data
from ._impute import check_interval
from ._run import check_applicable, check_result, prepare_method, run_method

Holdout = Literal["leave_one_out", "random", "contexts", "perturbations"]
HOLDOUTS: tuple[str, ...] = get_args(Holdout)
#: the method every fold's ``relative_mse`` is measured against.
REFERENCE = "context_mean"


@dataclass(frozen=True)
class CrossValidateParams(Params):
    """Options of :func:`cross_validate` besides the methods (documented there)."""

    holdout: Holdout = param("leave_one_out", doc="Which pairs are hidden together.")  # noqa: RUF009
    n_folds: int = param(5, ge=2, doc="Folds of the grouped and random hold-outs.")
    progress: bool = param(True, doc="Show a progress bar over folds.")


def make_folds(
    data: GridData, holdout: str, n_folds: int, random_state: RandomState
) -> list[np.ndarray]:
    """Split the measured non-control pairs into folds of ``(n, 2)`` target indices.

    ``leave_one_out``: one pair per fold. ``random``: pairs shuffled into ``n_folds`` folds.
    ``contexts`` / ``perturbations``: every non-control pair of a group of contexts
    (perturbations) is hidden together, groups shuffled into ``n_folds`` folds; control
    profiles stay visible. ``holdout`` and ``n_folds`` are checked by
    :class:`CrossValidateParams`.
    """
    cand = np.argwhere(data.treated_mask())
    if cand.shape[0] == 0:
        raise ValueError("The grid has no measured non-control pairs to hold out.")
    if holdout == "leave_one_out":
        return [cand[i : i + 1] for i in range(cand.shape[0])]
    rng = check_random_state(random_state)
    if holdout == "random":
        perm = rng.permutation(cand.shape[0])
        return [cand[np.sort(f)] for f in np.array_split(perm, min(n_folds, cand.shape[0]))]
    axis = 0 if holdout == "contexts" else 1
    groups = np.unique(cand[:, axis])
    groups = groups[rng.permutation(groups.size)]
    folds = []
    for g in np.array_split(groups, min(n_folds, groups.size)):
        folds.append(cand[np.isin(cand[:, axis], g)])
    return folds


def _normalise_methods(methods, method_params: dict[str, Any]) -> dict[str, tuple[str, dict]]:
    """``methods`` as ``{label: (method name, params)}``."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        out = {}
        for label, spec in methods.items():
            if isinstance(spec, str):
                out[str(label)] = (spec, {})
            elif isinstance(spec, Mapping) and "method" in spec:
                spec = dict(spec)
                out[str(label)] = (spec.pop("method"), spec)
            else:
                raise TypeError(
                    f"methods[{label!r}] must be a method name or a dict with a 'method' entry "
                    "and its parameters."
                )
    elif isinstance(methods, Sequence):
        out = {str(m): (str(m), {}) for m in methods}
    else:
        raise TypeError("methods must be a name, a list of names or a dict of label -> spec.")
    if not out:
        raise ValueError("methods is empty.")
    shared = {}
    for k, v in method_params.items():
        if k in out and isinstance(v, Mapping):
            out[k] = (out[k][0], {**out[k][1], **v})
        else:
            shared[k] = v
    for k, v in shared.items():
        takers = [lab for lab, (name, _) in out.items() if k in get_method(name).params.names()]
        if not takers:
            raise TypeError(
                f"Parameter {k!r} is not accepted by any of the methods {list(out)}. Pass "
                "method-specific parameters as a dict named after the method label."
            )
        for lab in takers:
            out[lab] = (out[lab][0], {k: v, **out[lab][1]})
    return out


def cross_validate(
    grid: AnnData,
    *,
    methods: str | Sequence[str] | Mapping[str, Any] = (
        "context_mean",
        "perturbation_mean",
        "two_way_mean",
        "additive",
    ),
    holdout: Holdout = "leave_one_out",
    n_folds: int = 5,
    random_state: RandomState = 0,
    key_added: str | None = Key.uns.cross_validation,
    progress: bool = True,
    interval: float | None = None,
    **method_params: Any,
) -> pd.DataFrame:
    """Hide measured pairs fold by fold, impute them with each method, and score them.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`.
    methods
        A method name, a list of names, or a dict ``{label: name}`` /
        ``{label: {"method": name, **params}}`` to compare variants of one method.
    holdout
        ``"leave_one_out"`` (each measured non-control pair in turn), ``"random"`` (pairs in
        ``n_folds`` random folds), ``"contexts"`` or ``"perturbations"`` (all pairs of a group
        of contexts / perturbations at once: new cell types, new drugs).
    n_folds
        Number of folds for the grouped and random hold-outs.
    random_state
        Seed or generator, for the folds and for the methods.
    key_added
        ``grid.uns`` key of the stored table; ``None`` writes nothing.
    progress
        Show a progress bar over folds.
    interval
        Nominal coverage (e.g. ``0.9``) of conformal intervals computed for every hidden pair
        from the fold's own measured pairs only (an inner cross-validation the outer fold
        never sees, :mod:`scimpute.tl._auto._conformal`); adds the columns of
        :data:`INTERVAL_COLUMNS`. ``None`` (default): none. Costs the inner folds of every
        method in every outer fold.
    **method_params
        A parameter passed to every method that accepts it, or ``label={...}`` for one method.
        Every method's parameters are checked by its spec before any work. A method whose
        record has a ``grouped_refit`` hook (see :class:`scimpute.methods.Method`) is fitted
        by that hook, with all folds at once, instead of once per fold.

    Returns
    -------
    One row per (method, hidden pair) with ``method``, ``context``, ``perturbation``,
    ``fold``, ``source`` (estimator or fallback used) and the scores ``r2`` (1 - SSE/SST over
    features), ``r2_effect``, ``pearson_effect``, ``cosine_effect`` (on the profile minus
    the context's control, on the profile itself when the grid has no control), ``mse`` and
    ``relative_mse`` (SSE / SSE of ``context_mean`` on the same fold). With ``interval``:
    ``coverage`` (fraction of the pair's features inside their interval), ``interval_width``
    (mean width over features), ``predicted_error`` and ``trust`` (as written by
    :func:`scimpute.tl.impute`), ``error`` (the pair's real normalised error, the quantity
    ``predicted_error`` estimates) and ``beats_baseline`` (whether its SSE is at most that of
    the fold's validated best baseline, what ``trust`` estimates). Also written to
    ``grid.uns[key_added]`` as ``{"scores": DataFrame, "params": {...}}`` (h5ad-safe).
    :func:`scimpute.tl.summarize_cross_validation` condenses it.

    """
    opts = CrossValidateParams.from_kwargs(
        "cross_validate", {"holdout": holdout, "n_folds": n_folds, "progress": progress}
    )
    if interval is not None:
        interval = check_interval("cross_validate", interval, owner="cross_validate")
    random_state = check_random_state_value("cross_validate", random_state)
    if key_added is not None and (not isinstance(key_added, str) or key_added == Key.uns.grid):
        raise ValueError(
            f"key_added must be a string other than {Key.uns.grid!r} (the grid's record) or "
            f"None, got {key_added!r}."
        )
    specs = _normalise_methods(methods, method_params)
    resolved = {lab: prepare_method(name, params) for lab, (name, params) in specs.items()}
    data, _ = to_grid_data(grid)
    for m, _ in resolved.values():
        check_applicable(m, data)
    rng = check_random_state(random_state)
    folds = make_folds(data, opts.holdout, opts.n_folds, rng)
    fold_seeds = rng.integers(0, 2**31 - 1, size=len(folds))
    grouped = {
        lab: _grouped_results(m, data, folds, typed, int(rng.integers(0, 2**31 - 1)), opts)
        for lab, (m, typed) in resolved.items()
        if m.grouped_refit is not None
    }
    reference = prepare_method(REFERENCE)

    tables = []
    for f, hidden in enumerate(tqdm(folds, desc="cross-validation", disable=not opts.progress)):
        mask = data.measured.copy()
        mask[hidden[:, 0], hidden[:, 1]] = False
        fold = data.with_measured(mask)
        seed = int(fold_seeds[f])
        ref = run_method(
            reference[0], fold, hidden, random_state=seed, params=reference[1]
        ).prediction
        for lab, (m, typed) in resolved.items():
            res = grouped[lab][f] if lab in grouped else None
            if interval is not None:
                res, extra = _with_interval(m, typed, fold, data, hidden, res, interval, seed)
            elif res is None:
                res = run_method(m, fold, hidden, random_state=seed, params=typed)
            table = fold_scores(data, lab, hidden, res.prediction, res.source, ref, f)
            if interval is not None:
                table = table.assign(**extra)
            tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    if key_added is not None:
        grid.uns[key_added] = {
            Key.uns.scores: table,
            "params": h5ad_safe(
                {
                    "methods": {
                        lab: {"method": m.name, **typed.to_dict()}
                        for lab, (m, typed) in resolved.items()
                    },
                    "holdout": opts.holdout,
                    "n_folds": len(folds),
                    "interval": interval,
                    "random_state": random_state,
                }
            ),
        }
    return table


#: columns added by ``cross_validate(..., interval=level)``.
INTERVAL_COLUMNS = (
    "coverage",
    "interval_width",
    "predicted_error",
    "trust",
    "error",
    "beats_baseline",
)


def _with_interval(m, typed, fold, data, hidden, res, level, seed):
    """A method's result on one outer fold and its interval columns (inner CV on the fold)."""
    from ._auto import AutoParams, assess
    from ._auto._trust import beats_baseline

    if m.name == AUTO_METHOD:
        a = assess(fold, hidden, None, typed, level=level, random_state=seed)
    else:
        if res is None:
            res = run_method(m, fold, hidden, random_state=seed, params=typed)
        a = assess(
            fold, hidden, {m.name: (m, typed)}, AutoParams(rules=("grid",)), level=level,
            final={m.name: res}, random_state=seed,
        )  # fmt: skip
    out = a.result if m.name == AUTO_METHOD else res
    y = np.asarray(data.Y[hidden[:, 0], hidden[:, 1]], dtype=np.float64)
    pred = np.asarray(out.prediction, dtype=np.float64)
    gm = group_means(fold)
    base = fallback_chain(fold, hidden, list(validated_order(fold, gm)), gm).prediction
    extra = {
        "coverage": ((y >= a.lower) & (y <= a.upper)).mean(axis=1),
        "interval_width": (a.upper - a.lower).mean(axis=1),
        "predicted_error": a.result.per_target[ERROR],
        "trust": a.result.per_target[TRUST],
        "error": np.mean((pred - y) ** 2 / a.oof.feature_var, axis=1),
        "beats_baseline": beats_baseline(y, pred, base),
    }
    return out, extra


def _grouped_results(
    method: Method,
    data: GridData,
    folds: list[np.ndarray],
    params: Params,
    seed: int,
    opts: CrossValidateParams,
) -> list[MethodResult]:
    """Every fold's result from the method's ``grouped_refit`` hook, checked like ``fn``'s."""
    out = method.grouped_refit(data, folds, params, random_state=seed, progress=opts.progress)
    if len(out) != len(folds):
        raise RuntimeError(
            f"grouped_refit of {method.name!r} returned {len(out)} results for {len(folds)} folds."
        )
    return [check_result(method, f, r, data.n_features) for f, r in zip(folds, out, strict=True)]


#: columns of a cross-validation table that are not metrics.
_ID_COLUMNS = (
    Key.table.method,
    Key.table.context,
    Key.table.perturbation,
    Key.table.fold,
    Key.table.source,
)


def summarize_cross_validation(
    scores: pd.DataFrame | AnnData,
    *,
    key: str = Key.uns.cross_validation,
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Median and mean of each metric per method, and the fraction beating ``context_mean``.

    Parameters
    ----------
    scores
        The table returned by :func:`cross_validate`, or a grid holding it in ``.uns[key]``.
    key
        ``.uns`` key when ``scores`` is a grid.
    metrics
        Metrics to summarise.

    Returns
    -------
    One row per method, sorted by median ``r2`` (by the first metric when ``r2`` is not
    among ``metrics``; best first): ``n_pairs``, ``median_<metric>``, ``mean_<metric>`` and,
    when the table has ``relative_mse``, ``frac_better_than_context_mean`` (fraction of
    pairs with ``relative_mse < 1``).

    Raises
    ------
    ValueError
        When the table lacks the ``method`` column or a metric is not one of its columns
        (the message lists those it has).

    """
    if isinstance(scores, AnnData):
        if key not in scores.uns:
            raise KeyError(f"grid.uns[{key!r}] not found; run scimpute.tl.cross_validate first.")
        rec = scores.uns[key]
        if not isinstance(rec, Mapping) or Key.uns.scores not in rec:
            raise ValueError(
                f"grid.uns[{key!r}] is not a cross-validation record (no 'scores' table); run "
                "scimpute.tl.cross_validate or pass the table."
            )
        scores = rec[Key.uns.scores]
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(
            f"scores must be the DataFrame of cross_validate or a grid, got "
            f"{type(scores).__name__}."
        )
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if Key.table.method not in scores.columns:
        raise ValueError(
            "scores lacks the 'method' column: pass the table returned by "
            "scimpute.tl.cross_validate (columns method, context, perturbation, fold, ...)."
        )
    available = [
        c
        for c in scores.columns
        if c in METRICS or (c not in _ID_COLUMNS and pd.api.types.is_numeric_dtype(scores[c]))
    ]
    unknown = [m for m in metrics if m not in available]
    if unknown:
        close = get_close_matches(unknown[0], available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(map(repr, available)) or "none"
        raise ValueError(
            f"Unknown metric(s) {', '.join(map(repr, unknown))}.{hint} Metric columns of the "
            f"table: {listed}."
        )
    if not metrics:
        raise ValueError("metrics is empty; name at least one, e.g. metrics=['r2'].")
    g = scores.groupby(Key.table.method, sort=False)
    out = pd.DataFrame({"n_pairs": g.size()})
    for m in metrics:
        out[f"median_{m}"] = g[m].median()
    for m in metrics:
        out[f"mean_{m}"] = g[m].mean()
    if "relative_mse" in scores.columns:
        out["frac_better_than_context_mean"] = g["relative_mse"].apply(
            lambda s: float((s < 1).mean())
        )
    first = "r2" if "r2" in metrics else metrics[0]
    return out.sort_values(f"median_{first}", ascending=False)

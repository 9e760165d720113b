"""The one entry point that imputes a grid with any registered method."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import AUTO_METHOD, AUTO_RECORD, SOURCE_CONTROL_FILL, SOURCE_MEASURED, Key
from .._params import ParamError, check_random_state_value
from .._records import read_grid_info
from .._utils import RandomState, h5ad_safe
from ._data import default_targets, to_grid_data
from ._run import check_applicable, prepare_method, run_method
from ._sink import DiskSink, GridSink, staging_path
from ._store import ControlFill, check_store, write_annotations, write_layers

#: rows per block of the copies and differences of the completed layers
_BLOCK_ROWS = 16384

#: ``.uns`` keys that belong to the grid and to other tools: never a ``key_added`` of impute.
RESERVED_UNS = (Key.uns.grid, Key.uns.cross_validation)


def _is_impute_record(value) -> bool:
    return isinstance(value, Mapping) and "method" in value and "n_imputed" in value


def _structure_columns(grid: AnnData) -> set[str]:
    info = read_grid_info(grid)
    return {info.context_key, info.perturbation_key, Key.obs.measured, Key.obs.n_cells}


def _check_columns(grid: AnnData, key: str, names) -> None:
    """Refuse names that are the grid's own obs columns (labels, measured, n_cells)."""
    clash = _structure_columns(grid) & set(names)
    if clash:
        raise ValueError(
            f"key_added={key!r} is reserved: impute would write {sorted(clash)}, the name(s) of "
            "the grid's own obs columns; choose another key_added."
        )


def check_key_added(grid: AnnData, key) -> None:
    """Refuse a ``key_added`` that would overwrite the grid's structure or foreign entries.

    Reserved: the grid's record and the cross-validation table in ``.uns``, its label,
    ``measured`` and ``n_cells`` columns in ``.obs``, and any ``.uns`` entry, layer or obs
    column of that name that a previous :func:`impute` did not write (re-running ``impute``
    with the same key replaces its own results).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key_added must be a non-empty string, got {key!r}.")
    if key in RESERVED_UNS:
        raise ValueError(
            f"key_added={key!r} is reserved (grid.uns[{key!r}] belongs to the grid or to "
            "cross_validate); choose another name."
        )
    _check_columns(grid, key, [key, *_own_obs(key)])
    if key in grid.uns and not _is_impute_record(grid.uns[key]):
        raise ValueError(
            f"grid.uns[{key!r}] exists and was not written by impute; choose another "
            "key_added or delete that entry first."
        )
    own = key in grid.uns
    written = [("layers", n, n in grid.layers) for n in _own_layers(key)] + [
        ("obs", n, n in grid.obs.columns) for n in _own_obs(key)
    ]
    foreign = [f"{where}[{n!r}]" for where, n, exists in written if exists and not own]
    if foreign:
        raise ValueError(
            f"key_added={key!r} would overwrite {', '.join(foreign)}, which impute did not "
            "write; choose another key_added."
        )


def _own_layers(key: str) -> tuple[str, ...]:
    """Layers impute writes under ``key`` (the intervals only with ``interval``)."""
    return (key, Key.layers.effect(key), Key.layers.lower(key), Key.layers.upper(key))


def _own_obs(key: str) -> tuple[str, ...]:
    """Obs columns impute writes under ``key`` besides the method's diagnostics."""
    return (Key.obs.source(key), Key.obs.error(key), Key.obs.trust(key))


def check_interval(method: str, interval, owner: str = "impute") -> float | None:
    """The interval level of a call: ``None``/``False`` off, 0.9 by default for ``auto``."""
    if interval is None:
        return 0.9 if method == AUTO_METHOD else None
    if interval is False:
        return None
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < 1:
        raise ParamError(f"{owner}: interval must be a number in (0, 1) or None, got {interval!r}.")
    return float(interval)


def _assess(m, data, targets, params, res, level, random_state):
    """Intervals, error and trust of ``res`` (``auto``'s own, or a fixed method's by CV)."""
    from ._auto import AutoParams, assess

    if m.name == AUTO_METHOD:
        return assess(data, targets, None, params, level=level, random_state=random_state)
    opts = AutoParams(rules=("grid",))
    return assess(
        data, targets, {m.name: (m, params)}, opts, level=level, final={m.name: res},
        random_state=random_state,
    )  # fmt: skip


def _fill_controls(data, completed: np.ndarray, source: np.ndarray) -> int:
    """Fill unmeasured control rows with the mean measured control profile of other contexts."""
    if data.control is None:
        return 0
    a = data.control
    has = data.measured[:, a]
    missing = ~has
    if not missing.any():
        return 0
    if not has.any():
        source[missing, a] = "unavailable"
        return 0
    completed[missing, a] = data.Y[has, a].astype(np.float64).mean(axis=0)
    source[missing, a] = SOURCE_CONTROL_FILL
    return int(missing.sum())


def _run_one(m, data, targets, params, random_state, client, out=None):
    """Run one method here (into the sink ``out``), or on the workers of a dask ``client``."""
    if client is None:
        return run_method(m, data, targets, random_state=random_state, params=params, out=out)
    from ._distributed import run_distributed

    res = run_distributed(client, m, data, targets, random_state=random_state, params=params)
    if out is not None:
        _copy_into(out, res)
    return res


def _copy_into(sink, res) -> None:
    """Copy ``res.prediction`` (an array) into ``sink`` block by block; it becomes the sink."""
    for lo in range(0, len(sink), _BLOCK_ROWS):
        sink[lo : lo + _BLOCK_ROWS] = res.prediction[lo : lo + _BLOCK_ROWS]
    res.prediction = sink


def _rows_in_grid_order(data, inv: np.ndarray) -> np.ndarray:
    """A float32 copy of the profiles in the grid's row order: the completed layer."""
    flat = data.Y.reshape(-1, data.n_features)
    if np.array_equal(inv, np.arange(inv.size)):
        return np.array(flat, dtype=np.float32, copy=True)
    out = np.empty(flat.shape, dtype=np.float32)
    for lo in range(0, inv.size, _BLOCK_ROWS):
        out[lo : lo + _BLOCK_ROWS] = flat[inv[lo : lo + _BLOCK_ROWS]]
    return out


def _effect_rows(data, completed: np.ndarray, order, inv) -> np.ndarray:
    """The effect layer: completed profiles minus the context's measured control profile.

    NaN rows where the context's control is not measured; the profiles themselves when the
    grid has no control. In grid row order, block by block, float32.

    ``order[f]`` is the grid row of flat pair ``f``, ``inv[r]`` the flat pair of row ``r``.
    """
    if data.control is None:
        return completed.copy()
    n_a = data.n_perturbations
    has = data.measured[:, data.control]
    ctrl_rows = order[np.arange(data.n_contexts) * n_a + data.control]
    ctrl = np.full((data.n_contexts, data.n_features), np.nan, dtype=np.float32)
    ctrl[has] = completed[ctrl_rows[has]]
    eff = np.empty_like(completed)
    for lo in range(0, inv.size, _BLOCK_ROWS):
        ctx = inv[lo : lo + _BLOCK_ROWS] // n_a
        np.subtract(completed[lo : lo + _BLOCK_ROWS], ctrl[ctx], out=eff[lo : lo + _BLOCK_ROWS])
    return eff


def impute(
    grid: AnnData,
    *,
    method: str = AUTO_METHOD,
    interval: float | None = None,
    key_added: str | None = None,
    random_state: RandomState = 0,
    copy: bool = False,
    client: Any = None,
    out_store: str | os.PathLike | None = None,
    overwrite_store: bool = False,
    **method_params: Any,
) -> AnnData | None:
    """Predict the profile of every unmeasured (context, perturbation) pair of a grid.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`. Rows with
        ``obs["measured"] == False`` are imputed; their ``X`` is ignored.
    method
        Name of a registered method; :func:`scimpute.methods.available_methods` lists them
        (``"context_mean"``, ``"perturbation_mean"``, ``"two_way_mean"``, ``"additive"``, ...).
        ``"auto"`` (default) runs every method that applies to the grid with its validated
        settings and keeps the rule (one method for the grid, a method per pair, or a
        non-negative stack) that wins a nested cross-validation on the measured pairs whose
        hold-out is weighted to look like the real gaps (:class:`scimpute.tl._auto.AutoParams`
        lists its options; :mod:`scimpute.tl._auto._holdout` documents the hold-out).
    interval
        Nominal coverage of conformal prediction intervals per imputed feature value, e.g.
        ``0.9``; ``None`` means 0.9 for ``"auto"`` and no intervals for other methods;
        ``False`` turns them off. For a fixed method the intervals cost ``n_folds`` extra fits
        (its out-of-fold residuals); ``"auto"`` has them for free.
    key_added
        Name under which results are stored; defaults to ``f"imputed_{method}"``.
    random_state
        Seed (int) or :class:`numpy.random.Generator` for methods with random steps.
    copy
        Return a modified copy instead of writing into ``grid``.
    client
        A ``dask.distributed.Client``: the targets are split into groups of whole contexts
        and run on its workers, with the same result as without it
        (:mod:`scimpute.tl._distributed`; ``uns[key]["distributed"]`` records the groups).
    out_store
        Path of a zarr store: the two completed layers are written there block by block
        (never built in memory; the method's predictions are staged in a float32 file next
        to the store, ``.<name>.predictions-<pid>.f32``, removed afterwards) with ``obs``,
        ``var`` and ``uns``, and not added to the grid
        (``uns[key]["out_store"]`` names the path); read it back with
        ``anndata.experimental.read_lazy`` (see :mod:`scimpute.tl._store`).
    overwrite_store
        Replace an existing ``out_store`` (otherwise an existing path raises
        :class:`FileExistsError` before any work).
    **method_params
        Parameters of the method, declared by its spec (e.g.
        :class:`scimpute.methods.ntk.NtkParams`; :func:`scimpute.methods.available_methods`
        lists them). An unknown one raises a :class:`TypeError` listing the accepted ones, an
        ill-typed or out-of-range one a :class:`~scimpute._params.ParamError`
        (``"<method>: <name> must be ..."``), before any work.

    Returns
    -------
    ``None``, or a copy of ``grid`` if ``copy=True``, with

    - ``layers[key]``: completed grid (measured rows keep their values, unmeasured rows are
      predicted; unmeasured control rows hold the mean control profile of the other contexts);
    - ``layers[f"{key}_effect"]``: completed profile minus the context's *measured* control
      profile (NaN rows where the control is not measured; the profiles themselves when the
      grid has no control);
    - ``obs[f"{key}_source"]``: categorical naming what produced each row (``"measured"``, the
      method, or the fallback used, ``"control_mean"`` for filled control rows);
    - ``obs[f"{key}_{name}"]``: each per-pair diagnostic of the method (NaN for rows that were
      not imputed);
    - ``uns[key]``: ``{"method", "params", "n_imputed", "fallbacks", ...}`` plus the method's
      diagnostics; ``params`` holds every parameter of the method's spec (the typed values,
      h5ad-safe) and ``random_state``.

    With intervals (``interval`` set, or ``method="auto"``):

    - ``layers[f"{key}_lower"]``, ``layers[f"{key}_upper"]``: bounds of the conformal
      interval of every feature of every imputed pair (NaN on measured and control rows),
      :mod:`scimpute.tl._auto._conformal` (guarantee: marginal coverage at the nominal level
      when the real gaps are exchangeable with the weighted hidden pairs);
    - ``obs[f"{key}_error"]``: the predicted normalised error of the pair, an estimate of
      ``mean_j (yhat_j - y_j)^2 / v_j`` with ``v_j`` the variance of feature j over the
      grid's measured non-control profiles (0 is perfect, 1 is an error as large as the
      spread of the profiles); NaN on rows that were not imputed;
    - ``obs[f"{key}_trust"]``: the estimated probability that the pair's prediction has a
      squared error no larger than that of the grid's best baseline
      (``uns[key]["auto"]["baseline"]``, chosen by validation; a fallback to it ties, which
      counts as beating); NaN on rows that were not imputed;
    - ``uns[key]["calibration"]``: ``{"nominal": [levels], "empirical": [coverage of the
      inner hold-out at each level, cross-conformal], "n": pairs}``;
      ``uns[key]["trust_cv"]``: per held-out pair of the inner CV, ``trust``, ``error``
      (measured normalised error), ``predicted_error``, ``beats_baseline``;
      ``uns[key]["interval"]``: ``{"level", "quantile"}``;
    - for ``method="auto"``, ``uns[key]["auto"]``: ``candidates`` (those run on every fold),
      ``screened_out``, ``not_applicable`` (name -> reason), ``cv_scores`` (weighted median
      R2 per candidate), ``rule`` (``"grid"``, ``"per_pair"`` or ``"stack"``),
      ``rule_scores``, ``chosen`` / ``weights`` / ``description`` of the rule, ``baseline``;
      ``obs[f"{key}_source"]`` names the candidate (or its own fallback) that produced each
      pair, ``"stack"`` for stacked ones.

    ``key_added`` may not be ``"perturbation_grid"`` or ``"cross_validation"``, nor overwrite
    the grid's label/``measured``/``n_cells`` columns or entries impute did not write. A
    method that does not apply to the grid (e.g. ``additive_combination`` without
    combination labels) warns once, and its fallback fills every target. Nothing is written if
    an error is raised.

    """
    key = Key.uns.imputed(method) if key_added is None else key_added
    m, params = prepare_method(method, method_params)  # every check before any work
    level = check_interval(m.name, interval)
    random_state = check_random_state_value(m.name, random_state)
    check_key_added(grid, key)
    if out_store is not None:
        check_store(out_store, overwrite_store)
    data, order = to_grid_data(grid)
    check_applicable(m, data)
    targets = default_targets(data)
    if len(targets) == 0:
        warnings.warn(
            f"{m.name}: nothing to impute (every non-control pair of the grid is measured); "
            f"layers[{key!r}] is a copy of the measured profiles.",
            UserWarning,
            stacklevel=2,
        )
    n_c, n_a, p = data.Y.shape
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)  # grid row -> flat index
    flat_t = targets[:, 0] * n_a + targets[:, 1]
    assessed = None
    staged = staging_path(out_store) if out_store is not None else None
    try:
        if out_store is not None:  # predictions staged on disk, then written block by block
            sink = DiskSink(staged, len(targets), p)
        else:  # predictions written into the completed layer itself (grid row order)
            completed = _rows_in_grid_order(data, inv)
            sink = GridSink(completed, order[flat_t])
        if len(targets) and (m.name == AUTO_METHOD or level is not None):
            res = (
                None
                if m.name == AUTO_METHOD
                else _run_one(m, data, targets, params, random_state, client)
            )
            assessed = _assess(m, data, targets, params, res, level, random_state)
            if res is None:
                res = assessed.result
            else:
                res.per_target.update(assessed.result.per_target)
                extra = {k: v for k, v in assessed.result.info.items() if k != AUTO_RECORD}
                res.info.update(extra)  # a fixed method has no auto record
            _copy_into(sink, res)
        else:  # the method writes into the sink itself where it can (no full-size copy)
            res = _run_one(m, data, targets, params, random_state, client, out=sink)
        if out_store is not None:  # the completed layers go to disk, block by block
            args = (out_store, data, order, targets, res, key, overwrite_store, _fill_controls)
            source, n_ctrl = write_layers(*args)
        else:
            source = np.full((n_c, n_a), SOURCE_MEASURED, dtype=object)
            if len(targets):
                source[targets[:, 0], targets[:, 1]] = res.source
            fill = ControlFill()
            n_ctrl = _fill_controls(data, fill, source)
            fill.apply(completed, order, n_a)
            eff = _effect_rows(data, completed, order, inv)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)

    diag_cols = {}
    for name, values in res.per_target.items():
        col = np.full(n_c * n_a, np.nan)
        col[flat_t] = np.asarray(values, dtype=float)
        diag_cols[Key.obs.diagnostic(key, name)] = col[inv]
    _check_columns(grid, key, diag_cols)  # e.g. key "n" and a diagnostic "cells"
    src_flat = source.reshape(-1)[inv]
    imputed_sources = source[targets[:, 0], targets[:, 1]] if len(targets) else np.array([])
    fallbacks = pd.Series(imputed_sources, dtype=object).value_counts().to_dict()
    record = {
        "method": method,
        "params": h5ad_safe({**params.to_dict(), "random_state": random_state}),
        "n_imputed": len(targets),
        "n_control_filled": n_ctrl,
        "fallbacks": {str(k): int(v) for k, v in fallbacks.items()},
        **h5ad_safe(res.info),
    }

    out = grid.copy() if copy else grid
    if out_store is None:
        out.layers[key] = completed
        out.layers[Key.layers.effect(key)] = eff
    else:  # not in memory: drop layers an earlier in-memory run left under this key
        record["out_store"] = str(out_store)
        for name in (key, Key.layers.effect(key)):
            out.layers.pop(name, None)
    for name in (Key.layers.lower(key), Key.layers.upper(key)):
        out.layers.pop(name, None)  # a previous run's intervals never outlive this one
    if assessed is not None and assessed.lower is not None:
        for name, bound in (
            (Key.layers.lower(key), assessed.lower),
            (Key.layers.upper(key), assessed.upper),
        ):
            full = np.full((n_c, n_a, p), np.nan, dtype=np.float32)
            full[targets[:, 0], targets[:, 1]] = bound
            out.layers[name] = full.reshape(n_c * n_a, p)[inv]
    out.obs[Key.obs.source(key)] = pd.Categorical(src_flat.astype(str))
    for col in _own_obs(key)[1:]:
        if col in out.obs.columns and col not in diag_cols:
            del out.obs[col]  # a previous run's error/trust never outlive this one
    for col, values in diag_cols.items():
        out.obs[col] = values
    out.uns[key] = record
    if out_store is not None:
        write_annotations(out_store, out)
    return out if copy else None

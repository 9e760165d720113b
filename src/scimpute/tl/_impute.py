"""The one entry point that imputes a grid with any registered method."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import SOURCE_CONTROL_FILL, SOURCE_MEASURED, Key
from .._params import check_random_state_value
from .._records import read_grid_info
from .._utils import RandomState, h5ad_safe
from ._data import default_targets, to_grid_data
from ._run import check_applicable, prepare_method, run_method
from ._store import check_store, write_annotations, write_layers

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
    _check_columns(grid, key, [key, Key.obs.source(key)])
    if key in grid.uns and not _is_impute_record(grid.uns[key]):
        raise ValueError(
            f"grid.uns[{key!r}] exists and was not written by impute; choose another "
            "key_added or delete that entry first."
        )
    own = key in grid.uns
    written = [("layers", n, n in grid.layers) for n in (key, Key.layers.effect(key))] + [
        ("obs", Key.obs.source(key), Key.obs.source(key) in grid.obs.columns)
    ]
    foreign = [f"{where}[{n!r}]" for where, n, exists in written if exists and not own]
    if foreign:
        raise ValueError(
            f"key_added={key!r} would overwrite {', '.join(foreign)}, which impute did not "
            "write; choose another key_added."
        )


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


def effects(data, completed: np.ndarray) -> np.ndarray:
    """Completed profiles minus the context's measured control profile (NaN without one).

    When the grid has no control, the profiles are the effects.
    """
    if data.control is None:
        return completed.copy()
    ctrl = np.where(
        data.measured[:, data.control][:, None],
        completed[:, data.control],
        np.nan,
    )
    return completed - ctrl[:, None, :]


def impute(
    grid: AnnData,
    *,
    method: str,
    key_added: str | None = None,
    random_state: RandomState = 0,
    copy: bool = False,
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
    key_added
        Name under which results are stored; defaults to ``f"imputed_{method}"``.
    random_state
        Seed (int) or :class:`numpy.random.Generator` for methods with random steps.
    copy
        Return a modified copy instead of writing into ``grid``.
    out_store
        Path of a zarr store: the two completed layers are written there block by block
        (never built in memory) with ``obs``, ``var`` and ``uns``, and not added to the grid
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

    ``key_added`` may not be ``"perturbation_grid"`` or ``"cross_validation"``, nor overwrite
    the grid's label/``measured``/``n_cells`` columns or entries impute did not write. A
    method that does not apply to the grid (e.g. ``additive_combination`` without
    combination labels) warns once, and its fallback fills every target. Nothing is written if
    an error is raised.

    """
    key = Key.uns.imputed(method) if key_added is None else key_added
    m, params = prepare_method(method, method_params)  # every check before any work
    random_state = check_random_state_value(m.name, random_state)
    check_key_added(grid, key)
    if out_store is not None:
        check_store(out_store, overwrite_store)
    data, order = to_grid_data(grid)
    check_applicable(m, data)
    targets = default_targets(data)
    res = run_method(m, data, targets, random_state=random_state, params=params)

    n_c, n_a, p = data.Y.shape
    if out_store is not None:  # the completed layers go to disk, block by block
        args = (out_store, data, order, targets, res, key, overwrite_store, _fill_controls)
        source, n_ctrl = write_layers(*args)
    else:
        completed = np.array(data.Y, dtype=np.float32, copy=True)
        source = np.full((n_c, n_a), SOURCE_MEASURED, dtype=object)
        if len(targets):
            completed[targets[:, 0], targets[:, 1]] = res.prediction
            source[targets[:, 0], targets[:, 1]] = res.source
        n_ctrl = _fill_controls(data, completed, source)
        eff = effects(data, completed).astype(np.float32)

    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)  # grid row -> flat index
    flat_t = targets[:, 0] * n_a + targets[:, 1]
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
        out.layers[key] = completed.reshape(n_c * n_a, p)[inv]
        out.layers[Key.layers.effect(key)] = eff.reshape(n_c * n_a, p)[inv]
    else:  # not in memory: drop layers an earlier in-memory run left under this key
        record["out_store"] = str(out_store)
        for name in (key, Key.layers.effect(key)):
            out.layers.pop(name, None)
    out.obs[Key.obs.source(key)] = pd.Categorical(src_flat.astype(str))
    for col, values in diag_cols.items():
        out.obs[col] = values
    out.uns[key] = record
    if out_store is not None:
        write_annotations(out_store, out)
    return out if copy else None

"""Conversion between a grid AnnData and the arrays methods work on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._keys import Key
from .._records import GridInfo
from .._validate import check_grid
from ..methods import GridData


def _labels_present(values: pd.Series) -> list[str]:
    """Labels of a column in grid order: the categories that occur, or the sorted values.

    A subset of a grid keeps its unused categories; they are ignored.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.remove_unused_categories().cat.categories]
    return sorted(values.astype(str).unique())


def grid_positions(grid: AnnData, info: GridInfo) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Context and perturbation index of every grid row, and the label lists.

    Unused categories of the label columns (left by subsetting a grid) are ignored: the grid
    is the full product of the labels that occur.
    """
    cvals = grid.obs[info.context_key]
    pvals = grid.obs[info.perturbation_key]
    contexts, perts = _labels_present(cvals), _labels_present(pvals)
    ci = pd.Categorical(cvals.astype(str), categories=contexts).codes.astype(np.int64)
    ai = pd.Categorical(pvals.astype(str), categories=perts).codes.astype(np.int64)
    if (ci < 0).any() or (ai < 0).any():
        raise ValueError("grid.obs has labels outside its categories; rebuild the grid.")
    if len(contexts) * len(perts) != grid.n_obs or len(np.unique(ci * len(perts) + ai)) != (
        grid.n_obs
    ):
        raise ValueError(
            f"The grid's {grid.n_obs} rows are not one per (context, perturbation) pair of its "
            f"{len(contexts)} contexts x {len(perts)} perturbations (duplicate or missing rows); "
            "rebuild it with scimpute.pp.perturbation_grid."
        )
    return ci, ai, contexts, perts


def _covariates(grid: AnnData, order: np.ndarray) -> dict[str, np.ndarray]:
    """Dense numeric ``.obsm`` entries in context-major pair order (sparse ones are skipped)."""
    out = {}
    for k, v in grid.obsm.items():
        if sp.issparse(v):
            continue
        arr = v.to_numpy() if isinstance(v, pd.DataFrame) else np.asarray(v)
        if arr.dtype.kind in "biuf" and arr.ndim >= 1:
            out[str(k)] = arr[order]
    return out


def to_grid_data(grid: AnnData, *, layer: str | None = None) -> tuple[GridData, np.ndarray]:
    """Arrays of a grid and the row order.

    Returns
    -------
    ``(data, order)`` where ``order[i]`` is the grid row of flat pair ``i`` (context-major).
    ``data.obs`` and ``data.covariates`` (the dense numeric ``.obsm`` arrays) are in that
    order; ``.uns`` is not carried. Measured rows must be finite; raises a
    :class:`ValueError` naming the rows otherwise.

    """
    info = check_grid(grid)
    ci, ai, contexts, perts = grid_positions(grid, info)
    n_c, n_a = len(contexts), len(perts)
    X = grid.X if layer is None else grid.layers[layer]
    if sp.issparse(X):
        X = X.toarray()
    X = np.asarray(X)
    if X.dtype.kind != "f" or X.dtype.itemsize < 4:  # ints, bools and float16 -> float32
        X = X.astype(np.float32)
    measured_rows = grid.obs[Key.obs.measured].to_numpy().astype(bool)
    flat = ci * n_a + ai
    canonical = np.array_equal(flat, np.arange(n_c * n_a))
    if canonical:
        Y = X.reshape(n_c, n_a, X.shape[1])
        order = np.arange(grid.n_obs)
    else:
        order = np.empty(n_c * n_a, dtype=np.int64)
        order[flat] = np.arange(grid.n_obs)
        Y = X[order].reshape(n_c, n_a, X.shape[1])
    measured = measured_rows[order].reshape(n_c, n_a)
    if measured.sum() == 0:
        raise ValueError(
            "No pair of the grid is measured (obs['measured'] is all False): nothing to learn."
        )
    bad = ~np.isfinite(X[measured_rows]).all(axis=1)
    if bad.any():
        names = list(grid.obs_names[measured_rows][bad][:5])
        raise ValueError(
            f"{int(bad.sum())} measured pair(s) hold NaN or inf, e.g. {names}. Fix the values or "
            "set obs['measured'] to False for them."
        )
    control = None
    if info.control is not None:
        ctrl = info.control
        if ctrl not in perts:
            raise ValueError(f"The grid's control {ctrl!r} is not among its perturbations.")
        control = perts.index(ctrl)
    data = GridData(
        Y=Y,
        measured=measured,
        control=control,
        contexts=np.asarray(contexts, dtype=object),
        perturbations=np.asarray(perts, dtype=object),
        features=np.asarray(grid.var_names, dtype=object),
        combination_sep=info.combination_sep,
        obs=grid.obs.iloc[order].reset_index(drop=True),
        covariates=_covariates(grid, order),
    )
    return data, order


def default_targets(data: GridData) -> np.ndarray:
    """Unmeasured non-control pairs, as ``(n, 2)`` indices, context-major."""
    mask = ~data.measured
    if data.control is not None:
        mask[:, data.control] = False
    return np.argwhere(mask)

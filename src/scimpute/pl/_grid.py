"""Heatmap of a grid: which pairs are measured, hidden, imputed; optional per-pair scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from .._keys import SOURCE_MEASURED, Key
from .._validate import _suggest, check_grid
from ..tl._data import grid_positions
from ._utils import finish, get_ax

_STATES = ("unmeasured", "imputed", "measured", "hidden")
_COLOURS = ("#f0f0f0", "#fdae61", "#2b83ba", "#d7191c")


def _pair_scores(grid: AnnData, score: str, method: str | None, cv_key: str) -> pd.Series:
    """Per-pair values: an obs column, or a metric of a cross-validation table."""
    if score in grid.obs.columns:
        return pd.Series(grid.obs[score].to_numpy(dtype=float), index=grid.obs_names)
    if cv_key not in grid.uns:
        raise KeyError(
            f"score={score!r} is neither a column of grid.obs nor available from "
            f"grid.uns[{cv_key!r}] (run scimpute.tl.cross_validate first)."
        )
    table = grid.uns[cv_key][Key.uns.scores]
    if score not in table.columns:
        raise KeyError(f"score={score!r} is not a column of the cross-validation table.")
    methods = [str(m) for m in table[Key.table.method].unique()]
    if method is None:
        if len(methods) > 1:
            raise ValueError(
                f"Pass method= (one of {', '.join(map(repr, methods))}) to choose whose scores."
            )
        method = methods[0]
    if method not in methods:
        raise KeyError(
            f"method={method!r} is not in the cross-validation table." + _suggest(method, methods)
        )
    t = table[table[Key.table.method] == method]
    info = check_grid(grid)
    lookup = dict(
        zip(
            zip(
                grid.obs[info.context_key].astype(str),
                grid.obs[info.perturbation_key].astype(str),
                strict=True,
            ),
            grid.obs_names,
            strict=True,
        )
    )
    mean = t.groupby([Key.table.context, Key.table.perturbation])[score].mean()
    out = pd.Series(np.nan, index=grid.obs_names)
    for (c, p), v in mean.items():
        out[lookup[(c, p)]] = v
    return out


def grid(
    grid: AnnData,
    *,
    key: str | None = None,
    score: str | None = None,
    method: str | None = None,
    cv_key: str = Key.uns.cross_validation,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Heatmap of contexts x perturbations showing what is measured, hidden and imputed.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`.
    key
        ``key_added`` of an :func:`scimpute.tl.impute` run: pairs it predicted are shown as
        imputed.
    score
        Colour pairs by a score instead of their state: a numeric column of ``grid.obs`` (for
        example a diagnostic such as ``"imputed_ntk_..."``) or a metric of the
        cross-validation table in ``grid.uns[cv_key]`` (``"r2"``, ``"pearson_effect"``, ...).
    method
        Method whose cross-validation scores are shown (needed when the table has several).
    cv_key
        ``.uns`` key of the cross-validation table.
    cmap
        Colour map of scores.
    ax, show, save
        Axes to draw into; show the figure; save it to this path.

    Returns
    -------
    The Axes, unless ``show=True``.

    States: *measured* (``obs["measured"]``), *hidden* (has cells but ``measured`` is False),
    *imputed* (predicted by ``key``), *unmeasured* (neither).

    """
    info = check_grid(grid)
    ci, ai, contexts, perts = grid_positions(grid, info)
    measured = grid.obs[Key.obs.measured].to_numpy().astype(bool)
    n_cells = grid.obs.get(Key.obs.n_cells, pd.Series(0, index=grid.obs_names)).to_numpy()
    ax = get_ax(ax, (max(4.0, 0.25 * len(perts) + 2), max(3.0, 0.22 * len(contexts) + 1.5)))
    mat = np.full((len(contexts), len(perts)), np.nan)
    if score is None:
        state = np.zeros(grid.n_obs, dtype=int)
        if key is not None:
            src_col = Key.obs.source(key)
            if src_col not in grid.obs.columns:
                raise KeyError(f"grid.obs[{src_col!r}] not found: run scimpute.tl.impute first.")
            state[grid.obs[src_col].astype(str).to_numpy() != SOURCE_MEASURED] = 1
        state[(~measured) & (n_cells > 0)] = 3
        state[measured] = 2
        mat[ci, ai] = state
        ax.imshow(
            mat,
            cmap=ListedColormap(_COLOURS),
            vmin=-0.5,
            vmax=3.5,
            aspect="auto",
            interpolation="nearest",
        )
        handles = [Patch(color=c, label=s) for s, c in zip(_STATES, _COLOURS, strict=True)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    else:
        vals = _pair_scores(grid, score, method, cv_key)
        mat[ci, ai] = vals.to_numpy()
        im = ax.imshow(mat, cmap=cmap, aspect="auto", interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, label=score, fraction=0.04)
    ax.set_xticks(range(len(perts)))
    ax.set_xticklabels(perts, rotation=90, fontsize=7)
    ax.set_yticks(range(len(contexts)))
    ax.set_yticklabels(contexts, fontsize=7)
    ax.set_xlabel(info.perturbation_key)
    ax.set_ylabel(info.context_key)
    return finish(ax, show, save)

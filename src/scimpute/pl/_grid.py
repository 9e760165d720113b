"""Heatmap of a grid: which pairs are measured, hidden, imputed; optional per-pair scores."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from .._keys import SOURCE_CONTROL_FILL, SOURCE_MEASURED, Key
from .._validate import _suggest, check_grid
from ..tl._data import grid_positions
from ._utils import (
    HOLDOUT_LABELS,
    check_output,
    doc_show_save,
    finish,
    get_ax,
    metric_label,
    robust_limits,
)

_OWNER = "pl.grid"
_NOT_MEASURED = ("not measured", "#f0f0f0")
_MEASURED = ("measured", "#2b83ba")
_HIDDEN = ("hidden (measured, held out)", "#d7191c")
_CONTROL = ("control row filled by the control mean", "#a6611a")
_PREDICTED_COLOUR = "#fdae61"
#: colours of the fallbacks by name; others take the spare colours in turn.
_FALLBACK_COLOURS = {
    "context_mean": "#984ea3",
    "perturbation_mean": "#4daf4a",
    "global_mean": "#636363",
}
_SPARE_COLOURS = ("#f781bf", "#a65628", "#ffff33", "#66c2a5", "#e7298a")
_MAX_TICKS = 60


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


def _states(
    grid: AnnData, key: str | None, measured: np.ndarray, n_cells: np.ndarray
) -> tuple[np.ndarray, list[tuple[str, str]], str | None]:
    """Category code per row, the (label, colour) of each code, and the method's name.

    Without ``key`` hidden pairs are a category of their own; with ``key`` they take the
    colour of what filled them (they are hatched by the caller).
    """
    cats: list[tuple[str, str]] = []
    code = np.empty(grid.n_obs, dtype=int)

    def assign(mask: np.ndarray, cat: tuple[str, str]) -> None:
        if mask.any():
            if cat not in cats:
                cats.append(cat)
            code[mask] = cats.index(cat)

    method = None
    assign(measured, _MEASURED)
    done = measured.copy()
    if key is None:
        hidden = (~measured) & (n_cells > 0)
        assign(hidden, _HIDDEN)
        done |= hidden
    else:
        src_col = Key.obs.source(key)
        if src_col not in grid.obs.columns:
            raise KeyError(f"grid.obs[{src_col!r}] not found: run scimpute.tl.impute first.")
        record = grid.uns.get(key)
        method = str(record.get("method", key)) if isinstance(record, dict) else key
        src = grid.obs[src_col].astype(str).to_numpy()
        rest = ~done & (src != SOURCE_MEASURED)
        assign(rest & (src == method), (f"predicted by {method}", _PREDICTED_COLOUR))
        assign(rest & (src == SOURCE_CONTROL_FILL), _CONTROL)
        spare = iter(_SPARE_COLOURS * 4)
        for name in sorted(set(src[rest]) - {method, SOURCE_CONTROL_FILL}):
            colour = _FALLBACK_COLOURS.get(name) or next(spare)
            assign(rest & (src == name), (f"fallback: {name}", colour))
        done |= rest
    assign(~done, _NOT_MEASURED)
    return code, cats, method


def _hatch_hidden(ax: Axes, rows: np.ndarray, cols: np.ndarray) -> None:
    """Outline and hatch the cells of hidden pairs."""
    for r, c in zip(rows, cols, strict=True):
        ax.add_patch(
            Rectangle(
                (c - 0.5, r - 0.5),
                1,
                1,
                fill=False,
                hatch="////",
                edgecolor=_HIDDEN[1],
                linewidth=1.2,
            )
        )


def _ticks(ax: Axes, labels: list[str], axis: str) -> None:
    """Label at most ``_MAX_TICKS`` rows or columns (every k-th when there are more)."""
    step = max(1, int(np.ceil(len(labels) / _MAX_TICKS)))
    pos = np.arange(0, len(labels), step)
    shown = [labels[i] for i in pos]
    if axis == "x":
        ax.set_xticks(pos, shown, rotation=90, fontsize=7)
    else:
        ax.set_yticks(pos, shown, fontsize=7)


@doc_show_save
def grid(
    grid: AnnData,
    *,
    key: str | None = None,
    score: str | None = None,
    method: str | None = None,
    cv_key: str = Key.uns.cross_validation,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
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
        ``key_added`` of an :func:`scimpute.tl.impute` run. Its source column
        ``obs[key + "_source"]`` splits the imputed pairs into those *predicted by the
        method* and those filled by a *fallback* (each fallback by name, e.g.
        ``context_mean``), and unmeasured control rows filled by the control mean.
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
    vmin, vmax
        Limits of the colour scale of scores; by default the 2nd and 98th percentiles, so a
        few extreme pairs do not flatten the rest (values beyond take the end colours).
    ax
        Axes to draw into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.

    The legend lists only the states present: *measured* (``obs["measured"]``), *hidden*
    (has cells but ``measured`` is False), *predicted by* the method, *fallback: <name>*,
    the control fill, and *not measured* (none of these).

    """
    check_output(_OWNER, show, save)
    info = check_grid(grid)
    ci, ai, contexts, perts = grid_positions(grid, info)
    measured = grid.obs[Key.obs.measured].to_numpy().astype(bool)
    n_cells = grid.obs.get(Key.obs.n_cells, pd.Series(0, index=grid.obs_names)).to_numpy()
    mat = np.full((len(contexts), len(perts)), np.nan)
    if score is None:
        code, cats, name = _states(grid, key, measured, n_cells)
        vals = None
    else:
        vals = _pair_scores(grid, score, method, cv_key).to_numpy(dtype=float)
    given = ax is not None
    ax = get_ax(ax, (max(4.5, 0.25 * len(perts) + 3.5), max(3.0, 0.22 * len(contexts) + 1.8)))
    if vals is None:
        mat[ci, ai] = code
        ax.imshow(
            mat,
            cmap=ListedColormap([c for _, c in cats]),
            vmin=-0.5,
            vmax=len(cats) - 0.5,
            aspect="auto",
            interpolation="nearest",
        )
        handles = [Patch(facecolor=c, edgecolor="0.5", label=lab) for lab, c in cats]
        hidden = (~measured) & (n_cells > 0)
        if key is not None and hidden.any():
            _hatch_hidden(ax, ci[hidden], ai[hidden])
            handles.append(
                Patch(
                    facecolor="white",
                    edgecolor=_HIDDEN[1],
                    hatch="////",
                    label="hidden (measured, held out)",
                )
            )
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        title = "Grid: which pairs are measured" + (
            f" and how {key} filled the rest" if key else ""
        )
        if name is not None and name != key:
            title += f"\n(method: {name})"
    else:
        mat[ci, ai] = vals
        lo, hi = robust_limits(vals)
        lo = lo if vmin is None else float(vmin)
        hi = hi if vmax is None else float(vmax)
        finite = vals[np.isfinite(vals)]
        extend = {
            (False, False): "neither",
            (True, False): "min",
            (False, True): "max",
            (True, True): "both",
        }[(bool((finite < lo).any()), bool((finite > hi).any()))]
        colours = plt.get_cmap(cmap).with_extremes(bad="#f0f0f0")
        im = ax.imshow(
            np.ma.masked_invalid(mat),
            cmap=colours,
            vmin=lo,
            vmax=hi,
            aspect="auto",
            interpolation="nearest",
        )
        ax.figure.colorbar(im, ax=ax, label=metric_label(score), fraction=0.04, extend=extend)
        title = f"{metric_label(score)} per pair"
        if score not in grid.obs.columns:
            params = grid.uns[cv_key].get("params") or {}
            holdout = HOLDOUT_LABELS.get(str(params.get("holdout")), "")
            title = f"{metric_label(score)} of {_method_of(grid, method, cv_key)} per held-out pair"
            title += f"\n(cross-validation, {holdout})" if holdout else "\n(cross-validation)"
        title += "; grey: no value"
    _ticks(ax, [str(p) for p in perts], "x")
    _ticks(ax, [str(c) for c in contexts], "y")
    ax.set_xlabel(info.perturbation_key)
    ax.set_ylabel(info.context_key)
    ax.set_title(title, fontsize=10)
    return finish(ax, show, save, given=given)


def _method_of(grid: AnnData, method: str | None, cv_key: str) -> str:
    if method is not None:
        return method
    return str(grid.uns[cv_key][Key.uns.scores][Key.table.method].iloc[0])

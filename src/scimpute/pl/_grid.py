"""Heatmap of a grid: which pairs are measured, hidden, imputed; optional per-pair scores."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .._keys import AUTO_RECORD, SOURCE_CONTROL_FILL, SOURCE_MEASURED, SOURCE_STACK, Key
from .._params import check_choice
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
#: colours of the model predictions (the method first; per-pair choices of auto after it).
_PREDICTED_COLOURS = (_PREDICTED_COLOUR, "#e6550d", "#fdd0a2", "#a63603", "#fd8d3c")
#: what ``color=`` can show besides the state of each pair, and the colour bar's label.
_COLOR_LABELS = {
    "trust": "trust (probability of beating the best baseline)",
    "error": "predicted error of the pair",
    "interval": "interval width (mean over features, in feature s.d.)",
}
#: measured pairs when imputed ones are coloured by a value: a grey no colour map uses.
_MEASURED_PLAIN = "#9e9e9e"
_FALLBACK_MARK = "fallback (not the model's prediction)"
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


def _method_name(grid: AnnData, key: str) -> str:
    record = grid.uns.get(key)
    return str(record.get("method", key)) if isinstance(record, Mapping) else key


def _names(value) -> set[str]:
    """Names in a record entry: a string, a list/array of them, or a mapping's keys."""
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, Mapping):
        return {str(k) for k in value}
    return {str(v) for v in np.asarray(value, dtype=object).reshape(-1)}


def _model_sources(grid: AnnData, key: str) -> set[str]:
    """Sources that are the model's own predictions; every other imputed source is a fallback.

    For one method: its name. For ``method="auto"``: what its rule uses
    (``uns[key]["auto"]``: the ``chosen`` candidate of the ``"grid"`` rule, ``"stack"`` and
    the candidates of positive weight of a stack, every candidate of the ``"per_pair"``
    rule); a source outside these (a chosen method's own fallback) is a fallback.
    """
    method = _method_name(grid, key)
    out = {method}
    record = grid.uns.get(key)
    auto = record.get(AUTO_RECORD) if isinstance(record, Mapping) else None
    if isinstance(auto, Mapping):
        out |= _names(auto.get("chosen")) | {SOURCE_STACK}
        if str(auto.get("rule")) == "per_pair":  # each pair takes one of the candidates
            out |= _names(auto.get("candidates"))
        weights = auto.get("weights")
        if isinstance(weights, Mapping):
            out |= {str(k) for k, w in weights.items() if np.all(np.asarray(w, float) > 0)}
    return out


def _color_values(grid: AnnData, key: str, color: str) -> np.ndarray:
    """Per-row values of ``color`` for the imputed rows (NaN elsewhere), or a clear error."""
    hint = f"run scimpute.tl.impute(grid, method=..., key_added={key!r}, interval=0.9) first"
    if color in ("trust", "error"):
        col = Key.obs.trust(key) if color == "trust" else Key.obs.error(key)
        if col not in grid.obs.columns:
            raise KeyError(f"{_OWNER}: color={color!r} needs grid.obs[{col!r}]; {hint}.")
        return grid.obs[col].to_numpy(dtype=float)
    lo, hi = Key.layers.lower(key), Key.layers.upper(key)
    missing = [n for n in (lo, hi) if n not in grid.layers]
    if missing:
        raise KeyError(f"{_OWNER}: color='interval' needs grid.layers{missing}; {hint}.")
    measured = grid.obs[Key.obs.measured].to_numpy().astype(bool)
    X = grid.X[measured]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    sd = np.asarray(X, dtype=float).std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    width = (np.asarray(grid.layers[hi], float) - np.asarray(grid.layers[lo], float)) / sd
    ok = np.isfinite(width)
    n = ok.sum(axis=1)
    total = np.where(ok, width, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


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
        method = _method_name(grid, key)
        src = grid.obs[src_col].astype(str).to_numpy()
        rest = ~done & (src != SOURCE_MEASURED)
        models = _model_sources(grid, key)
        spare_pred = iter(_PREDICTED_COLOURS)
        for name in sorted(set(src[rest]) & models, key=lambda n: (n != method, n)):
            assign(rest & (src == name), (f"predicted by {name}", next(spare_pred, "#fee08b")))
        assign(rest & (src == SOURCE_CONTROL_FILL), _CONTROL)
        spare = iter(_SPARE_COLOURS * 4)
        for name in sorted(set(src[rest]) - models - {SOURCE_CONTROL_FILL}):
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
    color: Literal["state", "trust", "error", "interval"] = "state",
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
    color
        What the imputed pairs of run ``key`` show: ``"state"`` (what produced them, see
        above), ``"trust"`` (``obs[key + "_trust"]``), ``"error"`` (``obs[key + "_error"]``,
        the predicted error) or ``"interval"`` (width of the prediction interval,
        ``layers[key + "_upper"] - layers[key + "_lower"]``, averaged over features in units
        of each feature's standard deviation over the measured pairs). The last three need a
        run with intervals (``tl.impute(..., interval=0.9)`` or ``method="auto"``); pairs a
        fallback filled carry a black dot, measured pairs are drawn in the measured colour.
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
    check_choice(_OWNER, "color", color, ("state", *_COLOR_LABELS))
    if color != "state" and (key is None or score is not None):
        raise ValueError(
            f"{_OWNER}: color={color!r} needs key= (an impute run with intervals) and no score=."
        )
    info = check_grid(grid)
    ci, ai, contexts, perts = grid_positions(grid, info)
    measured = grid.obs[Key.obs.measured].to_numpy().astype(bool)
    n_cells = grid.obs.get(Key.obs.n_cells, pd.Series(0, index=grid.obs_names)).to_numpy()
    mat = np.full((len(contexts), len(perts)), np.nan)
    if color != "state":
        vals = _color_values(grid, key, color)
        code, cats, name = _states(grid, key, measured, n_cells)
    elif score is None:
        code, cats, name = _states(grid, key, measured, n_cells)
        vals = None
    else:
        vals = _pair_scores(grid, score, method, cv_key).to_numpy(dtype=float)
    given = ax is not None
    ax = get_ax(ax, (max(4.5, 0.25 * len(perts) + 3.5), max(3.0, 0.22 * len(contexts) + 1.8)))
    if color != "state":
        title = _draw_color(ax, grid, key, color, vals, (ci, ai, mat.shape), cmap, (vmin, vmax))
    elif vals is None:
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


def _draw_color(ax, grid, key, color, vals, where, cmap, limits) -> str:
    """Imputed pairs coloured by ``vals``; measured ones flat; fallbacks dotted. The title."""
    ci, ai, shape = where
    measured = grid.obs[Key.obs.measured].to_numpy().astype(bool)
    src = grid.obs[Key.obs.source(key)].astype(str).to_numpy()
    imputed = ~measured & (src != SOURCE_CONTROL_FILL) & (src != SOURCE_MEASURED)
    vals = np.where(imputed, vals, np.nan)
    background = np.full(shape, np.nan)
    background[ci, ai] = measured.astype(float)
    ax.imshow(
        background,
        cmap=ListedColormap([_NOT_MEASURED[1], _MEASURED_PLAIN]),
        vmin=-0.5,
        vmax=1.5,
        aspect="auto",
        interpolation="nearest",
    )
    mat = np.full(shape, np.nan)
    mat[ci, ai] = vals
    lo, hi = robust_limits(vals)
    if color == "trust":
        lo, hi = 0.0, 1.0
    lo = lo if limits[0] is None else float(limits[0])
    hi = hi if limits[1] is None else float(limits[1])
    im = ax.imshow(
        np.ma.masked_invalid(mat),
        cmap=plt.get_cmap(cmap),
        vmin=lo,
        vmax=hi,
        aspect="auto",
        interpolation="nearest",
    )
    ax.figure.colorbar(im, ax=ax, label=_COLOR_LABELS[color], fraction=0.04)
    handles = [Patch(facecolor=_MEASURED_PLAIN, edgecolor="0.5", label=_MEASURED[0])]
    no_value = ~measured & ~np.isfinite(vals)
    if no_value.any():
        handles.append(Patch(facecolor=_NOT_MEASURED[1], edgecolor="0.5", label="no value"))
    fallback = imputed & ~np.isin(src, list(_model_sources(grid, key)))
    if fallback.any():
        ax.scatter(ai[fallback], ci[fallback], s=9, color="black", marker="o", lw=0)
        names = ", ".join(sorted(set(src[fallback])))
        handles.append(
            Line2D(
                [], [], ls="", marker="o", ms=3, color="black", label=f"{_FALLBACK_MARK}: {names}"
            )
        )
    hidden = ~measured & (grid.obs.get(Key.obs.n_cells, 0) > 0).to_numpy()
    if hidden.any():
        _hatch_hidden(ax, ci[hidden], ai[hidden])
        handles.append(
            Patch(facecolor="white", edgecolor=_HIDDEN[1], hatch="////", label=_HIDDEN[0])
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.2, 1), frameon=False)
    n_model = int((imputed & ~fallback).sum())
    return (
        f"{_COLOR_LABELS[color].split(' (')[0].capitalize()} of the pairs imputed by "
        f"{_method_name(grid, key)}\n({n_model} predicted by the model, "
        f"{int(fallback.sum())} by a fallback)"
    )


def _method_of(grid: AnnData, method: str | None, cv_key: str) -> str:
    if method is not None:
        return method
    return str(grid.uns[cv_key][Key.uns.scores][Key.table.method].iloc[0])

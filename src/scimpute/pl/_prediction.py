"""Predicted vs measured effect of one pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from .._keys import SOURCE_MEASURED, Key
from .._records import GridInfo
from .._validate import check_grid
from ..metrics import pearson
from ._utils import check_count, check_output, doc_show_save, finish, fmt_num, get_ax


def _row(grid: AnnData, info: GridInfo, context: str, perturbation: str) -> int:
    c = grid.obs[info.context_key].astype(str).to_numpy()
    p = grid.obs[info.perturbation_key].astype(str).to_numpy()
    hit = np.flatnonzero((c == str(context)) & (p == str(perturbation)))
    if hit.size == 0:
        raise KeyError(f"The grid has no pair ({context!r}, {perturbation!r}).")
    return int(hit[0])


@doc_show_save
def prediction(
    grid: AnnData,
    context: str,
    perturbation: str,
    *,
    key: str,
    truth_layer: str | None = None,
    annotate: int = 5,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Scatter of the predicted against the measured effect of one (context, perturbation).

    The pair must have a measured profile that the imputation did not see: a pair hidden by
    setting ``obs["measured"]`` to False (its ``X`` still holds the measurement), or any pair
    when ``truth_layer`` holds the truth (simulations). Effects are profiles minus the
    context's measured control profile (the profiles themselves without control).

    Parameters
    ----------
    grid
        An imputed grid.
    context, perturbation
        Labels of the pair.
    key
        ``key_added`` of the :func:`scimpute.tl.impute` run.
    truth_layer
        Layer with true profiles; default ``X``.
    annotate
        Label this many features with the largest measured effects.
    ax
        Axes to draw into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes, unless the figure was shown. The title names the pair, the method and the
    Pearson correlation of the effects; points on the dashed diagonal are exact predictions.

    """
    check_output("pl.prediction", show, save)
    annotate = check_count("pl.prediction", "annotate", annotate, 0)
    info = check_grid(grid)
    if key not in grid.layers:
        raise KeyError(f"grid.layers[{key!r}] not found: run scimpute.tl.impute(key_added=...).")
    i = _row(grid, info, context, perturbation)
    truth = np.asarray(grid.X if truth_layer is None else grid.layers[truth_layer])[i]
    if not np.isfinite(truth).all():
        raise ValueError(
            f"({context!r}, {perturbation!r}) has no measured profile to compare with. Hide a "
            "measured pair (obs['measured'] = False) before imputing, or pass truth_layer=."
        )
    pred = np.asarray(grid.layers[key])[i]
    if info.control is not None:
        j = _row(grid, info, context, info.control)
        base = np.asarray(grid.X if truth_layer is None else grid.layers[truth_layer])[j]
        if not np.isfinite(base).all():
            raise ValueError(f"The control of context {context!r} is not measured.")
        te, pe = truth - base, pred - base
    else:
        te, pe = truth, pred
    record = grid.uns.get(key)
    method = str(record.get("method", key)) if isinstance(record, dict) else key
    src_col = Key.obs.source(key)
    source = str(grid.obs[src_col].iloc[i]) if src_col in grid.obs.columns else method
    what = "effect (vs. control)" if info.control is not None else "profile"
    given = ax is not None
    ax = get_ax(ax, (4.8, 4.8))
    ax.scatter(te, pe, s=6, alpha=0.6, linewidths=0)
    lo, hi = float(min(te.min(), pe.min())), float(max(te.max(), pe.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    r = float(pearson(te, pe)[0])
    by = method if source in (method, SOURCE_MEASURED) else f"{method}, fallback {source}"
    ax.set_title(f"{context} | {perturbation}\npredicted by {by}; Pearson r = {fmt_num(r, 2)}")
    ax.set_xlabel(f"measured {what}")
    ax.set_ylabel(f"predicted {what}")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    for g in np.argsort(-np.abs(te))[:annotate]:
        ax.annotate(str(grid.var_names[g]), (te[g], pe[g]), fontsize=7)
    return finish(ax, show, save, given=given)

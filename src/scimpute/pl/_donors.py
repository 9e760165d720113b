"""Donor weights and fit of one pair imputed by synthetic interventions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase
from matplotlib.ticker import MaxNLocator

from .._keys import (
    SI_DEFAULT_KEY,
    SI_DONOR_AXIS,
    SI_DONOR_INTERCEPTS,
    SI_DONOR_LABELS,
    SI_DONOR_WEIGHTS,
    SI_R2_TRAIN,
    SI_SUBSPACE_STAT,
    SI_TARGET_CONTEXTS,
    SI_TARGET_PERTURBATIONS,
    SI_TRAIN_UNITS,
    SI_UNIT_LABELS,
    Key,
)
from .._params import ParamError
from .._validate import _suggest, check_grid
from ._utils import check_count, check_output, doc_show_save, finish, fmt_num, get_axes

_OWNER = "pl.donors"


def _grid_profile(grid: AnnData, lookup: dict, context: str, perturbation: str):
    row = lookup.get((context, perturbation))
    if row is None:
        return None
    x = grid.X[row]
    x = x.toarray().ravel() if sp.issparse(x) else np.asarray(x, dtype=float).ravel()
    return x


@doc_show_save
def donors(
    grid: AnnData,
    context: str,
    perturbation: str,
    *,
    key: str = SI_DEFAULT_KEY,
    n_top: int = 15,
    ax: Axes | Sequence[Axes] | None = None,
    fig: FigureBase | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Plot the donor weights of one imputed pair and the fit they come from.

    Left: the ``n_top`` largest donor weights (by absolute value) of the pair, as stored in
    ``grid.uns[key]["donor_weights"]`` by ``scimpute.tl.impute(grid,
    method="synthetic_interventions")``. Right: for every training unit (context for
    SI-Action, perturbation for SI-Context) the measured profile of the target against the
    weighted donor combination (``sum_d w_d y_d + b``), one point per feature; points on the
    diagonal are a perfect in-sample fit. The title gives the source actually used for the
    pair, the in-sample R² and the subspace-inclusion statistic.

    Parameters
    ----------
    grid
        A grid imputed with ``method="synthetic_interventions"``.
    context, perturbation
        Labels of an imputed pair.
    key
        ``key_added`` of the imputation.
    n_top
        Number of donors shown.
    ax
        One :class:`~matplotlib.axes.Axes` (weights only) or two (weights and fit).
    fig
        Figure (or SubFigure) to draw both panels into when ``ax`` is not given (default: a
        new figure).
    show, save
        {show_save}

    Returns
    -------
    ``None`` if shown, else the list of :class:`~matplotlib.axes.Axes` drawn on. Nothing is
    written to ``grid``.

    """
    check_output(_OWNER, show, save)
    n_top = check_count(_OWNER, "n_top", n_top, 1)
    if ax is not None and fig is not None:
        raise ParamError(f"{_OWNER}: pass ax= or fig=, not both.")

    if key not in grid.uns or SI_DONOR_WEIGHTS not in grid.uns[key]:
        raise KeyError(
            f"grid.uns[{key!r}] holds no donor weights; run "
            "scimpute.tl.impute(grid, method='synthetic_interventions') first (or pass key=)."
        )
    rec = grid.uns[key]
    ctx = np.asarray(rec[SI_TARGET_CONTEXTS]).astype(str)
    pert = np.asarray(rec[SI_TARGET_PERTURBATIONS]).astype(str)
    hit = np.flatnonzero((ctx == str(context)) & (pert == str(perturbation)))
    if hit.size == 0:
        pairs = [f"{c}|{p}" for c, p in zip(ctx[:200], pert[:200], strict=True)]
        raise ValueError(
            f"({context!r}, {perturbation!r}) is not a pair imputed under key {key!r} (measured "
            "pairs and control rows are not imputed)."
            + _suggest(f"{context}|{perturbation}", pairs)
        )
    i = int(hit[0])
    W = sp.csr_matrix(rec[SI_DONOR_WEIGHTS])
    labels = np.asarray(rec[SI_DONOR_LABELS]).astype(str)
    row = W.getrow(i)
    d_idx, w = row.indices, row.data
    if ax is None:
        _, axs = get_axes(2, fig, (11, 4.4), width_ratios=[1, 1.2])
    else:
        axs = list(ax) if isinstance(ax, Sequence | np.ndarray) else [ax]
    source = str(grid.obs.loc[_row_name(grid, context, perturbation), Key.obs.source(key)])

    action = str(rec[SI_DONOR_AXIS]) in ("perturbations", "both")

    # weights
    a0 = axs[0]
    if w.size == 0:
        a0.text(0.5, 0.5, "no donors (fallback)", ha="center", va="center", transform=a0.transAxes)
        a0.set_axis_off()
    else:
        order = np.argsort(-np.abs(w), kind="stable")[:n_top][::-1]
        colors = np.where(w[order] >= 0, "tab:blue", "tab:red")
        a0.barh(np.arange(order.size), w[order], color=colors)
        a0.set_yticks(np.arange(order.size), labels[d_idx[order]])
        a0.axvline(0, color="0.5", lw=0.8)
        a0.set_xlabel("donor weight (blue: positive, red: negative)")
        a0.set_ylabel("donor perturbation" if action else "donor context")
        a0.xaxis.set_major_locator(MaxNLocator(5))
        shown = f"top {order.size} of {w.size}" if w.size > order.size else f"all {w.size}"
        a0.set_title(f"{context} | {perturbation}\n{shown} donors", fontsize=10)

    # fit over the training units
    if len(axs) > 1:
        a1 = axs[1]
        info = check_grid(grid)
        ckey, pkey = info.context_key, info.perturbation_key
        lookup = {
            (str(c), str(p)): n
            for n, (c, p, m) in enumerate(
                zip(grid.obs[ckey], grid.obs[pkey], grid.obs[Key.obs.measured], strict=True)
            )
            if m
        }
        units = np.asarray(rec[SI_UNIT_LABELS]).astype(str)[
            sp.csr_matrix(rec[SI_TRAIN_UNITS]).getrow(i).indices
        ]
        b = float(np.asarray(rec[SI_DONOR_INTERCEPTS])[i])
        for u in units:
            target = (u, str(perturbation)) if action else (str(context), u)
            y = _grid_profile(grid, lookup, *target)
            prof = [
                _grid_profile(grid, lookup, *((u, lab) if action else (lab, u)))
                for lab in labels[d_idx]
            ]
            if y is None or any(x is None for x in prof):
                continue
            fit = np.sum([wd * x for wd, x in zip(w, prof, strict=True)], axis=0) + b
            a1.scatter(fit, y, s=4, alpha=0.5, label=u)
        lo, hi = a1.get_xlim()
        a1.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
        a1.set_xlabel("fit from the weighted donors (one point per feature)")
        a1.set_ylabel(
            f"measured response to {perturbation}" if action else f"measured in {context}"
        )
        a1.xaxis.set_major_locator(MaxNLocator(5))
        a1.yaxis.set_major_locator(MaxNLocator(5))
        r2 = _obs_value(grid, key, context, perturbation, SI_R2_TRAIN)
        sub = _obs_value(grid, key, context, perturbation, SI_SUBSPACE_STAT)
        a1.set_title(
            f"in-sample fit: R² = {fmt_num(r2)}, subspace-inclusion statistic = {fmt_num(sub)}\n"
            f"prediction used: {source}",
            fontsize=10,
        )
        kind = "contexts" if action else "perturbations"
        if len(units) <= 12:
            a1.legend(
                fontsize="small",
                markerscale=3,
                title=f"training units ({kind})",
                loc="upper left",
                bbox_to_anchor=(1.01, 1),
                frameon=False,
            )
        elif len(units):
            a1.text(
                0.02,
                0.98,
                f"{len(units)} training units ({kind}), one colour each",
                transform=a1.transAxes,
                va="top",
                fontsize=8,
            )
    return finish(axs, show, save, given=ax is not None or fig is not None)


def _row_name(grid: AnnData, context: str, perturbation: str):
    info = check_grid(grid)
    m = (grid.obs[info.context_key].astype(str) == str(context)) & (
        grid.obs[info.perturbation_key].astype(str) == str(perturbation)
    )
    return grid.obs_names[np.flatnonzero(m.to_numpy())[0]]


def _obs_value(grid: AnnData, key: str, context: str, perturbation: str, name: str) -> float:
    col = Key.obs.diagnostic(key, name)
    if col not in grid.obs:
        return float("nan")
    return float(grid.obs.loc[_row_name(grid, context, perturbation), col])

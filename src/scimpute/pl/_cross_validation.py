"""Distributions of cross-validation scores per method."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib import cbook
from matplotlib.axes import Axes

from .._keys import Key
from .._params import ParamError, check_choice
from ..metrics import METRICS
from ._utils import HOLDOUT_LABELS, check_output, doc_show_save, finish, get_ax, metric_label

_OWNER = "pl.cross_validation"
_CLIP_COLOUR = "#d7191c"


def _title(params: dict | None, metric: str) -> str:
    """Title naming the metric, the hold-out scheme and the number of folds when recorded."""
    title = f"Cross-validation: {metric_label(metric)} per held-out pair"
    if not params:
        return title
    parts = []
    holdout = params.get("holdout")
    if holdout is not None:
        parts.append(HOLDOUT_LABELS.get(str(holdout), str(holdout)))
    n_folds = params.get("n_folds")
    if n_folds is not None and str(holdout) != "leave_one_out":
        parts.append(f"{int(n_folds)} folds")
    return title + (f"\n({', '.join(parts)})" if parts else "")


@doc_show_save
def cross_validation(
    scores: pd.DataFrame | AnnData,
    *,
    metric: str = "r2",
    kind: Literal["box", "violin"] = "box",
    key: str = Key.uns.cross_validation,
    clip: tuple[float, float] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Per-method distribution of a cross-validation metric, methods sorted by median.

    One row per method, labelled with the number of scored pairs (``n``); the best method
    (highest median, lowest for ``mse`` and ``relative_mse``) is at the top. When ``scores``
    is a grid, the title names the hold-out scheme recorded in ``grid.uns[key]["params"]``.

    Parameters
    ----------
    scores
        Table returned by :func:`scimpute.tl.cross_validate`, or a grid holding it.
    metric
        One of ``"r2"``, ``"r2_effect"``, ``"pearson_effect"``, ``"cosine_effect"``, ``"mse"``,
        ``"relative_mse"``.
    kind
        ``"box"`` or ``"violin"``.
    key
        ``.uns`` key of the table when ``scores`` is a grid.
    clip
        Limits ``(low, high)`` of the value axis. Values beyond are drawn as red triangles at
        the limit and counted in the legend ("k values < low clipped"), not drawn as data.
    title
        Title of the plot (default: the metric and the hold-out scheme).
    ax
        Axes to draw into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes, unless the figure was shown.

    """
    check_choice(_OWNER, "metric", metric, METRICS)
    check_choice(_OWNER, "kind", kind, ("box", "violin"))
    check_output(_OWNER, show, save)
    if clip is not None and (
        len(clip) != 2 or not np.all(np.isfinite(clip)) or float(clip[0]) >= float(clip[1])
    ):
        raise ParamError(f"{_OWNER}: clip must be (low, high) with low < high, got {clip!r}.")
    params = None
    if isinstance(scores, AnnData):
        if key not in scores.uns or Key.uns.scores not in scores.uns[key]:
            raise KeyError(f"grid.uns[{key!r}] not found; run scimpute.tl.cross_validate first.")
        params = scores.uns[key].get("params")
        scores = scores.uns[key][Key.uns.scores]
    method_col = Key.table.method
    lower_better = metric in ("mse", "relative_mse")
    med = scores.groupby(method_col, observed=True)[metric].median()
    order = list(med.sort_values(ascending=lower_better).index)[::-1]  # best on top
    raw = [scores.loc[scores[method_col] == m, metric].dropna().to_numpy(float) for m in order]
    lo, hi = (-np.inf, np.inf) if clip is None else (float(clip[0]), float(clip[1]))
    data = [np.clip(d, lo, hi) for d in raw]
    given = ax is not None
    ax = get_ax(ax, (6.5, 0.5 * len(order) + 1.8))
    pos = np.arange(1, len(order) + 1)
    if kind == "box":
        stats = cbook.boxplot_stats([d if d.size else np.array([np.nan]) for d in data], whis=1.5)
        for s in stats:  # clipped points are drawn apart below
            s["fliers"] = s["fliers"][(s["fliers"] > lo) & (s["fliers"] < hi)]
        ax.bxp(
            stats,
            positions=pos,
            orientation="horizontal",
            widths=0.6,
            flierprops={"markersize": 2},
            medianprops={"color": "black"},
        )
    else:
        parts = ax.violinplot(
            [d if d.size else np.array([np.nan]) for d in data],
            positions=pos,
            orientation="horizontal",
            showmedians=True,
        )
        del parts
    n_low = np.array([(d < lo).sum() for d in raw])
    n_high = np.array([(d > hi).sum() for d in raw])
    for side, counts, limit, marker in ((0, n_low, lo, "<"), (1, n_high, hi, ">")):
        if counts.sum() == 0:
            continue
        ys = np.concatenate([np.full(k, p) for k, p in zip(counts, pos, strict=True)])
        rng = np.random.default_rng(side)
        ax.scatter(
            np.full(ys.size, limit),
            ys + rng.uniform(-0.15, 0.15, ys.size),
            marker=marker,
            s=14,
            color=_CLIP_COLOUR,
            zorder=3,
            clip_on=False,
            label=f"{int(counts.sum())} values {'<' if side == 0 else '>'} {limit:g} clipped",
        )
    if clip is not None:
        span = hi - lo
        ax.set_xlim(lo - 0.03 * span, hi + 0.03 * span)
        if n_low.sum() or n_high.sum():
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    ax.set_yticks(pos)
    ax.set_yticklabels([f"{m} (n={d.size})" for m, d in zip(order, raw, strict=True)])
    ax.set_xlabel(metric_label(metric) + (" (lower is better)" if lower_better else ""))
    ax.set_ylabel("method")
    ax.set_title(_title(params, metric) if title is None else title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return finish(ax, show, save, given=given)

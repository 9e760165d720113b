"""Distributions of cross-validation scores per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .._keys import Key
from .._params import check_choice
from ..metrics import METRICS
from ._utils import finish, get_ax

_OWNER = "pl.cross_validation"


def cross_validation(
    scores: pd.DataFrame | AnnData,
    *,
    metric: str = "r2",
    kind: str = "box",
    key: str = Key.uns.cross_validation,
    clip: tuple[float, float] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Per-method distribution of a cross-validation metric, methods sorted by median.

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
        Limits of the value axis (outliers beyond are drawn at the limit).
    ax, show, save
        Axes to draw into; show the figure; save it to this path.

    Returns
    -------
    The Axes, unless ``show=True``. Best method (highest median, lowest for ``mse`` and
    ``relative_mse``) at the top.

    """
    check_choice(_OWNER, "metric", metric, METRICS)
    check_choice(_OWNER, "kind", kind, ("box", "violin"))
    if isinstance(scores, AnnData):
        if key not in scores.uns or Key.uns.scores not in scores.uns[key]:
            raise KeyError(f"grid.uns[{key!r}] not found; run scimpute.tl.cross_validate first.")
        scores = scores.uns[key][Key.uns.scores]
    method_col = Key.table.method
    lower_better = metric in ("mse", "relative_mse")
    med = scores.groupby(method_col)[metric].median().sort_values(ascending=lower_better)
    order = list(med.index)[::-1]  # best on top
    data = [scores.loc[scores[method_col] == m, metric].dropna().to_numpy() for m in order]
    if clip is not None:
        data = [np.clip(d, *clip) for d in data]
    ax = get_ax(ax, (6.0, 0.5 * len(order) + 1.5))
    if kind == "box":
        ax.boxplot(
            data,
            orientation="horizontal",
            widths=0.6,
            showfliers=True,
            flierprops={"markersize": 2},
        )
    else:
        parts = ax.violinplot(
            [d if d.size else np.array([np.nan]) for d in data],
            orientation="horizontal",
            showmedians=True,
        )
        del parts
    ax.set_yticks(range(1, len(order) + 1))
    ax.set_yticklabels(order)
    ax.set_xlabel(metric)
    ax.grid(axis="x", alpha=0.3)
    return finish(ax, show, save)

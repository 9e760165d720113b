"""Plots of signature alignment (gene space vs latent space)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .._keys import ALIGNMENT_KEY, Key
from .._params import check_choice
from ._utils import check_output, doc_show_save, finish, get_ax


def _table(data, key: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, AnnData):
        if key not in data.uns or Key.uns.scores not in data.uns[key]:
            raise KeyError(
                f"adata.uns[{key!r}] holds no alignment table; run "
                "scimpute.tl.signature_alignment first."
            )
        return data.uns[key][Key.uns.scores]
    raise TypeError("Expected a DataFrame from signature_alignment or an AnnData holding one.")


@doc_show_save
def signature_alignment(
    data: AnnData | pd.DataFrame | Mapping[str, AnnData | pd.DataFrame],
    *,
    key: str = ALIGNMENT_KEY,
    kind: Literal["box", "hist"] = "box",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Distributions of the cosines between a perturbation's signatures in pairs of contexts.

    Gene space (grey) next to latent space (colour), from
    :func:`scimpute.tl.signature_alignment`. Pass a dict ``{label: table}`` (e.g. one model
    per width) to compare several latent spaces side by side; the gene-space box is drawn
    once, from the first table.

    Parameters
    ----------
    data
        A table returned by :func:`scimpute.tl.signature_alignment`, an AnnData holding one
        in ``uns[key]``, or a dict of those.
    key
        ``uns`` key when ``data`` holds AnnData objects.
    kind
        ``"box"`` (box plots) or ``"hist"`` (overlaid histograms).
    ax
        Axes to draw into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`, unless the figure was shown.

    """
    check_choice("pl.signature_alignment", "kind", kind, ("box", "hist"))
    check_output("pl.signature_alignment", show, save)
    tables = (
        {str(k): _table(v, key) for k, v in data.items()}
        if isinstance(data, Mapping)
        else {"latent": _table(data, key)}
    )
    if not tables:
        raise ValueError("Nothing to plot.")
    first = next(iter(tables.values()))
    series = {"gene space": first["cosine_genes"].to_numpy()}
    series.update(
        {
            ("latent space" if lab == "latent" else f"latent: {lab}"): t["cosine_latent"].to_numpy()
            for lab, t in tables.items()
        }
    )
    given = ax is not None
    ax = get_ax(ax, (2.2 + 1.1 * len(series), 3.6) if kind == "box" else (4.5, 3.4))
    colors = ["0.6"] + [plt.cm.tab10(i % 10) for i in range(len(series) - 1)]
    if kind == "box":
        vals = [v[np.isfinite(v)] for v in series.values()]
        bp = ax.boxplot(vals, patch_artist=True, widths=0.6, medianprops={"color": "black"})
        ticks = [f"{lab}\n(n={v.size})" for lab, v in zip(series, vals, strict=True)]
        ax.set_xticks(range(1, len(series) + 1), ticks, rotation=30, ha="right")
        for patch, col in zip(bp["boxes"], colors, strict=True):
            patch.set_facecolor(col)
        ax.set_ylabel("cosine of signatures\n(pairs of contexts)")
        ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    else:
        bins = np.linspace(-1, 1, 41)
        for (lab, v), col in zip(series.items(), colors, strict=True):
            ax.hist(v[np.isfinite(v)], bins=bins, alpha=0.5, color=col, label=lab)
        ax.set_xlabel("cosine of signatures (pairs of contexts)")
        ax.set_ylabel("pairs")
        ax.legend(frameon=False)
    ax.set_title(
        "Signature alignment: does a perturbation\nshift contexts the same way?", fontsize=10
    )
    return finish(ax, show, save, given=given)

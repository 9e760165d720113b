"""Plots of multi-modal integration: the shared latent space and invariance scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase

from .._keys import MM_INVARIANCE_KEY, MM_KEY, Key
from .._params import ParamError, check_choice
from .._validate import _suggest
from ._utils import check_count, check_output, doc_show_save, finish, get_axes

if TYPE_CHECKING:
    from mudata import MuData


def _panels(
    n: int, ax: Axes | None, fig: FigureBase | None, size: tuple[float, float]
) -> tuple[FigureBase, list[Axes]]:
    if ax is not None:
        if fig is not None:
            raise ParamError("pass ax= (one panel) or fig= (several), not both.")
        if n != 1:
            raise ValueError(
                f"ax= can hold one panel, but {n} were requested; pass fig= or ax=None, or ask "
                "for one panel (a single color / modality)."
            )
        return ax.figure, [ax]
    return get_axes(n, fig, (size[0] * n, size[1]))


def _obs_values(mdata: MuData, m: str, names: pd.Index, col: str) -> np.ndarray:
    if col in mdata[m].obs.columns:
        return mdata[m].obs[col].reindex(names).to_numpy()
    if col in mdata.obs.columns:
        return mdata.obs[col].reindex(names).to_numpy()
    options = list(mdata.obs.columns) + list(mdata[m].obs.columns)
    raise KeyError(
        f"color={col!r} is neither a column of mdata[{m!r}].obs nor of mdata.obs, and not "
        "'modality'." + _suggest(col, options)
    )


def _scatter(ax: Axes, xy: np.ndarray, values: np.ndarray, title: str, size: float) -> None:
    vals = pd.Series(values)
    numeric = pd.api.types.is_numeric_dtype(vals) and vals.nunique() > 12
    if numeric:
        sc = ax.scatter(
            xy[:, 0], xy[:, 1], c=vals.to_numpy(float), s=size, cmap="viridis", linewidths=0
        )
        ax.figure.colorbar(sc, ax=ax, fraction=0.046, label=title)
    else:
        cats = pd.Categorical(vals.astype(str))
        cmap = plt.get_cmap("tab10" if len(cats.categories) <= 10 else "tab20")
        for i, c in enumerate(cats.categories):
            sel = np.asarray(cats == c)
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=size,
                color=cmap(i % cmap.N),
                label=c,
                linewidths=0,
                alpha=0.8,
            )
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
            fontsize=8,
            markerscale=2,
            title=title,
        )
    ax.set_xticks([])
    ax.set_yticks([])


@doc_show_save
def latent(
    mdata: MuData,
    *,
    key: str = MM_KEY,
    color: str | Sequence[str] = "modality",
    modalities: Sequence[str] | None = None,
    basis: Literal["pca", "latent"] = "pca",
    connect: int = 0,
    size: float | None = None,
    random_state: int = 0,
    ax: Axes | None = None,
    fig: FigureBase | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | FigureBase | None:
    """Scatter plot of every modality's cells in the shared latent space.

    The per-modality embeddings ``mdata[m].obsm[key]`` written by
    :func:`scimpute.mm.integrate` are stacked (a cell measured in two modalities appears
    twice) and shown on their first two principal components (``basis="pca"``, computed on
    the stacked embeddings) or on latent dimensions 0 and 1 (``basis="latent"``). Well
    integrated modalities overlap, and a label separates the same way in all of them.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData` after :func:`~scimpute.mm.integrate`.
    key
        ``key_added`` of the integration.
    color
        ``"modality"`` and/or columns of ``mdata[m].obs`` or ``mdata.obs``; one panel each.
    modalities
        Modalities to show (default all that have ``obsm[key]``).
    basis
        ``"pca"`` or ``"latent"``.
    connect
        Draw a line between the two embeddings of this many random paired cells (first two
        modalities).
    size
        Marker size (default from the number of points).
    random_state
        Seed of the choice of connected cells and of the drawing order.
    ax
        Axes to draw into (one panel only).
    fig
        Figure (or SubFigure) to draw the panels into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes for one panel, the Figure for several; ``None`` when the figure was shown.

    """
    check_choice("pl.latent", "basis", basis, ("pca", "latent"))
    check_output("pl.latent", show, save)
    connect = check_count("pl.latent", "connect", connect, 0)
    colors = [color] if isinstance(color, str) else list(color)
    mods = [m for m in (modalities or mdata.mod) if key in mdata[m].obsm]
    if not mods:
        raise KeyError(
            f"No modality has obsm[{key!r}]: run scimpute.mm.integrate(mdata, key_added={key!r}) "
            "first."
        )
    emb = [np.asarray(mdata[m].obsm[key], dtype=float) for m in mods]
    stacked = np.vstack(emb)
    if basis == "pca":
        centred = stacked - stacked.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        labels = ("PC1 of latent", "PC2 of latent")
    else:  # basis == "latent"
        xy = stacked[:, :2]
        labels = ("latent 0", "latent 1")
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((xy.shape[0], 2 - xy.shape[1]))])
    offsets = np.cumsum([0] + [e.shape[0] for e in emb])
    rng = np.random.default_rng(random_state)
    order = rng.permutation(xy.shape[0])
    size = size if size is not None else float(np.clip(3000 / max(len(xy), 1), 2, 30))

    given = ax is not None or fig is not None
    fig, axes = _panels(len(colors), ax, fig, (4.6, 4.0))
    for a, col in zip(axes, colors, strict=True):
        if col == "modality":
            values = np.concatenate([[m] * e.shape[0] for m, e in zip(mods, emb, strict=True)])
        else:
            values = np.concatenate([_obs_values(mdata, m, mdata[m].obs_names, col) for m in mods])
        if connect and len(mods) >= 2:
            n0, n1 = mdata[mods[0]].obs_names, mdata[mods[1]].obs_names
            common = n0.intersection(n1)
            pick = rng.choice(len(common), size=min(int(connect), len(common)), replace=False)
            i0 = n0.get_indexer(common[pick]) + offsets[0]
            i1 = n1.get_indexer(common[pick]) + offsets[1]
            for p, q in zip(i0, i1, strict=True):
                a.plot(*zip(xy[p], xy[q], strict=True), color="0.5", lw=0.5, zorder=0)
        _scatter(a, xy[order], values[order], col, size)
        a.set_xlabel(labels[0])
        a.set_ylabel(labels[1])
        a.set_title(f"Shared latent space, coloured by {col}", fontsize=10)
    return finish(axes[0] if len(axes) == 1 else fig, show, save, given=given)


@doc_show_save
def invariance(
    mdata: MuData,
    *,
    key: str = MM_INVARIANCE_KEY,
    kind: Literal["features", "latent"] = "features",
    modalities: str | Sequence[str] | None = None,
    n_top: int = 20,
    highlight: Sequence[str] | None = None,
    ax: Axes | None = None,
    fig: FigureBase | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | FigureBase | None:
    """Ranked modality-invariance scores written by :func:`scimpute.mm.invariant_features`.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData` after :func:`~scimpute.mm.invariant_features`.
    key
        Its ``key_added``.
    kind
        ``"features"``: per modality, the ``n_top`` best features by ``var[key]`` (bars, with
        their 95% bootstrap interval ``var[key + "_ci_low"]`` .. ``var[key + "_ci_high"]`` as
        error bars and ``var[key + "_r2_self"]`` as a tick showing how well their own modality
        reconstructs them); ``"latent"``: the concordance of every shared latent dimension between each
        pair of modalities with its bootstrap interval (``uns[key]["latent"]``).
    modalities
        Modalities to show for ``kind="features"`` (default all scored ones), one panel each.
    n_top
        Number of features per panel.
    highlight
        Feature names to draw in a different colour (e.g. known invariant markers).
    ax
        Axes to draw into (one panel only).
    fig
        Figure (or SubFigure) to draw the panels into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes for one panel, the Figure for several; ``None`` when the figure was shown.

    """
    check_choice("pl.invariance", "kind", kind, ("features", "latent"))
    check_output("pl.invariance", show, save)
    n_top = check_count("pl.invariance", "n_top", n_top, 1)
    given = ax is not None or fig is not None
    if kind == "latent":
        entry = Key.uns.invariance_latent
        if key not in mdata.uns or entry not in mdata.uns[key]:
            raise KeyError(
                f"mdata.uns[{key!r}][{entry!r}] not found: run scimpute.mm.invariant_features."
            )
        table = pd.DataFrame(mdata.uns[key][entry])
        size = (max(4.0, 0.35 * table["dimension"].nunique() + 2), 3.5)
        fig, axes = _panels(1, ax, fig, size)
        a = axes[0]
        pairs = list(pd.unique(table["modalities"]))
        width = 0.8 / max(len(pairs), 1)
        for i, pair in enumerate(pairs):
            t = table[table["modalities"] == pair]
            x = t["dimension"].to_numpy(float) + (i - (len(pairs) - 1) / 2) * width
            y = t["ccc"].to_numpy(float)
            err = np.vstack([y - t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float) - y])
            a.errorbar(x, y, yerr=np.abs(err), fmt="o", ms=4, capsize=2, label=pair)
        a.axhline(0, color="0.6", lw=0.8)
        a.set_xlabel("shared latent dimension")
        a.set_ylabel("concordance between modalities")
        a.set_ylim(min(-0.1, float(table["ci_low"].min()) - 0.05), 1.05)
        a.legend(frameon=False, fontsize=8, title="modalities", title_fontsize=8)
        a.set_title("Concordance of each latent dimension between modalities", fontsize=10)
        return finish(a, show, save, given=given)
    if isinstance(modalities, str):
        modalities = [modalities]
    mods = [m for m in (modalities or mdata.mod) if key in mdata[m].var.columns]
    if not mods:
        raise KeyError(
            f"No modality has var[{key!r}]: run scimpute.mm.invariant_features(mdata, "
            f"key_added={key!r}) first."
        )
    highlight = set(highlight or [])
    fig, axes = _panels(len(mods), ax, fig, (4.2, max(2.5, 0.22 * n_top + 1)))
    for a, m in zip(axes, mods, strict=True):
        var = mdata[m].var
        score = var[key].dropna().sort_values(ascending=False).iloc[: int(n_top)]
        y = np.arange(len(score))[::-1]
        colours = ["#d7191c" if f in highlight else "#2b83ba" for f in score.index]
        a.barh(y, score.to_numpy(), color=colours)
        lo_col, hi_col = Key.var.ci_low(key), Key.var.ci_high(key)
        has_ci = lo_col in var.columns and hi_col in var.columns
        if has_ci:  # 95% bootstrap interval of each score
            lo = var.loc[score.index, lo_col].to_numpy(float)
            hi = var.loc[score.index, hi_col].to_numpy(float)
            sv = score.to_numpy(float)
            err = np.vstack([np.clip(sv - lo, 0, None), np.clip(hi - sv, 0, None)])
            a.errorbar(sv, y, xerr=np.nan_to_num(err), fmt="none", ecolor="0.3", capsize=2, lw=0.8)
        self_col = Key.var.r2_self(key)
        if self_col in var.columns:
            a.plot(
                var.loc[score.index, self_col].to_numpy(),
                y,
                "|",
                color="k",
                ms=8,
                label="own-modality R²",
            )
        a.set_yticks(y)
        a.set_yticklabels(score.index, fontsize=7)
        a.set_xlim(0, 1.02)
        a.set_xlabel(
            "invariance score (bars"
            + (", 95% bootstrap interval)" if has_ci else ")")
            + ("\n| = R² of the feature from its own modality" if self_col in var.columns else "")
        )
        a.set_title(f"{m}: most modality-invariant features", fontsize=10)
    return finish(axes[0] if len(axes) == 1 else fig, show, save, given=given)

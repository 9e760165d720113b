"""How far to trust an imputation: interval calibration and the trust score against errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._keys import CALIBRATION, TRUST_CV, Key
from ._utils import check_output, doc_show_save, finish, fmt_num, get_ax

_BEATS = "#1a9641"
_LOSES = "#d7191c"


def _record(grid: AnnData, key: str, entry: str, owner: str) -> Mapping:
    """``grid.uns[key][entry]``, or a clear error naming what to run."""
    if not isinstance(key, str):
        raise TypeError(f"{owner}: key must be a string (a key_added of tl.impute), got {key!r}.")
    rec = grid.uns.get(key)
    if not isinstance(rec, Mapping):
        raise KeyError(
            f"{owner}: grid.uns[{key!r}] not found: run scimpute.tl.impute(grid, "
            f"method=..., key_added={key!r}, interval=0.9) first."
        )
    if entry not in rec:
        raise KeyError(
            f"{owner}: grid.uns[{key!r}] has no {entry!r} entry: impute it with intervals, "
            f"scimpute.tl.impute(grid, method=..., key_added={key!r}, interval=0.9) (on by "
            'default for method="auto").'
        )
    return rec[entry]


def _method_name(grid: AnnData, key: str) -> str:
    rec = grid.uns.get(key)
    return str(rec.get("method", key)) if isinstance(rec, Mapping) else key


def _array(rec: Mapping, name: str, owner: str, where: str) -> np.ndarray:
    if name not in rec:
        raise KeyError(f"{owner}: {where} has no {name!r} entry.")
    return np.asarray(rec[name], dtype=float).reshape(-1)


@doc_show_save
def calibration(
    grid: AnnData,
    keys: str | Sequence[str],
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Nominal vs empirical coverage of the prediction intervals, one line per run.

    Parameters
    ----------
    grid
        A grid imputed by :func:`scimpute.tl.impute` with ``interval=`` (or
        ``method="auto"``).
    keys
        ``key_added`` of one run, or of several (one line each, labelled by the method).
        Each needs ``grid.uns[key]["calibration"]`` = ``{"nominal", "empirical", "n"}``: the
        coverage of the cross-validation hold-out at each nominal level.
    ax
        Axes to draw into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes, unless the figure was shown. Points on the diagonal are calibrated; below it
    the intervals are too narrow (they cover less than promised), above too wide.

    """
    owner = "pl.calibration"
    check_output(owner, show, save)
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError(f"{owner}: keys is empty; give the key_added of a tl.impute run.")
    lines = []
    for key in keys:
        rec = _record(grid, key, CALIBRATION, owner)
        where = f"grid.uns[{key!r}][{CALIBRATION!r}]"
        nominal = _array(rec, "nominal", owner, where)
        empirical = _array(rec, "empirical", owner, where)
        if nominal.shape != empirical.shape or nominal.size == 0:
            raise ValueError(
                f"{owner}: {where} must hold as many empirical coverages as nominal levels "
                f"(got {nominal.size} and {empirical.size})."
            )
        n = rec.get("n")
        lines.append((key, nominal, empirical, n))
    given = ax is not None
    ax = get_ax(ax, (4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="calibrated")
    for key, nominal, empirical, n in lines:
        order = np.argsort(nominal)
        label = _method_name(grid, key)
        if len(keys) > 1 and label != key:
            label += f" ({key})"
        if n is not None:
            label += f", n = {int(n)} pairs"
        ax.plot(nominal[order], empirical[order], marker="o", ms=4, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage of the interval")
    ax.set_ylabel("empirical coverage (cross-validation)")
    ax.set_title("Calibration of the prediction intervals", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return finish(ax, show, save, given=given)


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (NaN with one class only)."""
    if positive.all() or not positive.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score))


@doc_show_save
def trust(
    grid: AnnData,
    key: str,
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Trust score vs the error measured on held-out pairs of the cross-validation.

    Parameters
    ----------
    grid
        A grid imputed by :func:`scimpute.tl.impute` with ``interval=`` (or
        ``method="auto"``).
    key
        ``key_added`` of the run. Needs ``grid.uns[key]["trust_cv"]`` = ``{"trust",
        "error", "beats_baseline"}``, one value per held-out pair: its trust score, its
        measured normalised error and whether it beat the best baseline.
    ax
        Axes to draw into (default: a new figure).
    show, save
        {show_save}

    Returns
    -------
    The Axes, unless the figure was shown. Each held-out pair is a point, green where the
    prediction beat the best baseline and red where it did not; the title gives the AUROC
    of trust for that outcome. Ticks along the bottom mark the trust of the imputed pairs
    (``obs[f"{key}_trust"]``) when present: where the real gaps sit on this scale.

    """
    owner = "pl.trust"
    check_output(owner, show, save)
    rec = _record(grid, key, TRUST_CV, owner)
    where = f"grid.uns[{key!r}][{TRUST_CV!r}]"
    score = _array(rec, "trust", owner, where)
    error = _array(rec, "error", owner, where)
    beats = _array(rec, "beats_baseline", owner, where).astype(bool)
    if not score.size == error.size == beats.size or score.size == 0:
        raise ValueError(
            f"{owner}: {where} must hold one trust, error and beats_baseline per held-out pair "
            f"(got {score.size}, {error.size}, {beats.size})."
        )
    given = ax is not None
    ax = get_ax(ax, (5.0, 4.0))
    for mask, colour, label in (
        (beats, _BEATS, "beat the best baseline"),
        (~beats, _LOSES, "did not beat it"),
    ):
        if mask.any():
            ax.scatter(
                score[mask],
                error[mask],
                s=14,
                color=colour,
                alpha=0.7,
                lw=0,
                label=f"{label} ({int(mask.sum())})",
            )
    col = Key.obs.trust(key)
    if col in grid.obs.columns:
        real = grid.obs[col].to_numpy(dtype=float)
        real = real[np.isfinite(real)]
        if real.size:
            ax.plot(
                real,
                np.zeros_like(real),
                "|",
                color="0.3",
                ms=10,
                transform=ax.get_xaxis_transform(),
                label=f"imputed pairs ({real.size})",
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("trust (estimated probability of beating the best baseline)")
    ax.set_ylabel("measured error of the held-out pair")
    auc = _auroc(score, beats)
    ax.set_title(
        f"Trust of {_method_name(grid, key)} in cross-validation\n"
        f"AUROC for beating the baseline: {fmt_num(auc, 2)}, n = {score.size} pairs",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return finish(ax, show, save, given=given)

"""Shared plumbing of the plotting functions: axes, show/save like scanpy, readable labels.

Every ``scimpute.pl`` function follows one behaviour:

- ``show=None`` follows ``scanpy.settings.autoshow`` (``True`` unless changed, or when scanpy
  was never imported): the figure is shown and the function returns ``None``, as in scanpy.
  ``show=False`` returns the Axes (or Figure / list of Axes of a multi-panel plot). When
  ``ax=`` or ``fig=`` is given, ``show=None`` does not show: the figure is the caller's to
  finish (other panels may follow), and the Axes are returned.
- ``save=path`` writes the figure there; the format comes from the extension (``.png``,
  ``.pdf``, ``.svg``, ...). Unlike scanpy the path is used as given (no ``figdir`` prefix).
- ``ax=`` draws into an existing Axes where the plot is one panel; multi-panel plots take
  ``fig=`` instead.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, FigureBase

from .._params import ParamError, check_choice

T = TypeVar("T")

#: Readable names of the metrics of :data:`scimpute.metrics.METRICS` and other score columns.
METRIC_LABELS: dict[str, str] = {
    "r2": "R²",
    "r2_effect": "R² of the effect",
    "pearson_effect": "Pearson r of the effect",
    "cosine_effect": "cosine of the effect",
    "mse": "mean squared error",
    "relative_mse": "relative MSE (vs. control)",
    "r2_train": "in-sample R²",
    "ccc": "concordance (CCC)",
}

#: Readable names of the hold-out schemes of :func:`scimpute.tl.cross_validate`.
HOLDOUT_LABELS: dict[str, str] = {
    "leave_one_out": "leave-one-out hold-out",
    "random": "random hold-out",
    "contexts": "hold out whole contexts",
    "perturbations": "hold out whole perturbations",
}


def metric_label(name: str) -> str:
    """Readable label of a metric or score column (``"r2"`` -> ``"R²"``)."""
    return METRIC_LABELS.get(str(name), str(name).replace("_", " "))


def fmt_num(x: float, digits: int = 3) -> str:
    """Format a number without a negative zero (``-0.0001`` -> ``"0.000"``); NaN -> ``"n/a"``."""
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    text = f"{x:.{digits}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text


def autoshow() -> bool:
    """Whether ``show=None`` shows: ``scanpy.settings.autoshow`` when scanpy is loaded."""
    sc = sys.modules.get("scanpy")
    settings = getattr(sc, "settings", None) if sc is not None else None
    return bool(getattr(settings, "autoshow", True))


_SHOW_SAVE_DOC = """``show``: show the figure and return ``None``; ``None`` follows
        ``scanpy.settings.autoshow`` (but does not show a figure passed in with ``ax`` or
        ``fig``). ``save``: write the figure to this path (format from the extension)."""

F = TypeVar("F", bound=Callable)


def doc_show_save(fn: F) -> F:
    """Fill the ``{show_save}`` placeholder of a plot function's docstring (one text for all)."""
    if fn.__doc__:
        fn.__doc__ = fn.__doc__.replace("{show_save}", _SHOW_SAVE_DOC)
    return fn


def check_output(owner: str, show: bool | None, save: str | Path | None) -> None:
    """Check ``show`` and ``save`` with the house message, before anything is drawn."""
    check_choice(owner, "show", show, (True, False, None))
    if save is not None and not isinstance(save, str | Path):
        raise ParamError(f"{owner}: save must be a path (str or Path) or None, got {save!r}.")
    if save is not None and not Path(save).parent.exists():
        raise ParamError(
            f"{owner}: save must be a path in an existing directory, got {str(save)!r}."
        )


def check_count(owner: str, name: str, value: object, ge: int) -> int:
    """Check an integer option (``n_top``, ``annotate``, ...) with the house message."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= ge:
        return int(value)
    raise ParamError(f"{owner}: {name} must be an integer >= {ge}, got {value!r}.")


def get_ax(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """Return ``ax`` or the Axes of a new figure (constrained layout, so nothing overlaps)."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def get_axes(
    n: int, fig: FigureBase | None, figsize: tuple[float, float], **kwargs
) -> tuple[FigureBase, list[Axes]]:
    """``n`` panels in one row: in ``fig`` (a Figure or SubFigure) or in a new figure."""
    if fig is None:
        fig = plt.figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, **kwargs)
    return fig, list(axes[0])


def _figure(out: Axes | FigureBase | Sequence[Axes]) -> Figure:
    """The top-level figure of what a plot function returns (SubFigures lead to their root)."""
    if isinstance(out, Sequence):
        out = out[0]
    fig = out if isinstance(out, FigureBase) else out.figure
    while not isinstance(fig, Figure):
        fig = fig.figure
    return fig


def finish(out: T, show: bool | None, save: str | Path | None, *, given: bool = False) -> T | None:
    """Save and/or show the figure of ``out``; return ``out`` unless the figure was shown.

    ``out`` is what the plot function returns (Axes, Figure or list of Axes); ``given`` says
    that the caller passed the Axes or Figure (then ``show=None`` does not show).
    """
    fig = _figure(out)
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=150)
    if (not given and autoshow()) if show is None else show:
        plt.show()
        return None
    return out


def robust_limits(values: np.ndarray, q: tuple[float, float] = (2.0, 98.0)) -> tuple[float, float]:
    """Percentile limits of the finite ``values`` (a colour scale that outliers do not flatten)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, q))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi

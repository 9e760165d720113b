"""Shared plumbing of the plotting functions (axes creation, show/save like scanpy)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes


def get_ax(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """Return ``ax`` or a new Axes of a new figure."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def finish(ax: Axes, show: bool | None, save: str | Path | None) -> Axes | None:
    """Save and/or show the figure of ``ax``; return ``ax`` unless it was shown."""
    if save is not None:
        ax.figure.savefig(save, bbox_inches="tight", dpi=150)
    if show:
        plt.show()
        return None
    return ax

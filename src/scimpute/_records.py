"""Typed records that scimpute writes into ``.uns`` and reads back.

Each record is a frozen dataclass with ``to_uns`` (an h5ad-safe dict) and ``from_uns`` (a
checked read that names what is missing). Writers and readers go through these classes, never
through string look-ups of their own, so that a field can be followed from
:func:`scimpute.pp.perturbation_grid` through :func:`scimpute.tl.impute` to a plot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from anndata import AnnData

from ._keys import COMBINATION_SEP, DOSE_SEP, Key

__all__ = ["GridInfo", "read_grid_info", "write_grid_info"]


@dataclass(frozen=True)
class GridInfo:
    """What :func:`scimpute.pp.perturbation_grid` records in ``grid.uns["perturbation_grid"]``.

    Attributes
    ----------
    context_key, perturbation_key
        ``grid.obs`` columns holding each row's context and perturbation label.
    control
        Label of the control perturbation, or ``None`` when the grid holds effects.
    combination_sep
        Separator of combination labels (``"A+B"``).
    dose_sep
        Separator between a perturbation and its dose in labels (``"drug@1.5"``).
    layer
        Layer of the cells the grid was aggregated from (``"X"`` for ``adata.X``).
    min_cells
        Fewest cells for a pair to count as measured.
    dose_key
        ``adata.obs`` column of doses used to build the labels, or ``None``.
    n_contexts, n_perturbations, n_measured
        Shape of the grid and how many of its pairs are measured.

    """

    context_key: str
    perturbation_key: str
    control: str | None = None
    combination_sep: str = COMBINATION_SEP
    dose_sep: str = DOSE_SEP
    layer: str = "X"
    min_cells: int = 1
    dose_key: str | None = None
    n_contexts: int = 0
    n_perturbations: int = 0
    n_measured: int = 0

    @property
    def has_control(self) -> bool:
        """Whether the grid has a control perturbation."""
        return self.control is not None

    def to_uns(self) -> dict[str, Any]:
        """An h5ad-safe dict (``None`` stored as ``""``; ``has_control`` kept for readers)."""
        return {
            "context_key": self.context_key,
            "perturbation_key": self.perturbation_key,
            "control": "" if self.control is None else str(self.control),
            "has_control": self.has_control,
            "combination_sep": self.combination_sep,
            "dose_sep": self.dose_sep,
            "params": {
                "layer": self.layer,
                "min_cells": int(self.min_cells),
                "dose_key": "" if self.dose_key is None else self.dose_key,
                "n_contexts": int(self.n_contexts),
                "n_perturbations": int(self.n_perturbations),
                "n_measured": int(self.n_measured),
            },
        }

    @classmethod
    def from_uns(cls, rec: Mapping[str, Any]) -> GridInfo:
        """Read the record written by :meth:`to_uns` (also after an h5ad round trip)."""
        if not isinstance(rec, Mapping):
            raise ValueError(
                f"grid.uns[{Key.uns.grid!r}] is not a mapping (got {type(rec).__name__}): "
                "rebuild the grid with scimpute.pp.perturbation_grid."
            )
        missing = [k for k in ("context_key", "perturbation_key") if k not in rec]
        if missing:
            raise ValueError(
                f"grid.uns[{Key.uns.grid!r}] lacks {', '.join(map(repr, missing))}: it was "
                "overwritten or not made by scimpute.pp.perturbation_grid; rebuild the grid."
            )
        params = rec.get("params", {}) or {}
        has_control = bool(rec.get("has_control", str(rec.get("control", "")) != ""))
        control = str(rec.get("control", "")) if has_control else None
        dose_key = str(params.get("dose_key", "")) or None
        return cls(
            context_key=str(rec["context_key"]),
            perturbation_key=str(rec["perturbation_key"]),
            control=control,
            combination_sep=str(rec.get("combination_sep", COMBINATION_SEP)),
            dose_sep=str(rec.get("dose_sep", DOSE_SEP)),
            layer=str(params.get("layer", "X")),
            min_cells=int(params.get("min_cells", 1)),
            dose_key=dose_key,
            n_contexts=int(params.get("n_contexts", 0)),
            n_perturbations=int(params.get("n_perturbations", 0)),
            n_measured=int(params.get("n_measured", 0)),
        )

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the record's fields."""
        return [f.name for f in fields(cls)]


def write_grid_info(grid: AnnData, info: GridInfo) -> None:
    """Store ``info`` as ``grid.uns["perturbation_grid"]``."""
    grid.uns[Key.uns.grid] = info.to_uns()


def read_grid_info(grid: AnnData) -> GridInfo:
    """The :class:`GridInfo` of a grid, with a clear error when ``grid`` is not one."""
    if not isinstance(grid, AnnData):
        raise TypeError(
            f"Expected an AnnData made by scimpute.pp.perturbation_grid, got {type(grid).__name__}."
        )
    rec = grid.uns.get(Key.uns.grid)
    if rec is None:
        raise ValueError(
            f"grid.uns[{Key.uns.grid!r}] is missing: this AnnData is not a perturbation grid. "
            "Build one with scimpute.pp.perturbation_grid(adata, context_key, perturbation_key)."
        )
    return GridInfo.from_uns(rec)

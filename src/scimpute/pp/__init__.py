"""Preprocessing: build the perturbation grid (functions load on first use, PEP 562)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

if TYPE_CHECKING:
    from ._grid import perturbation_grid
    from ._labels import parse_perturbation

__all__ = [
    "parse_perturbation",
    "perturbation_grid",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={"parse_perturbation": "_labels", "perturbation_grid": "_grid"},
)

"""Preprocessing: build the perturbation grid."""

from ._grid import perturbation_grid
from ._labels import parse_perturbation

__all__ = ["parse_perturbation", "perturbation_grid"]

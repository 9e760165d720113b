"""Plots: pictures of the fields that ``pp`` and ``tl`` write."""

from ._alignment import signature_alignment
from ._cross_validation import cross_validation
from ._grid import grid
from ._prediction import prediction

__all__ = ["cross_validation", "grid", "prediction", "signature_alignment"]

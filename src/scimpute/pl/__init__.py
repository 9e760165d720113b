"""Plots: pictures of the fields that ``pp``, ``tl`` and ``mm`` write."""

from ._alignment import signature_alignment
from ._cross_validation import cross_validation
from ._donors import donors
from ._grid import grid
from ._mm import invariance, latent
from ._prediction import prediction

__all__ = [
    "cross_validation",
    "donors",
    "grid",
    "invariance",
    "latent",
    "prediction",
    "signature_alignment",
]

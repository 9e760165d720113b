"""Plots: pictures of the fields that ``pp``, ``tl`` and ``mm`` write.

Functions load on first use (PEP 562), so matplotlib is imported only when a plot is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

if TYPE_CHECKING:
    from ._alignment import signature_alignment
    from ._cross_validation import cross_validation
    from ._donors import donors
    from ._grid import grid
    from ._mm import invariance, latent
    from ._prediction import prediction
    from ._trust import calibration, trust

__all__ = [
    "calibration",
    "cross_validation",
    "donors",
    "grid",
    "invariance",
    "latent",
    "prediction",
    "signature_alignment",
    "trust",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={
        "calibration": "_trust",
        "cross_validation": "_cross_validation",
        "donors": "_donors",
        "grid": "_grid",
        "invariance": "_mm",
        "latent": "_mm",
        "prediction": "_prediction",
        "signature_alignment": "_alignment",
        "trust": "_trust",
    },
)

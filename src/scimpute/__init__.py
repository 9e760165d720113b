"""scimpute: causal imputation for single-cell perturbation data.

Predict the response of (context, intervention) pairs that were never measured, from the
ones that were, and integrate the modalities of cells measured in several.

Subpackages load on first use (``si.tl`` imports JAX and the methods when it is first
touched), so ``import scimpute`` is fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._lazy import attach

try:
    __version__ = version("scimpute")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from . import datasets, methods, metrics, mm, nn, ntk, pl, pp, tl

__all__ = [
    "datasets",
    "methods",
    "metrics",
    "mm",
    "nn",
    "ntk",
    "pl",
    "pp",
    "tl",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    submodules=["datasets", "methods", "metrics", "mm", "nn", "ntk", "pl", "pp", "tl"],
)

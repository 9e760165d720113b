"""scimpute: causal imputation for single-cell perturbation data.

Predict the response of (context, intervention) pairs that were never measured, from the
ones that were, and integrate the modalities of cells measured in several.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, methods, metrics, mm, nn, pl, pp, tl

try:
    __version__ = version("scimpute")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["datasets", "methods", "metrics", "mm", "nn", "pl", "pp", "tl"]

"""Tools: impute grids and evaluate methods."""

from ._alignment import signature_alignment
from ._cross_validate import cross_validate, summarize_cross_validation
from ._cross_validate_transfer import cross_validate_transfer
from ._impute import impute
from ._transfer import compare_transfer, fit_transfer, load_network, transfer

__all__ = [
    "compare_transfer",
    "cross_validate",
    "cross_validate_transfer",
    "fit_transfer",
    "impute",
    "load_network",
    "signature_alignment",
    "summarize_cross_validation",
    "transfer",
]

"""Tools: impute grids and evaluate methods.

Functions load on first use (PEP 562), so ``import scimpute.tl`` does not import JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

if TYPE_CHECKING:
    from ._alignment import signature_alignment
    from ._cross_validate import cross_validate, summarize_cross_validation
    from ._cross_validate_transfer import cross_validate_transfer
    from ._distributed import use_devices
    from ._impute import impute
    from ._inpaint import inpaint
    from ._rank import rank_experiments, top_pairs
    from ._transfer import compare_transfer, fit_transfer, load_network, transfer

__all__ = [
    "compare_transfer",
    "cross_validate",
    "cross_validate_transfer",
    "fit_transfer",
    "impute",
    "inpaint",
    "load_network",
    "rank_experiments",
    "signature_alignment",
    "summarize_cross_validation",
    "top_pairs",
    "transfer",
    "use_devices",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={
        "compare_transfer": "_transfer",
        "cross_validate": "_cross_validate",
        "cross_validate_transfer": "_cross_validate_transfer",
        "fit_transfer": "_transfer",
        "impute": "_impute",
        "inpaint": "_inpaint",
        "load_network": "_transfer",
        "rank_experiments": "_rank",
        "signature_alignment": "_alignment",
        "summarize_cross_validation": "_cross_validate",
        "top_pairs": "_rank",
        "transfer": "_transfer",
        "use_devices": "_distributed",
    },
)

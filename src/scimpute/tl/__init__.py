"""Tools: impute grids and evaluate methods."""

from ._cross_validate import cross_validate, summarize_cross_validation
from ._impute import impute

__all__ = ["cross_validate", "impute", "summarize_cross_validation"]

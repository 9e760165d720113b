"""Plots."""

from ._donors import donors

__all__ = ["donors"]

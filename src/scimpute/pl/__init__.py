"""Plots."""

from ._alignment import signature_alignment

__all__ = ["signature_alignment"]

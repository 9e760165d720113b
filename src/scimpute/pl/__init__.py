"""Plots."""

from ._mm import invariance, latent

__all__ = ["invariance", "latent"]

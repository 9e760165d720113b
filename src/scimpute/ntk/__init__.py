"""Convolutional neural tangent kernels (CNTK) for image and spatial-lattice inpainting.

The kernel of an encoder-decoder convolutional network on a fixed input, built layer by
layer (:func:`cntk_full`, :func:`cntk_anchor_rows`), expanded from a small base resolution
to a full image (:func:`expand_kernel`), and kernel regression on the observed pixels
(:func:`solve_cholesky`, :func:`solve_cg`). :func:`scimpute.tl.inpaint` is the entry point.
"""

from __future__ import annotations

from ._expand import expand_kernel, kernel_block
from ._image import CntkParams, fill_image
from ._layers import (
    Layer,
    Prior,
    cntk_anchor_rows,
    cntk_full,
    encoder_decoder,
    leaky_relu_duals,
    make_prior,
    upsample_matrix,
)
from ._solve import CGInfo, StationaryOperator, solve_cg, solve_cholesky

__all__ = [
    "CGInfo",
    "CntkParams",
    "Layer",
    "Prior",
    "StationaryOperator",
    "cntk_anchor_rows",
    "cntk_full",
    "encoder_decoder",
    "expand_kernel",
    "fill_image",
    "kernel_block",
    "leaky_relu_duals",
    "make_prior",
    "solve_cg",
    "solve_cholesky",
    "upsample_matrix",
]

"""Neural tangent kernels: convolutional (CNTK) for inpainting, fully connected for ``ntk``.

The activation duals and the NTK layer step (:func:`leaky_relu_duals`, :func:`ntk_layer`)
are one implementation shared by the fully connected kernel of ``method="ntk"``
(:func:`fc_ntk`) and the convolutional recursions below.

The kernel of an encoder-decoder convolutional network on a fixed input, built layer by
layer (:func:`cntk_full`, :func:`cntk_anchor_rows`), expanded from a small base resolution
to a full image (:func:`expand_kernel`), and kernel regression on the observed pixels
(:func:`solve_cholesky`, :func:`solve_cg`). :func:`scimpute.tl.inpaint` is the entry point.
"""

from __future__ import annotations

from ._duals import fc_ntk, leaky_relu_duals, ntk_layer, relu_dual, relu_dual_derivative
from ._expand import expand_kernel, kernel_block
from ._image import CntkParams, fill_image
from ._layers import (
    Layer,
    Prior,
    cntk_anchor_rows,
    cntk_full,
    encoder_decoder,
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
    "fc_ntk",
    "fill_image",
    "kernel_block",
    "leaky_relu_duals",
    "make_prior",
    "ntk_layer",
    "relu_dual",
    "relu_dual_derivative",
    "solve_cg",
    "solve_cholesky",
    "upsample_matrix",
]

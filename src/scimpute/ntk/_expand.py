"""Expansion of a base-resolution CNTK to a full image (the published ``expander.py``).

An encoder-decoder with ``s`` up-samplings on circularly padded input has a kernel that is
periodic under shifts by ``P = 2^s`` pixels (exactly so for a stationary prior, and by
assumption for the others). The published expansion therefore keeps only the rows of the
``P x P`` anchor pixels of the ``d x d`` base kernel, each as a window of ``d x d`` offsets
around its pixel (offsets ``-P .. d - P - 1`` per axis), and sets every pair outside the
window to the smallest entry of that anchor's row:

``K(a, b) = A[a mod P][(a mod P) + (b - a)]`` inside the window, ``min A[a mod P]`` outside,

with offsets taken circularly on the full ``W x H`` image. This is an approximation of the
network's kernel at ``W x H`` (exact on the window when the prior is stationary, not beyond
it). The expanded kernel is not exactly symmetric (the window is one offset wider on the
negative side); :func:`kernel_block` returns the symmetric part ``(K(a, b) + K(b, a)) / 2``,
which is what the published exact solver uses implicitly (``scipy.linalg.solve(...,
assume_a="sym")`` reads one triangle).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["expand_kernel", "kernel_block"]


def _one_sided(A, mins, a, b, shape):
    """``K(a, b)`` of the expansion for index arrays ``a = (ar, ac)``, ``b = (br, bc)``."""
    P, d = A.shape[0], A.shape[2]
    W, H = shape
    i, j = a[0] % P, a[1] % P
    R = (b[0] - a[0] + P) % W
    C = (b[1] - a[1] + P) % H
    inside = (R < d) & (C < d)
    val = A[i, j, (R - P + i) % d, (C - P + j) % d]
    return jnp.where(inside, val, mins[i, j])


@jax.jit
def _block(A, mins, ar, ac, br, bc, W, H):
    a = (ar[:, None], ac[:, None])
    b = (br[None, :], bc[None, :])
    k1 = _one_sided(A, mins, a, b, (W, H))
    k2 = _one_sided(A, mins, b, a, (W, H))
    return 0.5 * (k1 + k2)


def kernel_block(
    A: np.ndarray, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> jax.Array:
    """Symmetrised expanded kernel between pixel sets ``rows`` and ``cols``.

    Parameters
    ----------
    A
        Anchor rows ``(P, P, d, d)`` (:func:`scimpute.ntk.cntk_anchor_rows`).
    shape
        ``(W, H)`` of the full image.
    rows, cols
        Integer arrays ``(n, 2)`` and ``(m, 2)`` of pixel coordinates.

    Returns
    -------
    ``(n, m)`` float32 array.

    """
    A = jnp.asarray(A, jnp.float32)
    mins = A.min(axis=(2, 3))
    rows = jnp.asarray(rows, jnp.int32)
    cols = jnp.asarray(cols, jnp.int32)
    return _block(A, mins, rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1], shape[0], shape[1])


def expand_kernel(A: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The full expanded kernel ``(W, H, W, H)`` (one-sided, as the published code).

    Only for small images: it holds ``(W H)^2`` numbers.
    """
    W, H = shape
    A = jnp.asarray(A, jnp.float32)
    mins = A.min(axis=(2, 3))
    g = jnp.stack(jnp.meshgrid(jnp.arange(W), jnp.arange(H), indexing="ij"), -1).reshape(-1, 2)
    a = (g[:, 0][:, None], g[:, 1][:, None])
    b = (g[:, 0][None, :], g[:, 1][None, :])
    return np.asarray(_one_sided(A, mins, a, b, (W, H))).reshape(W, H, W, H)

"""Dual activations and the NTK layer step shared by the CNTK and ``method="ntk"``.

One ReLU / LeakyReLU layer of the neural tangent kernel recursion (Jacot et al. 2018,
Arora et al. 2019) acting on a pre-activation covariance ``Lambda`` and the tangent kernel
``Theta_z`` before the activation::

    rho     = Lambda(p, q) / sqrt(Lambda(p, p) Lambda(q, q))
    Sigma_h = kappa_1(rho) sqrt(Lambda(p, p) Lambda(q, q))
    Theta_h = kappa_0(rho) Theta_z

with the normalised duals ``kappa_1`` (``kappa_1(1) = 1``; the arc-cosine kernel of order 1
for ReLU) and ``kappa_0`` (its derivative). A fully connected network adds the next linear
layer, ``Theta = Sigma_h + Theta_h`` (:func:`fc_ntk`); a convolution sums both over the
filter offsets instead (:mod:`scimpute.ntk._layers`).

Every function takes the array namespace ``xp`` (``numpy`` by default, ``jax.numpy`` inside
jitted JAX code), so the same lines serve the float32 NumPy CNTK, its jitted JAX path and
the float64 JAX / NumPy kernels of :mod:`scimpute.methods.ntk`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fc_ntk", "leaky_relu_duals", "ntk_layer", "relu_dual", "relu_dual_derivative"]


def leaky_relu_duals(rho, slope: float = 0.0, *, xp=np):
    """Normalised dual activations ``(kappa_1(rho), kappa_0(rho))`` of LeakyReLU.

    ``kappa_1 = c E[phi(u) phi(v)]`` and ``kappa_0 = c E[phi'(u) phi'(v)]`` for unit-variance
    Gaussians with correlation ``rho`` and ``c = 2 / (1 + slope^2)`` (so ``kappa_1(1) = 1``);
    ``slope = 0`` is ReLU, where ``kappa_1(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho)
    / pi`` and ``kappa_0(rho) = (pi - arccos rho) / pi``. ``rho`` is clipped to ``[-1, 1]``.
    Equal to the published ``kap_1`` / ``kap_0`` (uhlerlab/ntk_matrix_completion).

    Parameters
    ----------
    rho
        Correlations (any shape).
    slope
        Negative slope (a Python float; static under ``jit``).
    xp
        Array namespace: ``numpy`` or ``jax.numpy``.

    """
    rho = xp.clip(rho, -1.0, 1.0)
    theta = xp.arccos(rho)
    sin = xp.sqrt(xp.maximum(1.0 - rho**2, 0.0))
    k1 = (rho * (math.pi - theta) + sin) / math.pi
    k0 = (math.pi - theta) / math.pi
    if slope:
        corr = 2 * slope / (math.pi * (slope**2 + 1))
        k1 = k1 + corr * (rho * theta - sin)
        k0 = k0 + corr * theta
    return k1, k0


def relu_dual(x, *, xp=np):
    """ReLU dual normalised so that ``phi(1) = 1``: ``(sqrt(1 - x^2) + (pi - arccos x) x) / pi``."""
    return leaky_relu_duals(x, 0.0, xp=xp)[0]


def relu_dual_derivative(x, *, xp=np):
    """Derivative of :func:`relu_dual`: ``(pi - arccos x) / pi`` (input clipped to [-1, 1])."""
    return leaky_relu_duals(x, 0.0, xp=xp)[1]


def ntk_layer(lam, theta, slope: float = 0.0, *, norm=None, xp=np):
    """One activation layer of the NTK recursion: ``(Sigma_h, Theta_h)``.

    Parameters
    ----------
    lam
        Pre-activation covariance ``Lambda(p, q)``.
    theta
        Tangent kernel before the activation ``Theta_z(p, q)`` (same shape).
    slope
        Negative slope of the LeakyReLU (0 = ReLU).
    norm
        ``sqrt(Lambda(p, p) Lambda(q, q))``, broadcastable to ``lam``; ``None`` when the
        diagonal is 1 (cosines, as in :func:`fc_ntk`). Pairs with ``norm == 0`` get 0.
    xp
        Array namespace: ``numpy`` or ``jax.numpy``.

    Returns
    -------
    ``Sigma_h = kappa_1(rho) norm`` and ``Theta_h = kappa_0(rho) theta`` with
    ``rho = lam / norm``.

    """
    if norm is None:
        k1, k0 = leaky_relu_duals(lam, slope, xp=xp)
        return k1, k0 * theta
    pos = norm > 0
    k1, k0 = leaky_relu_duals(lam / xp.where(pos, norm, 1.0), slope, xp=xp)
    return xp.where(pos, k1 * norm, 0.0), xp.where(pos, k0, 0.0) * theta


def fc_ntk(x, depth: int = 1, *, slope: float = 0.0, xp=np):
    """Neural tangent kernel of a fully connected (Leaky)ReLU network of ``depth`` layers.

    A function of the cosine ``x`` between two unit-norm inputs (any shape; clipped to
    ``[-1, 1]``). Recursion: ``Sigma_0 = K_0 = x``; for each hidden layer
    ``(Sigma_h, Theta_h) = ntk_layer(Sigma, K)``, ``K = Sigma_h + Theta_h``,
    ``Sigma = Sigma_h``; returns ``K_depth``. For ReLU ``kappa_d(1) = d + 1``,
    ``kappa_1(0) = 1 / pi``, ``kappa_2(0) = 0.6857``, ``kappa_3(0) = 1.0604``. This is the
    kernel of ``method="ntk"`` (:func:`scimpute.methods.ntk.ntk_kernel` is this function
    in JAX).

    Parameters
    ----------
    x
        Cosines (array-like); computed in its dtype (float64 for Python floats / lists).
    depth
        Number of hidden layers, ``>= 1`` (static under ``jit``).
    slope
        Negative slope of the LeakyReLU (0 = ReLU).
    xp
        Array namespace: ``numpy`` or ``jax.numpy``.

    Examples
    --------
    >>> from scimpute.ntk import fc_ntk
    >>> round(float(fc_ntk(1.0, 2)), 6), round(float(fc_ntk(0.0, 1)), 6)
    (3.0, 0.31831)

    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"fc_ntk: depth must be an integer >= 1, got {depth!r}.")
    sigma = xp.clip(xp.asarray(x), -1.0, 1.0)
    k = sigma
    for _ in range(int(depth)):
        sigma, th = ntk_layer(sigma, k, slope, xp=xp)
        k = sigma + th
    return k

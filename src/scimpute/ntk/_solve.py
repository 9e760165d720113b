"""Kernel regression on the observed pixels: exact Cholesky, and conjugate gradient.

Given a kernel ``K`` between pixels, observed pixels ``O`` and missing pixels ``M``, the
prediction is ``K[M, O] (K[O, O] + lam I)^{-1} y_O`` for each channel (the published
``kr_solvers/exact_solve.py``, with an optional ridge ``lam``).

* :func:`solve_cholesky` forms ``K[O, O]`` (``|O|^2`` numbers) and factors it: exact up to
  float32 round-off; ``O(|O|^3)`` time, for images up to about 10^4 observed pixels.
* :func:`solve_cg` needs only a function ``v -> (K[O, O] + lam I) v``: conjugate gradient,
  run per channel until the relative residual is below ``tol`` or ``maxiter`` steps; its
  answer is approximate to that residual. :class:`StationaryOperator` is such a function
  for an expanded CNTK, by FFT convolutions (never forming a pixels^2 matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CGInfo", "StationaryOperator", "solve_cg", "solve_cholesky"]


def solve_cholesky(K: jax.Array, Y: jax.Array, reg: float = 0.0) -> jax.Array:
    """``(K + reg * mean(diag K) * I)^{-1} Y`` by Cholesky (``K`` symmetric positive definite).

    Raises
    ------
    numpy.linalg.LinAlgError
        When the factorisation fails (``K`` not positive definite at this ridge).

    """
    K = jnp.asarray(K, jnp.float32)
    n = K.shape[0]
    lam = reg * jnp.mean(jnp.diag(K))
    c, low = jax.scipy.linalg.cho_factor(K + lam * jnp.eye(n, dtype=K.dtype), lower=True)
    if not bool(jnp.all(jnp.isfinite(c))):
        raise np.linalg.LinAlgError(
            "the kernel on the observed pixels is not positive definite at this ridge; raise reg."
        )
    return jax.scipy.linalg.cho_solve((c, low), jnp.asarray(Y, jnp.float32))


@dataclass(frozen=True)
class CGInfo:
    """Outcome of :func:`solve_cg`: steps taken and final relative residual per channel."""

    iterations: int
    relative_residual: np.ndarray


def solve_cg(
    matvec: Callable[[jax.Array], jax.Array],
    Y: jax.Array,
    *,
    tol: float = 1e-4,
    maxiter: int = 500,
) -> tuple[jax.Array, CGInfo]:
    """Conjugate gradient for ``A X = Y``, all columns of ``Y`` at once (each its own step sizes).

    Parameters
    ----------
    matvec
        ``V (n, c) -> A V`` for a symmetric positive definite ``A`` (include the ridge).
    Y
        Right-hand sides ``(n, c)``.
    tol
        Stop when every column's ``||A x - y|| / ||y||`` is below it.
    maxiter
        Most steps.

    Returns
    -------
    ``(X, CGInfo)``.

    """
    Y = jnp.asarray(Y, jnp.float32)
    ynorm = jnp.maximum(jnp.linalg.norm(Y, axis=0), 1e-30)

    def cond(state):
        k, _, r, _, _ = state
        return (k < maxiter) & jnp.any(jnp.linalg.norm(r, axis=0) / ynorm > tol)

    def body(state):
        k, x, r, p, rs = state
        Ap = matvec(p)
        alpha = rs / jnp.maximum(jnp.sum(p * Ap, axis=0), 1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = jnp.sum(r * r, axis=0)
        p = r + (rs_new / jnp.maximum(rs, 1e-30)) * p
        return k + 1, x, r, p, rs_new

    x0 = jnp.zeros_like(Y)
    state = (0, x0, Y, Y, jnp.sum(Y * Y, axis=0))
    k, x, _, _, _ = jax.lax.while_loop(cond, body, state)
    res = np.asarray(jnp.linalg.norm(Y - matvec(x), axis=0) / ynorm)
    return x, CGInfo(int(k), res)


class StationaryOperator:
    """Matrix-vector products with an expanded CNTK by FFT convolutions on the full image.

    The expanded kernel (:mod:`scimpute.ntk._expand`) is ``K(a, b) = m_i + G_i(b - a)`` with
    ``i = a mod P`` (``P^2`` anchor classes), ``m_i`` the anchor's minimum and ``G_i`` the
    anchor's window minus ``m_i`` (zero outside the window). A truncated SVD
    ``G_i(delta) ~ sum_j U[i, j] V_j(delta)`` of the ``P^2 x d^2`` matrix ``G`` (``rank``
    terms; exact at full rank) turns ``K w`` into ``rank`` circular convolutions of the
    image-shaped ``w``, so one product costs ``O(rank W H log(W H))`` and nothing of size
    pixels^2 is formed. The operator is the symmetric part ``(K + K^T) / 2`` of the low-rank
    kernel, exactly symmetric; ``relative_error`` is the Frobenius error of the truncation.
    """

    def __init__(self, A: np.ndarray, shape: tuple[int, int], rank: int, *, random_state: int = 0):
        from sklearn.utils.extmath import randomized_svd

        A = np.asarray(A, np.float32)
        P, d = A.shape[0], A.shape[2]
        W, H = shape
        if W < d or H < d:
            raise ValueError(f"the image ({W} x {H}) must be at least the base size {d}.")
        self.shape, self.P = (W, H), P
        mins = A.min(axis=(2, 3))
        # row of anchor (i, j) as a function of offset: window index R = delta + P
        G = np.empty((P, P, d, d))
        for i in range(P):
            G[i] = np.roll(A[i], (P - i, 0), axis=(1, 2))
        for j in range(P):
            G[:, j] = np.roll(G[:, j], P - j, axis=2)
        G -= mins[:, :, None, None]
        Gm = G.reshape(P * P, d * d)
        rank = int(min(rank, *Gm.shape))
        if rank == min(Gm.shape):
            u, s, vt = np.linalg.svd(Gm.astype(np.float64), full_matrices=False)
        else:
            u, s, vt = randomized_svd(Gm, rank, n_iter=4, random_state=random_state)
        total = float(np.sum(Gm.astype(np.float64) ** 2))
        self.rank = rank
        self.relative_error = float(np.sqrt(max(total - np.sum(s[:rank] ** 2), 0.0) / total))
        U = (u[:, :rank] * s[:rank]).reshape(P, P, rank)
        # filters on the full image: offset delta = R - P, placed circularly
        filt = np.zeros((rank, W, H))
        filt[:, :d, :d] = vt[:rank].reshape(rank, d, d)
        filt = np.roll(filt, (-P, -P), axis=(1, 2))
        rr = np.arange(W) % P
        cc = np.arange(H) % P
        self._U = jnp.asarray(U[rr[:, None], cc[None, :]].transpose(2, 0, 1), jnp.float32)
        self._m = jnp.asarray(mins[rr[:, None], cc[None, :]], jnp.float32)
        self._F = jnp.asarray(np.fft.rfft2(filt), jnp.complex64)  # (rank, W, H//2+1)
        self.diag = float(
            np.mean(
                A[
                    np.arange(P)[:, None],
                    np.arange(P)[None, :],
                    np.arange(P)[:, None],
                    np.arange(P)[None, :],
                ]
            )
        )

    def image_matvec(self, w: jax.Array) -> jax.Array:
        """``(K + K^T) / 2`` applied to image-shaped ``w`` ``(c, W, H)``."""
        return _sym_matvec(self._U, self._m, self._F, w)


@jax.jit
def _sym_matvec(U, m, F, w):
    W, H = w.shape[-2:]
    # K w (a) = m(a) sum(w) + sum_j U_j(a) (V_j corr w)(a)   [V_j(delta), b = a + delta]
    wf = jnp.fft.rfft2(w)  # (c, W, H')
    corr = jnp.fft.irfft2(jnp.conj(F)[None] * wf[:, None], s=(W, H))  # (c, r, W, H)
    kw = m[None] * jnp.sum(w, axis=(1, 2))[:, None, None] + jnp.einsum("rwh,crwh->cwh", U, corr)
    # K^T w (b) = sum_a m(a) w(a) + sum_j (V_j conv (U_j w))(b)
    uw = jnp.fft.rfft2(U[None] * w[:, None])  # (c, r, W, H')
    conv = jnp.fft.irfft2(jnp.sum(F[None] * uw, axis=1), s=(W, H))
    ktw = jnp.sum(m[None] * w, axis=(1, 2))[:, None, None] + conv
    return 0.5 * (kw + ktw)

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
from functools import partial

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
    matvec: Callable[..., jax.Array],
    Y: jax.Array,
    *,
    args: tuple = (),
    precond: Callable[..., jax.Array] | None = None,
    tol: float = 1e-4,
    maxiter: int = 500,
) -> tuple[jax.Array, CGInfo]:
    """Conjugate gradient for ``A X = Y``, all columns of ``Y`` at once (each its own step sizes).

    Parameters
    ----------
    matvec
        ``(V (n, c), *args) -> A V`` for a symmetric positive definite ``A`` (include the
        ridge). Arrays go in ``args`` (not in a closure) so they are not compiled in.
    Y
        Right-hand sides ``(n, c)``.
    args
        Extra operands of ``matvec`` (and of ``precond``).
    precond
        ``(R, *args) -> M^{-1} R`` for a symmetric positive definite ``M ~ A``
        (preconditioned CG); ``None``: plain CG.
    tol
        Stop when every column's ``||A x - y|| / ||y||`` is below it.
    maxiter
        Most steps.

    Returns
    -------
    ``(X, CGInfo)``. A column whose search direction meets non-positive curvature (``A``
    not positive definite) stops there; its residual says how far it got.

    """
    Y = jnp.asarray(Y, jnp.float32)
    x, k = _cg(matvec, precond or _identity, Y, args, float(tol), int(maxiter))
    ynorm = jnp.maximum(jnp.linalg.norm(Y, axis=0), 1e-30)
    res = np.asarray(jnp.linalg.norm(Y - matvec(x, *args), axis=0) / ynorm)
    return x, CGInfo(int(k), res)


def _identity(r, *args):
    return r


@partial(jax.jit, static_argnums=(0, 1, 4, 5))
def _cg(matvec, precond, Y, args, tol, maxiter):
    ynorm = jnp.maximum(jnp.linalg.norm(Y, axis=0), 1e-30)

    def cond(state):
        k, _, r, _, _, live = state
        return (k < maxiter) & jnp.any(live & (jnp.linalg.norm(r, axis=0) / ynorm > tol))

    def body(state):
        k, x, r, p, rz, live = state
        Ap = matvec(p, *args)
        pAp = jnp.sum(p * Ap, axis=0)
        live = live & (pAp > 0)
        alpha = jnp.where(live, rz / jnp.where(live, pAp, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * Ap
        z = precond(r, *args)
        rz_new = jnp.sum(r * z, axis=0)
        p = z + jnp.where(live, rz_new / jnp.maximum(rz, 1e-30), 0.0) * p
        return k + 1, x, r, p, rz_new, live

    live0 = jnp.ones(Y.shape[1], bool)
    z0 = precond(Y, *args)
    state = (0, jnp.zeros_like(Y), Y, z0, jnp.sum(Y * z0, axis=0), live0)
    k, x, *_ = jax.lax.while_loop(cond, body, state)
    return x, k


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
        total = float(np.sum(Gm.astype(np.float64) ** 2))
        if rank == 0:  # phase-averaged: one stationary filter, the anchors' mean
            mean_row = Gm.mean(axis=0)
            u = np.ones((P * P, 1))
            s = np.ones(1)
            vt = mean_row[None]
            resid = Gm - mean_row[None]
            self.relative_error = float(np.sqrt(np.sum(resid.astype(np.float64) ** 2) / total))
            rank = 1
            mins = np.full_like(mins, mins.mean())
        else:
            rank = int(min(rank, *Gm.shape))
            if rank == min(Gm.shape):
                u, s, vt = np.linalg.svd(Gm.astype(np.float64), full_matrices=False)
            else:
                u, s, vt = randomized_svd(Gm, rank, n_iter=4, random_state=random_state)
            err = max(total - np.sum(s[:rank] ** 2), 0.0) / total
            self.relative_error = float(np.sqrt(err))
        self.rank = rank
        U = (u[:, :rank] * s[:rank]).reshape(P, P, rank)
        # filters on the full image: offset delta = R - P, placed circularly
        filt = np.zeros((rank, W, H))
        filt[:, :d, :d] = vt[:rank].reshape(rank, d, d)
        filt = np.roll(filt, (-P, -P), axis=(1, 2))
        rr = np.arange(W) % P
        cc = np.arange(H) % P
        self._U = jnp.asarray(U[rr[:, None], cc[None, :]].transpose(2, 0, 1), jnp.float32)
        #: the anchors' common floor: kept out of the operator (huge eigenvalue m N along
        #: the constant vector, below float32 resolution otherwise), added back exactly by
        #: the caller (a rank-one update); the anchors' deviations from it stay inside.
        self.floor = float(mins.mean())
        self._m = jnp.asarray(mins[rr[:, None], cc[None, :]] - self.floor, jnp.float32)
        self._F = jnp.asarray(np.fft.rfft2(filt), jnp.complex64)  # (rank, W, H//2+1)
        # anchor-averaged (stationary) kernel, symmetrised: eigenvalues of its circulant
        mean = np.zeros((W, H))
        mean[:d, :d] = G.mean(axis=(0, 1))
        mean = np.roll(mean, (-P, -P), axis=(0, 1))
        mean = 0.5 * (mean + np.roll(mean[::-1, ::-1], (1, 1), axis=(0, 1)))
        self.spectrum = np.fft.rfft2(mean).real
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

    @property
    def operands(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Arrays of :func:`sym_matvec` (pass them as operands, not closure constants)."""
        return self._U, self._m, self._F

    def image_matvec(self, w: jax.Array) -> jax.Array:
        """``(K + K^T) / 2`` applied to image-shaped ``w`` ``(c, W, H)``."""
        return sym_matvec(w, *self.operands)


@jax.jit
def sym_matvec(w, U, m, F):
    """``(K + K^T) / 2`` of a :class:`StationaryOperator` applied to ``w`` ``(c, W, H)``."""
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

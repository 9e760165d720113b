"""JAX kernels of synthetic interventions: one call fits every candidate of a bucket.

All kernels run under ``jax.enable_x64(True)`` (set by the caller, never globally) because
they work on Gram matrices, whose condition number is the square of the design's.

A *key* is one (target unit, training units, donors) combination; its *blocks* are the row
sets of its stacked design that validation holds out one at a time: the training units
(leave-one-unit-out) or, with a single training unit, the folds of its features. A block
``b`` is described by sufficient statistics of the per-profile centred data
``Z = Y - mean over features``:

``G[b]`` (D, D)
    Gram of the donors' Z over the block's rows.
``s[b]`` (D,)
    Sums of the donors' Z over the block's rows (zero for whole units).
``nb[b]``
    Number of rows.
``m[b]`` (D,)
    Feature means of the donors' profiles in the block's unit.

and, for every candidate (target perturbation) of the key, ``Gv[n, b]`` (D,) the cross
Gram with the target's Z, ``Gvv[n, b]``, ``sv[n, b]`` and ``mv[n, b]``. The centred moments
of any union of blocks follow exactly (see :func:`_training_moments`), so each fit costs
``O(D^3)`` whatever the number of features.

The statistics travel as a :class:`Blocks` named tuple (arrays, one leading axis per key in
:func:`fit_keys`) and the settings as a :class:`FitSettings` pytree, whose arrays are traced
and whose ``sum_to_one`` is static, so one compilation serves every ridge, rank and energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

RANK_TOL = 1e-10
RANK_ENERGY = -1  # rank code: keep a fraction of the spectral energy
RANK_GD = -2  # rank code: Gavish-Donoho threshold
GD_OMEGA = (0.56, -0.95, 1.82, 1.43)


def spectral_filters(lam, n_d, n_rows, rank_code, ridge, energy, xp=jnp):
    """Filters ``f`` (R, ..., D) so that ``w = V diag(f) V^T X^T y`` for R regularisations.

    ``lam`` (..., D) holds eigenvalues in descending order. ``rank_code`` (R,) is the number
    of components, ``RANK_ENERGY`` (keep ``energy`` of the spectrum) or ``RANK_GD``
    (Gavish-Donoho); ``ridge`` (R,) the relative ridge penalties. All are traced values, so
    one compilation serves every setting.
    """
    lam = xp.clip(lam, 0.0, None)
    size = lam.shape[-1]
    idx = xp.arange(size)
    top = lam[..., :1]
    base = (lam > RANK_TOL * top) & (top > 0)
    by_energy = _energy_rank(lam, energy, xp)
    m = xp.minimum(n_rows, n_d)
    beta = m / xp.maximum(xp.maximum(n_rows, n_d), 1)
    omega = ((GD_OMEGA[0] * beta + GD_OMEGA[1]) * beta + GD_OMEGA[2]) * beta + GD_OMEGA[3]
    sig = xp.sqrt(lam)
    lo = xp.clip((m - 1) // 2, 0, size - 1).astype(xp.int32)
    hi = xp.clip(m // 2, 0, size - 1).astype(xp.int32)
    med = 0.5 * (
        xp.take_along_axis(sig, lo[..., None], axis=-1)
        + xp.take_along_axis(sig, hi[..., None], axis=-1)
    )
    by_gd = (sig > omega[..., None] * med) | (idx == 0)
    shape = (-1,) + (1,) * lam.ndim
    code = rank_code.reshape(shape)
    keep = base[None] & xp.where(
        code == RANK_ENERGY, by_energy[None], xp.where(code == RANK_GD, by_gd[None], idx < code)
    )
    mu = ridge.reshape(shape) * xp.sum(lam, axis=-1, keepdims=True)[None] / xp.maximum(n_d, 1)
    return xp.where(keep, 1.0 / xp.where(keep, lam[None] + mu, 1.0), 0.0)


def _energy_rank(lam, energy, xp=jnp):
    """Components up to the first carrying ``energy`` of the spectrum (all if energy >= 1)."""
    total = xp.sum(lam, axis=-1, keepdims=True)
    frac = xp.cumsum(lam, axis=-1) / xp.where(total > 0, total, 1.0)
    k = xp.argmax(frac >= energy, axis=-1) + 1
    return (xp.arange(lam.shape[-1]) < k[..., None]) | (energy >= 1)


def _energy_keep(lam, energy, xp=jnp):
    lam = xp.clip(lam, 0.0, None)
    top = lam[..., :1]
    return (lam > RANK_TOL * top) & (top > 0) & _energy_rank(lam, energy, xp)


def _eigh_desc(K, xp=jnp):
    lam, V = xp.linalg.eigh(K)
    return lam[..., ::-1], V[..., ::-1]


class Blocks(NamedTuple):
    """Sufficient statistics of one key (or, in :func:`fit_keys`, a chunk of keys).

    Shapes for one key: J blocks, D donors, N candidates.
    """

    G: Any  # (J, D, D) donor Gram per block
    s: Any  # (J, D) donor sums per block
    nb: Any  # (J,) rows per block
    m: Any  # (J, D) donor feature means in the block's unit
    bmask: Any  # (J,) real blocks
    dmask: Any  # (D,) real donors
    Gu: Any  # (D, D) donor Gram of the target unit
    Gv: Any  # (N, J, D) cross Gram with each candidate's target
    Gvv: Any  # (N, J) target Gram
    sv: Any  # (N, J) target sums
    mv: Any  # (N, J) target feature means


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["rank_code", "ridge", "energy", "sub_energy"],
    meta_fields=["sum_to_one"],
)
@dataclass(frozen=True)
class FitSettings:
    """Regularisations and options of a fit: traced arrays and one static flag."""

    rank_code: Any  # (R,) number of components, RANK_ENERGY or RANK_GD
    ridge: Any  # (R,) relative ridge penalties
    energy: Any  # energy kept when rank_code is RANK_ENERGY
    sub_energy: Any  # energy kept on both sides of the subspace statistic
    sum_to_one: bool = False  # static: affine weights


def _affine(b: Blocks, xp=jnp) -> Blocks:
    """Centre every profile by the mean of the key's donors (the weights then sum to one).

    With ``C = I - 1 1^T / |D|`` on the donor axis, the design becomes ``X C`` and the
    target ``y - X 1 / |D|``; every block statistic transforms linearly.
    """
    dm = b.dmask.astype(b.G.dtype)
    u = dm / xp.maximum(xp.sum(dm), 1.0)

    def cvec(x):  # centre the last (donor) axis over the real donors
        return x - (x @ u)[..., None] * dm

    def cmat(A):  # C A C for symmetric A: one pass, no transposed copies
        r = A @ u  # (..., D) row means over the real donors
        return (
            A
            - r[..., :, None] * dm
            - dm[:, None] * r[..., None, :]
            + (r @ u)[..., None, None] * (dm[:, None] * dm[None, :])
        )

    Gu1 = b.G @ u  # (J, D)
    uGu = Gu1 @ u  # (J,)
    Gv_u = b.Gv @ u  # (N, J)
    return b._replace(
        G=cmat(b.G),
        s=cvec(b.s),
        m=cvec(b.m),
        Gu=None if b.Gu is None else cmat(b.Gu),  # None: not needed (validation)
        Gv=cvec(b.Gv - Gu1[None, :, :]),
        Gvv=b.Gvv - 2 * Gv_u + uGu[None, :],
        sv=b.sv - (b.s @ u)[None, :],
        mv=b.mv - (b.m @ u)[None, :],
    )


def _training_sets(b: Blocks, xp=jnp):
    """Weights ``Wm`` (J+1, J) of the training sets, their row counts and safe divisors.

    Row j < J of ``Wm`` leaves block j out; row J uses every block.
    """
    J = b.s.shape[0]
    bm = b.bmask.astype(b.G.dtype)
    Wm = xp.concatenate([bm[None, :] * (1.0 - xp.eye(J, dtype=b.G.dtype)), bm[None, :]], axis=0)
    nr = Wm @ b.nb  # (J+1,)
    return Wm, nr, xp.where(nr > 0, nr, 1.0)


def _training_moments(b: Blocks, Wm, nr_safe, dm, xp=jnp):
    """Centred donor Gram ``Kc`` (J+1, D, D) of every training set.

    Also returns the donor means ``xbar`` (J+1, D) and the weighted per-block offsets
    ``wd`` (J+1, J, D) of the block means from them.
    """
    xbar = (Wm @ (b.s + b.nb[:, None] * b.m)) / nr_safe[:, None]  # (J+1, D)
    delta = b.m[None, :, :] - xbar[:, None, :]  # (J+1, J, D)
    wd = Wm[:, :, None] * delta  # (J+1, J, D)
    cross = xp.matmul(xp.swapaxes(wd, 1, 2), b.s)  # (J+1, D, D)
    Kc = (
        xp.tensordot(Wm, b.G, axes=1)
        + cross
        + xp.swapaxes(cross, 1, 2)
        + xp.matmul(xp.swapaxes(wd * b.nb[None, :, None], 1, 2), delta)
    )
    return Kc * dm[None, :, None] * dm[None, None, :], xbar, wd


def _target_moments(b: Blocks, Wm, nr_safe, wd, dm, xp=jnp):
    """Target means ``ybar`` (N, J+1) and centred cross moments ``bc`` (J+1, N, D)."""
    ybar = (b.sv + b.nb[None, :] * b.mv) @ Wm.T / nr_safe[None, :]  # (N, J+1)
    eps = b.mv[:, None, :] - ybar[:, :, None]  # (N, J+1, J)
    bc = (
        xp.einsum("rb,nbd->rnd", Wm, b.Gv)
        + xp.einsum("rbd,nb->rnd", wd, b.sv)
        + xp.einsum("nrb,bd->rnd", Wm[None] * eps, b.s)
        + xp.einsum("rbd,nrb->rnd", wd * b.nb[None, :, None], eps)
    )  # (J+1, N, D)
    return ybar, bc * dm


def _block_sse(b: Blocks, Wb, b0b, xp=jnp):
    """SSE of block j under weights Wb[j] (J, D, K*N) and intercepts b0b (J, K, N)."""
    J, D = b.s.shape
    N = b.Gv.shape[0]
    k = Wb.shape[-1] // N
    quad = xp.sum(Wb * xp.matmul(b.G, Wb), axis=1).reshape(J, k, N)
    Wr = Wb.reshape(J, D, k, N)
    lin = xp.einsum("jdkn,njd->jkn", Wr, b.Gv)
    c = b.mv.T[:, None, :] - xp.einsum("jdkn,jd->jkn", Wr, b.m) - b0b
    lin_s = b.sv.T[:, None, :] - xp.einsum("jdkn,jd->jkn", Wr, b.s)
    return b.Gvv.T[:, None, :] - 2 * lin + quad + 2 * c * lin_s + b.nb[:, None, None] * c**2


def _subspace_stat(lam, V, lam_u, V_u, sub_energy, xp=jnp):
    """``1 - ||V_u^T V||^2 / rank(V_u)`` on the components carrying ``sub_energy``."""
    k1 = _energy_keep(lam, sub_energy, xp)
    k2 = _energy_keep(lam_u, sub_energy, xp)
    A = (V_u.T @ V) * k2[:, None] * k1[None, :]
    n2 = xp.sum(k2)
    return xp.where(n2 > 0, 1.0 - xp.sum(A**2) / xp.where(n2 > 0, n2, 1.0), 0.0)


def _one_key(b: Blocks, cfg: FitSettings, xp=jnp):
    """Fit every candidate of one key on every training set; see the module docstring.

    Shapes: J blocks, D donors, N candidates, R regularisations. Work is arranged as
    batched matrix products over the J + 1 training sets (J leave-one-block-out sets and
    the full set).
    """
    J, D = b.s.shape
    N = b.Gv.shape[0]
    R = cfg.ridge.shape[0]
    n_d = xp.sum(b.dmask)
    bm = b.bmask.astype(b.G.dtype)
    dm = b.dmask.astype(b.G.dtype)
    if cfg.sum_to_one:
        b = _affine(b, xp)
    Wm, nr, nr_safe = _training_sets(b, xp)
    Kc, xbar, wd = _training_moments(b, Wm, nr_safe, dm, xp)
    # one batched eigendecomposition for the J + 1 training sets and the target unit's own
    # donor Gram (subspace statistic): a single LAPACK call per program, since two
    # concurrent batched LAPACK calls can wedge XLA's CPU thread pool
    Gu = b.Gu * dm[:, None] * dm[None, :]
    lam_all, V_all = _eigh_desc(xp.concatenate([Kc, Gu[None]], axis=0), xp)
    lam, V = lam_all[: J + 1], V_all[: J + 1]  # (J+1, D), (J+1, D, D)
    lam_u, V_u = lam_all[J + 1], V_all[J + 1]

    ybar, bc = _target_moments(b, Wm, nr_safe, wd, dm, xp)
    beta = xp.matmul(bc, V)  # (J+1, N, D): coordinates in each eigenbasis
    F = spectral_filters(lam, n_d, nr, cfg.rank_code, cfg.ridge, cfg.energy, xp)  # (R, J+1, D)
    Mx = F.transpose(1, 0, 2)[:, :, None, :] * beta[:, None, :, :]  # (J+1, R, N, D)
    Wt = xp.matmul(V, Mx.reshape(J + 1, R * N, D).transpose(0, 2, 1))  # (J+1, D, R*N)
    b0 = ybar.T[:, None, :] - xp.matmul(xbar[:, None, :], Wt).reshape(J + 1, R, N)

    # validation: block j under fold j's fit, every regularisation
    sse_val = _block_sse(b, Wt[:J], b0[:J], xp) * bm[:, None, None]  # (J, R, N)
    val_sse = xp.sum(sse_val, axis=0)  # (R, N)
    best = xp.argmin(xp.where(xp.isfinite(val_sse), val_sse, xp.inf), axis=0)  # (N,)
    val_blocks = xp.take_along_axis(sse_val, best[None, None, :], axis=1)[:, 0]  # (J, N)
    # the full fit of each candidate's best regularisation, and its in-sample error
    w_full = xp.take_along_axis(Wt[J].reshape(D, R, N), best[None, None, :], axis=1)[:, 0]
    b_full = xp.take_along_axis(b0[J], best[None, :], axis=0)[0]  # (N,)
    sse_b = _block_sse(
        b, xp.broadcast_to(w_full, (J, D, N)), xp.broadcast_to(b_full, (J, 1, N)), xp
    )[:, 0]  # (J, N)
    sse_in = xp.sum(sse_b * bm[:, None], axis=0)
    return {
        "val_sse": val_sse.T,  # (N, R)
        "val_blocks": val_blocks.T,  # (N, J): held-out SSE of each block, best regularisation
        "best": best,
        "val_n": xp.sum(b.nb * bm),
        "sse_in": sse_in,
        "w": w_full.T,  # (N, D)
        "b": b_full,
        # subspace inclusion: target unit's donor rows versus the training design's rows
        "subspace": _subspace_stat(lam[J], V[J], lam_u, V_u, cfg.sub_energy, xp),
        "rank90": xp.sum(_energy_keep(lam[J], 0.9, xp)),
    }


@jax.jit
def fit_keys(blocks: Blocks, cfg: FitSettings):
    """:func:`_one_key` vmapped over a chunk of keys (leading axis of every block array)."""
    return jax.vmap(_one_key, in_axes=(0, None))(blocks, cfg)


@jax.jit
def predict_keys(W, b, X):
    """Predictions ``W @ X + b`` of a chunk of keys: W (k, N, D), b (k, N), X (k, D, p)."""
    return jnp.einsum("knd,kdp->knp", W, X) + b[..., None]

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


def spectral_filters(lam, n_d, n_rows, rank_code, ridge, energy):
    """Filters ``f`` (R, ..., D) so that ``w = V diag(f) V^T X^T y`` for R regularisations.

    ``lam`` (..., D) holds eigenvalues in descending order. ``rank_code`` (R,) is the number
    of components, ``RANK_ENERGY`` (keep ``energy`` of the spectrum) or ``RANK_GD``
    (Gavish-Donoho); ``ridge`` (R,) the relative ridge penalties. All are traced values, so
    one compilation serves every setting.
    """
    lam = jnp.clip(lam, 0.0, None)
    size = lam.shape[-1]
    idx = jnp.arange(size)
    top = lam[..., :1]
    base = (lam > RANK_TOL * top) & (top > 0)
    by_energy = _energy_rank(lam, energy)
    m = jnp.minimum(n_rows, n_d)
    beta = m / jnp.maximum(jnp.maximum(n_rows, n_d), 1)
    omega = ((GD_OMEGA[0] * beta + GD_OMEGA[1]) * beta + GD_OMEGA[2]) * beta + GD_OMEGA[3]
    sig = jnp.sqrt(lam)
    lo = jnp.clip((m - 1) // 2, 0, size - 1).astype(jnp.int32)
    hi = jnp.clip(m // 2, 0, size - 1).astype(jnp.int32)
    med = 0.5 * (
        jnp.take_along_axis(sig, lo[..., None], axis=-1)
        + jnp.take_along_axis(sig, hi[..., None], axis=-1)
    )
    by_gd = (sig > omega[..., None] * med) | (idx == 0)
    shape = (-1,) + (1,) * lam.ndim
    code = rank_code.reshape(shape)
    keep = base[None] & jnp.where(
        code == RANK_ENERGY, by_energy[None], jnp.where(code == RANK_GD, by_gd[None], idx < code)
    )
    mu = ridge.reshape(shape) * jnp.sum(lam, axis=-1, keepdims=True)[None] / jnp.maximum(n_d, 1)
    return jnp.where(keep, 1.0 / jnp.where(keep, lam[None] + mu, 1.0), 0.0)


def _energy_rank(lam, energy):
    """Components up to the first carrying ``energy`` of the spectrum (all if energy >= 1)."""
    total = jnp.sum(lam, axis=-1, keepdims=True)
    frac = jnp.cumsum(lam, axis=-1) / jnp.where(total > 0, total, 1.0)
    k = jnp.argmax(frac >= energy, axis=-1) + 1
    return (jnp.arange(lam.shape[-1]) < k[..., None]) | (energy >= 1)


def _energy_keep(lam, energy):
    lam = jnp.clip(lam, 0.0, None)
    top = lam[..., :1]
    return (lam > RANK_TOL * top) & (top > 0) & _energy_rank(lam, energy)


def _eigh_desc(K):
    lam, V = jnp.linalg.eigh(K)
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


def _affine(b: Blocks) -> Blocks:
    """Centre every profile by the mean of the key's donors (the weights then sum to one).

    With ``C = I - 1 1^T / |D|`` on the donor axis, the design becomes ``X C`` and the
    target ``y - X 1 / |D|``; every block statistic transforms linearly.
    """
    dm = b.dmask.astype(b.G.dtype)
    u = dm / jnp.maximum(jnp.sum(dm), 1.0)

    def cvec(x):  # centre the last (donor) axis over the real donors
        return x - jnp.sum(x * u, axis=-1, keepdims=True) * dm

    def cmat(A):
        return jnp.swapaxes(cvec(jnp.swapaxes(cvec(A), -1, -2)), -1, -2)

    Gu1 = b.G @ u  # (J, D)
    uGu = Gu1 @ u  # (J,)
    Gv_u = b.Gv @ u  # (N, J)
    return b._replace(
        G=cmat(b.G),
        s=cvec(b.s),
        m=cvec(b.m),
        Gu=cmat(b.Gu),
        Gv=cvec(b.Gv - Gu1[None, :, :]),
        Gvv=b.Gvv - 2 * Gv_u + uGu[None, :],
        sv=b.sv - (b.s @ u)[None, :],
        mv=b.mv - (b.m @ u)[None, :],
    )


def _training_sets(b: Blocks):
    """Weights ``Wm`` (J+1, J) of the training sets, their row counts and safe divisors.

    Row j < J of ``Wm`` leaves block j out; row J uses every block.
    """
    J = b.s.shape[0]
    bm = b.bmask.astype(b.G.dtype)
    Wm = jnp.concatenate([bm[None, :] * (1.0 - jnp.eye(J, dtype=b.G.dtype)), bm[None, :]], axis=0)
    nr = Wm @ b.nb  # (J+1,)
    return Wm, nr, jnp.where(nr > 0, nr, 1.0)


def _training_moments(b: Blocks, Wm, nr_safe, dm):
    """Centred donor Gram ``Kc`` (J+1, D, D) of every training set.

    Also returns the donor means ``xbar`` (J+1, D) and the weighted per-block offsets
    ``wd`` (J+1, J, D) of the block means from them.
    """
    xbar = (Wm @ (b.s + b.nb[:, None] * b.m)) / nr_safe[:, None]  # (J+1, D)
    delta = b.m[None, :, :] - xbar[:, None, :]  # (J+1, J, D)
    wd = Wm[:, :, None] * delta  # (J+1, J, D)
    cross = jnp.einsum("rbd,be->rde", wd, b.s)
    Kc = (
        jnp.einsum("rb,bde->rde", Wm, b.G)
        + cross
        + jnp.swapaxes(cross, 1, 2)
        + jnp.einsum("rbd,rbe->rde", wd * b.nb[None, :, None], delta)
    )
    return Kc * dm[None, :, None] * dm[None, None, :], xbar, wd


def _target_moments(b: Blocks, Wm, nr_safe, wd, dm):
    """Target means ``ybar`` (N, J+1) and centred cross moments ``bc`` (J+1, N, D)."""
    ybar = (b.sv + b.nb[None, :] * b.mv) @ Wm.T / nr_safe[None, :]  # (N, J+1)
    eps = b.mv[:, None, :] - ybar[:, :, None]  # (N, J+1, J)
    bc = (
        jnp.einsum("rb,nbd->rnd", Wm, b.Gv)
        + jnp.einsum("rbd,nb->rnd", wd, b.sv)
        + jnp.einsum("nrb,bd->rnd", Wm[None] * eps, b.s)
        + jnp.einsum("rbd,nrb->rnd", wd * b.nb[None, :, None], eps)
    )  # (J+1, N, D)
    return ybar, bc * dm


def _block_sse(b: Blocks, Wb, b0b):
    """SSE of block j under weights Wb[j] (J, D, K*N) and intercepts b0b (J, K, N)."""
    J, D = b.s.shape
    N = b.Gv.shape[0]
    k = Wb.shape[-1] // N
    quad = jnp.sum(Wb * jnp.matmul(b.G, Wb), axis=1).reshape(J, k, N)
    Wr = Wb.reshape(J, D, k, N)
    lin = jnp.einsum("jdkn,njd->jkn", Wr, b.Gv)
    c = b.mv.T[:, None, :] - jnp.einsum("jdkn,jd->jkn", Wr, b.m) - b0b
    lin_s = b.sv.T[:, None, :] - jnp.einsum("jdkn,jd->jkn", Wr, b.s)
    return b.Gvv.T[:, None, :] - 2 * lin + quad + 2 * c * lin_s + b.nb[:, None, None] * c**2


def _subspace_stat(lam, V, lam_u, V_u, sub_energy):
    """``1 - ||V_u^T V||^2 / rank(V_u)`` on the components carrying ``sub_energy``."""
    k1 = _energy_keep(lam, sub_energy)
    k2 = _energy_keep(lam_u, sub_energy)
    A = (V_u.T @ V) * k2[:, None] * k1[None, :]
    n2 = jnp.sum(k2)
    return jnp.where(n2 > 0, 1.0 - jnp.sum(A**2) / jnp.where(n2 > 0, n2, 1.0), 0.0)


def _one_key(b: Blocks, cfg: FitSettings):
    """Fit every candidate of one key on every training set; see the module docstring.

    Shapes: J blocks, D donors, N candidates, R regularisations. Work is arranged as
    batched matrix products over the J + 1 training sets (J leave-one-block-out sets and
    the full set).
    """
    J, D = b.s.shape
    N = b.Gv.shape[0]
    R = cfg.ridge.shape[0]
    n_d = jnp.sum(b.dmask)
    bm = b.bmask.astype(b.G.dtype)
    dm = b.dmask.astype(b.G.dtype)
    if cfg.sum_to_one:
        b = _affine(b)
    Wm, nr, nr_safe = _training_sets(b)
    Kc, xbar, wd = _training_moments(b, Wm, nr_safe, dm)
    # one batched eigendecomposition for the J + 1 training sets and the target unit's own
    # donor Gram (subspace statistic): a single LAPACK call per program, since two
    # concurrent batched LAPACK calls can wedge XLA's CPU thread pool
    Gu = b.Gu * dm[:, None] * dm[None, :]
    lam_all, V_all = _eigh_desc(jnp.concatenate([Kc, Gu[None]], axis=0))
    lam, V = lam_all[: J + 1], V_all[: J + 1]  # (J+1, D), (J+1, D, D)
    lam_u, V_u = lam_all[J + 1], V_all[J + 1]

    ybar, bc = _target_moments(b, Wm, nr_safe, wd, dm)
    beta = jnp.matmul(bc, V)  # (J+1, N, D): coordinates in each eigenbasis
    F = spectral_filters(lam, n_d, nr, cfg.rank_code, cfg.ridge, cfg.energy)  # (R, J+1, D)
    Mx = F.transpose(1, 0, 2)[:, :, None, :] * beta[:, None, :, :]  # (J+1, R, N, D)
    Wt = jnp.matmul(V, Mx.reshape(J + 1, R * N, D).transpose(0, 2, 1))  # (J+1, D, R*N)
    b0 = ybar.T[:, None, :] - jnp.matmul(xbar[:, None, :], Wt).reshape(J + 1, R, N)

    # validation: block j under fold j's fit, every regularisation
    sse_val = _block_sse(b, Wt[:J], b0[:J]) * bm[:, None, None]  # (J, R, N)
    val_sse = jnp.sum(sse_val, axis=0)  # (R, N)
    best = jnp.argmin(jnp.where(jnp.isfinite(val_sse), val_sse, jnp.inf), axis=0)  # (N,)
    val_blocks = jnp.take_along_axis(sse_val, best[None, None, :], axis=1)[:, 0]  # (J, N)
    # the full fit of each candidate's best regularisation, and its in-sample error
    w_full = jnp.take_along_axis(Wt[J].reshape(D, R, N), best[None, None, :], axis=1)[:, 0]
    b_full = jnp.take_along_axis(b0[J], best[None, :], axis=0)[0]  # (N,)
    sse_b = _block_sse(b, jnp.broadcast_to(w_full, (J, D, N)), jnp.broadcast_to(b_full, (J, 1, N)))[
        :, 0
    ]  # (J, N)
    sse_in = jnp.sum(sse_b * bm[:, None], axis=0)
    return {
        "val_sse": val_sse.T,  # (N, R)
        "val_blocks": val_blocks.T,  # (N, J): held-out SSE of each block, best regularisation
        "best": best,
        "val_n": jnp.sum(b.nb * bm),
        "sse_in": sse_in,
        "w": w_full.T,  # (N, D)
        "b": b_full,
        # subspace inclusion: target unit's donor rows versus the training design's rows
        "subspace": _subspace_stat(lam[J], V[J], lam_u, V_u, cfg.sub_energy),
        "rank90": jnp.sum(_energy_keep(lam[J], 0.9)),
    }


@jax.jit
def fit_keys(blocks: Blocks, cfg: FitSettings):
    """:func:`_one_key` vmapped over a chunk of keys (leading axis of every block array)."""
    return jax.vmap(_one_key, in_axes=(0, None))(blocks, cfg)


@jax.jit
def predict_keys(W, b, X):
    """Predictions ``W @ X + b`` of a chunk of keys: W (k, N, D), b (k, N), X (k, D, p)."""
    return jnp.einsum("knd,kdp->knp", W, X) + b[..., None]

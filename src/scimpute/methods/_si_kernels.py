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
of any union of blocks follow exactly (see :func:`_centred_moments`), so each fit costs
``O(D^3)`` whatever the number of features.
"""

from __future__ import annotations

from functools import partial

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


def _affine(G, s, m, Gu, Gv, Gvv, sv, mv, dm):
    """Centre every profile by the mean of the key's donors (the weights then sum to one).

    With ``C = I - 1 1^T / |D|`` on the donor axis, the design becomes ``X C`` and the
    target ``y - X 1 / |D|``; every block statistic transforms linearly.
    """
    u = dm / jnp.maximum(jnp.sum(dm), 1.0)

    def cvec(x):  # centre the last (donor) axis over the real donors
        return x - jnp.sum(x * u, axis=-1, keepdims=True) * dm

    def cmat(A):
        return jnp.swapaxes(cvec(jnp.swapaxes(cvec(A), -1, -2)), -1, -2)

    Gu1 = G @ u  # (J, D)
    uGu = Gu1 @ u  # (J,)
    Gv_u = Gv @ u  # (N, J)
    Gvv = Gvv - 2 * Gv_u + uGu[None, :]
    Gv = cvec(Gv - Gu1[None, :, :])
    sv = sv - (s @ u)[None, :]
    mv = mv - (m @ u)[None, :]
    return cmat(G), cvec(s), cvec(m), cmat(Gu), Gv, Gvv, sv, mv


def _one_key(
    G,
    s,
    nb,
    m,
    bmask,
    dmask,
    Gu,
    Gv,
    Gvv,
    sv,
    mv,
    rank_code,
    ridge,
    energy,
    sub_energy,
    sum_to_one=False,
):
    """Fit every candidate of one key on every training set; see the module docstring.

    Shapes: J blocks, D donors, N candidates, R regularisations. Work is arranged as
    batched matrix products over the J + 1 training sets (J leave-one-block-out sets and
    the full set).
    """
    J, D = s.shape
    N = Gv.shape[0]
    R = ridge.shape[0]
    n_d = jnp.sum(dmask)
    bm = bmask.astype(G.dtype)
    dm = dmask.astype(G.dtype)
    if sum_to_one:
        G, s, m, Gu, Gv, Gvv, sv, mv = _affine(G, s, m, Gu, Gv, Gvv, sv, mv, dm)
    # training sets: row j < J leaves block j out, row J uses every block
    Wm = jnp.concatenate([bm[None, :] * (1.0 - jnp.eye(J, dtype=G.dtype)), bm[None, :]], axis=0)
    nr = Wm @ nb  # (J+1,)
    nr_safe = jnp.where(nr > 0, nr, 1.0)
    xbar = (Wm @ (s + nb[:, None] * m)) / nr_safe[:, None]  # (J+1, D)
    delta = m[None, :, :] - xbar[:, None, :]  # (J+1, J, D)
    wd = Wm[:, :, None] * delta  # (J+1, J, D)
    cross = jnp.einsum("rbd,be->rde", wd, s)
    Kc = (
        jnp.einsum("rb,bde->rde", Wm, G)
        + cross
        + jnp.swapaxes(cross, 1, 2)
        + jnp.einsum("rbd,rbe->rde", wd * nb[None, :, None], delta)
    )
    Kc = Kc * dm[None, :, None] * dm[None, None, :]
    # one batched eigendecomposition for the J + 1 training sets and the target unit's own
    # donor Gram (subspace statistic): a single LAPACK call per program, since two
    # concurrent batched LAPACK calls can wedge XLA's CPU thread pool
    Gu = Gu * dm[:, None] * dm[None, :]
    lam_all, V_all = _eigh_desc(jnp.concatenate([Kc, Gu[None]], axis=0))
    lam, V = lam_all[: J + 1], V_all[: J + 1]  # (J+1, D), (J+1, D, D)
    lam_u, V_u = lam_all[J + 1], V_all[J + 1]

    ybar = (sv + nb[None, :] * mv) @ Wm.T / nr_safe[None, :]  # (N, J+1)
    eps = mv[:, None, :] - ybar[:, :, None]  # (N, J+1, J)
    bc = (
        jnp.einsum("rb,nbd->rnd", Wm, Gv)
        + jnp.einsum("rbd,nb->rnd", wd, sv)
        + jnp.einsum("nrb,bd->rnd", Wm[None] * eps, s)
        + jnp.einsum("rbd,nrb->rnd", wd * nb[None, :, None], eps)
    )  # (J+1, N, D)
    bc = bc * dm
    beta = jnp.matmul(bc, V)  # (J+1, N, D): coordinates in each eigenbasis
    F = spectral_filters(lam, n_d, nr, rank_code, ridge, energy)  # (R, J+1, D)
    Mx = F.transpose(1, 0, 2)[:, :, None, :] * beta[:, None, :, :]  # (J+1, R, N, D)
    Wt = jnp.matmul(V, Mx.reshape(J + 1, R * N, D).transpose(0, 2, 1))  # (J+1, D, R*N)
    b0 = ybar.T[:, None, :] - jnp.matmul(xbar[:, None, :], Wt).reshape(J + 1, R, N)

    def block_sse(Wb, b0b):
        """SSE of block j under weights Wb[j] (J, D, K*N) and intercepts b0b (J, K, N)."""
        k = Wb.shape[-1] // N
        quad = jnp.sum(Wb * jnp.matmul(G, Wb), axis=1).reshape(J, k, N)
        Wr = Wb.reshape(J, D, k, N)
        lin = jnp.einsum("jdkn,njd->jkn", Wr, Gv)
        c = mv.T[:, None, :] - jnp.einsum("jdkn,jd->jkn", Wr, m) - b0b
        lin_s = sv.T[:, None, :] - jnp.einsum("jdkn,jd->jkn", Wr, s)
        return Gvv.T[:, None, :] - 2 * lin + quad + 2 * c * lin_s + nb[:, None, None] * c**2

    # validation: block j under fold j's fit, every regularisation
    sse_val = block_sse(Wt[:J], b0[:J]) * bm[:, None, None]  # (J, R, N)
    val_sse = jnp.sum(sse_val, axis=0)  # (R, N)
    best = jnp.argmin(jnp.where(jnp.isfinite(val_sse), val_sse, jnp.inf), axis=0)  # (N,)
    val_blocks = jnp.take_along_axis(sse_val, best[None, None, :], axis=1)[:, 0]  # (J, N)
    # the full fit of each candidate's best regularisation, and its in-sample error
    w_full = jnp.take_along_axis(Wt[J].reshape(D, R, N), best[None, None, :], axis=1)[:, 0]
    b_full = jnp.take_along_axis(b0[J], best[None, :], axis=0)[0]  # (N,)
    sse_b = block_sse(jnp.broadcast_to(w_full, (J, D, N)), jnp.broadcast_to(b_full, (J, 1, N)))[
        :, 0
    ]  # (J, N)
    sse_in = jnp.sum(sse_b * bm[:, None], axis=0)

    # subspace inclusion: target unit's donor rows versus the training design's rows
    k1 = _energy_keep(lam[J], sub_energy)
    k2 = _energy_keep(lam_u, sub_energy)
    A = (V_u.T @ V[J]) * k2[:, None] * k1[None, :]
    n2 = jnp.sum(k2)
    sub = jnp.where(n2 > 0, 1.0 - jnp.sum(A**2) / jnp.where(n2 > 0, n2, 1.0), 0.0)
    return {
        "val_sse": val_sse.T,  # (N, R)
        "val_blocks": val_blocks.T,  # (N, J): held-out SSE of each block, best regularisation
        "best": best,
        "val_n": jnp.sum(nb * bm),
        "sse_in": sse_in,
        "w": w_full.T,  # (N, D)
        "b": b_full,
        "subspace": sub,
        "rank90": jnp.sum(_energy_keep(lam[J], 0.9)),
    }


@partial(jax.jit, static_argnames=("sum_to_one",))
def fit_keys(
    G,
    s,
    nb,
    m,
    bmask,
    dmask,
    Gu,
    Gv,
    Gvv,
    sv,
    mv,
    rank_code,
    ridge,
    energy,
    sub_energy,
    *,
    sum_to_one=False,
):
    """:func:`_one_key` vmapped over a chunk of keys (leading axis of the first 11 inputs)."""
    fn = partial(_one_key, sum_to_one=sum_to_one)
    return jax.vmap(fn, in_axes=(0,) * 11 + (None,) * 4)(
        G, s, nb, m, bmask, dmask, Gu, Gv, Gvv, sv, mv, rank_code, ridge, energy, sub_energy
    )


@jax.jit
def predict_keys(W, b, X):
    """Predictions ``W @ X + b`` of a chunk of keys: W (k, N, D), b (k, N), X (k, D, p)."""
    return jnp.einsum("knd,kdp->knp", W, X) + b[..., None]

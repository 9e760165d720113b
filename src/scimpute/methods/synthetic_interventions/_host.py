"""Large groups in numpy/LAPACK, in two phases: validation first, the full fit on demand.

The arithmetic is that of :func:`._kernels._one_key` (the JAX kernels' one-key fit), split so
that the expensive parts run only where they are used:

:func:`validate_key`
    The ``J`` held-out training sets of a key (the validation): weights of every
    regularisation, the held-out errors and the best regularisation per candidate. With
    the ridge-only filters of the presets (``rank=None``, ``energy=1``) each training set is
    solved by Cholesky factorisations (one per distinct ridge) instead of an
    eigendecomposition, when a shifted Cholesky certifies that no eigenvalue would be
    dropped (see :func:`_ridge_solve`); otherwise by ``eigh`` and the spectral filters.
    With a single training unit it also returns ``rank90`` (eigenvalues of the full
    design), which the selection needs.
:func:`finish_key`
    The full fit of each candidate at its best regularisation, its in-sample error and the
    subspace statistic (two ``eigh``): run only for keys that some target selected
    (:meth:`._engine.Fits.complete`), since the others' full fits are never read.

On dense grids (few contexts, hundreds of donors per group) this replaces ``J + 2``
eigendecompositions per group by ``J`` Cholesky solves, plus two ``eigh`` for the groups a
target uses.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from . import _kernels as K

#: a training set is solved by Cholesky only if ``K + c P1 - SHIFT * trace(K) I`` is
#: positive definite (then every eigenvalue other than the affine null direction exceeds
#: ``SHIFT * trace >= SHIFT * lambda_max``, far above ``RANK_TOL * lambda_max``, so the
#: spectral filter keeps every component and the two solutions are the same)
SHIFT = 1e-8


def _ridge_only(cfg: K.FitSettings) -> bool:
    """Whether every regularisation keeps all non-negligible components (ridge only)."""
    return bool(np.all(np.asarray(cfg.rank_code) == K.RANK_ENERGY) and float(cfg.energy) >= 1)


def _chol_shifted(A: np.ndarray, shift: float):
    """Upper Cholesky factor of ``A + shift I`` (``None`` if not positive definite)."""
    B = A.copy()
    B.flat[:: A.shape[0] + 1] += shift
    c, info = lapack.dpotrf(B, lower=False, clean=False, overwrite_a=True)
    return c if info == 0 else None


def _ridge_solve(Kc: np.ndarray, B: np.ndarray, ridge: np.ndarray, n_d: int, affine: bool):
    """``(Kc + mu I)^+ B^T`` for every ridge by Cholesky, or ``None`` when not certified.

    ``Kc`` (D, D) is the centred donor Gram of one training set, ``B`` (N, D) the centred
    cross moments, ``mu = ridge * trace(Kc) / n_d`` (the spectral filters' mean eigenvalue).
    With affine weights ``Kc`` has the null vector ``1`` (every right-hand side is
    orthogonal to it); ``c 11^T / D`` with ``c = trace / n_d`` is added to lift it, and the
    solutions are projected back onto ``1``'s complement, as the filters drop it.
    Returns (D, R * N), regularisation-major like :func:`._kernels._one_key`'s ``Wt``.
    """
    D = Kc.shape[0]
    tr = float(np.trace(Kc))
    if not tr > 0:
        return None
    A = Kc + (tr / n_d / D) if affine else Kc
    if _chol_shifted(A, -SHIFT * tr) is None:  # the certificate
        return None
    sols = {}
    for g in np.unique(ridge):
        c = _chol_shifted(A, g * tr / n_d)
        if c is None:
            return None
        X, info = lapack.dpotrs(c, B.T, lower=False)
        if info != 0:
            return None
        sols[g] = X - X.mean(axis=0, keepdims=True) if affine else X
    return np.concatenate([sols[g] for g in ridge], axis=1)


def _spectral_solve(Kc, B, n_d, n_rows, cfg):
    """The same by ``eigh`` and :func:`._kernels.spectral_filters` (any regularisation)."""
    lam, V = K._eigh_desc(Kc[None], np)
    F = K.spectral_filters(lam, n_d, np.asarray([n_rows]), cfg.rank_code, cfg.ridge, cfg.energy, np)
    beta = B @ V[0]  # (N, D)
    R, N, D = F.shape[0], B.shape[0], Kc.shape[0]
    return V[0] @ (F[:, 0, None, :] * beta[None]).reshape(R * N, D).T


def _solve_sets(Kc, bc, n_d, nr, cfg):
    """Weights (S, D, R * N) of every regularisation on each of S training sets."""
    S, D, _ = Kc.shape
    fast = _ridge_only(cfg)
    out = np.empty((S, D, np.asarray(cfg.ridge).size * bc.shape[1]))
    n_fast = 0
    for r in range(S):
        out[r], used_chol = solve_set(Kc[r], bc[r], n_d, nr[r], cfg, cfg.sum_to_one, fast)
        n_fast += used_chol
    return out, n_fast


def solve_set(Kc, B, n_d, n_rows, cfg, null_one: bool, fast: bool):
    """``(Kc + mu I)^+``-type solves of one training set for every regularisation.

    By Cholesky when ``fast`` (ridge-only filters) and certified, else by ``eigh``.
    ``null_one``: ``Kc`` has the null vector ``1`` (affine weights in the primal; always
    in the dual, whose kernel is double-centred). Returns ((D, R * N), used Cholesky).
    """
    ridge = np.asarray(cfg.ridge, dtype=np.float64)
    W = _ridge_solve(Kc, B, ridge, n_d, null_one) if fast else None
    if W is not None:
        return W, True
    return _spectral_solve(Kc, B, n_d, n_rows, cfg), False


def _prepare(b: K.Blocks, cfg: K.FitSettings):
    n_d = int(np.sum(b.dmask))
    if not np.all(b.dmask):
        raise ValueError("host keys are unpadded")
    if cfg.sum_to_one:
        b = K._affine(b, np)
    Wm, nr, nr_safe = K._training_sets(b, np)
    return b, n_d, Wm, nr, nr_safe


def validate_key(b: K.Blocks, cfg: K.FitSettings, min_rank90_ratio: float | None) -> dict:
    """Validation of one unpadded key (outputs with a leading key axis of 1).

    Returns ``val_sse`` (N, R), ``val_blocks`` (N, J), ``best`` (N,), ``val_n``,
    ``rank90`` and ``n_cholesky`` (training sets solved by Cholesky). ``min_rank90_ratio``
    (single-training-unit keys only; else ``None``): ``rank90`` is computed first, and if
    the donors number fewer than this many times ``rank90`` (the selection then ignores
    the key's validation), the solves are skipped (``deferred``: ``val_sse`` NaN, ``best``
    0) until a target selects the key anyway (:func:`._engine.fit_all`).
    """
    J, D = b.s.shape
    N = b.Gv.shape[0]
    R = cfg.ridge.shape[0]
    b, n_d, Wm, nr, nr_safe = _prepare(b._replace(Gu=None), cfg)
    bm = b.bmask.astype(np.float64)
    dm = np.ones(D)
    need_rank90 = min_rank90_ratio is not None
    sets = slice(None) if need_rank90 else slice(0, J)
    Kc, xbar, wd = K._training_moments(b, Wm[sets], nr_safe[sets], dm, np)
    rank90 = 0
    val_n = np.sum(b.nb * bm)
    if need_rank90:
        rank90, skip = rank90_or_defer(Kc[J], D, (J, R, N), val_n, min_rank90_ratio)
        if skip is not None:
            return skip
    ybar, bc = K._target_moments(b, Wm[:J], nr_safe[:J], wd[:J], dm, np)
    Wt, n_chol = _solve_sets(Kc[:J], bc, n_d, nr[:J], cfg)
    b0 = ybar.T[:, None, :] - np.matmul(xbar[:J, None, :], Wt).reshape(J, R, N)
    sse_val = K._block_sse(b, Wt, b0, np) * bm[:, None, None]  # (J, R, N)
    return validation_output(sse_val, val_n, rank90, n_chol)


def validation_output(sse_val: np.ndarray, val_n, rank90: int, n_chol: int, **extra) -> dict:
    """The validation outputs of one key from its held-out errors ``sse_val`` (J, R, N).

    The best regularisation of each candidate (first minimum), its per-block errors, and
    ``extra`` (each given a leading key axis of 1 like the rest).
    """
    val_sse = np.sum(sse_val, axis=0)
    best = np.argmin(np.where(np.isfinite(val_sse), val_sse, np.inf), axis=0)
    val_blocks = np.take_along_axis(sse_val, best[None, None, :], axis=1)[:, 0]
    out = {
        "val_sse": val_sse.T,
        "val_blocks": val_blocks.T,
        "best": best,
        "val_n": val_n,
        "rank90": rank90,
        **extra,
    }
    return {
        **{k: np.asarray(v)[None] for k, v in out.items()},
        "n_cholesky": n_chol,
        "deferred": False,
    }


def rank90_or_defer(Kc_full, n_donors: int, shape, val_n, ratio: float, **extra):
    """``rank90`` of the full design, and the deferred outputs when it is ignored.

    ``Kc_full`` is the full design's centred Gram or kernel; the outputs are deferred (else
    ``None``) when the donors number fewer than ``ratio`` x ``rank90``. ``shape`` is ``(J, R, N)``; deferred outputs hold NaN errors and regularisation 0.
    """
    lam = np.linalg.eigvalsh(Kc_full)[::-1]
    rank90 = int(np.sum(K._energy_keep(lam, 0.9, np)))
    if n_donors >= ratio * rank90:
        return rank90, None
    out = validation_output(np.full(shape, np.nan), val_n, rank90, 0, **extra)
    out["best"][:] = 0
    out["deferred"] = True
    return rank90, out


def finish_key(b: K.Blocks, cfg: K.FitSettings, best: np.ndarray) -> dict:
    """Full fit of one unpadded key at each candidate's regularisation ``best`` (N,).

    Returns ``w`` (N, D) (of the centred fit, as the kernels), ``b`` (N,), ``sse_in`` (N,)
    and ``subspace``, with a leading key axis of 1.
    """
    J, D = b.s.shape
    N = b.Gv.shape[0]
    b, n_d, Wm, nr, nr_safe = _prepare(b, cfg)
    bm = b.bmask.astype(np.float64)
    dm = np.ones(D)
    full = slice(J, J + 1)
    Kc, xbar, wd = K._training_moments(b, Wm[full], nr_safe[full], dm, np)
    ybar, bc = K._target_moments(b, Wm[full], nr_safe[full], wd, dm, np)
    lam_all, V_all = K._eigh_desc(np.stack([Kc[0], b.Gu]), np)
    lam, V = lam_all[0], V_all[0]
    F = K.spectral_filters(lam[None], n_d, nr[full], cfg.rank_code, cfg.ridge, cfg.energy, np)
    f = F[best, 0]  # (N, D): each candidate's filter
    w = (f * (bc[0] @ V)) @ V.T  # (N, D)
    b_full = ybar[:, 0] - w @ xbar[0]
    sse_b = K._block_sse(
        b, np.broadcast_to(w.T, (J, D, N)), np.broadcast_to(b_full, (J, 1, N)), np
    )[:, 0]
    out = {
        "w": w,
        "b": b_full,
        "sse_in": np.sum(sse_b * bm[:, None], axis=0),
        "subspace": K._subspace_stat(lam, V, lam_all[1], V_all[1], cfg.sub_energy, np),
    }
    return {k: np.asarray(v)[None] for k, v in out.items()}

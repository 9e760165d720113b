r"""Large groups in the dual: the (training rows x training rows) kernel, not the Gram.

A group's regression has the stacked design ``X`` (n training rows x D donors: the features
of its training units, or of its single training unit). On dense grids D (thousands of
donors) exceeds n, the ``D x D`` Gram is rank-deficient and its eigendecomposition costs
``D^3``. The solution lies in the row space: with the centred design ``Xc = U S V^T``,

``w = V f(S^2) V^T Xc^T y = Xc^T alpha``, ``alpha = U diag(f(S^2)) U^T y``,

where ``Xc Xc^T = U S^2 U^T`` is the ``n x n`` kernel. The non-zero eigenvalues of the
kernel are those of the Gram, so every spectral filter of
:func:`._kernels.spectral_filters` (rank, energy, Gavish-Donoho, and the ridge relative to
the mean eigenvalue over the D donors) is the same; the minimum-norm least squares and
ridge solutions equal the primal ones (to rounding). The held-out rows of a validation set
are predicted by the cross kernel ``(X_test - mean) Xc^T alpha``; the subspace statistic's
``V_u^T V`` is ``S_u^{-1} U_u^T (X_u,c Xc^T) U S^{-1}`` (the target unit's own centred kernel
and its cross kernel with the training rows). Every kernel of a group is a block of one
``n x n`` product ``K0 = X0 X0^T`` of the group's rows (``X0``: the rows centred by their
common mean; each training set's kernel is ``K0``'s block double-centred).

Outputs are those of :func:`._host.validate_key` and :func:`._host.finish_key`, plus the
targets' sums of squares (``sst_in``, ``sst_ho``), which the primal computes from its block
statistics. Ridge-only regularisations (both presets) are solved by Cholesky factorisations
of the lifted kernel (its null vector ``1``, from the centring, lifted), certified as in
:func:`._host._ridge_solve`, else by ``eigh``.

Which form a group uses: :data:`._engine.DUAL` (by default the dual when the group's training
rows are fewer than its donors, see :func:`._engine.fit_all`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _host as H
from . import _kernels as K


@dataclass
class Problem:
    """The rows of one group (key) and its candidates' targets, float64.

    With affine weights every row (of the design, the targets and the target unit) is
    first centred by its donor mean. ``X`` and ``Xu`` then have ``g`` (the mean of ``X``'s
    rows) removed, which leaves every centred kernel unchanged and keeps ``K0`` well
    conditioned.
    """

    X: np.ndarray  # (n, D) the training rows, minus g
    g: np.ndarray  # (D,) mean of the training rows
    Y: np.ndarray  # (N, n) the candidates' rows
    starts: np.ndarray  # (J + 1,) row offsets of the held-out blocks
    Xu: np.ndarray  # (p, D) the target unit's donor rows, minus g
    sst_in: np.ndarray  # (N,) sum of squares of the raw targets around their mean
    sst_ho: np.ndarray  # (N,) the same within each block, summed
    _K0: np.ndarray | None = None

    @property
    def n_d(self) -> int:
        return self.X.shape[1]

    def kernel(self) -> np.ndarray:
        """``K0 = X X^T`` (n x n), computed once."""
        if self._K0 is None:
            self._K0 = self.X @ self.X.T
        return self._K0


def problem(Yd, layout, D, T, u, v, single: bool, sum_to_one: bool) -> Problem:
    """The :class:`Problem` of donors ``D`` on training units ``T``, target unit ``u``.

    ``v`` are the candidates' donor-axis indices; ``single``: one training unit, whose
    feature folds (``layout``, :class:`._engine.FoldLayout`) are the blocks.
    """
    p = Yd.shape[2]

    def rows(unit, idx, cols=None):  # (len(idx), p) float64
        x = np.asarray(Yd[unit, idx], dtype=np.float64)
        return x if cols is None else x[:, cols]

    if single:
        X = rows(T[0], D, layout.order).T
        Y = rows(T[0], v, layout.order)
        starts = np.concatenate([layout.start, [p]]).astype(np.int64)
    else:
        X = np.concatenate([rows(t, D).T for t in T])
        Y = np.concatenate([rows(t, v) for t in T], axis=1)
        starts = np.arange(len(T) + 1, dtype=np.int64) * p
    sst_in = np.sum((Y - Y.mean(axis=1, keepdims=True)) ** 2, axis=1)
    sst_ho = sum(
        np.sum((Yb - Yb.mean(axis=1, keepdims=True)) ** 2, axis=1)
        for Yb in np.split(Y, starts[1:-1], axis=1)
    )
    Xu = rows(u, D).T
    if sum_to_one:
        rm = X.mean(axis=1)
        X -= rm[:, None]
        Y -= rm[None, :]
        Xu -= Xu.mean(axis=1, keepdims=True)
    g = X.mean(axis=0)
    X -= g
    Xu -= g
    return Problem(X, g, Y, starts, Xu, sst_in, sst_ho)


def _centred(Kss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The double-centred kernel and the column means of ``Kss``."""
    kbar = Kss.mean(axis=0)
    return Kss - kbar[None, :] - kbar[:, None] + kbar.mean(), kbar


def _out(d: dict, **extra) -> dict:
    return {**{k: np.asarray(x)[None] for k, x in d.items()}, **extra}


def validate_dual(pb: Problem, cfg: K.FitSettings, min_rank90_ratio: float | None) -> dict:
    """:func:`._host.validate_key` of one group in the dual (see the module docstring)."""
    K0 = pb.kernel()
    J, n, D, N = pb.starts.size - 1, K0.shape[0], pb.n_d, pb.Y.shape[0]
    R = np.asarray(cfg.ridge).size
    totals = {"sst_in": pb.sst_in, "sst_ho": pb.sst_ho}
    rank90 = 0
    if min_rank90_ratio is not None:
        Kfull = _centred(K0)[0]
        rank90, skip = H.rank90_or_defer(Kfull, D, (J, R, N), float(n), min_rank90_ratio, **totals)
        if skip is not None:
            return skip
    fast = H._ridge_only(cfg)
    sse = np.zeros((J, R, N))
    n_chol = 0
    for j in range(J):
        te = np.arange(pb.starts[j], pb.starts[j + 1])
        tr = np.setdiff1d(np.arange(n), te, assume_unique=True)
        Kc, kbar = _centred(K0[np.ix_(tr, tr)])
        ym = pb.Y[:, tr].mean(axis=1)
        A, chol = H.solve_set(Kc, pb.Y[:, tr] - ym[:, None], D, tr.size, cfg, True, fast)
        n_chol += chol
        A = A - A.mean(axis=0, keepdims=True)  # in 1's complement, as the filters leave it
        pred = ((K0[np.ix_(te, tr)] - kbar[None, :]) @ A).reshape(te.size, R, N)
        res = pb.Y[:, te].T[:, None, :] - ym[None, None, :] - pred
        sse[j] = np.einsum("trn,trn->rn", res, res)
    return H.validation_output(sse, float(n), rank90, n_chol, **totals)


def finish_dual(pb: Problem, cfg: K.FitSettings, best: np.ndarray) -> dict:
    """:func:`._host.finish_key` of one group in the dual.

    Weights (on the donors, of the centred fit), intercepts, in-sample errors and the
    subspace statistic.
    """
    Kc, _ = _centred(pb.kernel())
    n = Kc.shape[0]
    lam, U = K._eigh_desc(Kc, np)
    F = K.spectral_filters(
        lam[None], pb.n_d, np.asarray([n]), cfg.rank_code, cfg.ridge, cfg.energy, np
    )
    f = F[best, 0]  # (N, n): each candidate's filter
    ym = pb.Y.mean(axis=1)
    yc = pb.Y - ym[:, None]
    alpha = ((yc @ U) * f) @ U.T
    alpha -= alpha.mean(axis=1, keepdims=True)
    w = alpha @ pb.X  # X's rows are centred (g removed): Xc^T alpha
    res = yc - alpha @ Kc
    Xuc = pb.Xu - pb.Xu.mean(axis=0)
    lam_u, U_u = K._eigh_desc(Xuc @ Xuc.T, np)
    k1 = K._energy_keep(lam, cfg.sub_energy, np)
    k2 = K._energy_keep(lam_u, cfg.sub_energy, np)
    P1 = U[:, k1] / np.sqrt(lam[k1])
    P2 = U_u[:, k2] / np.sqrt(lam_u[k2])
    A = P2.T @ (Xuc @ pb.X.T) @ P1  # V_u^T V on the kept components
    n2 = int(k2.sum())
    out = {
        "w": w,
        "b": ym - w @ pb.g,
        "sse_in": np.einsum("nr,nr->n", res, res),
        "subspace": 1.0 - np.sum(A**2) / n2 if n2 else 0.0,
    }
    return _out(out)

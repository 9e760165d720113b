"""Latent shifts: the effect of a perturbation as a vector in a latent space."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

BALANCE = ("mean", "resample", "pooled")


def _group_means(Z: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    ind = sp.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n_groups, codes.size)
    )
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    sums = np.asarray(ind @ np.asarray(Z, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts


def shift_by_context(
    Z: np.ndarray, contexts: np.ndarray, treated: np.ndarray, control: np.ndarray, n_contexts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-context shift ``mean Z[treated, c] - mean Z[control, c]``.

    Parameters
    ----------
    Z
        ``(n, d)`` codes (or profiles).
    contexts
        ``(n,)`` integer context of each row, in ``[0, n_contexts)``.
    treated, control
        ``(n,)`` bool masks of the rows of the perturbation and of the control.
    n_contexts
        Number of contexts.

    Returns
    -------
    ``(shifts, valid, n_treated, n_control)``: ``(n_contexts, d)`` shifts (NaN where a context
    lacks either group), the bool mask of contexts that have both, and the row counts.

    """
    contexts = np.asarray(contexts, dtype=np.int64)
    mt, nt = _group_means(Z[treated], contexts[treated], n_contexts)
    mc, nc = _group_means(Z[control], contexts[control], n_contexts)
    valid = (nt > 0) & (nc > 0)
    shifts = np.where(valid[:, None], mt - mc, np.nan)
    return shifts, valid, nt, nc


def _usable(Z, contexts, treated, control, n_contexts, exclude):
    """:func:`shift_by_context`, its valid mask restricted by ``exclude``; raises if none."""
    shifts, valid, nt, nc = shift_by_context(Z, contexts, treated, control, n_contexts)
    if exclude is not None:
        valid = valid & ~np.asarray(exclude, dtype=bool)
    if not valid.any():
        raise ValueError("No context holds both the perturbation and the control.")
    return shifts, valid, nt, nc


def latent_shift(
    Z: np.ndarray,
    contexts: np.ndarray,
    treated: np.ndarray,
    control: np.ndarray,
    n_contexts: int,
    *,
    balance: str = "mean",
    exclude: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The shift of a perturbation, balanced over the contexts where it was measured.

    Only contexts holding both treated and control rows (and not in ``exclude``) are used.

    ``balance="mean"``
        The average over those contexts of their own shift (each context weighs the same,
        whatever its number of rows): exact and deterministic.
    ``"resample"``
        scGen's balancing: in every such context, treated and control rows are each drawn
        with replacement up to the largest group size among those contexts, then the mean of
        all drawn treated rows minus the mean of all drawn control rows (seeded by ``rng``;
        its expectation is the ``"mean"`` shift).
    ``"pooled"``
        Mean of all treated rows minus mean of all control rows of those contexts (no
        balancing: large contexts dominate).

    Returns
    -------
    ``(shift, used)``: the ``(d,)`` shift and the bool mask of the contexts used.
    Raises a :class:`ValueError` when no context has both groups.

    """
    if balance not in BALANCE:
        raise ValueError(f"balance must be one of {BALANCE}, got {balance!r}.")
    Z = np.asarray(Z)
    contexts = np.asarray(contexts, dtype=np.int64)
    shifts, valid, nt, nc = _usable(Z, contexts, treated, control, n_contexts, exclude)
    if balance == "mean":
        return shifts[valid].mean(axis=0), valid
    use_t = treated & valid[contexts]
    use_c = control & valid[contexts]
    if balance == "pooled":
        return Z[use_t].mean(axis=0) - Z[use_c].mean(axis=0), valid
    rng = np.random.default_rng(0) if rng is None else rng
    n_draw = int(max(nt[valid].max(), nc[valid].max()))
    draws_t, draws_c = [], []
    for c in np.flatnonzero(valid):
        rows_t = np.flatnonzero(use_t & (contexts == c))
        rows_c = np.flatnonzero(use_c & (contexts == c))
        draws_t.append(rng.choice(rows_t, size=n_draw, replace=True))
        draws_c.append(rng.choice(rows_c, size=n_draw, replace=True))
    return (
        Z[np.concatenate(draws_t)].mean(axis=0) - Z[np.concatenate(draws_c)].mean(axis=0),
        valid,
    )


# --------------------------------------------------------------------------------------------
# Transport: a shift that depends on the cell's position, learned from OT couplings
# --------------------------------------------------------------------------------------------


def sinkhorn_plan(x: np.ndarray, y: np.ndarray, *, epsilon: float = 0.1, n_iter: int = 200):
    """Entropic optimal-transport plan between two point clouds (uniform weights).

    Sinkhorn's scaling iterations on the squared Euclidean cost divided by its mean, so
    ``epsilon`` is relative to the typical cost; each row of the cost is shifted by its
    minimum first (a row scaling that leaves the plan unchanged and keeps the kernel from
    underflowing). Deterministic; ``O(n m)`` memory (a few hundred cells per context).

    Returns
    -------
    ``(n, m)`` plan whose columns sum to ``1 / m`` and rows (at convergence) to ``1 / n``.

    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    cost = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    cost = np.maximum(cost, 0.0)
    cost /= max(float(cost.mean()), 1e-12)
    K = np.maximum(np.exp(-(cost - cost.min(1, keepdims=True)) / epsilon), 1e-300)
    n, m = K.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    u, v = np.ones(n), np.ones(m)
    for _ in range(n_iter):
        u = a / (K @ v)
        v = b / (K.T @ u)
    return u[:, None] * K * v[None, :]


def ot_displacement(x: np.ndarray, y: np.ndarray, *, epsilon: float = 0.1) -> np.ndarray:
    """Where OT sends each row of ``x`` among the rows of ``y``, minus the row itself.

    The barycentric projection of :func:`sinkhorn_plan`: ``T(x_i) = sum_j P_ij y_j / sum_j
    P_ij``; its mean over the rows of ``x`` is ``mean(y) - mean(x)`` (the constant shift).
    """
    plan = sinkhorn_plan(x, y, epsilon=epsilon)
    moved = (plan @ np.asarray(y, dtype=np.float64)) / plan.sum(1, keepdims=True)
    return moved - np.asarray(x, dtype=np.float64)


def ot_pairs(
    Z: np.ndarray,
    contexts: np.ndarray,
    treated: np.ndarray,
    control: np.ndarray,
    n_contexts: int,
    *,
    exclude: np.ndarray | None = None,
    epsilon: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Control positions, their OT displacements and weights, over the usable contexts.

    Every context with both groups (and not in ``exclude``) contributes its control rows,
    each row's :func:`ot_displacement` towards the context's treated rows, and weight
    ``1 / (n_control_c * n_contexts_used)`` (every context weighs the same).

    Returns
    -------
    ``(positions, displacements, weights, used)``.

    """
    Z = np.asarray(Z, dtype=np.float64)
    contexts = np.asarray(contexts, dtype=np.int64)
    _, valid, _, _ = _usable(Z, contexts, treated, control, n_contexts, exclude)
    pos, disp, w = [], [], []
    used = np.flatnonzero(valid)
    for c in used:
        zc = Z[control & (contexts == c)]
        pos.append(zc)
        disp.append(ot_displacement(zc, Z[treated & (contexts == c)], epsilon=epsilon))
        w.append(np.full(zc.shape[0], 1.0 / (zc.shape[0] * used.size)))
    return np.concatenate(pos), np.concatenate(disp), np.concatenate(w), valid


def fit_transport(
    positions: np.ndarray, displacements: np.ndarray, weights: np.ndarray, alpha: float
) -> dict[str, np.ndarray]:
    """Weighted ridge regression of displacements on centred positions (see :func:`transport_map`)."""
    W = np.asarray(weights, dtype=np.float64)
    center = W @ positions
    b = W @ displacements
    d = positions.shape[1]
    A = np.zeros((d, displacements.shape[1]))
    if np.isfinite(alpha):
        Pc = positions - center
        gram = (Pc * W[:, None]).T @ Pc
        ridge = float(alpha) * max(float(np.trace(gram)) / d, 1e-12)
        A = np.linalg.solve(gram + ridge * np.eye(d), (Pc * W[:, None]).T @ (displacements - b))
    return {"A": A, "b": b, "center": center}


def transport_map(
    Z: np.ndarray,
    contexts: np.ndarray,
    treated: np.ndarray,
    control: np.ndarray,
    n_contexts: int,
    *,
    alpha: float,
    exclude: np.ndarray | None = None,
    epsilon: float = 0.1,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A shift that depends on the control cell's position: ``z -> z + b + (z - c) @ A``.

    In every context with both groups (and not excluded), each control cell's OT
    displacement towards the treated cells (:func:`ot_displacement`) is computed; ``A`` is
    the ridge regression of the displacements on the centred positions, every context
    weighing the same, with penalty ``alpha`` times the mean variance of the positions.
    ``b`` is the balanced mean displacement, equal (at convergence of Sinkhorn) to the
    ``"mean"`` shift of :func:`latent_shift`; ``alpha = inf`` gives ``A = 0``, that
    constant shift.

    Returns
    -------
    ``(rule, used)``: ``{"A": (d, d), "b": (d,), "center": (d,)}`` and the contexts used.

    """
    P, D, W, valid = ot_pairs(
        Z, contexts, treated, control, n_contexts, exclude=exclude, epsilon=epsilon
    )
    return fit_transport(P, D, W, alpha), valid


def apply_transport(rule: dict[str, np.ndarray], Z: np.ndarray) -> np.ndarray:
    """Move codes by a rule of :func:`transport_map`: ``z + b + (z - center) @ A``."""
    Z = np.asarray(Z, dtype=np.float64)
    return Z + rule["b"] + (Z - rule["center"]) @ rule["A"]

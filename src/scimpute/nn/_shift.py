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
    shifts, valid, nt, nc = shift_by_context(Z, contexts, treated, control, n_contexts)
    if exclude is not None:
        valid = valid & ~np.asarray(exclude, dtype=bool)
    if not valid.any():
        raise ValueError("No context holds both the perturbation and the control.")
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

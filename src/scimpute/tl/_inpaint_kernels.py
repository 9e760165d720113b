"""Kernel choice by held-out blocks for :func:`scimpute.tl.inpaint` (spatial lattices).

Candidates: the CNTK (:mod:`scimpute.ntk`, one per filter size) and stationary kernels of
three smoothness orders, ``k(r) = exp(-r^2 / 2 l^2)`` (Gaussian, infinitely smooth),
Matern 5/2 (twice differentiable) and Matern 3/2 (once), each at the length scales of
:data:`LENGTH_GRID` (lattice steps), each with the ridges of
:data:`scimpute.ntk._image.REG_GRID`. The ridge is what lets kernel regression denoise:
biharmonic inpainting and nearest-neighbour averaging reproduce the noise of the spots
around a hole, a kernel smoother with a ridge averages it out.

A candidate's score is its error on held-out blocks of observed spots, blocks as wide as
the mask's holes (:func:`scimpute.ntk._image.hole_side`), averaged over ``folds`` fits,
each holding out a disjoint group of blocks (:func:`block_groups`, spatial block
cross-validation);
``select="joint"`` picks one candidate for all columns (lowest mean of each column's
held-out MSE divided by that column's variance, so every gene weighs the same),
``select="column"`` the best candidate of each column.

Solvers: exact (Cholesky of the observed-spot kernel) up to
:data:`scimpute.ntk._image.CHOLESKY_MAX` observed spots; above, conjugate gradient with
products by FFT on a grid zero-padded to twice the lattice (a linear, not circular,
convolution: exact for a stationary kernel) preconditioned by the kernel's circulant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._params import param
from ..ntk._image import (
    CHOLESKY_MAX,
    REG_GRID,
    CntkParams,
    _solve,
    hole_side,
    image_kernel,
    kernel_sizes,
    resolve_geometry,
)

__all__ = [
    "KERNELS",
    "LENGTH_GRID",
    "STATIONARY",
    "InpaintParams",
    "block_groups",
    "fill_validated",
    "full_kernel",
    "stationary_kernel",
]

#: stationary kernel families (smoothest first).
STATIONARY = ("gaussian", "matern52", "matern32")
#: every ``kernel`` name of :func:`scimpute.tl.inpaint`.
KERNELS = ("auto", "cntk", *STATIONARY)
#: length scales (lattice steps) tried when ``length_scale="auto"``; those above half the
#: lattice's longer side are dropped.
LENGTH_GRID = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


@dataclass(frozen=True)
class InpaintParams(CntkParams):
    """Parameters of :func:`scimpute.tl.inpaint`: the CNTK's and the kernel choice's.

    Parameters
    ----------
    length_scale
        Length scale of a stationary kernel in lattice steps (pixels), or ``"auto"``: the
        value of :data:`LENGTH_GRID` with the lowest held-out error.
    folds
        Fits per candidate in the scores of ``kernel="auto"`` and of the stationary kernels
        (the CNTK alone uses its own single draw of ``holdout``, as before).
    cv_holdout
        Fraction of the observed spots held out per fit in those scores: the lattice is
        tiled by blocks of the holes' width (:func:`scimpute.ntk._image.hole_side`, random
        offset), the blocks are dealt at random into ``round(1 / cv_holdout)`` groups and
        fit ``f`` holds out group ``f`` (no spot is scored twice).
    select
        ``"joint"``: one kernel, length scale and ridge for all columns (genes) of a call;
        ``"column"``: the best of each column.

    """

    length_scale: float | Literal["auto"] = param("auto", gt=0)
    folds: int = param(2, ge=1, le=10)
    cv_holdout: float = param(0.2, gt=0, le=0.5)
    select: Literal["joint", "column"] = param("joint")


def stationary_kernel(family: str, r: np.ndarray, length_scale: float) -> np.ndarray:
    """``k(r)`` of a unit-variance stationary kernel at distances ``r``."""
    s = np.asarray(r, np.float64) / float(length_scale)
    if family == "gaussian":
        return np.exp(-0.5 * s**2)
    if family == "matern52":
        a = np.sqrt(5.0) * s
        return (1.0 + a + a**2 / 3.0) * np.exp(-a)
    if family == "matern32":
        a = np.sqrt(3.0) * s
        return (1.0 + a) * np.exp(-a)
    raise ValueError(f"inpaint: unknown stationary kernel {family!r}.")


def full_kernel(cand: tuple, params: InpaintParams, shape: tuple[int, int]) -> np.ndarray:
    """Kernel ``(W H, W H)`` (float32) of candidate ``cand`` between all lattice positions.

    Row-major positions. The CNTK's is the symmetrised expanded kernel
    (:func:`scimpute.ntk.kernel_block`); a stationary kernel's is ``k(|a - b|)``.
    """
    name, arg = cand
    W, H = shape
    pos = np.stack(np.meshgrid(np.arange(W), np.arange(H), indexing="ij"), -1).reshape(-1, 2)
    if name == "cntk":
        from ..ntk._expand import kernel_block

        prior = params.prior if params.prior != "auto" else "stationary"
        A = image_kernel(params, shape, prior, arg)
        return np.asarray(kernel_block(A, shape, pos, pos), np.float32)
    from scipy.spatial.distance import cdist

    return stationary_kernel(name, cdist(pos, pos), arg).astype(np.float32)


def _dense_predict(K, train, Y, regs):
    """Predictions at ``~train`` (flattened) for each ridge; ``None`` where Cholesky fails.

    Ridge ``reg`` times the mean diagonal of the training block (as
    :func:`scimpute.ntk.solve_cholesky`); float32 (the smallest ridge is 1e-3 of it).
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    tr = np.flatnonzero(train.ravel())
    te = np.flatnonzero(~train.ravel())
    Koo = K[np.ix_(tr, tr)]
    Kmo = K[np.ix_(te, tr)]
    diag = float(np.mean(np.diag(Koo)))
    Y32 = np.asarray(Y, np.float32)
    out = []
    for reg in regs:
        A = Koo.copy()
        A[np.diag_indices_from(A)] += np.float32(reg * diag)
        try:
            c = cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
        except LinAlgError:
            out.append(None)
            continue
        out.append((Kmo @ cho_solve(c, Y32, check_finite=False)).astype(np.float64))
    return out


def _fft_cg(family, ell, shape, train, Y, reg, tol=1e-5, maxiter=1000):
    """Stationary kernel regression by CG, products by FFT on a 2x zero-padded grid."""
    import jax.numpy as jnp

    from ..ntk._solve import solve_cg

    W, H = shape
    P, Q = 2 * W, 2 * H
    dr = np.minimum(np.arange(P), P - np.arange(P))
    dc = np.minimum(np.arange(Q), Q - np.arange(Q))
    k = stationary_kernel(family, np.hypot(dr[:, None], dc[None, :]), ell)
    Fk = jnp.asarray(np.fft.rfft2(k).real, jnp.float32)  # real: k is even
    spec = jnp.asarray(np.maximum(np.fft.rfft2(k).real, 0.0) + reg, jnp.float32)
    obs = np.argwhere(train)
    mis = np.argwhere(~train)
    oi = jnp.asarray(obs[:, 0] * Q + obs[:, 1])
    mi = jnp.asarray(mis[:, 0] * Q + mis[:, 1])
    X, cg = solve_cg(
        _obs_matvec,
        np.asarray(Y, np.float32),
        args=(oi, jnp.float32(reg), Fk, spec),
        precond=_precond,
        tol=tol,
        maxiter=maxiter,
    )
    if not np.all(cg.relative_residual < 1e-2):  # pragma: no cover - SPD, converges
        raise np.linalg.LinAlgError("conjugate gradient did not converge")
    return np.asarray(_conv(X, oi, Fk)[:, mi].T, np.float64)


def _conv(v, oi, Fk):
    import jax.numpy as jnp

    c = v.shape[1]
    P, Q = Fk.shape[0], 2 * (Fk.shape[1] - 1)  # the padded grid (static shapes)
    img = jnp.zeros((c, P * Q), jnp.float32).at[:, oi].set(v.T).reshape(c, P, Q)
    return jnp.fft.irfft2(jnp.fft.rfft2(img) * Fk, s=(P, Q)).reshape(c, -1)


def _obs_matvec(v, oi, lam, Fk, spec):
    return _conv(v, oi, Fk)[:, oi].T + lam * v


def _precond(r, oi, lam, Fk, spec):
    import jax.numpy as jnp

    c = r.shape[1]
    P, Q = Fk.shape[0], 2 * (Fk.shape[1] - 1)
    img = jnp.zeros((c, P * Q), jnp.float32).at[:, oi].set(r.T).reshape(c, P, Q)
    return jnp.fft.irfft2(jnp.fft.rfft2(img) / spec, s=(P, Q)).reshape(c, -1)[:, oi].T


def block_groups(
    mask: np.ndarray, side: int, params: InpaintParams, random_state: int = 0
) -> list[np.ndarray]:
    """Held-out masks of the ``folds`` fits: groups of ``side``-wide blocks of observed spots.

    The lattice is tiled by ``side x side`` blocks (random offset); the blocks are dealt
    at random into ``round(1 / cv_holdout)`` groups (at least ``folds``); mask ``f`` holds
    the observed spots of group ``f``. Disjoint; about ``cv_holdout`` of the observed spots
    each.
    """
    rng = np.random.default_rng(random_state)
    W, H = mask.shape
    off = rng.integers(0, side, size=2)
    br = (np.arange(W) + off[0]) // side
    bc = (np.arange(H) + off[1]) // side
    block = br[:, None] * (bc.max() + 1) + bc[None, :]
    n_groups = max(round(1.0 / params.cv_holdout), params.folds, 2)
    ids = np.unique(block[mask])
    group = np.empty(block.max() + 1, int)
    group[ids] = rng.permutation(np.arange(len(ids)) % n_groups)
    return [mask & (group[block] == f) for f in range(params.folds)]


def _candidates(params: InpaintParams, kernel: str, shape) -> list[tuple]:
    """``(kernel, size or length scale)`` pairs to score."""
    out: list[tuple] = []
    if kernel in ("auto", "cntk"):
        try:
            resolve_geometry(params, shape)
            out += [("cntk", int(ks)) for ks in kernel_sizes(params, shape)]
        except ValueError:
            if kernel == "cntk":
                raise
    fams = STATIONARY if kernel == "auto" else (kernel,) if kernel in STATIONARY else ()
    if params.length_scale == "auto":
        ells = [e for e in LENGTH_GRID if e <= max(shape) / 2] or [LENGTH_GRID[0]]
    else:
        ells = [float(params.length_scale)]
    out += [(f, e) for f in fams for e in ells]
    return out


def _predict(cand, params, shape, train, Y, regs, solver, K=None):
    """Predictions at ``~train`` of candidate ``cand`` for every ridge (``None``: failed).

    ``solver="cholesky"`` uses ``K`` (:func:`full_kernel`, computed when not given).
    """
    if solver == "cholesky":
        return _dense_predict(full_kernel(cand, params, shape) if K is None else K, train, Y, regs)
    name, arg = cand
    if name != "cntk":
        return [_fft_cg(name, arg, shape, train, Y, reg) for reg in regs]
    prior = params.prior if params.prior != "auto" else "stationary"
    A = image_kernel(params, shape, prior, arg)
    out = []
    for reg in regs:
        try:
            out.append(_solve(A, shape, train, Y.astype(np.float32), reg, params, solver)[0])
        except np.linalg.LinAlgError:
            out.append(None)
    return out


def _label(cand, reg) -> str:
    name, arg = cand
    what = f"kernel_size={arg}" if name == "cntk" else f"length_scale={arg:g}"
    return f"{name}, {what}, reg={reg!r}"


def fill_validated(
    values: np.ndarray,
    mask: np.ndarray,
    params: InpaintParams,
    kernel: str = "auto",
    *,
    random_state: int = 0,
) -> tuple[np.ndarray, dict]:
    """Fill ``values[:, ~mask]`` (``(columns, W, H)``) with the kernel chosen on held-out blocks.

    ``kernel``: ``"auto"`` (every candidate of the module docstring), ``"cntk"`` or a
    stationary family (then only its length scales and ridges are compared). Returns
    ``(filled, info)``; observed entries unchanged; ``info`` holds the choice per column,
    every candidate's held-out score (``validation_score``: mean over columns of MSE /
    column variance) and the time taken.
    """
    t0 = time.perf_counter()
    values = np.asarray(values, np.float64)
    mask = np.asarray(mask, bool)
    shape = mask.shape
    c = values.shape[0]
    solver = params.solver
    n_obs = int(mask.sum())
    if solver == "auto":
        solver = "cholesky" if n_obs <= CHOLESKY_MAX else "cg"
    cands = _candidates(params, kernel, shape)
    regs = REG_GRID if params.reg == "auto" else (float(params.reg),)
    var = values[:, mask].var(axis=1)
    var = np.where(var > 0, var, 1.0)
    keys = [(cd, reg) for cd in cands for reg in regs]
    side, groups = None, []
    if len(keys) > 1:
        side = hole_side(mask)
        groups = block_groups(mask, side, params, random_state)
        err = np.zeros((len(keys), c))
        for i, cd in enumerate(cands):
            K = full_kernel(cd, params, shape) if solver == "cholesky" else None
            for hide in groups:
                train = mask & ~hide
                at = hide[~train]
                Yt = values[:, train].T
                mu = Yt.mean(0)
                truth = values[:, hide].T
                preds = _predict(cd, params, shape, train, Yt - mu, regs, solver, K)
                for j, p in enumerate(preds):
                    k = i * len(regs) + j
                    if p is None or not np.all(np.isfinite(p)):
                        err[k] = np.inf
                    else:
                        err[k] += np.mean((p[at] + mu - truth) ** 2, axis=0)
        err /= len(groups)
        score = (err / var).mean(axis=1)
        if params.select == "joint":
            choice = np.full(c, int(np.argmin(score)))
        else:
            choice = np.argmin(err, axis=0)
        scores = {_label(*keys[k]): float(score[k]) for k in range(len(keys))}
    else:
        choice = np.zeros(c, int)
        scores = {}
    out = values.copy()
    Y = values[:, mask].T
    mu = Y.mean(0)
    solved = {}
    for k in np.unique(choice):
        cols = np.flatnonzero(choice == k)
        cd, reg = keys[k]
        pred = _predict(cd, params, shape, mask, Y[:, cols] - mu[cols], (reg,), solver)[0]
        if pred is None:
            raise np.linalg.LinAlgError(
                f"inpaint: the chosen kernel ({_label(cd, reg)}) failed on all observed spots."
            )
        sub = out[cols]
        sub[:, ~mask] = (pred + mu[cols]).T
        out[cols] = sub
        solved[_label(cd, reg)] = len(cols)
    info = {
        "kernel": kernel,
        "select": params.select,
        "chosen": [_label(*keys[k]) for k in choice],
        "chosen_counts": solved,
        "solver": solver,
        "holdout_side": side,
        "folds": len(groups) if len(keys) > 1 else 0,
        "n_observed": n_obs,
        "n_missing": int((~mask).sum()),
        "validation_score": scores,
        "seconds": time.perf_counter() - t0,
    }
    return out, info

"""CNTK inpainting of image-shaped arrays: kernel, expansion, ridge by validation, solve.

The numerics behind :func:`scimpute.tl.inpaint`. The published recipe (uhlerlab/
ntk_matrix_completion) is: the CNTK of a deep-image-prior style encoder-decoder on a fixed
input at ``base_size x base_size`` pixels, expanded to the image (:mod:`._expand`), and
kernel regression of each channel on the observed pixels. What is chosen here from the data
in the call: the ridge (``reg="auto"``) and, with ``prior="auto"``, the fixed input, both by
the error on held-out blocks of observed pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import jax.numpy as jnp
import numpy as np

from .._params import Params, param
from ._expand import kernel_block
from ._layers import cntk_anchor_rows, encoder_decoder, make_prior
from ._solve import StationaryOperator, solve_cg, solve_cholesky, sym_matvec

__all__ = [
    "BACKEND_RULE",
    "CntkParams",
    "fill_image",
    "hole_side",
    "image_kernel",
    "kernel_sizes",
    "resolve_backend",
]


def _label(prior: str, kernel_size: int, with_size: bool) -> str:
    """Key of ``info["validation_mse"]``: the prior, and the filter size when it was chosen."""
    return f"{prior}, kernel_size={kernel_size}" if with_size else prior


#: ridges tried by ``reg="auto"`` (relative to the kernel's mean diagonal).
REG_GRID = (1e-3, 1e-2, 1e-1, 1.0)
#: fixed inputs tried by ``prior="auto"``.
PRIOR_GRID = ("stationary", "meshgrid")
#: filter sizes tried by ``kernel_size="auto"`` (when the base kernel is small, see below).
KERNEL_SIZE_GRID = (3, 5, 7)
#: ``kernel_size="auto"`` tries :data:`KERNEL_SIZE_GRID` only up to this base size; above
#: it uses the published 3 (each candidate is a base kernel: about a second at 48 pixels,
#: a minute at 128 on 2 CPU cores, growing with the filter area).
KERNEL_SIZE_AUTO_MAX_BASE = 64
#: largest number of observed pixels solved by Cholesky with ``solver="auto"``.
CHOLESKY_MAX = 6000


def _odd(v) -> str | None:
    return None if isinstance(v, str) or v % 2 == 1 else "must be odd or 'auto'"


@dataclass(frozen=True)
class CntkParams(Params):
    """Parameters of CNTK inpainting (:func:`scimpute.tl.inpaint` with ``kernel="cntk"``).

    Parameters
    ----------
    depth
        Down-/up-sampling levels of the encoder-decoder (published: 6). ``"auto"``: 6, or the
        most the base size allows (``2^(depth+1) <= base``).
    kernel_size
        Filter size of every convolution (odd; published: 3), or ``"auto"`` (default): the
        one of ``KERNEL_SIZE_GRID`` with the lowest held-out error when the base kernel has
        at most ``KERNEL_SIZE_AUTO_MAX_BASE`` pixels per side (small images and spatial
        lattices, where a kernel costs about a second), else 3. A larger filter widens and
        smooths the kernel.
    slope
        Negative slope of the LeakyReLU (published: 0.01; 0 = ReLU).
    upsample
        ``"nearest"`` (published) or ``"bilinear"``.
    prior
        Fixed input: ``"stationary"`` (default: the published default covariance, 1/400 plus
        1/300 on the diagonal), ``"meshgrid"`` (two coordinate channels, the deep-image-prior
        input; its expanded kernel is often indefinite, so the solve fails unless the ridge
        is large), ``"identity"`` (white noise), or ``"auto"``: the one of ``PRIOR_GRID``
        with the lower held-out error (computes one base kernel per candidate).
    base_size
        Resolution of the computed kernel before expansion (published: 128). Lowered to the
        largest multiple of ``2^depth`` that fits in the image.
    reg
        Ridge relative to the mean kernel diagonal, or ``"auto"``: the value of ``REG_GRID``
        with the lowest held-out error.
    solver
        ``"cholesky"`` (exact, forms the observed-pixel kernel), ``"cg"`` (conjugate
        gradient with FFT matrix-vector products), or ``"auto"``: Cholesky up to
        ``CHOLESKY_MAX`` observed pixels.
    rank
        Kernel of the ``"cg"`` solver: 0 (default) averages the expanded kernel over the
        ``P^2`` anchor phases, a stationary kernel applied by FFT (positive semi-definite in
        practice; its distance to the expanded kernel is recorded); ``r > 0`` keeps ``r``
        terms of an SVD over the anchors (exact at ``P^2`` terms), whose truncation can make
        the operator indefinite at small ridges.
    tol, maxiter
        Conjugate-gradient stopping rule (relative residual) and step limit.
    holdout
        Fraction of observed pixels held out for the ``"auto"`` choices, in square blocks
        shaped like the holes of the mask (side: twice the 90th percentile of the missing
        pixels' distance to the nearest observed one, between 2 and 1/8 of the image).
    backend
        Layer recursions in ``"numpy"`` (float32) or ``"jax"`` (each network piece jitted
        on its own, compiled once per resolution), or ``"auto"``: :data:`BACKEND_RULE`.
        Both give the same kernel to float32 rounding.

    """

    depth: int | Literal["auto"] = param("auto", ge=1, le=8)
    kernel_size: int | Literal["auto"] = param("auto", ge=1, check=_odd)
    slope: float = param(0.01, ge=0, lt=1)
    upsample: Literal["nearest", "bilinear"] = param("nearest")
    prior: Literal["stationary", "meshgrid", "identity", "auto"] = param("stationary")
    base_size: int = param(128, ge=4)
    reg: float | Literal["auto"] = param("auto", ge=0)
    solver: Literal["auto", "cholesky", "cg"] = param("auto")
    rank: int = param(0, ge=0)
    tol: float = param(1e-4, gt=0, lt=1)
    maxiter: int = param(400, ge=1)
    holdout: float = param(0.05, gt=0, lt=0.5)
    backend: Literal["auto", "numpy", "jax"] = param("auto")


#: how ``backend="auto"`` chooses (measured in ``benchmarks/results/cntk_inpainting.md``:
#: on 2 CPU cores the JAX path's first call, compile included, is no faster than NumPy and
#: peaks higher in memory; an accelerator runs the jitted pieces on the device).
BACKEND_RULE = "jax when jax.default_backend() is not 'cpu' (a GPU / TPU), else numpy"


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"jax"`` for ``backend`` (``"auto"``: :data:`BACKEND_RULE`)."""
    if backend != "auto":
        return backend
    import jax

    return "numpy" if jax.default_backend() == "cpu" else "jax"


def resolve_geometry(params: CntkParams, shape: tuple[int, int]) -> tuple[int, int]:
    """``(depth, base)`` used for an image of ``shape``; raises for too small images."""
    small = min(shape)
    if params.depth == "auto":
        depth = 6
        while depth > 1 and 2 ** (depth + 1) > min(small, params.base_size):
            depth -= 1
    else:
        depth = int(params.depth)
    P = 2**depth
    base = (min(small, params.base_size) // P) * P
    if base < 2 * P:
        raise ValueError(
            f"inpaint: an image of {shape[0]} x {shape[1]} pixels is too small for depth "
            f"{depth} (needs at least {2 * P} pixels per side); lower depth."
        )
    return depth, base


@lru_cache(maxsize=len(PRIOR_GRID) * len(KERNEL_SIZE_GRID))  # every "auto" candidate
def _anchors(depth, kernel_size, slope, upsample, prior, base, backend) -> np.ndarray:
    layers = encoder_decoder(depth, kernel_size=kernel_size, slope=slope, upsample=upsample)
    A = cntk_anchor_rows(layers, make_prior(prior, base), base, backend=backend)
    return A / A.max()  # scale-free (the published EigenPro path divides by the maximum)


def kernel_sizes(params: CntkParams, shape: tuple[int, int]) -> tuple[int, ...]:
    """Filter sizes to try for an image of ``shape`` (one unless ``kernel_size="auto"``)."""
    if params.kernel_size != "auto":
        return (int(params.kernel_size),)
    _, base = resolve_geometry(params, shape)
    return KERNEL_SIZE_GRID if base <= KERNEL_SIZE_AUTO_MAX_BASE else (3,)


def image_kernel(
    params: CntkParams, shape: tuple[int, int], prior: str, kernel_size: int | None = None
) -> np.ndarray:
    """Anchor rows ``(P, P, base, base)`` of the CNTK for an image of ``shape`` (cached).

    ``kernel_size`` overrides ``params.kernel_size`` (needed when that is ``"auto"``).
    """
    depth, base = resolve_geometry(params, shape)
    backend = resolve_backend(params.backend)
    ks = kernel_size if kernel_size is not None else kernel_sizes(params, shape)[0]
    args = (depth, int(ks), params.slope, params.upsample, prior, base, backend)
    return _anchors(*args)


def hole_side(mask: np.ndarray) -> int:
    """Side of the held-out blocks: the width of the mask's holes.

    Twice the 90th percentile of the missing pixels' Euclidean distance to the nearest
    observed pixel (a ``w x w`` square hole gives about ``w``), clipped to
    ``[2, min(W, H) / 8]``.
    """
    from scipy.ndimage import distance_transform_edt

    W, H = mask.shape
    dist = distance_transform_edt(~mask)[~mask]
    width = 2.0 * float(np.percentile(dist, 90)) if dist.size else 2.0
    return int(np.clip(round(width), 2, max(2, min(W, H) // 8)))


def _holdout_mask(mask: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Observed pixels to hide: random square blocks of :func:`hole_side` until ``frac``."""
    W, H = mask.shape
    side = min(hole_side(mask), W, H)
    hide = np.zeros_like(mask)
    target = frac * mask.sum()
    for _ in range(100000):
        if (hide & mask).sum() >= target:
            break
        r, c = rng.integers(0, W - side + 1), rng.integers(0, H - side + 1)
        hide[r : r + side, c : c + side] = True
    return hide & mask


def _solve(A, shape, mask, Y, reg, params: CntkParams, solver: str):
    """Predictions at ``~mask`` of each column of ``Y`` (values at observed pixels)."""
    obs = np.argwhere(mask)
    mis = np.argwhere(~mask)
    info: dict = {"solver": solver}
    if solver == "cholesky":
        Koo = kernel_block(A, shape, obs, obs)
        alpha = solve_cholesky(Koo, Y, reg)
        pred = kernel_block(A, shape, mis, obs) @ alpha
        return np.asarray(pred), info
    op = StationaryOperator(A, shape, params.rank)
    lam = jnp.float32(reg * op.diag)
    oi = jnp.asarray(obs[:, 0] * shape[1] + obs[:, 1])
    mi = jnp.asarray(mis[:, 0] * shape[1] + mis[:, 1])
    spec = jnp.asarray(np.maximum(op.spectrum, 0.0) + float(lam), jnp.float32)
    # (G + lam I + floor 1 1^T)^{-1} Y by Sherman-Morrison: solve with G + lam I for [Y, 1]
    c = Y.shape[1]
    rhs = np.concatenate([Y, np.ones((len(obs), 1), np.float32)], axis=1)
    X, cg = solve_cg(
        _observed_matvec,
        rhs,
        args=(oi, lam, *op.operands, spec),
        precond=_circulant_precond,
        tol=params.tol,
        maxiter=params.maxiter,
    )
    a, b = X[:, :c], X[:, c:]
    shift = op.floor * jnp.sum(a, axis=0) / (1.0 + op.floor * jnp.sum(b))
    alpha = a - b * shift[None, :]
    pred = _full_matvec(alpha, oi, *op.operands)[:, mi].T + op.floor * jnp.sum(alpha, axis=0)
    if not np.all(cg.relative_residual < 1e-2):
        raise np.linalg.LinAlgError(
            "conjugate gradient did not converge (relative residual "
            f"{cg.relative_residual.max():.3g}): the expanded kernel is not positive definite "
            "at this ridge (common with prior='meshgrid'); use prior='stationary' or raise reg."
        )
    info.update(
        rank=op.rank,
        rank_relative_error=op.relative_error,
        cg_iterations=cg.iterations,
        cg_relative_residual=[float(x) for x in cg.relative_residual],
    )
    return np.asarray(pred), info


def _full_matvec(v, oi, U, m, F):
    """Kernel times ``v`` (values at observed pixels ``oi``), at every pixel ``(c, W H)``."""
    c = v.shape[1]
    shape = m.shape
    img = jnp.zeros((c, shape[0] * shape[1]), jnp.float32).at[:, oi].set(v.T)
    return sym_matvec(img.reshape(c, *shape), U, m, F).reshape(c, -1)


def _observed_matvec(v, oi, lam, U, m, F, spec):
    return _full_matvec(v, oi, U, m, F)[:, oi].T + lam * v


def _circulant_precond(r, oi, lam, U, m, F, spec):
    """``(C + lam I)^{-1}`` of the anchor-averaged circulant kernel, scattered and gathered."""
    c = r.shape[1]
    W, H = m.shape
    img = jnp.zeros((c, W * H), jnp.float32).at[:, oi].set(r.T).reshape(c, W, H)
    z = jnp.fft.irfft2(jnp.fft.rfft2(img) / spec, s=(W, H)).reshape(c, -1)
    return z[:, oi].T


def fill_image(
    values: np.ndarray, mask: np.ndarray, params: CntkParams, *, random_state: int = 0
) -> tuple[np.ndarray, dict]:
    """Fill ``values[:, ~mask]`` of ``values`` ``(channels, W, H)``; returns ``(filled, info)``.

    Observed pixels are returned unchanged. ``info`` records the geometry, the choices made
    and their held-out errors, the solver's accuracy and the time taken.
    """
    t0 = time.perf_counter()
    values = np.asarray(values, np.float32)
    mask = np.asarray(mask, bool)
    shape = mask.shape
    depth, base = resolve_geometry(params, shape)
    n_obs = int(mask.sum())
    solver = params.solver
    if solver == "auto":
        solver = "cholesky" if n_obs <= CHOLESKY_MAX else "cg"
    if solver == "cg" and min(shape) < base:  # pragma: no cover - base <= min(shape)
        solver = "cholesky"
    priors = PRIOR_GRID if params.prior == "auto" else (params.prior,)
    sizes = kernel_sizes(params, shape)
    regs = REG_GRID if params.reg == "auto" else (float(params.reg),)
    cands = [(pr, ks) for pr in priors for ks in sizes]
    scores: dict[str, dict[str, float]] = {}
    side = None
    if len(cands) * len(regs) > 1:
        rng = np.random.default_rng(random_state)
        side = hole_side(mask)
        hide = _holdout_mask(mask, params.holdout, rng)
        train = mask & ~hide
        # predictions at every pixel not in train; score only the hidden ones
        hidden_of_missing = hide[~train]
        Yt = values[:, train].T
        truth = values[:, hide].T
        best, best_err = (cands[0], regs[0]), float("inf")
        for pr, ks in cands:
            A = image_kernel(params, shape, pr, ks)
            label = _label(pr, ks, len(sizes) > 1)
            scores[label] = {}
            for reg in regs:
                try:
                    pred, _ = _solve(A, shape, train, Yt, reg, params, solver)
                    err = float(np.mean((pred[hidden_of_missing] - truth) ** 2))
                except np.linalg.LinAlgError:
                    err = float("inf")
                scores[label][repr(reg)] = err
                if err < best_err:
                    best, best_err = ((pr, ks), reg), err
        (prior, ksize), reg = best
    else:
        (prior, ksize), reg = cands[0], regs[0]
    A = image_kernel(params, shape, prior, ksize)
    pred, sinfo = _solve(A, shape, mask, values[:, mask].T, reg, params, solver)
    out = values.copy()
    out[:, ~mask] = pred.T
    info = {
        "depth": depth,
        "base_size": base,
        "period": 2**depth,
        "prior": prior,
        "kernel_size": int(ksize),
        "reg": reg,
        "holdout_side": side,
        "kernel_backend": resolve_backend(params.backend),
        "n_observed": n_obs,
        "n_missing": int((~mask).sum()),
        "validation_mse": scores,
        **sinfo,
        "seconds": time.perf_counter() - t0,
    }
    return out, info

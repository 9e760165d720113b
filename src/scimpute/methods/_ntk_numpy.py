"""Plain numpy reference of the NTK estimator (tests and ``benchmarks/ntk_scale.py``).

Same estimator as :mod:`scimpute.methods.ntk`, written directly: explicit cosines, the
arc-cosine recursion in numpy (:func:`scimpute.ntk.fc_ntk`), one ``numpy.linalg.cholesky``
and ``scipy.linalg.cho_solve``, predictions in chunks of targets. No JAX, no padding.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ..ntk._duals import fc_ntk
from ._base import GridData, as_targets
from .ntk import NtkParams, _auto_prior, _centering, _normalise_prior, build_prior


def ntk_kernel_numpy(x: np.ndarray, depth: int = 1) -> np.ndarray:
    """``kappa_depth(x)`` by the arc-cosine recursion, in numpy float64.

    :func:`scimpute.ntk.fc_ntk` (the kernel code shared with the CNTK).
    """
    return fc_ntk(np.asarray(x, dtype=np.float64), depth)


def _gram(F1, c1, a1, i1, F2, c2, a2, i2, w):
    G = F1 @ F2.T
    G += w[0] * (c1[:, None] == c2[None, :])
    G += w[1] * (a1[:, None] == a2[None, :])
    G += w[2] * (i1[:, None] == i2[None, :])
    return G


def ntk_numpy(
    data: GridData, targets, params: NtkParams | None = None, *, chunk: int = 4096
) -> np.ndarray:
    """Predictions of the registered ``ntk`` method (numeric ``reg`` only), in plain numpy.

    ``params`` as for :func:`scimpute.methods.ntk.ntk` (:class:`NtkParams`; ``dtype`` is
    ignored: numpy computes in float64); ``chunk`` targets are predicted at a time.
    """
    p = NtkParams() if params is None else params
    t = as_targets(targets)
    prior = _auto_prior(data) if p.prior == "auto" else p.prior
    cp = build_prior(
        data, _normalise_prior(prior), weights=p.weights, features=p.features,
        dose_transform=p.dose_transform,
    )  # fmt: skip
    depth, reg, center = p.depth, p.reg, p.center
    w = (cp.w_context, cp.w_perturbation, cp.w_identity)
    A = data.n_perturbations
    ci, ai = np.nonzero(data.measured)
    ii = ci * A + ai
    off = _centering(data, center)
    Y = np.asarray(data.Y[ci, ai], dtype=np.float64) - off[ci]
    F = cp.dense(ci, ai, np.ones(ci.size, bool))
    n2 = np.einsum("ij,ij->i", F, F) + sum(w)
    nO = np.sqrt(np.where(n2 > 0, n2, 1.0))
    cos = _gram(F, ci, ai, ii, F, ci, ai, ii, w) / np.outer(nO, nO)
    np.fill_diagonal(cos, 1.0)
    K = ntk_kernel_numpy(cos, depth) + reg * np.eye(ci.size)
    L = np.linalg.cholesky(K)
    alpha = sla.cho_solve((L, True), Y)
    out = np.empty((t.shape[0], data.n_features))
    for s in range(0, t.shape[0], chunk):
        tc, ta = t[s : s + chunk, 0], t[s : s + chunk, 1]
        FT = cp.dense(tc, ta, np.zeros(tc.size, bool))
        n2t = np.einsum("ij,ij->i", FT, FT) + sum(w)
        nT = np.sqrt(np.where(n2t > 0, n2t, 1.0))
        cosT = _gram(FT, tc, ta, tc * A + ta, F, ci, ai, ii, w) / np.outer(nT, nO)
        out[s : s + chunk] = ntk_kernel_numpy(cosT, depth) @ alpha + off[tc]
    return out

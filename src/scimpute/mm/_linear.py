"""The linear backbone of :func:`scimpute.mm.integrate`: regularised CCA on per-modality PCA.

Closed form, NumPy only; nothing here knows about MuData. For modalities ``m = 1..K`` with
standardised PCA scores ``A_m`` (``n x p``, centred on the fitting cells), the fit on the
anchor cells measured in every modality is

- per-modality ridge covariance ``C_m = (1 - r) A_m'A_m / n + r (tr(A_m'A_m / n) / p) I``
  (``r`` = ``ridge`` in [0, 1): 0 is plain CCA, towards 1 it becomes PLS-like) and its
  whitening ``W_m = C_m^{-1/2}``;
- MAXVAR generalised CCA (Kettenring 1971): the top ``rank`` right singular vectors ``Q`` of
  the concatenated whitened scores ``[A_1 W_1, ..., A_K W_K]``, split into blocks ``Q_m``;
  for two modalities this is exactly regularised CCA (Vinod 1976), ``Q_m`` the canonical
  directions over ``sqrt 2``;
- the embedding of a cell of modality ``m``: ``z_m = c (A_m - mean) W_m Q_m diag(rho)``,
  the canonical variates weighted by their mean pairwise canonical correlation ``rho``
  (weakly shared directions count less in distances), ``c`` making the mean variance of the
  latent 1 on the fitting cells (the scale the autoencoder's latent is kept at).

Translation is linear too: ridge regressions from each modality's embedding to every
modality's standardised features, fitted on the anchors (``source == target``: on all of the
modality's fitting cells), :func:`fit_readout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LinearFit", "fit_cca", "fit_readout", "readout_predict"]


@dataclass(frozen=True)
class LinearFit:
    """A fitted regularised (generalised) CCA.

    Attributes
    ----------
    maps
        Per modality ``(p_m, rank)``: PCA scores (centred by ``offsets``) -> shared latent.
    offsets
        Per modality ``(p_m,)``: mean PCA scores of the fitting cells.
    correlations
        ``(rank,)`` mean pairwise canonical correlation of each shared dimension (fitting
        cells).

    """

    maps: Mapping[str, np.ndarray]
    offsets: Mapping[str, np.ndarray]
    correlations: np.ndarray

    def embed(self, m: str, scores: np.ndarray) -> np.ndarray:
        """Shared latent (float32) of PCA scores ``scores`` of modality ``m``."""
        return ((scores - self.offsets[m]) @ self.maps[m]).astype(np.float32)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, 1e-10 * max(float(w.max()), 1e-30))
    return (v / np.sqrt(w)) @ v.T


def fit_cca(scores: Mapping[str, np.ndarray], rank: int, ridge: float) -> LinearFit:
    """Regularised MAXVAR CCA of the rows of ``scores`` (row ``i`` is the same cell in all).

    Parameters
    ----------
    scores
        Per modality ``(n, p_m)`` PCA scores of the same ``n`` anchor cells.
    rank
        Number of shared dimensions (capped at the smallest ``p_m``).
    ridge
        Shrinkage ``r`` of every covariance towards a multiple of the identity, in [0, 1).

    """
    mods = list(scores)
    k_mod = len(mods)
    offsets = {m: scores[m].mean(0) for m in mods}
    n = next(iter(scores.values())).shape[0]
    white, blocks = {}, []
    for m in mods:
        a = scores[m] - offsets[m]
        c = a.T @ a / max(n, 1)
        c = (1.0 - ridge) * c + ridge * (np.trace(c) / c.shape[0]) * np.eye(c.shape[0])
        white[m] = _inv_sqrt(c)
        blocks.append(a @ white[m])
    rank = int(min(rank, *(scores[m].shape[1] for m in mods)))
    _, s, vt = np.linalg.svd(np.hstack(blocks) / np.sqrt(max(n, 1)), full_matrices=False)
    # eigenvalue of the whitened block covariance = 1 + (K - 1) * mean pairwise correlation
    rho = np.clip((s[:rank] ** 2 - 1.0) / max(k_mod - 1, 1), 0.0, 1.0)
    maps, start, var = {}, 0, 0.0
    for m, blk in zip(mods, blocks, strict=True):
        p = scores[m].shape[1]
        q = vt[:rank, start : start + p].T  # (p, rank)
        start += p
        maps[m] = white[m] @ q * rho
        var += float(np.mean((blk @ q * rho).var(0)))
    c = 1.0 / np.sqrt(max(var / k_mod, 1e-12))  # mean variance of the latent: 1
    return LinearFit({m: maps[m] * c for m in mods}, offsets, rho)


def fit_readout(z: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """``(d + 1, p)`` ridge coefficients (last row: intercept) of ``x`` on ``z``.

    ``alpha`` is relative: the penalty is ``alpha * mean(diag(Z'Z))`` on the centred ``z``,
    so it does not depend on the scale of the latent.
    """
    zm, xm = z.mean(0), x.mean(0)
    zc = z - zm
    g = zc.T @ zc
    lam = alpha * max(float(np.trace(g)) / max(g.shape[0], 1), 1e-12)
    coef = np.linalg.solve(g + lam * np.eye(g.shape[0]), zc.T @ (x - xm))
    return np.vstack([coef, (xm - zm @ coef)[None, :]]).astype(np.float32)


def readout_predict(coef: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Predictions of a :func:`fit_readout` regression for latents ``z``."""
    return (z @ coef[:-1] + coef[-1]).astype(np.float32)


def grid(
    n_pcs: Sequence[int], ranks: Sequence[int], ridges: Sequence[float], p_max: int
) -> list[tuple[int, int, float]]:
    """``(n_pcs, rank, ridge)`` candidates with ``rank <= n_pcs <= p_max`` (no duplicates)."""
    pcs = sorted({min(p, p_max) for p in n_pcs})
    return [(p, k, r) for p in pcs for k in ranks if k <= p for r in ridges]

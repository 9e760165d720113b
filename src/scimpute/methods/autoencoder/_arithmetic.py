"""Latent arithmetic with a trained grid network (the "word2vec analogy" of the module)."""

from __future__ import annotations

import numpy as np

from ...nn import decode, encode
from .._base import GridData, as_targets


def forward(Y: np.ndarray, transform: str) -> np.ndarray:
    """Profiles on the scale the networks train on (``"log1p"``: ``log(1 + y)``)."""
    if transform == "log1p":
        if np.nanmin(Y) < 0:
            raise ValueError(
                "transform='log1p' needs non-negative profiles; these hold negative values "
                "(z-scores or log ratios?). Use transform='none'."
            )
        return np.log1p(Y)
    return Y


def inverse(Y: np.ndarray, transform: str) -> np.ndarray:
    """Inverse of :func:`forward`."""
    return np.expm1(Y) if transform == "log1p" else Y


def resolve_baseline(owner: str, baseline: str, data: GridData) -> str:
    """``"control"`` or ``"context_mean"``: ``"auto"`` picks the control when the grid has one."""
    if baseline == "auto":
        return "control" if data.control is not None else "context_mean"
    if baseline == "control" and data.control is None:
        raise ValueError(
            f"{owner}: baseline='control' needs a grid with a control; this grid was built "
            "with control=None. Use baseline='context_mean'."
        )
    return baseline


def latent_arithmetic(
    net,
    data: GridData,
    visible: np.ndarray,
    targets: np.ndarray,
    *,
    transform: str = "none",
    output: str = "decoded",
    baseline: str = "control",
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict targets by latent arithmetic with a trained network.

    Parameters
    ----------
    net
        A trained :class:`~scimpute.nn.Network`.
    data
        The grid's arrays.
    visible
        ``(n_contexts, n_perturbations)`` bool: the measured pairs that may be encoded.
    targets
        ``(n, 2)`` pairs to predict.
    transform, output, baseline
        See :class:`AutoencoderParams`.
    exclude_self
        Remove each target's own pair from the pairs it uses (for leave-one-out over
        measured pairs, where the target is itself visible).

    Returns
    -------
    ``(prediction, ok, n_contexts_used)``: ``(n, p)`` predictions on the original scale (NaN
    where ``ok`` is False: no baseline in c, or a measured in no other context).

    """
    t = as_targets(targets)
    C, A, p = data.Y.shape
    rows = np.argwhere(visible)
    Y = forward(np.asarray(data.Y[rows[:, 0], rows[:, 1]], dtype=np.float64), transform)
    Zr = encode(net, Y).astype(np.float64)
    d = Zr.shape[1]
    Z = np.zeros((C, A, d))
    Z[rows[:, 0], rows[:, 1]] = Zr
    Yf = np.zeros((C, A, p))
    Yf[rows[:, 0], rows[:, 1]] = Y
    vis = np.asarray(visible, dtype=bool).copy()
    c, a = t[:, 0], t[:, 1]
    own = vis[c, a] & exclude_self  # the target's own pair, visible, to be left out
    vis_treated = vis.copy()
    if data.control is not None:
        vis_treated[:, data.control] = False
    if baseline == "control":
        if data.control is None:
            raise ValueError("baseline='control' needs a grid with a control perturbation.")
        has_b = vis[:, data.control]
        zb = Z[:, data.control]
        yb = Yf[:, data.control]
        zb_t, yb_t, has_b_t = zb[c], yb[c], has_b[c]
    else:  # mean of the context's measured non-control profiles (codes)
        n_c = vis_treated.sum(axis=1).astype(float)
        sum_z = (Z * vis_treated[..., None]).sum(axis=1)
        sum_y = (Yf * vis_treated[..., None]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            zb = sum_z / n_c[:, None]
            yb = sum_y / n_c[:, None]
        has_b = n_c > 0
        own_t = own & vis_treated[c, a]
        n_t = n_c[c] - own_t
        with np.errstate(invalid="ignore", divide="ignore"):
            zb_t = (sum_z[c] - own_t[:, None] * Z[c, a]) / n_t[:, None]
            yb_t = (sum_y[c] - own_t[:, None] * Yf[c, a]) / n_t[:, None]
        has_b_t = n_t > 0
    use = vis_treated & has_b[:, None]  # (C, A) pairs contributing a shift
    diff = np.where(use[..., None], Z - np.nan_to_num(zb)[:, None, :], 0.0)
    s_sum = diff.sum(axis=0)  # (A, d)
    s_n = use.sum(axis=0).astype(float)  # (A,)
    self_use = use[c, a] & own
    sum_t = s_sum[a] - self_use[:, None] * diff[c, a]
    n_t = s_n[a] - self_use
    ok = has_b_t & (n_t > 0)
    pred = np.full((len(t), p), np.nan)
    if ok.any():
        shift = sum_t[ok] / n_t[ok, None]
        z0 = zb_t[ok]
        moved = decode(net, (z0 + shift).astype(np.float32)).astype(np.float64)
        if output == "residual":
            moved = yb_t[ok] + moved - decode(net, z0.astype(np.float32))
        pred[ok] = inverse(moved, transform)
    return pred, ok, n_t

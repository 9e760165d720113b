"""Train one grid network per mask of visible pairs, all at once."""

from __future__ import annotations

import numpy as np

from ..._utils import RandomState, check_random_state, seed_from
from ...nn import NetConfig, TrainConfig, TrainResult, train_networks
from .._base import GridData
from ._arithmetic import forward
from ._params import AutoencoderParams

#: training rows of a grid are padded to a multiple of this (one compiled shape per bucket)
ROW_BUCKET = 32


def net_config(model: str, data: GridData, params: AutoencoderParams) -> NetConfig:
    """The architecture of a grid network (``model`` is ``"autoencoder"`` or ``"vae"``)."""
    return NetConfig(
        model=model,
        n_features=int(data.n_features),
        width=params.width,
        depth=params.depth,
        latent_dim=params.latent_dim,
        dropout=params.dropout,
        kl_weight=getattr(params, "kl_weight", 0.0),
    )


def fit_grid_networks(
    data: GridData,
    train_masks: np.ndarray,
    cfg: NetConfig,
    params: AutoencoderParams,
    *,
    random_state: RandomState = 0,
) -> tuple[TrainResult, np.ndarray]:
    """Train one network per mask on the grid's profiles, all at once.

    Parameters
    ----------
    data
        The grid's arrays.
    train_masks
        ``(n_models, n_contexts, n_perturbations)`` bool: the pairs each network may learn
        from (each must be a subset of ``data.measured``).
    cfg
        Architecture.
    params
        The method's parameters: ``transform`` and ``standardize`` (profiles are transformed
        and, with ``standardize``, scaled to zero mean and unit variance per feature using
        each network's own training rows; the networks undo the scaling when decoding), the
        training block, and ``validation_fraction`` (a seeded share of each network's pairs
        used for early stopping instead of training; 0 trains every pair for
        ``max_epochs``).
    random_state
        Seed of the splits and of training.

    Returns
    -------
    ``(result, rows)``: the :class:`~scimpute.nn.TrainResult` and the ``(n_rows, 2)`` pair
    indices of the training rows (all measured pairs).

    """
    masks = np.asarray(train_masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if (masks & ~data.measured[None]).any():
        raise ValueError("train_masks may only contain measured pairs.")
    rng = check_random_state(random_state)
    rows = np.argwhere(data.measured)
    X = forward(np.asarray(data.Y[rows[:, 0], rows[:, 1]], dtype=np.float64), params.transform)
    W = masks[:, rows[:, 0], rows[:, 1]].astype(np.float32)  # (K, n_rows)
    if (W.sum(axis=1) < 2).any():
        raise ValueError(
            f"{params.owner}: each network needs at least 2 measured profiles to learn from."
        )
    V = np.zeros_like(W)
    if params.validation_fraction > 0:
        for k in range(W.shape[0]):
            idx = np.flatnonzero(W[k])
            n_val = round(params.validation_fraction * idx.size)
            if n_val >= 1 and idx.size - n_val >= 2:
                pick = rng.choice(idx, size=n_val, replace=False)
                V[k, pick], W[k, pick] = 1.0, 0.0
    means = (W @ X) / W.sum(axis=1, keepdims=True)
    if params.standardize:
        var = (W @ X**2) / W.sum(axis=1, keepdims=True) - means**2
        scales = np.sqrt(np.maximum(var, 0))
        scales = np.where(scales > 1e-6 * max(float(scales.max()), 1e-12), scales, 1.0)
    else:
        means = np.zeros_like(means)
        scales = np.ones_like(means)
    use_val = bool(V.sum() > 0)
    # pad the rows to a multiple of ROW_BUCKET with zero-weight rows: grids with slightly
    # different numbers of measured pairs share one compiled training loop
    n_pad = -X.shape[0] % ROW_BUCKET
    if n_pad:
        X = np.concatenate([X, np.zeros((n_pad, X.shape[1]))])
        W = np.concatenate([W, np.zeros((W.shape[0], n_pad), W.dtype)], axis=1)
        V = np.concatenate([V, np.zeros((V.shape[0], n_pad), V.dtype)], axis=1)
    res = train_networks(
        cfg,
        X.astype(np.float32),
        TrainConfig.pick(params),
        train_weights=W,
        val_weights=V if use_val else None,
        input_mean=means,
        input_scale=scales,
        seed=seed_from(rng),
        progress=params.progress,
        desc=f"{cfg.model} x{W.shape[0]}",
    )
    return res, rows

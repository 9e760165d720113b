"""Leave-one-out of the latent-arithmetic grid methods with grouped training."""

from __future__ import annotations

from typing import Any

import pandas as pd
from anndata import AnnData

from .._utils import RandomState, h5ad_safe
from ..methods.autoencoder import leave_one_out
from ._data import to_grid_data


def cross_validate_transfer(
    grid: AnnData,
    *,
    method: str = "autoencoder",
    n_groups: int = 20,
    random_state: RandomState = 0,
    key_added: str | None = "cross_validation_transfer",
    progress: bool = True,
    **params: Any,
) -> pd.DataFrame:
    """Leave-one-out of ``"autoencoder"`` / ``"vae"`` on a grid, training ``n_groups`` networks.

    :func:`cross_validate` with ``holdout="leave_one_out"`` trains one network per measured
    pair (302 on CMap). This function gives every pair the same information (all other
    measured pairs are encoded for the latent arithmetic) but trains only ``n_groups``
    networks, vmapped in one compiled loop: network k is trained without the pairs of group k
    and predicts them. No prediction depends on its own pair's profile. See
    :func:`scimpute.methods.autoencoder.leave_one_out`.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`.
    method
        ``"autoencoder"`` or ``"vae"``.
    n_groups
        Networks to train (the number of pairs gives plain leave-one-out).
    random_state
        Seed of the groups and of training.
    key_added
        ``grid.uns`` key for ``{"scores": table, "params": {...}}``; ``None`` writes nothing.
    progress
        Progress bar over epochs.
    **params
        Parameters of the method (:func:`scimpute.methods.autoencoder.autoencoder`).

    Returns
    -------
    The table of :func:`cross_validate` (``method``, ``context``, ``perturbation``,
    ``fold`` = group, ``source``, ``r2``, ``r2_effect``, ``pearson_effect``,
    ``cosine_effect``, ``mse``, ``relative_mse``); concatenate it with a
    :func:`cross_validate` table of the baselines and pass it to
    :func:`summarize_cross_validation`.

    """
    data, _ = to_grid_data(grid)
    table = leave_one_out(
        data,
        method=method,
        n_groups=n_groups,
        random_state=random_state,
        progress=progress,
        **params,
    )
    if key_added is not None:
        grid.uns[key_added] = {
            "scores": table,
            "params": h5ad_safe(
                {
                    "method": method,
                    "n_groups": n_groups,
                    "random_state": random_state,
                    **params,
                    "train_seconds": table.attrs.get("train_seconds", float("nan")),
                }
            ),
        }
    return table

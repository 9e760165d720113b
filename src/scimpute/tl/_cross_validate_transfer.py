"""Leave-one-out of a method with a ``grouped_refit`` hook (the grid autoencoders)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from anndata import AnnData

from .._keys import Key
from .._params import check_random_state_value
from .._utils import RandomState, h5ad_safe
from ..methods import get_method
from ..metrics import fold_scores
from ._cross_validate import make_folds
from ._data import to_grid_data
from ._run import resolve_method, run_method

CROSS_VALIDATION_TRANSFER_KEY = "cross_validation_transfer"


def cross_validate_transfer(
    grid: AnnData,
    *,
    method: str = "autoencoder",
    random_state: RandomState = 0,
    key_added: str | None = CROSS_VALIDATION_TRANSFER_KEY,
    progress: bool = True,
    **params: Any,
) -> pd.DataFrame:
    """Leave-one-out of ``"autoencoder"`` / ``"vae"`` with the method's grouped refit.

    :func:`cross_validate` with ``holdout="leave_one_out"`` trains one network per measured
    pair (302 on CMap). This function gives every pair the same information (all other
    measured pairs are encoded for the latent arithmetic) but trains only ``n_groups`` (a
    parameter of the method) networks, vmapped in one compiled loop: the method's
    ``grouped_refit`` hook (:func:`scimpute.methods.autoencoder.grouped_refit`). No
    prediction depends on its own pair's profile.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`.
    method
        A method with a ``grouped_refit`` hook (``"autoencoder"`` or ``"vae"``).
    random_state
        Seed of the groups and of training.
    key_added
        ``grid.uns`` key for ``{"scores": table, "params": {...}}``; ``None`` writes nothing.
    progress
        Progress bar over epochs.
    **params
        Parameters of the method (e.g. ``n_groups``, the networks to train).

    Returns
    -------
    The table of :func:`cross_validate` (``method``, ``context``, ``perturbation``,
    ``fold``, ``source``, ``r2``, ``r2_effect``, ``pearson_effect``, ``cosine_effect``,
    ``mse``, ``relative_mse``); concatenate it with a :func:`cross_validate` table of the
    baselines and pass it to :func:`summarize_cross_validation`.``fold`` numbers the pairs (one per fold).

    """
    owner = "cross_validate_transfer"
    check_random_state_value(owner, random_state)
    data, _ = to_grid_data(grid)
    m = resolve_method(method, {}, data)
    if m.grouped_refit is None:
        raise ValueError(f"{owner}: method {method!r} has no grouped_refit hook.")
    spec = m.parse(params)
    folds = make_folds(data, "leave_one_out", 2, random_state)
    results = m.grouped_refit(data, folds, spec, random_state=random_state, progress=progress)
    reference = get_method("context_mean")
    tables = []
    for f, (hidden, res) in enumerate(zip(folds, results, strict=True)):
        mask = data.measured.copy()
        mask[hidden[:, 0], hidden[:, 1]] = False
        ref = run_method(reference, data.with_measured(mask), hidden, random_state=0, params={})
        tables.append(
            fold_scores(data, method, hidden, res.prediction, res.source, ref.prediction, f)
        )
    table = pd.concat(tables, ignore_index=True)
    info = results[0].info if results else {}
    table.attrs["train_seconds"] = float(info.get("train_seconds", float("nan")))
    table.attrs["n_epochs"] = int(info.get("n_epochs", 0))
    table.attrs["best_epoch"] = list(info.get("best_epoch", []))
    if key_added is not None:
        grid.uns[key_added] = {
            Key.uns.scores: table,
            "params": h5ad_safe(
                {
                    "method": method,
                    "random_state": random_state,
                    **spec.to_dict(),
                    "train_seconds": table.attrs["train_seconds"],
                }
            ),
        }
    return table

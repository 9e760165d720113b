"""Cross-validation of the grid networks with grouped training (the ``grouped_refit`` hook).

The folds are split (seeded) into ``params.n_groups`` groups; network k is trained on every
measured pair except those of the folds of group k (all networks at once, vmapped). Each fold
of group k is then predicted with network k from everything else that is measured (the
fold's own pairs hidden from the latent arithmetic too), exactly the information the fold
gives. No prediction depends on its own fold's profiles: network k never saw them, so the
scheme is honest; it is conservative, since each network is trained on ``1 - 1/n_groups`` of
the pairs instead of all but one fold. With as many groups as folds it is plain
cross-validation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..._utils import RandomState, check_random_state
from ...nn import select
from .._base import GridData, MethodResult, as_targets
from ._arithmetic import latent_arithmetic, resolve_baseline
from ._fit import fit_grid_networks, net_config
from ._params import AutoencoderParams


def _group_of_folds(n_folds: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    group = np.empty(n_folds, dtype=np.int64)
    group[rng.permutation(n_folds)] = np.arange(n_folds) % min(n_groups, n_folds)
    return group


def grouped_refit(
    name: str,
    data: GridData,
    folds: Sequence[np.ndarray],
    params: AutoencoderParams,
    *,
    random_state: RandomState = 0,
    progress: bool | None = None,
) -> list[MethodResult]:
    """Predictions of every fold with ``params.n_groups`` networks (see the module docstring).

    Parameters
    ----------
    name
        ``"autoencoder"`` or ``"vae"``.
    data
        The full grid (the folds' pairs measured).
    folds
        ``(n_i, 2)`` measured pairs hidden together, one array per fold.
    params
        The method's parameters.
    random_state
        Seed of the groups, the validation splits and training.
    progress
        Progress bar over epochs (default ``params.progress``).

    Returns
    -------
    One :class:`~scimpute.methods.MethodResult` per fold, in order, with
    ``per_target["n_contexts"]`` and ``per_target["group"]`` and the training diagnostics in
    ``info``.

    """
    from ._methods import with_fallback

    folds = [as_targets(f) for f in folds]
    if not folds:
        return []
    if any(not data.measured[f[:, 0], f[:, 1]].all() for f in folds):
        raise ValueError(f"{name}: the folds of grouped_refit must hold measured pairs.")
    if progress is not None:
        params = params.replace(progress=bool(progress))
    baseline = resolve_baseline(name, params.baseline, data)
    rng = check_random_state(random_state)
    group = _group_of_folds(len(folds), params.n_groups, rng)
    n_groups = int(group.max()) + 1
    masks = np.repeat(data.measured[None], n_groups, axis=0)
    for f, g in zip(folds, group, strict=True):
        masks[g, f[:, 0], f[:, 1]] = False
    cfg = net_config(name, data, params)
    res, _ = fit_grid_networks(data, masks, cfg, params, random_state=rng)
    info = {
        "n_groups": n_groups,
        "n_epochs": int(res.n_epochs),
        "best_epoch": res.best_epoch.tolist(),
        "train_seconds": float(res.seconds),
    }
    kw = {"transform": params.transform, "output": params.output, "baseline": baseline}
    out: list[MethodResult | None] = [None] * len(folds)
    for k in range(n_groups):
        net = select(res.networks, k)
        mine = np.flatnonzero(group == k)
        single = [i for i in mine if folds[i].shape[0] == 1]
        # one-pair folds in one call: each target's own pair is left out of the arithmetic
        batches = [(single, data.measured, True)] if single else []
        for i in mine:
            if folds[i].shape[0] > 1:
                visible = data.measured.copy()
                visible[folds[i][:, 0], folds[i][:, 1]] = False
                batches.append(([i], visible, False))
        for idx, visible, exclude_self in batches:
            t = np.concatenate([folds[i] for i in idx])
            pred, ok, n_used = latent_arithmetic(
                net, data, visible, t, exclude_self=exclude_self, **kw
            )
            start = 0
            for i in idx:
                f = folds[i]
                sl = slice(start, start + f.shape[0])
                start += f.shape[0]
                hidden = data.measured.copy()
                hidden[f[:, 0], f[:, 1]] = False
                # fallbacks see the grid with only this fold hidden
                r = with_fallback(data.with_measured(hidden), f, pred[sl], ok[sl], n_used[sl], name)
                r.per_target["group"] = np.full(f.shape[0], k, dtype=np.int64)
                r.info = dict(info)
                out[i] = r
    return out  # type: ignore[return-value]


def leave_one_out_predictions(
    data: GridData,
    params: AutoencoderParams | None = None,
    *,
    method: str = "autoencoder",
    random_state: RandomState = 0,
) -> dict:
    """:func:`grouped_refit` over the leave-one-out folds (every measured non-control pair).

    Returns
    -------
    ``{"targets": (n, 2) pairs, "prediction": (n, p), "source": (n,), "group": (n,),
    "info": training diagnostics}``.

    """
    from .._registry import get_method

    m = get_method(method)
    params = m.params() if params is None else params
    cand = np.argwhere(data.treated_mask())
    if cand.shape[0] == 0:
        raise ValueError(f"{method}: the grid has no measured non-control pairs to hold out.")
    res = m.grouped_refit(data, [c[None] for c in cand], params, random_state=random_state)
    return {
        "targets": cand,
        "prediction": np.concatenate([r.prediction for r in res]),
        "source": np.concatenate([r.source for r in res]).astype(object),
        "group": np.concatenate([r.per_target["group"] for r in res]),
        "info": res[0].info,
    }

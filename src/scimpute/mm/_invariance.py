"""``invariant_features``: which latent dimensions and input features are modality-invariant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._keys import MM_INVARIANCE_KEY, MM_KEY, Key
from .._params import check_choice, check_random_state_value
from .._utils import check_random_state, h5ad_safe
from ._data import split_column
from ._params import EVAL_CELLS, INVARIANT, InvariantParams, document_params
from ._record import load

if TYPE_CHECKING:
    from mudata import MuData


def concordance(x: np.ndarray, y: np.ndarray, axis: int = 0) -> np.ndarray:
    """Lin's concordance correlation coefficient along ``axis``.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population (1/n)
    moments: 1 when ``x == y``, 0 for independent variables, and lowered by any shift or
    scale difference (unlike Pearson's r).
    """
    mx, my = x.mean(axis, keepdims=True), y.mean(axis, keepdims=True)
    cov = ((x - mx) * (y - my)).mean(axis)
    vx, vy = ((x - mx) ** 2).mean(axis), ((y - my) ** 2).mean(axis)
    d = (np.squeeze(mx, axis) - np.squeeze(my, axis)) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2.0 * cov / (vx + vy + d)


def feature_r2(x: np.ndarray, xhat: np.ndarray) -> np.ndarray:
    """Per-feature ``1 - sum (x - xhat)^2 / sum (x - mean x)^2`` over the rows (cells)."""
    sst = ((x - x.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - ((x - xhat) ** 2).sum(0) / sst
    return np.where(sst > 0, r2, np.nan)


def _eval_cells(mdata, key: str, cells) -> np.ndarray:
    n = mdata.n_obs
    if isinstance(cells, str):
        check_choice(INVARIANT, "cells", cells, EVAL_CELLS)
        col = split_column(key)
        if col not in mdata.obs.columns:
            raise KeyError(
                f"mdata.obs[{col!r}] (cell roles written by integrate) is missing; pass a boolean "
                "mask as cells= instead."
            )
        role = mdata.obs[col].astype(str).to_numpy()
        if cells == "heldout":
            return np.isin(role, ["train", "validation"])
        if cells == "validation":
            return role == "validation"
        return role != "unused"
    mask = cells.reindex(mdata.obs_names).to_numpy() if isinstance(cells, pd.Series) else cells
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"cells as a mask must be boolean with one entry per cell ({n}).")
    return mask


@document_params(InvariantParams)
def invariant_features(
    mdata: MuData,
    *,
    key: str = MM_KEY,
    key_added: str = MM_INVARIANCE_KEY,
    cells: str | np.ndarray | pd.Series = "heldout",
    random_state: int | np.random.Generator | None = 0,
    **params: Any,
) -> None:
    """Score how modality-invariant each shared latent dimension and each input feature is.

    Scores are computed on *evaluation cells*: cells measured in at least two modalities
    (same obs name) whose pairing the model did not see (``cells="heldout"``).

    **Latent dimensions.** For every pair of modalities ``(a, b)`` and shared latent
    dimension ``d``, Lin's concordance correlation coefficient (CCC) between ``z_a[:, d]``
    and ``z_b[:, d]`` over the evaluation cells measured in both: 1 when the two modalities
    place every cell at the same coordinate, about 0 when the coordinate is unrelated
    between them. A percentile bootstrap over cells (``n_bootstrap`` resamples) gives a 95%
    interval.

    **Input features.** For feature ``f`` of modality ``m`` and another modality ``b``, on
    the evaluation cells measured in both, in the model's standardised units:

    - ``R2_self(f)``: per-feature ``R^2`` (``1 - SSE / SST`` across cells) of ``m``'s own
      reconstruction ``dec_m(enc_m(x_m))`` (shared and private latent of ``m``);
    - ``R2_cross(f)``: ``R^2`` of the prediction from ``b`` through the shared latent,
      ``dec_m([z_b, mean u_m])`` (what :func:`scimpute.mm.translate` returns);
    - ``score_b(f) = max(R2_cross, 0) / max(R2_self, R2_cross, r2_floor)``, in [0, 1].

    The score is ``max_b score_b(f)``. It is about 1 for a feature that the other modality
    predicts as well as the feature's own modality does (its variation lives in the shared
    latent), about 0 for a feature whose variation is private to its modality or noise.
    ``r2_floor`` keeps features that even their own modality barely reconstructs from
    scoring high by a ratio of two small numbers.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData` on which :func:`scimpute.mm.integrate` was run.
    key
        ``key_added`` of that run.
    key_added
        Where to write the scores (see below).
    cells
        Evaluation cells: ``"heldout"`` (paired cells that were not anchors: their single
        modalities may have been trained on, their pairing was not), ``"validation"`` (paired
        cells withheld from training entirely), ``"all"`` (every paired cell, anchors
        included: optimistic), or a boolean mask over ``mdata.obs_names``.
    random_state
        Seed or generator of the bootstrap.
    **params
        Options of :class:`scimpute.mm._params.InvariantParams` (listed below), checked once.

    Other Parameters
    ----------------
    {params}

    Returns
    -------
    ``None``. Writes

    - ``mdata[m].var[key_added]``: the feature score, and ``mdata[m].var[key_added + "_r2_self"]``
      and ``[key_added + "_r2_cross"]`` (the best ``R2_cross`` over the other modalities),
      for every integrated modality ``m`` (NaN for features the model did not use);
    - ``mdata.uns[key_added]``: ``latent``, a :class:`pandas.DataFrame` with one row per
      (pair of modalities, dimension) and columns ``modalities`` (``"a|b"``), ``dimension``,
      ``ccc``, ``ci_low``, ``ci_high``, ``n_cells``; and ``params``.

    Raises
    ------
    ValueError
        Fewer than 3 evaluation cells for a pair of modalities.

    """
    spec = InvariantParams.from_kwargs(INVARIANT, params)
    rng = check_random_state(check_random_state_value(INVARIANT, random_state))
    r2_floor, n_bootstrap = spec.r2_floor, spec.n_bootstrap
    fit = load(mdata, key)
    mods = list(fit.arch.modalities)
    use = _eval_cells(mdata, key, cells)
    names = pd.Index(mdata.obs_names)
    rows = {m: mdata[m].obs_names.get_indexer(names) for m in mods}

    z, u, xstd = {}, {}, {}
    for m in mods:
        xstd[m] = fit.matrix(mdata, m)
        z[m], u[m] = fit.encode(m, xstd[m])

    def both(a: str, b: str) -> np.ndarray:
        sel = use & (rows[a] >= 0) & (rows[b] >= 0)
        if sel.sum() < 3:
            raise ValueError(
                f"Only {int(sel.sum())} evaluation cell(s) are measured in both {a!r} and {b!r}; "
                "at least 3 are needed. Use pairing < 1 or validation_fraction > 0 in "
                "integrate, or pass cells='all' or a mask."
            )
        return sel

    tables = []
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            sel = both(a, b)
            za, zb = z[a][rows[a][sel]], z[b][rows[b][sel]]
            ccc = concordance(za, zb, axis=0)
            lo = hi = np.full(ccc.shape, np.nan)
            if n_bootstrap > 0:
                n = za.shape[0]
                boot = rng.integers(0, n, size=(int(n_bootstrap), n))
                cb = concordance(za[boot], zb[boot], axis=1)  # (B, d)
                lo, hi = np.nanpercentile(cb, [2.5, 97.5], axis=0)
            tables.append(
                pd.DataFrame(
                    {
                        "modalities": f"{a}|{b}",
                        "dimension": np.arange(ccc.size),
                        "ccc": ccc,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n_cells": int(sel.sum()),
                    }
                )
            )
    latent = pd.concat(tables, ignore_index=True)
    latent.index = latent.index.astype(str)

    var_out = {}
    for m in mods:
        best_score = best_cross = None
        self_cells = np.zeros(len(names), dtype=bool)
        for b in mods:
            if b == m:
                continue
            sel = both(m, b)
            self_cells |= sel
            rm, rb = rows[m][sel], rows[b][sel]
            x = xstd[m][rm]
            self_hat = fit.decode(m, z[m][rm], u[m][rm])
            ubar = np.broadcast_to(fit.private_mean[m], (rb.size, fit.arch.n_private))
            cross_hat = fit.decode(m, z[b][rb], np.ascontiguousarray(ubar))
            r2_self = feature_r2(x, self_hat)
            r2_cross = feature_r2(x, cross_hat)
            with np.errstate(invalid="ignore"):
                denom = np.fmax(np.fmax(r2_self, r2_cross), r2_floor)
                score = np.clip(r2_cross, 0, None) / denom
            best_score = score if best_score is None else np.fmax(best_score, score)
            best_cross = r2_cross if best_cross is None else np.fmax(best_cross, r2_cross)
        rm = rows[m][self_cells]
        r2_self_all = feature_r2(xstd[m][rm], fit.decode(m, z[m][rm], u[m][rm]))
        var_out[m] = (best_score, r2_self_all, best_cross)

    # -- write
    for m in mods:
        score, r2s, r2c = var_out[m]
        pos = mdata[m].var_names.get_indexer(fit.features[m])
        columns = (
            (key_added, score),
            (Key.var.r2_self(key_added), r2s),
            (Key.var.r2_cross(key_added), r2c),
        )
        for name, values in columns:
            col = np.full(mdata[m].n_vars, np.nan)
            col[pos] = values
            mdata[m].var[name] = col
    call = {
        "key": key,
        "cells": cells if isinstance(cells, str) else "mask",
        "random_state": random_state,
        "n_cells": int(use.sum()),
    }
    mdata.uns[key_added] = {
        Key.uns.invariance_latent: latent,
        "params": h5ad_safe({**spec.to_dict(), **call}),
    }

"""``invariant_features``: which latent dimensions and input features are modality-invariant.

The scores read only what every backbone of :func:`scimpute.mm.integrate` writes: each
modality's embedding of its own cells (``mdata[m].obsm[key]``, and the private latent
``mdata[m].obsm[key + "_private"]`` when there is one) and the input values the model read
(layer and features of ``mdata.uns[key]``). No decoder is called, so a linear (CCA) and a
network backbone are scored the same way.

Definitions (on the *evaluation cells* ``E``: cells measured in both modalities whose pairing
the model did not see; ``K``-fold cross-fitting over ``E``, folds drawn once):

- ``R2_cross(f)``: held-out ``R^2`` of feature ``f`` of modality ``m`` predicted from the
  OTHER modality's embedding ``z_b`` of the same cells by a map fitted on the other folds (``1 - SSE / SST`` over ``E``, ``SST`` around the mean over ``E``);
- ``R2_self(f)``: the same, predicted from ``m``'s own embedding (its shared latent, and its
  private latent when the backbone has one): the feature's *own reconstruction*;
- ``score(f) = max(R2_cross, 0) / max(R2_self, R2_cross, r2_floor)`` in [0, 1]: the share of
  what ``m``'s own embedding predicts of ``f`` that the other modality predicts through the
  shared space. 1: as well; 0: not at all (private variation, a shortcut only ``m`` carries,
  or noise). ``r2_floor`` keeps a feature that even its own modality barely predicts from
  scoring high by a ratio of two small numbers.

Every map is, per feature and fold, a ridge regression (penalty by generalised
cross-validation) or a k-nearest-neighbour mean in the embedding, whichever has the smaller
leave-one-out error on the training folds (:func:`cross_fit`). The score gets a percentile
bootstrap interval over the cells of ``E`` and a permutation p-value (feature permuted within
folds); per latent dimension, the concordance of the modalities' coordinates gets both too.

Ranking. The score is defined the same way for every feature of every modality (each is
predicted from the other modality's embedding, relative to its own), so scores are
comparable across modalities. The *percentile* of a feature (``benchmarks/mm_invariance.py``)
is the fraction of ALL scored features of both modalities whose score is lower (ties count
half): a reference that does not depend on how many features of the feature's own kind are
expected to be invariant (a percentile among the 14 proteins of a panel, 8 of them linked to
a detected gene, could not exceed 0.73 on average even for a perfect score).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._keys import MM_INVARIANCE_KEY, MM_KEY, MM_PRIVATE_SUFFIX, Key
from .._params import check_choice, check_random_state_value
from .._utils import check_random_state, h5ad_safe
from ._data import modality_matrix, split_column
from ._params import EVAL_CELLS, INVARIANT, InvariantParams, document_params

if TYPE_CHECKING:
    from mudata import MuData

#: ridge penalties tried by generalised cross-validation (embeddings standardised).
ALPHAS = np.logspace(-3, 4, 15)
#: neighbour counts tried by the k-nearest-neighbour regression.
KNN_K = (5, 10, 20)


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


def ratio_score(r2_cross: np.ndarray, r2_self: np.ndarray, r2_floor: float) -> np.ndarray:
    """``max(R2_cross, 0) / max(R2_self, R2_cross, r2_floor)`` (NaN stays NaN)."""
    with np.errstate(invalid="ignore"):
        denom = np.fmax(np.fmax(r2_self, r2_cross), r2_floor)
        return np.clip(r2_cross, 0, None) / denom


def folds_of(n: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold (0 .. n_folds - 1) of each of ``n`` cells, balanced, in random order."""
    return rng.permutation(np.arange(n) % n_folds)


def _knn_means(y: np.ndarray, idx: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """``(len(ks), n_query, p)``: mean of ``y`` over the first ``k`` neighbours in ``idx``."""
    csum = np.cumsum(y[idx], axis=1)  # (n_query, kmax, p)
    return np.stack([csum[:, k - 1] / k for k in ks])


def cross_fit(
    z: np.ndarray, y: np.ndarray, fold: np.ndarray, ks: tuple[int, ...] = KNN_K
) -> np.ndarray:
    """Out-of-fold predictions of ``y`` (n, p) from the embedding ``z`` (n, d).

    For each fold, on the other folds (``z`` standardised on them), two regressions are
    fitted for every feature and the one with the smaller leave-one-out error *on those
    training folds* predicts the fold: a ridge regression (penalty per feature by
    generalised cross-validation over :data:`ALPHAS`, :class:`~sklearn.linear_model.RidgeCV`)
    and a k-nearest-neighbour mean in the embedding (``k`` per feature from ``ks``), which
    follows clusters that a linear map cannot isolate (network embeddings).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import NearestNeighbors

    out = np.zeros_like(y, dtype=np.float64)
    for k in np.unique(fold):
        te, tr = fold == k, fold != k
        mu, sd = z[tr].mean(0), z[tr].std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        ztr, zte, ytr = (z[tr] - mu) / sd, (z[te] - mu) / sd, y[tr]
        ridge = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(ztr, ytr)
        pred = ridge.predict(zte).reshape(int(te.sum()), -1)
        ridge_mse = -np.broadcast_to(ridge.best_score_, (y.shape[1],))
        use_k = tuple(q for q in ks if q < ztr.shape[0] - 1)
        if use_k:
            kmax = max(use_k)
            nn = NearestNeighbors(n_neighbors=kmax + 1).fit(ztr)
            self_idx = nn.kneighbors(ztr, return_distance=False)
            # leave one out: drop each training cell from its own neighbour list
            others = self_idx != np.arange(ztr.shape[0])[:, None]
            order = np.argsort(~others, axis=1, kind="stable")[:, :kmax]
            loo = np.take_along_axis(self_idx, order, axis=1)
            knn_mse = ((_knn_means(ytr, loo, use_k) - ytr) ** 2).mean(1)  # (len(k), p)
            best = knn_mse.argmin(0)
            better = knn_mse[best, np.arange(y.shape[1])] < ridge_mse
            if better.any():
                test_idx = nn.kneighbors(zte, n_neighbors=kmax, return_distance=False)
                means = _knn_means(ytr[:, better], test_idx, use_k)
                pred[:, better] = means[best[better], :, np.arange(int(better.sum()))].T
        out[te] = pred
    return out


@dataclass(frozen=True)
class FeatureScores:
    """Per-feature scores of one modality ``m`` predicted from one other modality."""

    score: np.ndarray
    r2_self: np.ndarray
    r2_cross: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    pvalue: np.ndarray


def feature_scores(
    y: np.ndarray,
    z_self: np.ndarray,
    z_other: np.ndarray,
    *,
    n_folds: int = 5,
    r2_floor: float = 0.1,
    n_bootstrap: int = 200,
    n_permutations: int = 200,
    rng: np.random.Generator,
) -> FeatureScores:
    """The invariance score of every column of ``y`` (see the module docstring).

    Parameters
    ----------
    y
        ``(n, p)`` values of the features of ``m`` on the evaluation cells.
    z_self, z_other
        ``(n, d)`` embeddings of the same cells from ``m`` and from the other modality.
    n_folds
        Folds of the cross-fitting.
    r2_floor
        Lower bound of the denominator.
    n_bootstrap
        Resamples of the cells for the percentile 95% interval of the score (the
        out-of-fold predictions are kept; 0: no interval).
    n_permutations
        Permutations of ``y`` within folds for the p-value of ``R2_cross`` (0: no p-value).
    rng
        Generator of the folds, resamples and permutations.

    Returns
    -------
    :class:`FeatureScores`. The p-value is ``(1 + #{R2_cross^perm >= R2_cross}) / (1 +
    n_permutations)``: the null is that ``f`` does not depend on the other modality's
    embedding (the out-of-fold predictions of a fold come from a map fitted on the other
    folds, so permuting ``y`` within a fold is exact under that null).

    """
    y = np.asarray(y, np.float64)
    n = y.shape[0]
    fold = folds_of(n, n_folds, rng)
    cross = cross_fit(np.asarray(z_other, float), y, fold)
    own = cross_fit(np.asarray(z_self, float), y, fold)
    r2c, r2s = feature_r2(y, cross), feature_r2(y, own)
    score = ratio_score(r2c, r2s, r2_floor)
    nan = np.full_like(score, np.nan)
    lo, hi = nan, nan.copy()
    if n_bootstrap > 0:
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_bootstrap)).astype(float)
        s1, s2 = counts @ y, counts @ y**2
        with np.errstate(invalid="ignore", divide="ignore"):
            sst = s2 - s1**2 / n
            bc = 1.0 - (counts @ (y - cross) ** 2) / sst
            bs = 1.0 - (counts @ (y - own) ** 2) / sst
        boot = np.where(sst > 1e-12, ratio_score(bc, bs, r2_floor), np.nan)
        with warnings.catch_warnings():  # a feature constant on the cells: NaN interval
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    pvalue = nan.copy()
    if n_permutations > 0:
        sst = ((y - y.mean(0)) ** 2).sum(0)
        base = (y**2).sum(0) + (cross**2).sum(0)
        groups = [np.flatnonzero(fold == k) for k in np.unique(fold)]
        exceed = np.zeros(y.shape[1])
        obs_sse = ((y - cross) ** 2).sum(0)
        for _ in range(int(n_permutations)):
            perm = np.arange(n)
            for g in groups:
                perm[g] = rng.permutation(g)
            sse = base - 2.0 * (y[perm] * cross).sum(0)
            exceed += sse <= obs_sse + 1e-12 * np.maximum(sst, 1.0)
        pvalue = np.where(sst > 0, (1.0 + exceed) / (1.0 + n_permutations), np.nan)
    return FeatureScores(score, r2s, r2c, lo, hi, pvalue)


def _eval_cells(mdata, key: str, cells) -> np.ndarray:
    n = mdata.n_obs
    if isinstance(cells, str):
        check_choice(INVARIANT, "cells", cells, EVAL_CELLS)
        col = split_column(key)
        if col not in mdata.obs.columns:
            if cells == "all":
                return np.ones(n, dtype=bool)
            raise KeyError(
                f"mdata.obs[{col!r}] (cell roles written by integrate) is missing; pass "
                "cells='all' or a boolean mask as cells= instead."
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


@dataclass(frozen=True)
class Integrated:
    """What the scores read of an integration: modalities, inputs, embeddings."""

    modalities: list[str]
    features: Mapping[str, pd.Index]
    layer: Mapping[str, str | None]


def _integrated(mdata, key: str) -> Integrated:
    """The modalities, features and layers of the integration ``key`` (record checked)."""
    from ._record import read_integration

    rec = read_integration(mdata, key)
    mods = list(rec.modalities)
    for m in mods:
        if m not in mdata.mod:
            raise KeyError(f"The integration mdata.uns[{key!r}] uses modality {m!r}, not in mdata.")
        if key not in mdata[m].obsm:
            raise KeyError(
                f"mdata[{m!r}].obsm[{key!r}] (the embedding of {m!r}'s cells) is missing: run "
                f"scimpute.mm.integrate(mdata, key_added={key!r}) again."
            )
    return Integrated(mods, rec.features, rec.layer)


def _embedding(mdata, m: str, key: str, private: bool) -> np.ndarray:
    z = np.asarray(mdata[m].obsm[key], dtype=np.float64)
    pk = f"{key}{MM_PRIVATE_SUFFIX}"
    if private and pk in mdata[m].obsm:
        z = np.hstack([z, np.asarray(mdata[m].obsm[pk], dtype=np.float64)])
    if not np.isfinite(z).all():
        raise ValueError(f"mdata[{m!r}].obsm[{key!r}] holds NaN or infinite values.")
    return z


def _latent_table(za, zb, pair: str, spec: InvariantParams, rng) -> pd.DataFrame:
    """Concordance of every latent dimension, with bootstrap interval and permutation p."""
    ccc = concordance(za, zb, axis=0)
    n = za.shape[0]
    lo = hi = p = np.full(ccc.shape, np.nan)
    if spec.n_bootstrap > 0:
        boot = rng.integers(0, n, size=(int(spec.n_bootstrap), n))
        cb = concordance(za[boot], zb[boot], axis=1)  # (B, d)
        lo, hi = np.nanpercentile(cb, [2.5, 97.5], axis=0)
    if spec.n_permutations > 0:
        perms = np.argsort(rng.random((int(spec.n_permutations), n)), axis=1)
        cp = concordance(np.broadcast_to(za, (perms.shape[0], *za.shape)), zb[perms], axis=1)
        p = (1.0 + (cp >= ccc - 1e-12).sum(0)) / (1.0 + perms.shape[0])
    return pd.DataFrame(
        {
            "modalities": pair,
            "dimension": np.arange(ccc.size),
            "ccc": ccc,
            "ci_low": lo,
            "ci_high": hi,
            "pvalue": p,
            "n_cells": n,
        }
    )


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
    (same obs name) whose pairing the model did not see (``cells="heldout"``). They read each
    modality's embedding of its cells, not the model, so every backbone of
    :func:`~scimpute.mm.integrate` is scored the same way.

    **Input features.** For feature ``f`` of modality ``m`` and another modality ``b``, on
    the evaluation cells ``E`` measured in both, with ``n_folds``-fold cross-fitting over
    ``E`` (every prediction is for a cell that the map did not see):

    - ``R2_cross(f)``: ``R^2`` (``1 - SSE / SST`` over ``E``) of ``f`` predicted from ``b``'s
      embedding of the same cells (``mdata[b].obsm[key]``) by a map fitted on the other
      folds: a ridge regression or a k-nearest-neighbour mean, whichever has the smaller
      leave-one-out error on those folds;
    - ``R2_self(f)``: the same from ``m``'s own embedding (``mdata[m].obsm[key]``, with
      ``mdata[m].obsm[key + "_private"]`` appended when the backbone has a private latent):
      the feature's own reconstruction;
    - ``score_b(f) = max(R2_cross, 0) / max(R2_self, R2_cross, r2_floor)``, in [0, 1].

    The score is ``max_b score_b(f)`` (the other modality that predicts ``f`` best; with two
    modalities there is one). About 1: the other modality predicts ``f`` through the shared
    space as well as ``f``'s own modality does; about 0: ``f``'s variation is private to its
    modality (including *shortcuts*, signal only one modality carries), or noise.
    **Interval**: percentile bootstrap over the cells of ``E`` (the out-of-fold predictions
    kept, ``n_bootstrap`` resamples). **p-value**: ``f`` permuted within folds
    (``n_permutations`` times), ``(1 + #{R2_cross^perm >= R2_cross}) / (1 + n_permutations)``;
    the null is that ``f`` does not depend on the other modality's embedding. Since a
    permutation leaves both sums of squares unchanged, this tests the covariance of ``f``
    with its prediction: a small p-value can come with a small (even negative) ``R2_cross``.

    **Latent dimensions.** For every pair of modalities ``(a, b)`` and shared latent
    dimension ``d``: Lin's concordance correlation coefficient (CCC) between ``z_a[:, d]``
    and ``z_b[:, d]`` over the evaluation cells measured in both (1 when both modalities
    place every cell at the same coordinate, about 0 when unrelated), a percentile bootstrap
    95% interval and a permutation p-value (cells of ``b`` permuted).

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
        Seed or generator of the folds, the bootstrap and the permutations.
    **params
        Options of :class:`scimpute.mm._params.InvariantParams` (listed below), checked once.

    Other Parameters
    ----------------
    {params}

    Returns
    -------
    None
        Writes, for every integrated modality ``m`` (NaN for features the model did not use):

        - ``mdata[m].var[key_added]``: the feature score;
        - ``mdata[m].var[key_added + s]`` for ``s`` in ``"_r2_self"``, ``"_r2_cross"`` (of the
          best other modality), ``"_ci_low"``, ``"_ci_high"`` (95% bootstrap interval of the
          score), ``"_pvalue"`` (permutation p-value of ``R2_cross``);
        - ``mdata.uns[key_added]``: ``latent``, a :class:`pandas.DataFrame` with one row per
          (pair of modalities, dimension) and columns ``modalities`` (``"a|b"``), ``dimension``,
          ``ccc``, ``ci_low``, ``ci_high``, ``pvalue``, ``n_cells``; and ``params``.

    Raises
    ------
    KeyError
        No integration under ``key``, or a modality's embedding is missing.
    ValueError
        Fewer than ``max(3, 2 * n_folds)`` evaluation cells for a pair of modalities.

    """
    spec = InvariantParams.from_kwargs(INVARIANT, params)
    rng = check_random_state(check_random_state_value(INVARIANT, random_state))
    info = _integrated(mdata, key)
    mods = info.modalities
    use = _eval_cells(mdata, key, cells)
    names = pd.Index(mdata.obs_names)
    rows = {m: mdata[m].obs_names.get_indexer(names) for m in mods}
    need = max(3, 2 * spec.n_folds)

    def both(a: str, b: str) -> np.ndarray:
        sel = use & (rows[a] >= 0) & (rows[b] >= 0)
        if sel.sum() < need:
            raise ValueError(
                f"Only {int(sel.sum())} evaluation cell(s) are measured in both {a!r} and {b!r}; "
                f"at least {need} are needed. Use pairing < 1 or validation_fraction > 0 in "
                "integrate, or pass cells='all' or a mask."
            )
        return sel

    shared = {m: _embedding(mdata, m, key, private=False) for m in mods}
    own = {m: _embedding(mdata, m, key, private=True) for m in mods}
    values = {m: modality_matrix(mdata[m], info.layer[m], info.features[m], m) for m in mods}

    tables = []
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            sel = both(a, b)
            za, zb = shared[a][rows[a][sel]], shared[b][rows[b][sel]]
            tables.append(_latent_table(za, zb, f"{a}|{b}", spec, rng))
    latent = pd.concat(tables, ignore_index=True)
    latent.index = latent.index.astype(str)

    var_out: dict[str, FeatureScores] = {}
    for m in mods:
        best: FeatureScores | None = None
        for b in mods:
            if b == m:
                continue
            sel = both(m, b)
            rm, rb = rows[m][sel], rows[b][sel]
            fs = feature_scores(
                values[m][rm],
                own[m][rm],
                shared[b][rb],
                n_folds=spec.n_folds,
                r2_floor=spec.r2_floor,
                n_bootstrap=spec.n_bootstrap,
                n_permutations=spec.n_permutations,
                rng=rng,
            )
            if best is None:
                best = fs
            else:  # per feature, keep the other modality with the higher score
                take = np.nan_to_num(fs.score, nan=-1) > np.nan_to_num(best.score, nan=-1)
                best = FeatureScores(
                    *(
                        np.where(take, getattr(fs, f), getattr(best, f))
                        for f in FeatureScores.__dataclass_fields__
                    )
                )
        var_out[m] = best

    # -- write (everything is computed)
    for m in mods:
        fs = var_out[m]
        pos = mdata[m].var_names.get_indexer(info.features[m])
        columns = (
            (key_added, fs.score),
            (Key.var.r2_self(key_added), fs.r2_self),
            (Key.var.r2_cross(key_added), fs.r2_cross),
            (Key.var.ci_low(key_added), fs.ci_low),
            (Key.var.ci_high(key_added), fs.ci_high),
            (Key.var.pvalue(key_added), fs.pvalue),
        )
        for name, vals in columns:
            col = np.full(mdata[m].n_vars, np.nan)
            col[pos] = vals
            mdata[m].var[name] = col
    call = {
        "key": key,
        "cells": cells if isinstance(cells, str) else "mask",
        "random_state": random_state
        if isinstance(random_state, int | None)
        else type(random_state).__name__,
        "n_cells": int(use.sum()),
    }
    mdata.uns[key_added] = {
        Key.uns.invariance_latent: latent,
        "params": h5ad_safe({**spec.to_dict(), **call}),
    }

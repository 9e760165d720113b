"""One donor direction of synthetic interventions, as named stages.

:func:`fit_direction` runs, for SI-Action (``donors="perturbations"``) or SI-Context
(``"contexts"``, the grid transposed):

1. :func:`_orient` and :func:`._engine.greedy_paths`: the levels of every target's path;
2. :func:`_usable_levels`: levels with enough training units (the last one only for
   ``select="max_donors"``);
3. :func:`_fit_levels`: every level fitted and validated (:func:`._engine.fit_all`);
4. :func:`_score_levels`: validation errors, and ``context_mean`` on the same held-out pairs;
5. :func:`_select_levels`: per target, the first level with the smallest validation error;
6. :func:`_accept`: whether the fit beats ``context_mean`` (the per-pair fallback);
7. :func:`_predict`: the fallback chain everywhere, the fit where accepted;
8. :func:`_fallback_reasons`, :func:`_diagnostics`, :func:`_records`: what is reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import numpy as np
import scipy.sparse as sp

from ... import _keys as keys
from .._base import GridData, MethodResult
from .._stats import fallback_chain, group_means, validated_order
from . import FALLBACK_REASONS, NAME
from . import _engine as E
from ._engine import ranges as _ranges
from ._params import SIParams

#: rows per chunk of the context-mean errors and of the fallbacks (bounds their memory)
_CHUNK_ERRORS = 8192
_CHUNK_FALLBACK = 16384


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


#: segments per block of :func:`_gather_segments` (bounds its index arrays)
_CHUNK_SEGMENTS = 65536


def _gather_segments(src, starts, counts, dtype=None) -> np.ndarray:
    """``src[_ranges(starts, counts)]`` built block by block into one array of ``dtype``.

    The same values without the (total,) int64 index of the whole gather (at 70 x 20,000,
    1.3 M targets x ~130 donors: 1.3 GB).
    """
    counts = np.asarray(counts, dtype=np.int64)
    off = _offsets(counts)
    out = np.empty(int(off[-1]), dtype=src.dtype if dtype is None else dtype)
    for lo in range(0, counts.size, _CHUNK_SEGMENTS):
        hi = min(lo + _CHUNK_SEGMENTS, counts.size)
        out[off[lo] : off[hi]] = src[_ranges(starts[lo:hi], counts[lo:hi])]
    return out


def context_mean_errors(data: GridData) -> np.ndarray:
    """``||y[c, a] - context_mean(c without a)||^2`` of every measured pair, (C, A).

    Inf where the context has no other measured non-control profile, NaN where unmeasured.
    """
    gm = group_means(data)
    S, n = gm.ctx_sum, gm.ctx_n
    ci, ai = np.nonzero(data.measured)
    out = np.full(data.measured.shape, np.nan)
    SS_all = np.einsum("ij,ij->i", S, S)
    for lo in range(0, ci.size, _CHUNK_ERRORS):
        c, a = ci[lo : lo + _CHUNK_ERRORS], ai[lo : lo + _CHUNK_ERRORS]
        y = np.asarray(data.Y[c, a], dtype=np.float64)
        yy = np.einsum("ij,ij->i", y, y)
        yS = np.einsum("ij,ij->i", y, S[c])
        treated = np.ones(a.size, dtype=bool) if data.control is None else a != data.control
        n2 = n[c] - treated
        yS2 = np.where(treated, yS - yy, yS)
        SS2 = np.where(treated, SS_all[c] - 2 * yS + yy, SS_all[c])
        with np.errstate(divide="ignore", invalid="ignore"):
            err = yy - 2 * yS2 / n2 + SS2 / n2**2
        out[c, a] = np.where(n2 > 0, np.maximum(err, 0.0), np.inf)
    return out


@dataclass
class Oriented:
    """The grid seen from one donor direction: units x donor axis."""

    Yd: np.ndarray  # (units, donor axis, features)
    Md: np.ndarray  # (units, donor axis) measured
    tgt: np.ndarray  # (n, 2) targets as (unit, donor-axis index)


@dataclass
class Scores:
    """Validation of every candidate level (rows: candidates, in ``paths`` order)."""

    rep: np.ndarray  # candidate of each held-out training pair
    err: np.ndarray  # context_mean's error on each held-out training pair
    nT: np.ndarray  # (L,) training units of each candidate
    best_val: np.ndarray  # (L,) validation MSE of the best regularisation
    cm_mse: np.ndarray  # (L,) context_mean's MSE on the same held-out pairs


@dataclass
class Selection:
    """The level chosen for each target that has one."""

    has: np.ndarray  # (n,) targets with a usable level
    cs: np.ndarray  # chosen candidate of each such target
    rs: np.ndarray  # chosen regularisation
    keys_sel: np.ndarray  # key of the chosen candidate
    nD_sel: np.ndarray  # its donors
    w_sel: np.ndarray  # its weights, concatenated
    b_sel: np.ndarray  # its intercept


def fit_direction(
    data: GridData,
    t: np.ndarray,
    donors: str,
    params: SIParams,
    folds: np.ndarray,
    progress: bool,
    out=None,
) -> MethodResult:
    """One donor direction of synthetic interventions (``params`` resolved and checked).

    ``out``: where the predictions are written (``out[rows] = values``, group by group);
    ``None``: a new array.
    """
    n_t = t.shape[0]
    view = _orient(data, t, donors)
    last = params.min_train_units if params.select == "max_donors" else None
    paths = E.greedy_paths(np.ascontiguousarray(view.Md), view.tgt, params.max_donors, last)
    had_level = paths.had_level
    paths = _usable_levels(paths, n_t, params)
    fits = _fit_levels(view, paths, params, folds, data.n_features, progress)
    scores = _score_levels(data, donors, view, paths, fits, params)
    sel = _select_levels(paths, fits, scores, n_t)
    use_si = _accept(sel, fits, scores, params, n_t)
    pred, source = _predict(data, t, view, paths, sel, use_si, progress, out)
    info = _records(data, t, donors, view, paths, sel, params)
    info[keys.SI_FALLBACK_REASONS] = _fallback_reasons(paths, sel.has, had_level, use_si)
    info[keys.SI_SOLVERS] = fits.solvers(paths.cand_key)
    diag = _diagnostics(paths, fits, scores, sel, params, n_t)
    return MethodResult(prediction=pred, source=source, per_target=diag, info=info)


def _orient(data: GridData, t: np.ndarray, donors: str) -> Oriented:
    if donors == "perturbations":
        return Oriented(data.Y, data.measured, t)
    return Oriented(np.swapaxes(data.Y, 0, 1), data.measured.T, t[:, ::-1])


def _keep_candidates(paths: E.Paths, keep: np.ndarray) -> E.Paths:
    return dataclasses.replace(
        paths,
        cand_target=paths.cand_target[keep],
        cand_step=paths.cand_step[keep],
        cand_key=paths.cand_key[keep],
    )


def _usable_levels(paths: E.Paths, n_t: int, params: SIParams) -> E.Paths:
    """Levels with at least ``min_train_units`` training units.

    For ``select="max_donors"``, only the last such level of each target.
    """
    paths = _keep_candidates(paths, paths.n_T[paths.cand_key] >= params.min_train_units)
    if params.select == "max_donors" and paths.cand_target.size:
        last = np.zeros(n_t, dtype=np.int64) - 1
        np.maximum.at(last, paths.cand_target, paths.cand_step)
        paths = _keep_candidates(paths, paths.cand_step == last[paths.cand_target])
    return paths


def _fit_levels(view, paths, params, folds, p, progress) -> E.Fits:
    """Every fit (:func:`._engine.fit_all`, which builds the unit statistics it needs)."""
    with jax.enable_x64(True):
        return E.fit_all(view.Yd, view.Md, folds, paths, view.tgt, params, progress=progress)


def _score_levels(data, donors, view, paths, fits, params) -> Scores:
    """Validation MSE of each candidate and of ``context_mean`` on its held-out pairs."""
    L = paths.cand_key.size
    nT = paths.n_T[paths.cand_key]
    rep = np.repeat(np.arange(L), nT)
    if L:
        units = paths.T_flat[_ranges(paths.T_off[paths.cand_key], nT)]
        v = view.tgt[paths.cand_target[rep], 1]
    else:
        units = v = np.zeros(0, dtype=np.int64)
    pc, pa = (units, v) if donors == "perturbations" else (v, units)
    err = context_mean_errors(data)[pc, pa]
    cm_sse = np.bincount(rep, weights=np.where(np.isfinite(err), err, 0.0), minlength=L)
    cm_bad = np.bincount(rep, weights=~np.isfinite(err), minlength=L) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        val = fits.val_sse / fits.val_n[:, None]
        cm_mse = np.where(cm_bad, np.inf, cm_sse / fits.val_n)
    val = np.where(np.isfinite(val), val, np.inf)
    # a single training unit cannot show that the weights transfer to other units; trust
    # it only when its donors over-span the design's dominant components
    redundant = (
        paths.n_D[paths.cand_key] >= params.single_unit_redundancy * fits.rank90[paths.cand_key]
    )
    val[(nT == 1) & ~redundant] = np.inf
    best_val = val[np.arange(L), fits.best]
    return Scores(rep=rep, err=err, nT=nT, best_val=best_val, cm_mse=cm_mse)


def _first_minimum(paths: E.Paths, best_val: np.ndarray, n_t: int) -> np.ndarray:
    """Per target, the candidate with the smallest error, the earliest on ties (-1: none)."""
    sel = np.full(n_t, -1, dtype=np.int64)
    if not best_val.size:
        return sel
    o = np.lexsort((paths.cand_step, paths.cand_target))
    tg = paths.cand_target[o]
    starts = np.flatnonzero(np.r_[True, tg[1:] != tg[:-1]])
    seg_min = np.minimum.reduceat(best_val[o], starts)
    seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, o.size]))
    hit = best_val[o] == seg_min[seg]
    hit_seg, first = np.unique(seg[hit], return_index=True)
    sel[tg[starts[hit_seg]]] = o[np.flatnonzero(hit)[first]]
    return sel


def _select_levels(paths, fits, scores, n_t) -> Selection:
    sel = _first_minimum(paths, scores.best_val, n_t)
    has = sel >= 0
    cs = sel[has]
    keys_sel = paths.cand_key[cs]
    fits.complete(keys_sel)  # full fits of the selected host keys only
    nD_sel = paths.n_D[keys_sel]
    if cs.size == paths.cand_key.size and np.array_equal(cs, np.arange(cs.size)):
        w_sel = fits.w_flat  # every candidate selected, in target order: no copy
    else:
        w_sel = _gather_segments(fits.w_flat, fits.w_off[cs], nD_sel)
    fits.w_flat = w_sel[:0]  # every candidate's weights: not read after the selection
    return Selection(
        has=has,
        cs=cs,
        rs=fits.best[cs],
        keys_sel=keys_sel,
        nD_sel=nD_sel,
        w_sel=w_sel,
        b_sel=fits.b[cs],
    )


def _accept(sel, fits, scores, params, n_t) -> np.ndarray:
    """Targets imputed by the fit.

    All targets with a level, or (``fallback``) those whose fit beats ``context_mean`` by
    ``fallback_margin`` and on at least ``min_win_fraction`` of the held-out units.
    """
    L = scores.nT.size
    win = np.where(
        np.isnan(fits.val_blocks),
        0.0,
        fits.val_blocks < np.where(np.isfinite(scores.err), scores.err, np.inf),
    )
    frac_win = np.bincount(scores.rep, weights=win, minlength=L) / np.maximum(scores.nT, 1)
    cs = sel.cs
    use_si = np.zeros(n_t, dtype=bool)
    use_si[sel.has] = (not params.fallback) | (
        (scores.best_val[cs] < (1 - params.fallback_margin) * scores.cm_mse[cs])
        & (frac_win[cs] >= params.min_win_fraction - 1e-12)
    )
    return use_si


def _predict(data, t, view, paths, sel, use_si, progress, out=None):
    """The ``context_mean`` chain where the fit is not used, ``W @ Y[u, D] + b`` elsewhere.

    Written into ``out`` (chunk by chunk, group by group) or a new array.
    """
    n_t = t.shape[0]
    pred = out
    if pred is None:
        pred = np.empty((n_t, data.n_features), dtype=np.result_type(data.Y.dtype, np.float32))
    source = np.full(n_t, NAME, dtype=object)
    fb = np.flatnonzero(~use_si)
    if fb.size:
        gm = group_means(data)
        order = list(validated_order(data, gm))  # the grid's best baseline first
        for lo in range(0, fb.size, _CHUNK_FALLBACK):
            rows = fb[lo : lo + _CHUNK_FALLBACK]
            base = fallback_chain(data, t[rows], order, gm)
            pred[rows] = base.prediction
            source[rows] = base.source
    si_rows = np.flatnonzero(use_si[sel.has])
    if si_rows.size:
        w_off_sel = _offsets(sel.nD_sel)
        nD = sel.nD_sel[si_rows]
        every = si_rows.size == sel.cs.size  # no copy of the weights when all are used
        with jax.enable_x64(True):
            E.predict_selected(
                view.Yd,
                paths,
                sel.cs[si_rows],
                sel.w_sel if every else _gather_segments(sel.w_sel, w_off_sel[si_rows], nD),
                w_off_sel if every else _offsets(nD),
                sel.b_sel[si_rows],
                pred,
                np.flatnonzero(sel.has)[si_rows],
                progress,
            )
    return pred, source


def _fallback_reasons(paths, has, had_level, use_si) -> dict[str, int]:
    reasons = dict.fromkeys(FALLBACK_REASONS, 0)
    reasons["no_training_units"] = int((~has & (paths.n_start == 0)).sum())
    reasons["no_donors"] = int((~has & (paths.n_start > 0) & ~had_level).sum())
    reasons["few_training_units"] = int((~has & had_level).sum())
    reasons["validation"] = int((has & ~use_si).sum())
    return reasons


def _diagnostics(paths, fits, scores, sel, params, n_t) -> dict[str, np.ndarray]:
    has, cs, rs = sel.has, sel.cs, sel.rs
    diag = {k: np.full(n_t, np.nan) for k in keys.SI_DIAGNOSTICS}
    nT_sel = paths.n_T[sel.keys_sel]
    diag[keys.SI_N_DONORS][has] = sel.nD_sel
    diag[keys.SI_N_TRAIN][has] = nT_sel
    with np.errstate(divide="ignore", invalid="ignore"):
        diag[keys.SI_R2_TRAIN][has] = 1 - fits.sse_in[cs] / fits.sst_in[cs]
        diag[keys.SI_R2_HELDOUT][has] = np.where(
            nT_sel >= 2, 1 - fits.val_sse[cs, rs] / fits.sst_ho[cs], np.nan
        )
    diag[keys.SI_VALIDATION_MSE][has] = scores.best_val[cs]
    diag[keys.SI_CONTEXT_MEAN_VALIDATION_MSE][has] = scores.cm_mse[cs]
    regs = params.regularisations
    diag[keys.SI_RIDGE][has] = np.array([regs[r][1] for r in rs], dtype=float)
    stat = fits.subspace[sel.keys_sel]
    diag[keys.SI_SUBSPACE_STAT][has] = stat
    diag[keys.SI_SUBSPACE_PASS][has] = (stat <= params.subspace_threshold).astype(float)
    return diag


def _csr_rows(values, cols, counts, rows, shape) -> sp.csr_matrix:
    """CSR matrix whose row ``rows[i]`` holds ``counts[i]`` consecutive (col, value) entries.

    ``rows`` ascending; built from its index arrays directly (no COO triplets, no sort of
    the whole matrix), then each row's columns sorted in place.
    """
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    indptr[np.asarray(rows) + 1] = counts
    np.cumsum(indptr, out=indptr)
    idx_type = np.int32 if shape[1] < 2**31 and indptr[-1] < 2**31 else np.int64
    m = sp.csr_matrix(
        (values, cols.astype(idx_type, copy=False), indptr.astype(idx_type, copy=False)),
        shape=shape,
    )
    m.sort_indices()
    return m


def _records(data, t, donors, view, paths, sel, params) -> dict:
    """Donor weights (targets x donor axis), training units (targets x units) and labels."""
    n_t = t.shape[0]
    rows_has = np.flatnonzero(sel.has)
    nD_sel, nT_sel = sel.nD_sel, paths.n_T[sel.keys_sel]
    n_cols = view.Md.shape[1]
    d_cols = _gather_segments(
        paths.D_flat, paths.D_off[sel.keys_sel], nD_sel, np.int32 if n_cols < 2**31 else None
    )
    weights = _csr_rows(sel.w_sel, d_cols, nD_sel, rows_has, (n_t, view.Md.shape[1]))
    del d_cols
    t_cols = paths.T_flat[_ranges(paths.T_off[sel.keys_sel], nT_sel)]
    ones = np.ones(t_cols.size, dtype=np.float32)
    train_units = _csr_rows(ones, t_cols, nT_sel, rows_has, (n_t, view.Md.shape[0]))
    intercepts = np.full(n_t, np.nan)
    intercepts[sel.has] = sel.b_sel
    ctx_labels = np.asarray(data.contexts).astype(str)
    pert_labels = np.asarray(data.perturbations).astype(str)
    action = donors == "perturbations"
    regs = params.regularisations
    return {
        keys.SI_DONOR_WEIGHTS: weights,
        keys.SI_DONOR_INTERCEPTS: intercepts,
        keys.SI_TRAIN_UNITS: train_units,
        keys.SI_DONOR_AXIS: donors,
        keys.SI_DONOR_LABELS: pert_labels if action else ctx_labels,
        keys.SI_UNIT_LABELS: ctx_labels if action else pert_labels,
        keys.SI_TARGET_CONTEXTS: ctx_labels[t[:, 0]],
        keys.SI_TARGET_PERTURBATIONS: pert_labels[t[:, 1]],
        keys.SI_REGULARISATIONS: {
            "rank": np.array(["None" if r is None else str(r) for r, _ in regs], dtype=object),
            "ridge": np.array([g for _, g in regs], dtype=float),
        },
        keys.SI_SUBSPACE_THRESHOLD: float(params.subspace_threshold),
        keys.SI_N_GROUPS: int(np.unique(paths.cand_key).size),
    }

"""Host-side orchestration of batched synthetic interventions (greedy paths, keys, buckets).

The estimator is specified in :mod:`scimpute.methods.synthetic_interventions` and, as plain
per-pair code, in :mod:`scimpute.methods.synthetic_interventions._reference`. This module computes the same
numbers for every target at once:

1. per-unit statistics, once: feature means of every measured profile, and the Gram
   matrices (per fold of the features) of the per-profile centred profiles;
2. the greedy donor path of every target, vectorised with bit sets of training units;
3. every (target unit, training units, donors) combination on a path becomes a *key* (a
   group of targets); targets share keys. Keys with at least :data:`HOST_MIN_DONORS`
   donors are fitted one by one, unpadded, in numpy (:mod:`._host`: validation first,
   full fits on demand through :meth:`Fits.complete`);
   smaller keys of similar size share a padded *bucket* so that the JAX kernels
   (:mod:`._kernels`) compile once per bucket shape;
4. per target, the (level, regularisation) with the smallest validation error is kept and
   compared with ``context_mean`` on the same held-out pairs;
5. predictions ``W @ Y[u, D] + b`` are computed key by key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from tqdm.auto import tqdm

from ..._sharding import batched_call
from . import _dual as Dual
from . import _host as H
from . import _kernels as K
from ._params import SIParams

#: floats per intermediate array of a kernel call (bounds the memory of one chunk)
_CHUNK_BUDGET = 2**22
#: groups (keys) with at least this many donors are fitted one by one in numpy/LAPACK,
#: unpadded and uncompiled (:mod:`._host`); smaller ones in padded JAX
#: batches. At this size one ``eigh`` per training set outweighs the per-call overhead,
#: while padding to a power of two would cost up to 8x the work and each new bucket
#: shape a compilation (dense grids: few contexts, many donors per target).
HOST_MIN_DONORS = 64
#: where single-training-unit groups (feature-fold validation) take their statistics:
#: from a per-unit fold-Gram store (``False``; n_folds x the Gram store: 7 GB at CMap's
#: 70 x 20,000 x 978) or from their own rows of the grid (``True``, :func:`direct_blocks`:
#: no store, more work per group); ``None`` decides by the store's size
#: (:data:`FOLD_STORE_BUDGET`). Tests force either.
DIRECT_SINGLE_UNIT: bool | None = None
#: largest fold-Gram store (floats) built when DIRECT_SINGLE_UNIT is None (1 GiB)
FOLD_STORE_BUDGET = 2**27
#: groups with at least this many selected pairs (or HOST_MIN_DONORS donors) are predicted
#: by one unpadded numpy product each; smaller ones in padded JAX batches, unless there
#: are few groups
HOST_PREDICT_MIN_PAIRS = 8
#: with at most this many groups every group is predicted so (no kernel to compile)
HOST_PREDICT_MAX_GROUPS = 20000
#: which host groups are solved in the dual (:mod:`._dual`: eigen/Cholesky factorisations
#: of the (training rows x training rows) kernel instead of the (donors x donors) Gram):
#: ``None`` (the rule) when the group's training rows (its training units' stacked
#: features) are fewer than its donors, where the Gram is rank-deficient and costs
#: ``donors^3``; ``True`` / ``False`` force either for every host group (tests).
DUAL: bool | None = None


def dual_groups(paths: Paths, n_features: int) -> np.ndarray:
    """(nK,) groups solved in the dual: host groups whose training rows < donors.

    The rule of :data:`DUAL` (``None``); a single training unit has ``n_features`` rows,
    ``|T|`` training units ``|T| n_features``.
    """
    host = paths.n_D >= HOST_MIN_DONORS
    if DUAL is not None:
        return host & bool(DUAL)
    return host & (paths.n_T * n_features < paths.n_D)


def ranges(starts, counts) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, counts)])``, vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(counts)])
    return np.repeat(np.asarray(starts, dtype=np.int64), counts) + (
        np.arange(int(off[-1]), dtype=np.int64) - np.repeat(off[:-1], counts)
    )


def _pow2(x: np.ndarray | int, lo: int = 1) -> np.ndarray:
    x = np.maximum(np.asarray(x), lo)
    return (2 ** np.ceil(np.log2(x))).astype(np.int64)


# ---------------------------------------------------------------------------------------
# per-unit statistics
# ---------------------------------------------------------------------------------------


@dataclass
class UnitStore:
    """Per-unit statistics of the measured profiles (units x donors orientation)."""

    means: np.ndarray  # (U, A) feature means of measured profiles (0 elsewhere)
    pos: np.ndarray  # (U, A) position of donor a among unit u's measured donors, -1 if not
    n_meas: np.ndarray  # (U,) measured donors per unit
    off: np.ndarray  # (U,) offset of unit u's (n_u x n_u) block in the flat stores
    gram: np.ndarray  # flat per-unit Gram of Z, + one trailing zero (padding target)
    fold_gram: np.ndarray | None  # (K, total) per-fold Grams, + trailing zero
    fold_sum: np.ndarray | None  # (K, total_rows) per-fold sums of Z, + trailing zero
    row_off: np.ndarray  # (U,) offset of unit u's rows in fold_sum
    fold_n: np.ndarray  # (K,) features per fold


def build_store(
    Yd: np.ndarray,
    Md: np.ndarray,
    folds: np.ndarray,
    fold_units: np.ndarray,
    need_units: np.ndarray | None = None,
):
    """Means and Gram matrices of the measured profiles of ``need_units`` (None: all).

    ``folds`` gives the fold of each feature; fold Grams are kept only for ``fold_units``
    (units that are the single training unit of some key read from the store). Units not
    needed get empty blocks (their means stay 0; nothing reads them).
    """
    U, A, p = Yd.shape
    n_folds = int(folds.max()) + 1
    n_meas = Md.sum(axis=1)
    pos = np.full((U, A), -1, dtype=np.int64)
    need = np.ones(U, dtype=bool) if need_units is None else np.zeros(U, dtype=bool)
    if need_units is not None:
        need[need_units] = True
        need[fold_units] = True
    sizes = np.where(need, n_meas, 0).astype(np.int64) ** 2
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    row_off = np.concatenate([[0], np.cumsum(n_meas)[:-1]]).astype(np.int64)
    gram = np.zeros(int(sizes.sum()) + 1)
    means = np.zeros((U, A))
    need_fold = np.zeros(U, dtype=bool)
    need_fold[fold_units] = True
    fold_gram = np.zeros((n_folds, int(sizes.sum()) + 1)) if need_fold.any() else None
    fold_sum = np.zeros((n_folds, int(n_meas.sum()) + 1)) if need_fold.any() else None
    order = np.argsort(folds, kind="stable")
    fold_n = np.bincount(folds, minlength=n_folds)
    pk = int(fold_n.max())
    starts = np.concatenate([[0], np.cumsum(fold_n)[:-1]])
    # padded feature layout (K, pk): column index into [features..., zero]
    layout = np.full((n_folds, pk), p, dtype=np.int64)
    for k in range(n_folds):
        layout[k, : fold_n[k]] = order[starts[k] : starts[k] + fold_n[k]]
    for u in np.flatnonzero(need):  # one BLAS call per unit (not per pair)
        idx = np.flatnonzero(Md[u])
        if idx.size == 0:
            continue
        pos[u, idx] = np.arange(idx.size)
        X = np.asarray(Yd[u, idx], dtype=np.float64)
        mu = X.mean(axis=1)
        means[u, idx] = mu
        Z = X - mu[:, None]
        n = idx.size
        if need_fold[u]:
            Zp = np.concatenate([Z, np.zeros((n, 1))], axis=1)[:, layout]  # (n, K, pk)
            Zk = Zp.transpose(1, 0, 2)  # (K, n, pk)
            Gk = Zk @ Zk.transpose(0, 2, 1)
            Sk = Zk.sum(axis=2)
            fold_gram[:, off[u] : off[u] + n * n] = Gk.reshape(n_folds, -1)
            fold_sum[:, row_off[u] : row_off[u] + n] = Sk
            gram[off[u] : off[u] + n * n] = Gk.sum(axis=0).ravel()
        else:
            gram[off[u] : off[u] + n * n] = (Z @ Z.T).ravel()
    return UnitStore(means, pos, n_meas, off, gram, fold_gram, fold_sum, row_off, fold_n)


# ---------------------------------------------------------------------------------------
# greedy donor paths
# ---------------------------------------------------------------------------------------


@dataclass
class Paths:
    """Greedy paths of all targets as candidates (one per level) and the keys they use."""

    cand_target: np.ndarray  # (L,) target index of each candidate (level)
    cand_step: np.ndarray  # (L,) position of the level along the target's path
    cand_key: np.ndarray  # (L,) key of the level
    key_unit: np.ndarray  # (nK,) target unit of each key
    T_flat: np.ndarray  # training units of all keys, concatenated
    T_off: np.ndarray  # (nK + 1,) offsets into T_flat
    D_flat: np.ndarray  # donors of all keys, concatenated
    D_off: np.ndarray  # (nK + 1,) offsets into D_flat
    n_start: np.ndarray  # (n_targets,) training units a target's path starts from
    had_level: np.ndarray  # (n_targets,) targets whose path has any level

    @property
    def n_T(self) -> np.ndarray:
        return np.diff(self.T_off)

    @property
    def n_D(self) -> np.ndarray:
        return np.diff(self.D_off)


def _ragged(mask: np.ndarray, labels: np.ndarray | None = None):
    """Rows of a bool matrix as (flat column indices, offsets)."""
    rows, cols = np.nonzero(mask)
    off = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=mask.shape[0]))])
    return (cols if labels is None else labels[cols]), off


def greedy_paths(
    Md: np.ndarray,
    targets: np.ndarray,
    max_donors: int | None,
    last_min_units: int | None = None,
) -> Paths:
    """Greedy donor paths of ``targets`` ((n, 2) unit, donor-axis index) on mask ``Md``.

    See :func:`._reference.reference_levels` for the rule. Targets of one unit are processed
    together with bit sets of training units; identical (unit, training units, donors)
    levels become one key. With ``last_min_units`` (``select="max_donors"``), only each
    target's last level with at least that many training units is kept (the one
    :func:`._direction._usable_levels` would keep): the other levels are never keyed.
    ``Paths.had_level`` marks the targets with any level either way.
    """
    n_meas = Md.sum(axis=0)
    n_start = np.zeros(len(targets), dtype=np.int64)
    had_level = np.zeros(len(targets), dtype=bool)
    parts = []
    order_t = np.argsort(targets[:, 0], kind="stable")
    bounds = np.flatnonzero(np.diff(targets[order_t, 0])) + 1
    for grp in np.split(order_t, bounds):  # one iteration per target unit
        if grp.size == 0:
            continue
        u = int(targets[grp[0], 0])
        P = np.flatnonzero(Md[u])
        P = P[np.lexsort((P, -n_meas[P]))]  # more measured units first, then index
        S = Md[:, targets[grp, 1]].T.astype(np.float32)  # (n, U) current training units
        S[:, u] = 0
        n_start[grp] = S.sum(axis=1).astype(np.int64)
        if P.size == 0:
            continue
        levels, had = _walk(Md[:, P].astype(np.float32), S, max_donors, last_min_units)
        had_level[grp[had]] = True
        if levels is not None:
            parts.append(_unit_keys(grp, u, P, *levels))
    return _assemble_paths(parts, n_start, had_level)


def _walk(MP: np.ndarray, S: np.ndarray, max_donors: int | None, last_min_units=None):
    """The greedy paths of one unit's targets, level by level.

    ``MP`` (U, nP) marks where each ordered candidate donor is measured, ``S`` (n, U) the
    starting training units of each target (updated in place). Returns ``(target rows, steps,
    training-unit masks, donor masks)`` of every recorded level (with ``last_min_units``:
    of each target's last level with at least that many training units), or ``None``, and
    the (n,) mask of targets with any level.
    """
    n, nP = S.shape[0], MP.shape[1]
    cap = np.iinfo(np.int64).max if max_donors is None else int(max_donors)
    nS = S.sum(axis=1)
    used = np.zeros((n, nP), dtype=bool)  # added as donor, or skipped by the cap
    D_in = used if max_donors is None else np.zeros((n, nP), dtype=bool)
    n_don = np.zeros(n, dtype=np.int64)
    active = nS > 0
    step = np.zeros(n, dtype=np.int64)
    r_t, r_s, r_T, r_D = [], [], [], []
    had = np.zeros(n, dtype=bool)
    last = _LastLevel(n, S.shape[1], nP) if last_min_units is not None else None
    while active.any():
        act = np.flatnonzero(active)
        Sa = S[act]
        cnt = Sa @ MP  # (na, nP): training units each candidate is measured in (exact)
        ua = used[act]
        full = (cnt == nS[act, None]) & ~ua
        if max_donors is None:
            add = full
        else:
            room = cap - n_don[act]
            add = full & (np.cumsum(full, axis=1) <= room[:, None])
        ua |= full  # full candidates beyond the cap are dropped as well
        used[act] = ua
        if max_donors is not None:
            D_in[act] |= add
        n_don[act] += add.sum(axis=1)
        cnt_r = np.where(ua, -1.0, cnt)
        best = cnt_r.max(axis=1)
        stop = (n_don[act] >= cap) | (best <= 0)
        rec = n_don[act] > 0
        if rec.any():
            had[act[rec]] = True
            Db = ua[rec] if max_donors is None else D_in[act[rec]]
            if last is None:
                r_t.append(act[rec])
                r_s.append(step[act[rec]])
                r_T.append(Sa[rec] > 0)
                r_D.append(Db)
            else:
                ok = nS[act[rec]] >= last_min_units
                last.keep(act[rec][ok], step[act[rec][ok]], Sa[rec][ok] > 0, Db[ok])
            step[act[rec]] += 1
        go = ~stop
        if go.any():
            j = np.argmax(cnt_r[go] == best[go, None], axis=1)
            S[act[go]] = Sa[go] * MP[:, j].T
            nS[act[go]] = S[act[go]].sum(axis=1)
        active[act[stop]] = False
    if last is not None:
        return last.levels(), had
    if not r_t:
        return None, had
    return tuple(np.concatenate(x) for x in (r_t, r_s, r_T, r_D)), had


class _LastLevel:
    """The latest recorded level of each target.

    Training units shrink along a path, so the last level with enough training units is
    the latest one that had them.
    """

    def __init__(self, n: int, U: int, nP: int):
        self.step = np.full(n, -1, dtype=np.int64)
        self.T = np.zeros((n, U), dtype=bool)
        self.D = np.zeros((n, nP), dtype=bool)

    def keep(self, rows, steps, Tm, Db) -> None:
        self.step[rows] = steps
        self.T[rows] = Tm
        self.D[rows] = Db

    def levels(self):
        rows = np.flatnonzero(self.step >= 0)
        if not rows.size:
            return None
        return rows, self.step[rows], self.T[rows], self.D[rows]


def _unit_keys(grp, u, P, lt, steps, Tm, Db):
    """One unit's levels as candidates of deduplicated keys (unit-local key ids)."""
    raw = np.concatenate([np.packbits(Tm, axis=1), np.packbits(Db, axis=1)], axis=1)
    raw = np.ascontiguousarray(raw)
    void = raw.view(np.dtype((np.void, raw.shape[1]))).ravel()
    _, first, inv = np.unique(void, return_index=True, return_inverse=True)
    return {
        "target": grp[lt],
        "step": steps,
        "key": inv.ravel(),
        "T": _ragged(Tm[first]),
        "D": _ragged(Db[first], P),
        "unit": np.full(first.size, u, dtype=np.int64),
    }


def _cat(x) -> np.ndarray:
    return np.concatenate(x).astype(np.int64) if x else np.zeros(0, dtype=np.int64)


def _cat_ragged(parts) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    flats, offs, base = [], [0], 0
    for flat, off in parts:
        flats.append(flat)
        offs.append(off[1:] + base)
        base += off[-1]
    return np.concatenate(flats).astype(np.int64), np.concatenate(
        [np.asarray(o, dtype=np.int64).ravel() for o in offs]
    )


def _assemble_paths(parts: list[dict], n_start: np.ndarray, had_level: np.ndarray) -> Paths:
    """Concatenate the units' keys (renumbered globally) into one :class:`Paths`."""
    key_base = np.cumsum([0] + [x["unit"].size for x in parts])
    T_flat, T_off = _cat_ragged([x["T"] for x in parts])
    D_flat, D_off = _cat_ragged([x["D"] for x in parts])
    return Paths(
        cand_target=_cat([x["target"] for x in parts]),
        cand_step=_cat([x["step"] for x in parts]),
        cand_key=_cat([k0 + x["key"] for k0, x in zip(key_base[:-1], parts, strict=True)]),
        key_unit=_cat([x["unit"] for x in parts]),
        T_flat=T_flat,
        T_off=T_off,
        D_flat=D_flat,
        D_off=D_off,
        n_start=n_start,
        had_level=had_level,
    )


# ---------------------------------------------------------------------------------------
# fitting every key, bucket by bucket
# ---------------------------------------------------------------------------------------


@dataclass
class Fits:
    """Per-candidate validation and fit results (one row per candidate level)."""

    val_sse: np.ndarray  # (L, R) validation SSE of each regularisation
    best: np.ndarray  # (L,) regularisation with the smallest validation SSE (first minimum)
    val_n: np.ndarray  # (L,)
    sst_ho: np.ndarray  # (L,)
    sse_in: np.ndarray  # (L,) in-sample SSE of the best regularisation
    sst_in: np.ndarray  # (L,)
    w_flat: np.ndarray  # (sum of |D| over candidates,) weights of the best full fits
    w_off: np.ndarray  # (L + 1,) offsets of each candidate's weights in w_flat
    b: np.ndarray  # (L,) intercepts of the best full fits
    val_blocks: np.ndarray  # (sum of |T| over candidates,) held-out SSE per training unit
    val_blocks_off: np.ndarray  # (L + 1,) offsets of each candidate's blocks in val_blocks
    subspace: np.ndarray  # (nK,) subspace statistic of each key
    rank90: np.ndarray  # (nK,) components holding 90% of the full design's energy
    pending: np.ndarray  # (nK,) keys whose full fits are computed on demand (host keys)
    finish: Callable[[np.ndarray], None] | None = None  # full fits of pending keys
    n_cholesky: int = 0  # host training sets solved by Cholesky (the rest by eigh)
    dual: np.ndarray | None = None  # (nK,) groups solved in the dual (:mod:`._dual`)
    host: np.ndarray | None = None  # (nK,) groups solved one by one in numpy/LAPACK

    def solvers(self, keys: np.ndarray) -> dict[str, int]:
        """How many of the groups ``keys`` were solved each way (``.uns[key]["solvers"]``)."""
        keys = np.unique(keys)
        nK = self.subspace.size
        dual = np.zeros(nK, bool) if self.dual is None else self.dual
        host = np.zeros(nK, bool) if self.host is None else self.host
        return {
            "dual": int(dual[keys].sum()),
            "primal_host": int((host & ~dual)[keys].sum()),
            "primal_batched": int((~host)[keys].sum()),
            "cholesky_sets": int(self.n_cholesky),
        }

    def complete(self, keys: np.ndarray) -> None:
        """Compute the full fits of the pending ``keys`` (a no-op for the others).

        Weights, intercepts, in-sample errors and the subspace statistic.
        """
        todo = np.unique(keys[self.pending[keys]]) if keys.size else keys
        if todo.size and self.finish is not None:
            self.finish(todo)
            self.pending[todo] = False


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(i + size, n)


def _padded_chunk(vkeys, vcand, lo, hi, size, Np):
    """Keys ``lo:hi`` of a bucket padded to ``size`` rows.

    Padding repeats the first key with candidates -1. Returns ``(keys, candidates (size, Np),
    padded keys)``.
    """
    ks = vkeys[lo:hi]
    cand = np.full((size, Np), -1, dtype=np.int64)
    cand[: ks.size] = vcand[lo:hi]
    return ks, cand, np.concatenate([ks, np.full(size - ks.size, ks[0])])


def _pow8(x: int) -> int:
    return int(8 ** np.ceil(np.log(max(x, 1)) / np.log(8)))


#: padded work (flops, roughly) below which a call uses a single bucket shape (one coarse
#: shape costs a second of CPU at most here; crossing into the many-shape plan costs a dozen
#: compilations, 40-50 s on 2 cores: at 2e8, cross-validation folds of the 24 x 21 CMap grid
#: fell on both sides and recompiled per fold)
_SMALL_WORK = 1e9


def _bucket_plan(keys, D, J, N, order, cstart, R, per_key_floats, exact_J=None):
    """Pad keys into a few shapes so that the kernels compile once per shape.

    Keys are grouped by padded donor count and number of training sets (powers of two; a
    single coarse group when the whole problem is small); within a group the candidates
    are padded to ``Np`` (a key with more candidates is split into several rows). Chunks
    hold a power of 8 keys, at most what the memory budget allows. Keys flagged in
    ``exact_J`` keep their number of training sets unpadded (feature-fold validation always
    has ``n_feature_folds`` of them, so no extra shapes arise). Yields
    ``((Dp, Jp, Np, chunk), key ids, candidate ids (n, Np))``.
    """
    if keys.size == 0:
        return []
    Dp = _pow2(D, 2)
    Jp = _pow2(J, 2) if exact_J is None else np.where(exact_J, J, _pow2(J, 2))
    small = (Jp.max() + 1) * float(Dp.max()) ** 3 * keys.size < _SMALL_WORK
    if small:
        # small problem: one coarse shape, so that repeated calls (cross-validation folds)
        # reuse a handful of compilations
        Dp = np.full_like(Dp, _pow2(int(D.max()), 16))
        Jp = np.full_like(Jp, _pow2(int(J.max()), 8))
    plan = []
    shapes, inv = np.unique(np.stack([Dp, Jp], axis=1), axis=0, return_inverse=True)
    inv = inv.ravel()
    for g, (d, jp) in enumerate(shapes):
        in_g = inv == g
        sel = keys[in_g]
        n = N[in_g]
        Np = 8 if small else int(min(_pow2(int(np.percentile(n, 75))), 64))
        n_rows = -(-n // Np)
        vk = np.repeat(sel, n_rows)
        slot = np.arange(vk.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
        pos = slot[:, None] * Np + np.arange(Np)[None, :]
        ok = pos < np.repeat(n, n_rows)[:, None]
        start = np.repeat(cstart[sel], n_rows)[:, None] + pos
        cand = np.where(ok, order[np.minimum(start, order.size - 1)], -1)
        per_key = per_key_floats(int(d), int(jp), Np, R)
        cap = int(8 ** np.floor(np.log(max(1, _CHUNK_BUDGET // per_key)) / np.log(8)))
        chunk = min(cap, 64) if small else int(min(cap, _pow8(vk.size)))
        plan.append(((int(d), int(jp), Np, chunk), vk, cand))
    return plan


def _fit_floats(Dp, Jp, Np, R):
    return 4 * max((Jp + 1) * Dp * Dp, Np * R * (Jp + 1) * Dp, Np * Jp * Dp)


def fit_settings(params: SIParams) -> tuple[K.FitSettings, int]:
    """Kernel settings of a resolved spec, and the number R of real regularisations.

    Several regularisations are padded to a power of two (>= 4) by repeating the last one,
    so that every setting with as many choices shares one compilation; a single one (the
    published preset) is not padded (padding it would multiply the solves by 4).
    """
    regs = params.regularisations
    R = len(regs)
    rank_code = np.array(
        [
            K.RANK_ENERGY if r is None else K.RANK_GD if isinstance(r, str) else int(r)
            for r, _ in regs
        ]
    )
    ridge = np.array([g for _, g in regs], dtype=np.float64)
    R_pad = 1 if R == 1 else int(_pow2(R, 4))  # one regularisation (published): no padding
    cfg = K.FitSettings(
        rank_code=np.concatenate([rank_code, np.repeat(rank_code[-1:], R_pad - R)]),
        ridge=np.concatenate([ridge, np.repeat(ridge[-1:], R_pad - R)]),
        energy=float(params.energy),
        sub_energy=float(params.subspace_energy),
        sum_to_one=bool(params.sum_to_one),
    )
    return cfg, R


def _empty_fits(paths: Paths, R: int) -> Fits:
    L = paths.cand_key.size
    nK = paths.key_unit.size
    w_off = np.concatenate([[0], np.cumsum(paths.n_D[paths.cand_key])])
    t_off = np.concatenate([[0], np.cumsum(paths.n_T[paths.cand_key])])
    return Fits(
        val_sse=np.full((L, R), np.nan),
        best=np.zeros(L, dtype=np.int64),
        val_n=np.zeros(L),
        sst_ho=np.full(L, np.nan),
        sse_in=np.full(L, np.nan),
        sst_in=np.full(L, np.nan),
        w_flat=np.zeros(int(w_off[-1])),
        w_off=w_off,
        b=np.full(L, np.nan),
        val_blocks=np.full(int(t_off[-1]), np.nan),
        val_blocks_off=t_off,
        subspace=np.full(nK, np.nan),
        rank90=np.zeros(nK, dtype=np.int64),
        pending=np.zeros(nK, dtype=bool),
    )


def _store_units(paths: Paths, keys: np.ndarray) -> np.ndarray:
    """Units whose store blocks the ``keys`` read: their training units and target units."""
    T = paths.T_flat[ranges(paths.T_off[keys], paths.n_T[keys])]
    return np.unique(np.concatenate([T, paths.key_unit[keys]]))


def fit_all(
    Yd: np.ndarray,
    Md: np.ndarray,
    folds: np.ndarray,
    paths: Paths,
    targets: np.ndarray,
    params: SIParams,
    *,
    progress: bool,
) -> Fits:
    """Fit and validate every key of ``paths`` (``params`` resolved).

    Keys with at least :data:`HOST_MIN_DONORS` donors on the host (:mod:`._host`), the
    others by :func:`._kernels.fit_keys` in padded buckets. Single-training-unit keys take
    their statistics from their own rows of ``Yd`` when :data:`DIRECT_SINGLE_UNIT` says so
    (by default: when their fold-Gram store would exceed :data:`FOLD_STORE_BUDGET`); the
    per-unit store (:func:`build_store`) holds only the units the other keys read.
    """
    cfg, R = fit_settings(params)
    fits = _empty_fits(paths, R)
    L = paths.cand_key.size
    if L == 0:
        return fits
    n_features = Yd.shape[2]
    nK = paths.key_unit.size
    kind = (paths.n_T == 1).astype(np.int64)  # 0: leave-one-unit-out, 1: feature folds
    layout = FoldLayout.of(folds)
    J = np.where(kind == 1, layout.n.size, paths.n_T)
    order = np.argsort(paths.cand_key, kind="stable")
    counts = np.bincount(paths.cand_key, minlength=nK)
    cstart = np.concatenate([[0], np.cumsum(counts)[:-1]])
    used = np.flatnonzero(counts)
    R_pad = cfg.ridge.size
    bar = tqdm(total=L, desc="synthetic interventions", disable=not progress, unit="pair")
    use_direct = DIRECT_SINGLE_UNIT
    if use_direct is None:  # the fold Grams of every unit that is a single training unit
        single_units = np.unique(paths.T_flat[paths.T_off[used[kind[used] == 1]]])
        n_u = Md[single_units].sum(axis=1).astype(np.float64)
        use_direct = bool(layout.n.size * np.sum(n_u**2) > FOLD_STORE_BUDGET)
    direct = (kind == 1) & use_direct
    via = (Yd, layout) if use_direct else None
    host = paths.n_D[used] >= HOST_MIN_DONORS
    dual = dual_groups(paths, n_features)
    fits.dual = dual
    fits.host = paths.n_D >= HOST_MIN_DONORS
    from_store = used[~direct[used] & ~dual[used]]
    fold_units = paths.T_flat[paths.T_off[from_store[kind[from_store] == 1]]]
    store = build_store(Yd, Md, folds, fold_units, _store_units(paths, from_store))

    def host_blocks(k):
        cand = order[cstart[k] : cstart[k] + counts[k]][None, :]
        ks = np.array([k])
        if direct[k]:
            one = direct_blocks(Yd, layout, paths, targets, k, cand[0])
            return ks, cand, K.Blocks(*(np.asarray(x)[None] for x in one)), one
        b = _chunk_blocks(
            store, paths, targets, ks, cand, kind, (paths.n_D[k], J[k], counts[k]), n_features
        )
        return ks, cand, b, b._replace(**{f: x[0] for f, x in b._asdict().items()})

    deferred = np.zeros(nK, dtype=bool)

    def dual_problem(k):
        cand = order[cstart[k] : cstart[k] + counts[k]][None, :]
        D = paths.D_flat[paths.D_off[k] : paths.D_off[k + 1]]
        T = paths.T_flat[paths.T_off[k] : paths.T_off[k + 1]]
        v = targets[paths.cand_target[cand[0]], 1]
        pb = Dual.problem(
            Yd, layout, D, T, paths.key_unit[k], v, kind[k] == 1, bool(params.sum_to_one)
        )
        return np.array([k]), cand, None, pb

    def validate(k, ratio):
        ks, cand, blocks, one = dual_problem(k) if dual[k] else host_blocks(k)
        out = (Dual.validate_dual if dual[k] else H.validate_key)(one, cfg, ratio)
        fits.n_cholesky += out.pop("n_cholesky")
        deferred[k] = out.pop("deferred")
        _store_chunk(fits, paths, ks, cand, J[k], R, blocks, out, params.sum_to_one)
        return ks, cand, blocks, one

    def complete(k, ks, cand, blocks, one):
        out = (Dual.finish_dual if dual[k] else H.finish_key)(one, cfg, fits.best[cand[0]])
        _store_chunk(fits, paths, ks, cand, J[k], R, blocks, out, params.sum_to_one)

    # with select="max_donors" each target has one candidate, so every group is selected:
    # a dual group's full fit is computed with its validation (one kernel, not two)
    eager = params.select == "max_donors"
    for k in used[host]:  # large groups: unpadded LAPACK validation, no compilation
        state = validate(k, params.single_unit_redundancy if kind[k] == 1 else None)
        if eager and dual[k] and not deferred[k]:
            complete(k, *state)
            fits.pending[k] = False
        else:
            fits.pending[k] = True
        bar.update(int(counts[k]))

    def finish(keys):  # the full fits of the host keys some target selected
        for k in keys:
            # a deferred key's validation is needed now for its best regularisation
            if deferred[k]:
                state = validate(k, 0.0)
            else:
                state = dual_problem(k) if dual[k] else host_blocks(k)
            complete(k, *state)

    fits.finish = finish
    used = used[~host]
    exact_J = kind[used] == 1
    plan = _bucket_plan(
        used, paths.n_D[used], J[used], counts[used], order, cstart, R_pad, _fit_floats, exact_J
    )
    for (Dp, Jp, Np, size), vkeys, vcand in plan:
        for lo, hi in _chunks(len(vkeys), size):
            ks, cand, ks_p = _padded_chunk(vkeys, vcand, lo, hi, size, Np)
            blocks = _chunk_blocks(
                store, paths, targets, ks_p, cand, kind, (Dp, Jp, Np), n_features, via
            )
            out = jax.tree_util.tree_map(np.asarray, batched_call(K.fit_keys, (blocks,), (cfg,)))
            _store_chunk(fits, paths, ks, cand, Jp, R, blocks, out, params.sum_to_one)
            bar.update(int((cand[: ks.size] >= 0).sum()))
    bar.close()
    return fits


@dataclass(frozen=True)
class FoldLayout:
    """The features grouped by fold.

    ``order``: the features sorted by fold (stable); ``start`` and ``n``: where each fold's
    features begin in it and how many there are.
    """

    order: np.ndarray
    start: np.ndarray
    n: np.ndarray

    @classmethod
    def of(cls, folds: np.ndarray) -> FoldLayout:
        n = np.bincount(folds, minlength=int(folds.max()) + 1)
        return cls(np.argsort(folds, kind="stable"), np.concatenate([[0], np.cumsum(n)[:-1]]), n)


def _direct_chunk(Yd, layout: FoldLayout, paths, targets, ks, cand, shape) -> K.Blocks:
    """Block statistics of single-training-unit keys ``ks`` from their rows of ``Yd``.

    The numbers :func:`_gather` (``knd=1``) reads from the store's fold Grams, computed
    from these keys' rows only: per feature fold of the training unit, the Gram, sums and
    cross moments of the per-profile centred donors and targets (candidates ``cand``
    (nk, Np), -1: padding), and the target unit's donor Gram; padded like :func:`_gather`
    to ``shape`` ``(Dp, Jp, Np)`` (padded donors, candidates and blocks hold zeros). Same
    values to rounding, without a per-unit store.
    """
    Dp, Jp, Np = shape
    nk, nf = ks.size, layout.n.size
    Dm, dmask = _padded_rows(paths.D_flat, paths.D_off[ks], paths.n_D[ks], Dp)
    cmask = cand >= 0
    v = np.where(cmask, targets[paths.cand_target[np.maximum(cand, 0)], 1], 0)
    T = paths.T_flat[paths.T_off[ks]][:, None]

    def centred(u, idx, mask):  # (nk, n, p) float64 profiles, centred; zeros where masked
        X = np.where(mask[..., None], np.asarray(Yd[u, idx], dtype=np.float64), 0.0)
        mu = X.mean(axis=2)
        return X - mu[..., None], mu

    ZD, mD = centred(T, Dm, dmask)
    ZV, mV = centred(T, v, cmask)
    ZD, ZV = ZD[..., layout.order], ZV[..., layout.order]
    G, s = np.zeros((nk, Jp, Dp, Dp)), np.zeros((nk, Jp, Dp))
    Gv, Gvv, sv = np.zeros((nk, Np, Jp, Dp)), np.zeros((nk, Np, Jp)), np.zeros((nk, Np, Jp))
    for j, (lo, n) in enumerate(zip(layout.start, layout.n, strict=True)):
        Dk, Vk = ZD[..., lo : lo + n], ZV[..., lo : lo + n]
        G[:, j] = Dk @ Dk.swapaxes(1, 2)
        Gv[:, :, j] = Vk @ Dk.swapaxes(1, 2)
        Gvv[:, :, j] = np.einsum("knp,knp->kn", Vk, Vk)
        s[:, j] = Dk.sum(axis=2)
        sv[:, :, j] = Vk.sum(axis=2)
    bmask = np.broadcast_to(np.arange(Jp) < nf, (nk, Jp))
    Zu, _ = centred(paths.key_unit[ks][:, None], Dm, dmask)
    return K.Blocks(
        G=G,
        s=s,
        nb=np.where(bmask, np.resize(layout.n.astype(np.float64), Jp), 0.0),
        m=np.where(bmask[..., None], mD[:, None, :], 0.0),
        bmask=bmask,
        dmask=dmask,
        Gu=Zu @ Zu.swapaxes(1, 2),
        Gv=Gv,
        Gvv=Gvv,
        sv=sv,
        mv=np.where(bmask[:, None, :], mV[..., None], 0.0),
    )


def direct_blocks(Yd, layout: FoldLayout, paths, targets, k, cand) -> K.Blocks:
    """:func:`_direct_chunk` of one key and its candidates ``cand``, unpadded."""
    shape = (int(paths.n_D[k]), layout.n.size, cand.size)
    b = _direct_chunk(Yd, layout, paths, targets, np.array([k]), cand[None, :], shape)
    return K.Blocks(*(x[0] for x in b))


def _chunk_blocks(store, paths, targets, ks_p, cand, kind, shape, p, direct=None) -> K.Blocks:
    """Block statistics of a padded chunk whose keys mix both validation kinds.

    ``direct``: ``(Yd, layout)`` to compute the single-training-unit keys' statistics from
    the profiles (:func:`_direct_chunk`) instead of the store.
    """
    parts = [np.flatnonzero(kind[ks_p] == knd) for knd in (0, 1)]

    def piece(knd, ix):
        if knd == 1 and direct is not None:
            return _direct_chunk(*direct, paths, targets, ks_p[ix], cand[ix], shape)
        return _gather(store, paths, targets, ks_p[ix], cand[ix], knd, shape, p)

    pieces = [piece(knd, ix) for knd, ix in enumerate(parts) if ix.size]
    back = np.argsort(np.concatenate([ix for ix in parts if ix.size]))
    return K.Blocks(*(np.concatenate(arrs)[back] for arrs in zip(*pieces, strict=True)))


def _store_chunk(fits, paths, ks, cand, Jp, R, blocks, out, sum_to_one) -> None:
    """Copy the kernel outputs of the real keys and candidates of a chunk into ``fits``.

    ``out`` holds the validation outputs, the full-fit outputs, or both (the host keys'
    two phases, :mod:`._host`).
    """
    real = np.arange(ks.size)
    kk, nn = np.nonzero(cand[real] >= 0)
    ci = cand[kk, nn]
    if "val_sse" in out:
        _store_validation(fits, paths, ks, kk, nn, ci, Jp, R, blocks, out)
    if "w" not in out:
        return
    fits.subspace[ks] = out["subspace"][real]
    fits.sse_in[ci] = out["sse_in"][kk, nn]
    fits.b[ci] = out["b"][kk, nn]
    wk = out["w"][kk, nn]  # (n, Dp)
    Dp = wk.shape[1]
    dl = paths.n_D[paths.cand_key[ci]]
    if sum_to_one:  # weights of the centred fit -> affine weights on the donors
        real_d = np.arange(Dp)[None, :] < dl[:, None]
        wk = np.where(real_d, wk + (1 - wk.sum(axis=1, keepdims=True)) / dl[:, None], 0)
    dm = np.arange(Dp)[None, :] < dl[:, None]
    rr, dd = np.nonzero(dm)
    fits.w_flat[fits.w_off[ci][rr] + dd] = wk[rr, dd]


def _store_validation(fits, paths, ks, kk, nn, ci, Jp, R, blocks, out) -> None:
    # the dual (blocks None) returns the targets' sums of squares itself
    sst_in, sst_ho = (out["sst_in"], out["sst_ho"]) if blocks is None else _totals(blocks)
    fits.rank90[ks] = out["rank90"][np.arange(ks.size)]
    fits.val_sse[ci] = out["val_sse"][kk, nn, :R]
    fits.best[ci] = out["best"][kk, nn]
    fits.val_n[ci] = out["val_n"][kk]
    fits.sst_ho[ci] = sst_ho[kk, nn]
    fits.sst_in[ci] = sst_in[kk, nn]
    # per-block validation errors of leave-one-unit-out candidates
    nTc = paths.n_T[paths.cand_key[ci]]
    loco = nTc >= 2
    if loco.any():
        bl = np.arange(Jp)[None, :] < np.where(loco, nTc, 0)[:, None]
        rr, jj = np.nonzero(bl)
        fits.val_blocks[fits.val_blocks_off[ci][rr] + jj] = out["val_blocks"][kk[rr], nn[rr], jj]


def _totals(b: K.Blocks):
    """Sums of squares of the targets around their means: in-sample and per held-out block."""
    bm = b.bmask[:, None, :].astype(float)
    n_all = np.sum(b.nb[:, None, :] * bm, axis=-1, keepdims=True)
    ybar = np.sum((b.sv + b.nb[:, None, :] * b.mv) * bm, axis=-1, keepdims=True) / np.where(
        n_all > 0, n_all, 1.0
    )
    eps = b.mv - ybar
    sst_in = np.sum((b.Gvv + 2 * eps * b.sv + b.nb[:, None, :] * eps**2) * bm, axis=-1)
    nb_safe = np.where(b.nb > 0, b.nb, 1.0)[:, None, :]
    sst_ho = np.sum((b.Gvv - b.sv**2 / nb_safe) * bm, axis=-1)
    return sst_in, sst_ho


def _padded_rows(flat: np.ndarray, off: np.ndarray, length: np.ndarray, width: int):
    """Ragged rows ``flat[off[i]:off[i] + length[i]]`` padded with 0 to ``width``, and the mask."""
    mask = np.arange(width)[None, :] < length[:, None]
    idx = np.minimum(off[:, None] + np.arange(width), flat.size - 1)
    return np.where(mask, flat[idx], 0), mask


def _flat_index(base, pos_a, pos_b, n):
    """Index of entry (pos_a, pos_b) of the (n x n) blocks at ``base``; -1 positions -> -1."""
    ok = (pos_a >= 0) & (pos_b >= 0)
    return np.where(ok, base + pos_a * n + pos_b, -1)


def _gather(store, paths, targets, ks, cand, knd, shape, p) -> K.Blocks:
    """Block statistics of keys ``ks`` and their candidates ``cand`` (-1: padding).

    ``knd`` 0: the blocks are the training units; 1: the feature folds of the single
    training unit. ``shape`` is the padded ``(Dp, Jp, Np)``.
    """
    Dp, Jp, _ = shape
    nk = ks.size
    n_folds = store.fold_n.size
    Dm, dmask = _padded_rows(paths.D_flat, paths.D_off[ks], paths.n_D[ks], Dp)
    if knd == 0:
        Tm, bmask = _padded_rows(paths.T_flat, paths.T_off[ks], paths.n_T[ks], Jp)
    else:
        bmask = np.broadcast_to(np.arange(Jp)[None, :] < n_folds, (nk, Jp))
        Tm = np.repeat(paths.T_flat[paths.T_off[ks]][:, None], Jp, axis=1)
    cmask = cand >= 0
    v = np.where(cmask, targets[paths.cand_target[np.maximum(cand, 0)], 1], 0)

    n_u = store.n_meas[Tm]  # (nk, J)
    posD = store.pos[Tm[:, :, None], Dm[:, None, :]]  # (nk, J, D)
    posD = np.where(dmask[:, None, :] & bmask[:, :, None], posD, -1)
    posv = store.pos[Tm[:, None, :], v[:, :, None]]  # (nk, N, J)
    posv = np.where(cmask[:, :, None] & bmask[:, None, :], posv, -1)
    base = store.off[Tm]  # (nk, J)
    sentinel = store.gram.size - 1
    gi = _flat_index(
        base[:, :, None, None], posD[:, :, :, None], posD[:, :, None, :], n_u[:, :, None, None]
    )
    vi = _flat_index(
        base[:, None, :, None], posD[:, None, :, :], posv[..., None], n_u[:, None, :, None]
    )
    vvi = _flat_index(base[:, None, :], posv, posv, n_u[:, None, :])
    gi, vi, vvi = (np.where(x >= 0, x, sentinel) for x in (gi, vi, vvi))
    m = np.where(posD >= 0, store.means[Tm[:, :, None], Dm[:, None, :]], 0.0)
    mv = np.where(posv >= 0, store.means[Tm[:, None, :], v[:, :, None]], 0.0)
    if knd == 0:
        G, Gv, Gvv = store.gram[gi], store.gram[vi], store.gram[vvi]
        s = np.zeros((nk, Jp, Dp))
        sv = np.zeros((nk, shape[2], Jp))
        nb = np.where(bmask, float(p), 0.0)
    else:
        G, s, nb, Gv, Gvv, sv = _fold_stats(store, Tm, posD, posv, bmask, gi, vi, vvi)
    Gu = _unit_gram(store, paths.key_unit[ks], Dm, dmask, sentinel)
    return K.Blocks(G, s, nb, m, bmask, dmask, Gu, Gv, Gvv, sv, mv)


def _fold_stats(store, Tm, posD, posv, bmask, gi, vi, vvi):
    """Per-fold Grams and sums of the single training unit of feature-fold keys."""
    Jp = bmask.shape[1]
    fold = np.minimum(np.arange(Jp), store.fold_n.size - 1)
    G = store.fold_gram[fold[None, :, None, None], gi]
    Gv = store.fold_gram[fold[None, None, :, None], vi]
    Gvv = store.fold_gram[fold[None, None, :], vvi]
    rs = store.fold_sum.shape[1] - 1
    ri = np.where(posD >= 0, store.row_off[Tm][:, :, None] + posD, rs)
    s = store.fold_sum[fold[None, :, None], ri]
    rv = np.where(posv >= 0, store.row_off[Tm][:, None, :] + posv, rs)
    sv = store.fold_sum[fold[None, None, :], rv]
    nb = np.where(bmask, store.fold_n[fold][None, :].astype(float), 0.0)
    G = np.where(bmask[:, :, None, None], G, 0.0)
    Gv = np.where(bmask[:, None, :, None], Gv, 0.0)
    Gvv = np.where(bmask[:, None, :], Gvv, 0.0)
    s = np.where(bmask[:, :, None], s, 0.0)
    sv = np.where(bmask[:, None, :], sv, 0.0)
    return G, s, nb, Gv, Gvv, sv


def _unit_gram(store, u, Dm, dmask, sentinel):
    """The target unit's own donor Gram of each key (for the subspace statistic)."""
    pu = np.where(dmask, store.pos[u[:, None], Dm], -1)
    ui = _flat_index(
        store.off[u][:, None, None], pu[:, :, None], pu[:, None, :], store.n_meas[u][:, None, None]
    )
    return store.gram[np.where(ui >= 0, ui, sentinel)]


def predict_selected(
    Yd: np.ndarray,
    paths: Paths,
    sel_cand: np.ndarray,
    w_flat: np.ndarray,
    w_off: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    rows: np.ndarray,
    progress: bool,
) -> None:
    """Write ``W @ Yd[u, D] + b`` of the selected candidates into ``out[rows]``."""
    if sel_cand.size == 0:
        return
    key = paths.cand_key[sel_cand]
    nK = paths.key_unit.size
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=nK)
    cstart = np.concatenate([[0], np.cumsum(counts)[:-1]])
    used = np.flatnonzero(counts)
    p = Yd.shape[2]
    bar = tqdm(total=sel_cand.size, desc="predicting", disable=not progress, unit="pair")
    host = (counts[used] >= HOST_PREDICT_MIN_PAIRS) | (paths.n_D[used] >= HOST_MIN_DONORS)
    host |= used.size <= HOST_PREDICT_MAX_GROUPS  # few groups: a loop beats compiling
    for k in used[host]:  # one matrix product per group, unpadded, uncompiled
        i = order[cstart[k] : cstart[k] + counts[k]]  # positions in sel_cand
        d = int(paths.n_D[k])
        X = np.asarray(Yd[paths.key_unit[k], paths.D_flat[paths.D_off[k] : paths.D_off[k + 1]]])
        W = w_flat[w_off[i][:, None] + np.arange(d)]
        out[rows[i]] = W @ X.astype(np.float64) + b[i][:, None]
        bar.update(i.size)
    used = used[~host]
    plan = _bucket_plan(
        used,
        paths.n_D[used],
        np.full(used.size, 2),
        counts[used],
        order,
        cstart,
        1,
        lambda Dp, Jp, Np, R: max(Dp * p, Np * p, Np * Dp),
    )
    for (Dp, _, Np, size), vkeys, vcand in plan:
        for lo, hi in _chunks(len(vkeys), size):
            _, idx, ks_p = _padded_chunk(vkeys, vcand, lo, hi, size, Np)
            d_len = paths.n_D[ks_p]
            Dm, dmask = _padded_rows(paths.D_flat, paths.D_off[ks_p], d_len, Dp)
            u = paths.key_unit[ks_p]
            X = np.where(dmask[:, :, None], Yd[u[:, None], Dm], 0.0).astype(np.float64)
            Wk = np.zeros((size, Np, Dp))
            bk = np.zeros((size, Np))
            kk, nn = np.nonzero(idx >= 0)
            i = idx[kk, nn]  # positions in sel_cand
            bk[kk, nn] = b[i]
            dm = np.arange(Dp)[None, :] < d_len[kk][:, None]
            rr, dd = np.nonzero(dm)
            Wk[kk[rr], nn[rr], dd] = w_flat[w_off[i][rr] + dd]
            pred = np.asarray(batched_call(K.predict_keys, (Wk, bk, X)))
            out[rows[i]] = pred[kk, nn]
            bar.update(i.size)
    bar.close()

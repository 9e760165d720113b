"""A plain, per-pair numpy implementation of synthetic interventions.

This module is the executable specification of
:func:`scimpute.methods.synthetic_interventions.synthetic_interventions`: it loops over the
target pairs in Python, stacks each design matrix explicitly and solves it with an SVD. It is
slow on purpose (it is what "a straightforward per-pair implementation" costs) and is used by
the tests (batched == reference) and by ``benchmarks/si_scale.py`` (speed-up per pair).
Nothing here is on a hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._keys import SI_DIAGNOSTICS, SI_RIDGE, SI_SUBSPACE_PASS
from .._base import grid_data
from .._stats import fallback_chain, validated_order
from ._params import SIParams

GD_OMEGA = (0.56, -0.95, 1.82, 1.43)  # omega(b) ~ 0.56 b^3 - 0.95 b^2 + 1.82 b + 1.43
RANK_TOL = 1e-10  # eigenvalues (squared singular values) below RANK_TOL * largest are zero


def reference_levels(
    measured: np.ndarray, c: int, a: int, *, max_donors: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy donor path of target ``(c, a)``: a list of ``(training units, donors)``.

    ``measured`` is ``(units, donors)``. The candidates are the donors measured in unit
    ``c``; the training units start as the units (other than ``c``) where ``a`` is measured.
    At each step every candidate measured in all current training units is added (in order
    of more measured units first, then grid order); then the candidate that keeps the most
    training units is chosen (ties: more measured units overall, then grid order), the
    training units shrink to where it is measured, and the step repeats. A level
    ``(training units, donors)`` is recorded before each shrink and at the end. The path
    stops when no candidate is measured in any training unit, when the candidates run out,
    or when ``max_donors`` donors were added.
    """
    n_units = measured.shape[0]
    S = measured[:, a].copy()
    S[c] = False
    cand = [d for d in range(measured.shape[1]) if measured[c, d] and d != a]
    n_meas = measured.sum(axis=0)
    cand.sort(key=lambda d: (-n_meas[d], d))
    donors: list[int] = []
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    cap = np.inf if max_donors is None else max_donors
    if not S.any():
        return levels
    while True:
        n_s = int(S.sum())
        full = [d for d in cand if int((S & measured[:, d]).sum()) == n_s]
        for d in full:
            if len(donors) < cap:
                donors.append(d)
            cand.remove(d)
        if len(donors) >= cap or not cand:
            break
        counts = [int((S & measured[:, d]).sum()) for d in cand]
        best = max(counts)
        if best == 0:
            break
        if donors:
            levels.append((np.flatnonzero(S), np.array(donors)))
        d_star = cand[counts.index(best)]  # cand is sorted by (-n_measured, index)
        S = S & measured[:, d_star]
    if donors:
        levels.append((np.flatnonzero(S), np.array(donors)))
    assert n_units >= 1
    return levels


def reference_filter(
    lam: np.ndarray, *, rank, energy: float, ridge: float, n_rows: int
) -> np.ndarray:
    """Spectral filter ``f`` with ``w = V diag(f) V^T X^T y`` for eigenvalues ``lam`` (desc)."""
    lam = np.clip(lam, 0, None)
    n = lam.size
    if n == 0 or lam[0] <= 0:
        return np.zeros(n)
    keep = lam > RANK_TOL * lam[0]
    if isinstance(rank, str):  # Gavish-Donoho
        m = min(n_rows, n)
        beta = m / max(n_rows, n)
        omega = np.polyval(GD_OMEGA, beta)
        sig = np.sqrt(lam)
        keep &= sig > omega * np.median(sig[:m])
        keep[0] = True
    elif rank is not None:
        keep &= np.arange(n) < rank
    elif energy < 1:
        frac = np.cumsum(lam) / lam.sum()
        k = int(np.argmax(frac >= energy)) + 1
        keep &= np.arange(n) < k
    mu = ridge * lam.sum() / n
    return np.where(keep, 1.0 / np.where(keep, lam + mu, 1.0), 0.0)


def reference_fit(
    X: np.ndarray, y: np.ndarray, sum_to_one: bool = False, **filt
) -> tuple[np.ndarray, float, np.ndarray]:
    """Centred PCR / ridge on an explicit design. Returns weights, intercept and eigenvalues.

    With ``sum_to_one``, every row of ``X`` and the response are first centred by the row's
    donor mean; the returned weights (on the original donors) then sum to one.
    """
    if sum_to_one:
        rm = X.mean(axis=1)
        w, b, lam = reference_fit(X - rm[:, None], y - rm, **filt)
        return w + (1 - w.sum()) / w.size, b, lam
    xm = X.mean(axis=0)
    ym = y.mean()
    Xc = X - xm
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    lam = np.zeros(X.shape[1])
    lam[: s.size] = s**2
    V = np.zeros((X.shape[1], X.shape[1]))
    V[:, : s.size] = Vt.T
    f = reference_filter(lam, n_rows=X.shape[0], **filt)
    w = V @ (f * (V.T @ (Xc.T @ (y - ym))))
    return w, ym - xm @ w, lam


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def reference_si(
    Y: np.ndarray,
    measured: np.ndarray,
    targets: np.ndarray,
    params: SIParams | None = None,
    *,
    control: int | None = None,
    feature_folds: np.ndarray | None = None,
) -> dict:
    """Synthetic interventions, one target at a time (see the module docstring).

    ``params`` are those of
    :func:`scimpute.methods.synthetic_interventions.synthetic_interventions` (resolved by
    their preset here); ``feature_folds`` is the fold index of each feature (the batched
    implementation draws them from ``random_state``; default ``arange(p) % n_feature_folds``).

    Returns
    -------
    Dict with ``prediction`` (n, p), ``source`` (n,) and the per-target diagnostics.

    """
    params = (SIParams() if params is None else params).resolved()
    M = np.asarray(measured, dtype=bool)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1, 2)
    n_t, p = targets.shape[0], Y.shape[2]
    treated = M.copy()
    if control is not None:
        treated[:, control] = False
    if feature_folds is None:
        feature_folds = np.arange(p) % params.n_feature_folds
    pb = _Problem(Y, treated, params, feature_folds)
    out = {k: np.full(n_t, np.nan) for k in _DIAGNOSTICS}
    out["prediction"] = np.zeros((n_t, p))
    out["source"] = np.empty(n_t, dtype=object)
    out["weights"] = [None] * n_t
    out["reason"] = np.full(n_t, "", dtype=object)
    base_data = grid_data(Y, M, control=control)
    base_res = fallback_chain(base_data, targets, list(validated_order(base_data)))

    def fall_back(i: int, reason: str) -> None:
        out["prediction"][i] = base_res.prediction[i]
        out["source"][i] = base_res.source[i]
        out["reason"][i] = reason

    for i, (c, a) in enumerate(targets):
        if params.donors == "perturbations":
            Yd, Md, u, v = Y, M, c, a
        else:
            Yd, Md, u, v = Y.transpose(1, 0, 2), M.T, a, c
        all_levels = reference_levels(Md, u, v, max_donors=params.max_donors)
        levels = [(T, D) for T, D in all_levels if T.size >= params.min_train_units]
        if params.select == "max_donors":
            levels = levels[-1:]
        cands = [pb.score(Yd, T, D, v, r, g) for T, D in levels for r, g in params.regularisations]
        if not cands:
            if not np.delete(Md[:, v], u).any():
                fall_back(i, "no_training_units")
            elif all_levels:
                fall_back(i, "few_training_units")
            else:
                fall_back(i, "no_donors")
            continue
        best = min(cands, key=lambda d: d["mse"])  # first minimum: earliest level, reg
        pred, w, diag = pb.final_fit(Yd, u, v, best)
        for k, x in diag.items():
            out[k][i] = x
        use_si = not params.fallback or (
            best["mse"] < (1 - params.fallback_margin) * best["cm_mse"]
            and best["win_frac"] >= params.min_win_fraction - 1e-12
        )
        if use_si:
            out["prediction"][i] = pred
            out["source"][i] = "synthetic_interventions"
            out["weights"][i] = (best["D"], w)
        else:
            fall_back(i, "validation")
    return out


#: the per-target diagnostics the reference computes (all but the chosen ridge and the pass)
_DIAGNOSTICS = tuple(k for k in SI_DIAGNOSTICS if k not in (SI_RIDGE, SI_SUBSPACE_PASS))


@dataclass
class _Problem:
    """The grid and settings every per-target computation of :func:`reference_si` reads."""

    Y: np.ndarray  # (contexts, perturbations, features)
    treated: np.ndarray  # measured non-control pairs
    params: SIParams  # resolved
    feature_folds: np.ndarray

    def cm_error(self, unit: int, v: int) -> float | None:
        """SSE of ``context_mean`` on the held-out training pair (None: undefined)."""
        ctx, pert = (unit, v) if self.params.donors == "perturbations" else (v, unit)
        m = self.treated[ctx].copy()
        m[pert] = False
        if not m.any():
            return None
        return np.sum((_f(self.Y[ctx, pert]) - _f(self.Y[ctx, m]).mean(axis=0)) ** 2)

    def score(self, Yd, T, D, v, rank, ridge) -> dict:
        """Validation of one (level, regularisation): held-out units, else held-out features."""
        filt = {
            "rank": rank,
            "energy": self.params.energy,
            "ridge": ridge,
            "sum_to_one": self.params.sum_to_one,
        }
        if T.size >= 2:
            sse, sst, n_val, cm_sse, cm_ok, wins = self._leave_units_out(Yd, T, D, v, filt)
        else:
            sse, sst, n_val, cm_sse, cm_ok, wins = self._leave_features_out(Yd, T, D, v, filt)
        return {
            "T": T,
            "D": D,
            "filt": filt,
            "mse": sse / n_val,
            "cm_mse": cm_sse / n_val if cm_ok else np.inf,
            "r2_heldout": 1 - sse / sst if T.size >= 2 else np.nan,
            "win_frac": wins / T.size,
        }

    def _leave_units_out(self, Yd, T, D, v, filt):
        sse, sst, n_val, cm_sse, cm_ok, wins = 0.0, 0.0, 0, 0.0, True, 0
        for j, t in enumerate(T):
            Tr = np.delete(T, j)
            X = np.concatenate([_f(Yd[s][D]).T for s in Tr])
            y = np.concatenate([_f(Yd[s, v]) for s in Tr])
            w, b, _ = reference_fit(X, y, **filt)
            res = _f(Yd[t, v]) - _f(Yd[t][D]).T @ w - b
            sse += res @ res
            sse_t = res @ res
            yt = _f(Yd[t, v])
            sst += np.sum((yt - yt.mean()) ** 2)
            n_val += Yd.shape[2]
            cm_t = self.cm_error(t, v)  # context_mean on the held-out pair
            if cm_t is None:
                cm_ok = False
            else:
                cm_sse += cm_t
                wins += sse_t < cm_t
        return sse, sst, n_val, cm_sse, cm_ok, wins

    def _leave_features_out(self, Yd, T, D, v, filt):
        (t,) = T
        sse, n_val = 0.0, 0
        folds = self.feature_folds
        for k in range(int(folds.max()) + 1):
            tr, te = folds != k, folds == k
            X, y = _f(Yd[t][D][:, tr]).T, _f(Yd[t, v][tr])
            w, b, _ = reference_fit(X, y, **filt)
            res = _f(Yd[t, v][te]) - _f(Yd[t][D][:, te]).T @ w - b
            sse += res @ res
            n_val += int(te.sum())
        cm_t = self.cm_error(t, v)
        # trust a single unit only if the donors over-span its design
        Xs = _f(Yd[t][D]).T
        if self.params.sum_to_one:
            Xs = Xs - Xs.mean(axis=1, keepdims=True)
        rank90 = _top_right(Xs - Xs.mean(axis=0), 0.9).shape[0]
        if D.size < self.params.single_unit_redundancy * rank90:
            sse = np.inf
        return sse, np.nan, n_val, (0.0 if cm_t is None else cm_t), cm_t is not None, 0

    def final_fit(self, Yd, u, v, best) -> tuple[np.ndarray, np.ndarray, dict]:
        """Fit of the chosen candidate on all its training units.

        Returns the prediction, the weights and the diagnostics of the target.
        """
        T, D = best["T"], best["D"]
        X = np.concatenate([_f(Yd[s][D]).T for s in T])
        y = np.concatenate([_f(Yd[s, v]) for s in T])
        w, b, _ = reference_fit(X, y, **best["filt"])
        resid = y - X @ w - b
        Xt = _f(Yd[u][D]).T
        diag = {
            "n_donors": D.size,
            "n_train": T.size,
            "r2_train": 1 - resid @ resid / np.sum((y - y.mean()) ** 2),
            "r2_heldout": best["r2_heldout"],
            "validation_mse": best["mse"],
            "context_mean_validation_mse": best["cm_mse"],
            "subspace_stat": self._subspace_stat(X, Xt),
        }
        return Xt @ w + b, w, diag

    def _subspace_stat(self, X, Xt) -> float:
        """Subspace inclusion: target unit's donor rows vs the training design's rows."""
        Xs, Xts = X, Xt
        if self.params.sum_to_one:
            Xs, Xts = X - X.mean(axis=1, keepdims=True), Xt - Xt.mean(axis=1, keepdims=True)
        V1 = _top_right(Xs - Xs.mean(axis=0), self.params.subspace_energy)
        V2 = _top_right(Xts - Xts.mean(axis=0), self.params.subspace_energy)
        gap = V2 - (V2 @ V1.T) @ V1
        return np.sum(gap**2) / V2.shape[0] if V2.shape[0] else 0.0


def _top_right(X: np.ndarray, energy: float) -> np.ndarray:
    """Right singular vectors carrying ``energy`` of the spectrum (rows of the result)."""
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    lam = s**2
    if lam.size == 0 or lam[0] <= 0:
        return Vt[:0]
    keep = lam > RANK_TOL * lam[0]
    if energy < 1:
        frac = np.cumsum(lam) / lam.sum()
        k = int(np.argmax(frac >= energy)) + 1
        keep &= np.arange(lam.size) < k
    return Vt[keep]

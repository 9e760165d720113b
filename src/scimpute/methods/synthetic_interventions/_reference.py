"""A plain, per-pair numpy implementation of synthetic interventions.

This module is the executable specification of
:func:`scimpute.methods.synthetic_interventions.synthetic_interventions`: it loops over the
target pairs in Python, stacks each design matrix explicitly and solves it with an SVD. It is
slow on purpose (it is what "a straightforward per-pair implementation" costs) and is used by
the tests (batched == reference) and by ``benchmarks/si_scale.py`` (speed-up per pair).
Nothing here is on a hot path.
"""

from __future__ import annotations

import numpy as np

from .._base import grid_data
from .._stats import CONTEXT_FIRST, fallback_chain
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
    donors, energy, select = params.donors, params.energy, params.select
    max_donors, min_train_units = params.max_donors, params.min_train_units
    sum_to_one, fallback = params.sum_to_one, params.fallback
    fallback_margin, min_win_fraction = params.fallback_margin, params.min_win_fraction
    single_unit_redundancy, subspace_energy = params.single_unit_redundancy, params.subspace_energy
    M = np.asarray(measured, dtype=bool)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1, 2)
    n_t, p = targets.shape[0], Y.shape[2]
    ctrl_mask = np.zeros(M.shape[1], dtype=bool)
    if control is not None:
        ctrl_mask[control] = True
    treated = M & ~ctrl_mask[None, :]
    if feature_folds is None:
        feature_folds = np.arange(p) % params.n_feature_folds
    K = int(feature_folds.max()) + 1
    regs = params.regularisations

    def cm(c: int, exclude: int | None = None) -> np.ndarray | None:
        m = treated[c].copy()
        if exclude is not None:
            m[exclude] = False
        return _f(Y[c, m]).mean(axis=0) if m.any() else None

    out = {
        "prediction": np.zeros((n_t, p)),
        "source": np.empty(n_t, dtype=object),
        "n_donors": np.full(n_t, np.nan),
        "n_train": np.full(n_t, np.nan),
        "r2_train": np.full(n_t, np.nan),
        "r2_heldout": np.full(n_t, np.nan),
        "validation_mse": np.full(n_t, np.nan),
        "context_mean_validation_mse": np.full(n_t, np.nan),
        "subspace_stat": np.full(n_t, np.nan),
        "weights": [None] * n_t,
    }
    base_res = fallback_chain(grid_data(Y, M, control=control), targets, list(CONTEXT_FIRST))
    out["reason"] = np.full(n_t, "", dtype=object)

    def fall_back(i: int, reason: str) -> None:
        out["prediction"][i] = base_res.prediction[i]
        out["source"][i] = base_res.source[i]
        out["reason"][i] = reason

    for i, (c, a) in enumerate(targets):
        if donors == "perturbations":
            Yd, Md, u, v = Y, M, c, a
        else:
            Yd, Md, u, v = Y.transpose(1, 0, 2), M.T, a, c
        all_levels = reference_levels(Md, u, v, max_donors=max_donors)
        levels = [(T, D) for T, D in all_levels if T.size >= min_train_units]
        if select == "max_donors":
            levels = levels[-1:]
        cands = []
        for T, D in levels:
            for r, g in regs:
                filt = {"rank": r, "energy": energy, "ridge": g, "sum_to_one": sum_to_one}
                # validation folds: held-out training units, else held-out features
                sse, sst, n_val, cm_sse = 0.0, 0.0, 0, 0.0
                cm_ok = True
                wins = 0
                if T.size >= 2:
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
                        n_val += p
                        # context_mean on the held-out training pair
                        ctx, pert = (t, v) if donors == "perturbations" else (v, t)
                        base = cm(ctx, exclude=pert)
                        if base is None:
                            cm_ok = False
                        else:
                            cm_t = np.sum((_f(Y[ctx, pert]) - base) ** 2)
                            cm_sse += cm_t
                            wins += sse_t < cm_t
                else:
                    (t,) = T
                    for k in range(K):
                        tr, te = feature_folds != k, feature_folds == k
                        X, y = _f(Yd[t][D][:, tr]).T, _f(Yd[t, v][tr])
                        w, b, _ = reference_fit(X, y, **filt)
                        res = _f(Yd[t, v][te]) - _f(Yd[t][D][:, te]).T @ w - b
                        sse += res @ res
                        n_val += int(te.sum())
                    ctx, pert = (t, v) if donors == "perturbations" else (v, t)
                    base = cm(ctx, exclude=pert)
                    if base is None:
                        cm_ok = False
                    else:
                        cm_sse = np.sum((_f(Y[ctx, pert]) - base) ** 2)
                    sst = np.nan
                    # trust a single unit only if the donors over-span its design
                    Xs = _f(Yd[t][D]).T
                    if sum_to_one:
                        Xs = Xs - Xs.mean(axis=1, keepdims=True)
                    rank90 = _top_right(Xs - Xs.mean(axis=0), 0.9).shape[0]
                    if D.size < single_unit_redundancy * rank90:
                        sse = np.inf
                cands.append(
                    {
                        "T": T,
                        "D": D,
                        "filt": filt,
                        "mse": sse / n_val,
                        "cm_mse": cm_sse / n_val if cm_ok else np.inf,
                        "r2_heldout": 1 - sse / sst if T.size >= 2 else np.nan,
                        "win_frac": wins / T.size,
                    }
                )
        if not cands:
            if not np.delete(Md[:, v], u).any():
                fall_back(i, "no_training_units")
            elif all_levels:
                fall_back(i, "few_training_units")
            else:
                fall_back(i, "no_donors")
            continue
        if len(cands) == 1:
            best = cands[0]
        else:
            best = min(cands, key=lambda d: d["mse"])  # first minimum: earliest level, reg
        T, D = best["T"], best["D"]
        X = np.concatenate([_f(Yd[s][D]).T for s in T])
        y = np.concatenate([_f(Yd[s, v]) for s in T])
        w, b, _ = reference_fit(X, y, **best["filt"])
        resid = y - X @ w - b
        out["n_donors"][i] = D.size
        out["n_train"][i] = T.size
        out["r2_train"][i] = 1 - resid @ resid / np.sum((y - y.mean()) ** 2)
        out["r2_heldout"][i] = best["r2_heldout"]
        out["validation_mse"][i] = best["mse"]
        out["context_mean_validation_mse"][i] = best["cm_mse"]
        # subspace inclusion: target unit's donor rows vs the training design's rows
        Xt = _f(Yd[u][D]).T
        Xs, Xts = X, Xt
        if sum_to_one:
            Xs, Xts = X - X.mean(axis=1, keepdims=True), Xt - Xt.mean(axis=1, keepdims=True)
        V1 = _top_right(Xs - Xs.mean(axis=0), subspace_energy)
        V2 = _top_right(Xts - Xts.mean(axis=0), subspace_energy)
        gap = V2 - (V2 @ V1.T) @ V1
        out["subspace_stat"][i] = np.sum(gap**2) / V2.shape[0] if V2.shape[0] else 0.0
        use_si = not fallback or (
            best["mse"] < (1 - fallback_margin) * best["cm_mse"]
            and best["win_frac"] >= min_win_fraction - 1e-12
        )
        if use_si:
            out["prediction"][i] = Xt @ w + b
            out["source"][i] = "synthetic_interventions"
            out["weights"][i] = (D, w)
        else:
            fall_back(i, "validation")
    return out


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

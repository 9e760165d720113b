"""Which pair to measure next: rank unmeasured pairs by the error they would remove elsewhere.

The score is Bayesian experimental design under a Gaussian-process *surrogate* of the grid
(the active-learning criterion of Cohn, "ALC": the expected reduction of the predictive
variance integrated over the other unmeasured points), fitted to the data in the call.

The surrogate
-------------
Each feature (z-scored over the measured pairs) is modelled as one draw of a Gaussian
process over the pairs ``i = (c, a)`` of the grid, the features being replicates of it::

    y_i = f_i + e_i,    cov(f_i, f_j) = sum_k s_k K_k(i, j),    e_i ~ N(0, s_0)

with the components ``K_k(i, j) = C_k[c_i, c_j] * A_k[a_i, a_j]``:

``context``
    same context (``C = I``, ``A = 1``): the row effect that ``context_mean`` exploits.
``perturbation``
    same perturbation (``C = 1``, ``A = I``): the column effect of ``perturbation_mean``.
``similar_contexts``
    same perturbation in contexts whose interaction residuals (profile minus row and column
    means, over the perturbations both measured) point the same way: the donors of synthetic
    interventions (``C`` = cosine of the zero-filled residuals, ``A = I``).
``similar_perturbations``
    the same in the other direction (``C = I``, ``A`` = cosine of the residuals).
``shared_components``
    perturbations that share a component of a combination ``"A+B"`` or a compound at nearby
    doses ``"A@1"`` / ``"A@3"`` (cosine of the component indicators times an RBF of one
    decade in mean log10 dose); only when the labels have such structure.

The weights ``s`` are chosen by maximising the Gaussian marginal likelihood of the measured
pairs (``log det K + tr(K^-1 S)`` with ``S`` the pair-by-pair covariance over features), so
that which structure the score trusts is decided by the grid in the call.

The score
---------
With ``P`` the surrogate's posterior covariance of ``f`` over the unmeasured pairs and
``v_t = P_tt + s_0`` the predictive variance of pair ``t``, measuring pair ``u`` removes the
fraction ``rho_tu^2 = P_tu^2 / (v_t v_u)`` of the predictive variance of each other pair
``t``. The *gain* of ``u`` is the expected error it removes from the other unmeasured pairs::

    gain_u = sum_{t != u} err_t * rho_tu^2

where ``err_t`` is the predicted error of ``t``: ``obs[f"{key}_error"]`` of an imputation run
(the method's own calibrated error; see :func:`scimpute.tl.impute`) when there is one, else
the surrogate's ``v_t`` (then ``gain`` is Cohn's ALC exactly). Pairs are then chosen
greedily: after each choice ``P`` gets the rank-one update of observing that pair and the
errors shrink by the variance it removes, so two pairs that inform the same others are not
both ranked high (a batch is chosen jointly, not pair by pair). No pair's value is needed:
the posterior covariance of a Gaussian process does not depend on the values observed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import RANK_KEY, Key
from .._labels import parse_perturbation
from .._params import Params, check_random_state_value, param
from .._utils import RandomState, check_random_state, h5ad_safe
from ..methods import GridData
from ._data import default_targets, to_grid_data

__all__ = ["RankParams", "RankResult", "rank_experiments", "rank_pairs"]

_OWNER = "rank_experiments"
#: greedy steps at most; pairs beyond are ordered by their gain given the greedy ones.
MAX_GREEDY = 1000
#: largest number of unmeasured pairs (the posterior covariance is held in memory).
MAX_TARGETS = 8000
#: measured pairs used to fit the surrogate's weights at most (a seeded subsample beyond).
MAX_FIT = 2000
_LOG_BOUNDS = (-14.0, 6.0)


@dataclass(frozen=True)
class RankParams(Params):
    """Options of :func:`rank_experiments` (documented there)."""

    owner = _OWNER

    n: int | None = param(None, ge=1, doc="Pairs chosen jointly (greedy) and listed in uns.")
    objective: Literal["others", "grid"] = param(
        "others", doc="Error counted: of the other unmeasured pairs, or of the whole grid."
    )
    interval: float = param(0.9, gt=0, lt=1, doc="Interval level of the imputation run.")


@dataclass
class RankResult:
    """Ranking of the target pairs of a grid (array level).

    Attributes
    ----------
    order
        Indices into ``targets`` of the candidates, best first.
    gain
        ``(n_targets,)`` gain of each candidate at the moment it was ranked (NaN for the
        targets that are not candidates).
    rank
        ``(n_targets,)`` 1-based rank of each candidate (0 for the other targets).
    error
        ``(n_targets,)`` predicted error used as weight.
    surrogate
        Fitted weights of the surrogate's components and its noise.

    """

    order: np.ndarray
    gain: np.ndarray
    rank: np.ndarray
    error: np.ndarray
    surrogate: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# the surrogate's components


def _cosine_gram(V: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of ``V`` (zero rows: 1 on the diagonal, 0 elsewhere)."""
    norm = np.linalg.norm(V, axis=1)
    ok = norm > 1e-12 * max(float(norm.max(initial=0.0)), 1.0)
    U = np.zeros_like(V)
    U[ok] = V[ok] / norm[ok, None]
    G = U @ U.T
    G[~ok, ~ok] = 1.0
    return np.clip(G, -1.0, 1.0)


def _standardise(data: GridData) -> tuple[np.ndarray, np.ndarray]:
    """Profiles z-scored per feature over the measured pairs; 0 at unmeasured pairs."""
    m = data.measured
    Ym = data.Y[m].astype(np.float64)
    mu = Ym.mean(axis=0)
    sd = Ym.std(axis=0)
    sd = np.where(sd > 1e-12 * max(float(sd.max(initial=0.0)), 1.0), sd, 1.0)
    Z = np.zeros(data.Y.shape, dtype=np.float64)
    Z[m] = (Ym - mu) / sd
    return Z, m


def _residuals(Z: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Interaction residuals: profile minus its row and column means (measured pairs only)."""
    w = m.astype(np.float64)[..., None]
    grand = Z.sum(axis=(0, 1)) / max(m.sum(), 1)
    row = Z.sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
    col = Z.sum(axis=0) / np.maximum(w.sum(axis=0), 1.0)
    return (Z - row[:, None] - col[None] + grand) * w


def _label_kernel(data: GridData) -> np.ndarray | None:
    """Similarity of perturbations from their labels (shared components, nearby doses)."""
    labels = [str(x) for x in data.perturbations]
    parsed = []
    for lab in labels:
        try:
            parsed.append(parse_perturbation(lab, sep=data.combination_sep))
        except ValueError:
            parsed.append([(lab, None)])
    if all(len(p) == 1 and p[0][1] is None for p in parsed):
        return None
    names = sorted({n for p in parsed for n, _ in p})
    index = {n: i for i, n in enumerate(names)}
    ind = np.zeros((len(labels), len(names)))
    logdose = np.full(len(labels), np.nan)
    for i, p in enumerate(parsed):
        for n, _ in p:
            ind[i, index[n]] = 1.0
        doses = [d for _, d in p if d is not None and d > 0]
        if doses:
            logdose[i] = float(np.mean(np.log10(doses)))
    K = _cosine_gram(ind)
    has = np.isfinite(logdose)
    if has.any():
        ld = np.where(has, logdose, 0.0)
        rbf = np.exp(-0.5 * (ld[:, None] - ld[None, :]) ** 2)
        both = has[:, None] & has[None, :]
        K = K * np.where(both, rbf, 1.0)
    if data.control is not None:
        K[data.control, :] = 0.0
        K[:, data.control] = 0.0
        K[data.control, data.control] = 1.0
    if np.allclose(K, np.eye(len(labels))):
        return None
    return K


def _components(data: GridData, Z: np.ndarray, m: np.ndarray) -> dict[str, tuple]:
    """Name -> (context matrix, perturbation matrix) of each component of the surrogate."""
    n_c, n_a = m.shape
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if n_c > 1:
        out["context"] = (np.eye(n_c), np.ones((n_a, n_a)))
    if n_a > 1:
        out["perturbation"] = (np.ones((n_c, n_c)), np.eye(n_a))
    if n_c > 1 and n_a > 1:
        R = _residuals(Z, m)
        Cr = _cosine_gram(R.reshape(n_c, -1))
        Ar = _cosine_gram(R.transpose(1, 0, 2).reshape(n_a, -1))
        if not np.allclose(Cr, np.eye(n_c)):
            out["similar_contexts"] = (Cr, np.eye(n_a))
        if not np.allclose(Ar, np.eye(n_a)):
            out["similar_perturbations"] = (np.eye(n_c), Ar)
    lab = _label_kernel(data)
    if lab is not None:
        out["shared_components"] = (np.ones((n_c, n_c)), lab)
    return out


def _pair_kernel(comp: tuple, ci: np.ndarray, ai: np.ndarray, cj=None, aj=None) -> np.ndarray:
    C, A = comp
    cj = ci if cj is None else cj
    aj = ai if aj is None else aj
    return C[np.ix_(ci, cj)] * A[np.ix_(ai, aj)]


# ---------------------------------------------------------------------------------------------
# fitting the weights by marginal likelihood


def _fit_weights(Ks: list[np.ndarray], S: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights of ``Ks`` and the noise, maximising the Gaussian likelihood of S."""
    from scipy.linalg import cho_factor, cho_solve
    from scipy.optimize import minimize

    n = S.shape[0]
    eye = np.eye(n)
    stack = [*Ks, eye]

    def objective(theta):
        s = np.exp(theta)
        K = sum(w * k for w, k in zip(s, stack, strict=True)) + 1e-9 * eye
        try:
            cf = cho_factor(K, lower=True)
        except np.linalg.LinAlgError:
            return 1e30, np.zeros_like(theta)
        logdet = 2.0 * np.log(np.diag(cf[0])).sum()
        Kinv = cho_solve(cf, eye)
        KS = Kinv @ S
        val = logdet + np.trace(KS)
        Agrad = Kinv - KS @ Kinv
        grad = np.array([w * np.sum(Agrad * k) for w, k in zip(s, stack, strict=True)])
        return val / n, grad / n

    theta0 = np.log(np.full(len(stack), 1.0 / len(stack)))
    res = minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=[_LOG_BOUNDS] * len(stack),
        options={"maxiter": 200},
    )
    s = np.exp(res.x)
    return s[:-1], float(s[-1])


# ---------------------------------------------------------------------------------------------
# the ranking


def _greedy(
    P: np.ndarray,
    noise: float,
    err: np.ndarray,
    n_greedy: int,
    pick: np.ndarray,
    count_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy order and gains: each step picks the largest gain, then observes that pair.

    ``pick`` marks the targets that may be chosen; the others count only as beneficiaries.
    Returns the chosen targets in order and their gains (``pick.sum()`` of each).
    """
    n_t = P.shape[0]
    active = np.ones(n_t, dtype=bool)
    n_pick = int(pick.sum())
    n_greedy = min(n_greedy, n_pick)
    err = err.astype(np.float64).copy()
    order = np.empty(n_pick, dtype=np.int64)
    gain = np.empty(n_pick, dtype=np.float64)

    def gains() -> np.ndarray:
        v = np.diag(P) + noise
        w = np.where(active, err / v, 0.0)  # err_t / v_t over the still-open targets
        g = (w @ (P * P) - w * np.diag(P) ** 2) / v  # sum_{t != u} err_t P_tu^2 / (v_t v_u)
        if count_self:  # measured, the pair itself has no imputation error left
            g = g + err
        return np.where(active & pick, np.maximum(g, 0.0), -np.inf)

    for step in range(n_greedy):
        g = gains()
        u = int(np.argmax(g))
        order[step], gain[step] = u, g[u]
        v_old = np.diag(P) + noise
        pu = P[:, u].copy()
        P -= np.outer(pu, pu) / v_old[u]
        err *= (np.diag(P) + noise) / v_old  # the error u removes from each pair
        active[u] = False
    if n_greedy < n_pick:
        g = gains()
        rest = np.nonzero(active & pick)[0]
        rest = rest[np.argsort(-g[rest], kind="stable")]
        order[n_greedy:] = rest
        gain[n_greedy:] = g[rest]
    return order, gain


def rank_pairs(
    data: GridData,
    targets: np.ndarray | None = None,
    *,
    error: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    n: int | None = None,
    objective: str = "others",
    random_state: RandomState = 0,
) -> RankResult:
    """Rank ``targets`` (default: the unmeasured non-control pairs) by their expected gain.

    Array-level core of :func:`rank_experiments` (see the module docstring for the model).

    Parameters
    ----------
    data
        The grid's arrays.
    targets
        ``(n, 2)`` unmeasured (context, perturbation) pairs: the candidates, and the pairs
        whose error is counted.
    error
        ``(n,)`` predicted error of each target (non-negative; NaN: the surrogate's own
        variance for that pair, rescaled to the median of the given ones). ``None``: the
        surrogate's predictive variance for all (Cohn's ALC).
    candidates
        ``(n,)`` bool: the targets that may be chosen (default: all). The others still count
        as pairs whose error a measurement reduces; their rank is 0.
    n
        Pairs chosen greedily (jointly); the others follow by their gain given those.
        ``None``: all, up to :data:`MAX_GREEDY`.
    objective
        ``"others"``: the gain counts the error removed from the other targets;
        ``"grid"``: also the pair's own error (measured, it has none left), i.e. the error of
        the completed grid.
    random_state
        Seed of the subsample of measured pairs used to fit the weights (only when there are
        more than :data:`MAX_FIT`).

    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # the matrices are small: one BLAS thread is many times faster on a busy machine
    with threadpool_limits(1 if data.measured.sum() <= MAX_FIT else None):
        return _rank_pairs(data, targets, error, candidates, n, objective, random_state)


def _rank_pairs(data, targets, error, candidates, n, objective, random_state) -> RankResult:
    t = default_targets(data) if targets is None else np.asarray(targets, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] == 0:
        raise ValueError(
            "rank_experiments: the grid has no unmeasured pair to rank (every non-control "
            "pair is measured)."
        )
    if data.measured[t[:, 0], t[:, 1]].any():
        raise ValueError("rank_experiments: targets must be unmeasured pairs.")
    if t.shape[0] > MAX_TARGETS:
        raise ValueError(
            f"rank_experiments: {t.shape[0]} unmeasured pairs exceed the limit of "
            f"{MAX_TARGETS} (the posterior covariance is held in memory); rank a subset of "
            "the grid (grid[mask].copy()) at a time."
        )
    Z, m = _standardise(data)
    comps = _components(data, Z, m)
    mi = np.argwhere(m)
    if mi.shape[0] > MAX_FIT:
        rng = check_random_state(random_state, _OWNER)
        mi = mi[np.sort(rng.choice(mi.shape[0], MAX_FIT, replace=False))]
    Zm = Z[mi[:, 0], mi[:, 1]]
    S = Zm @ Zm.T / Zm.shape[1]
    names = list(comps)
    K_mm = [_pair_kernel(comps[k], mi[:, 0], mi[:, 1]) for k in names]
    if names:
        weights, noise = _fit_weights(K_mm, S)
    else:  # a 1 x 1 grid: nothing links pairs
        weights, noise = np.zeros(0), 1.0
    K = sum((w * k for w, k in zip(weights, K_mm, strict=True)), np.zeros_like(S))
    K_tm = sum(
        (
            w * _pair_kernel(comps[k], t[:, 0], t[:, 1], mi[:, 0], mi[:, 1])
            for w, k in zip(weights, names, strict=True)
        ),
        np.zeros((t.shape[0], mi.shape[0])),
    )
    K_tt = sum(
        (w * _pair_kernel(comps[k], t[:, 0], t[:, 1]) for w, k in zip(weights, names, strict=True)),
        np.zeros((t.shape[0], t.shape[0])),
    )
    from scipy.linalg import cho_factor, cho_solve

    cf = cho_factor(K + (noise + 1e-9) * np.eye(K.shape[0]), lower=True)
    P = K_tt - K_tm @ cho_solve(cf, K_tm.T)
    P = 0.5 * (P + P.T)
    v = np.diag(P) + noise
    if error is None:
        err = v.copy()
    else:
        err = np.asarray(error, dtype=np.float64).reshape(-1)
        if err.shape[0] != t.shape[0]:
            raise ValueError(f"error has {err.shape[0]} values for {t.shape[0]} targets.")
        if (err[np.isfinite(err)] < 0).any():
            raise ValueError("rank_experiments: predicted errors must be non-negative.")
        bad = ~np.isfinite(err)
        if bad.all():
            err = v.copy()
        elif bad.any():
            err[bad] = v[bad] * np.median(err[~bad]) / np.median(v[~bad])
    pick = np.ones(t.shape[0], dtype=bool) if candidates is None else np.asarray(candidates)
    if pick.dtype != bool or pick.shape != (t.shape[0],):
        raise ValueError(f"candidates must be a bool array of {t.shape[0]} values.")
    if not pick.any():
        raise ValueError("rank_experiments: no candidate pair to rank (candidates is all False).")
    if objective not in ("others", "grid"):
        raise ValueError(f"objective must be 'others' or 'grid', got {objective!r}.")
    n_greedy = MAX_GREEDY if n is None else n
    order, gain_sorted = _greedy(P, noise, err, n_greedy, pick, objective == "grid")
    rank = np.zeros(t.shape[0], dtype=np.int64)
    rank[order] = np.arange(1, order.size + 1)
    gain = np.full(t.shape[0], np.nan)
    gain[order] = gain_sorted
    surrogate = {
        "components": names,
        "weights": [float(w) for w in weights],
        "noise": float(noise),
        "n_fit": int(mi.shape[0]),
        "error_from": "surrogate" if error is None else "given",
    }
    return RankResult(order=order, gain=gain, rank=rank, error=err, surrogate=surrogate)


# ---------------------------------------------------------------------------------------------
# AnnData entry point


def _columns(key: str) -> tuple[str, str]:
    return Key.obs.rank(key), Key.obs.gain(key)


def _check_key(grid: AnnData, key: Any) -> str:
    from ._impute import RESERVED_UNS, _structure_columns

    if not isinstance(key, str) or not key:
        raise ValueError(f"{_OWNER}: key_added must be a non-empty string, got {key!r}.")
    if key in RESERVED_UNS:
        raise ValueError(f"{_OWNER}: key_added={key!r} is reserved; choose another name.")
    cols = set(_columns(key))
    clash = cols & _structure_columns(grid)
    if clash:
        raise ValueError(
            f"{_OWNER}: key_added={key!r} would overwrite the grid's own column(s) "
            f"{sorted(clash)}; choose another key_added."
        )
    own = isinstance(grid.uns.get(key), Mapping) and grid.uns[key].get("tool") == _OWNER
    if key in grid.uns and not own:
        raise ValueError(
            f"{_OWNER}: grid.uns[{key!r}] exists and was not written by rank_experiments; "
            "choose another key_added."
        )
    foreign = sorted(c for c in cols if c in grid.obs.columns and not own)
    if foreign:
        raise ValueError(
            f"{_OWNER}: key_added={key!r} would overwrite obs column(s) {foreign}, which "
            "rank_experiments did not write; choose another key_added."
        )
    return key


def _impute_errors(
    grid: AnnData, method: str, interval: float, random_state, params: dict
) -> tuple[pd.Series | None, str]:
    """Predicted error per row from an imputation run on a copy (None if it writes none)."""
    from ._impute import impute

    kwargs = dict(params)
    if "interval" in inspect.signature(impute).parameters:
        kwargs.setdefault("interval", interval)
    tmp = "_rank_experiments"
    out = impute(grid, method=method, key_added=tmp, random_state=random_state, copy=True, **kwargs)
    col = Key.obs.error(tmp)
    if col not in out.obs.columns:
        return None, f"surrogate (impute(method={method!r}) wrote no {col})"
    return out.obs[col].astype(
        float
    ), f"obs[{Key.obs.error(method)!r}] of impute(method={method!r})"


def rank_experiments(
    grid: AnnData,
    *,
    method: str | None = "auto",
    n: int | None = None,
    objective: Literal["others", "grid"] = "others",
    key: str | None = None,
    candidates: str | None = None,
    key_added: str | None = None,
    interval: float = 0.9,
    random_state: RandomState = 0,
    copy: bool = False,
    **method_params: Any,
) -> AnnData | None:
    """Rank the unmeasured pairs of a grid by how much measuring each would help the rest.

    The gain of a pair is the expected reduction of the predicted error of the *other*
    unmeasured pairs if it were measured, under a Gaussian-process surrogate of the grid
    whose structure (rows, columns, donor-like similar contexts and perturbations, shared
    combination components and doses) is weighted by marginal likelihood on the measured
    pairs; each pair's error is weighted by the imputation's own predicted error. Pairs are
    chosen greedily, each given the ones before it, so the top ``n`` form a batch that does
    not spend two measurements on the same gap. See :mod:`scimpute.tl._rank` for the model.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`; rows with
        ``obs["measured"] == False`` (control rows excluded) are the candidates.
    method
        Imputation method whose predicted error per pair (``obs[f"{key}_error"]`` of
        :func:`scimpute.tl.impute` with ``interval``) weights the pairs; run on a copy.
        ``None``: no imputation, the surrogate's predictive variance is the error (fast).
    n
        Number of pairs chosen jointly (greedy) and listed in ``uns[key_added]["top"]``;
        default: every pair (up to 1000 greedy steps; beyond, by gain given those).
    objective
        ``"others"`` (default): the gain is the error removed from the *other* unmeasured
        pairs, the value of a measurement for the pairs that stay unmeasured. ``"grid"``:
        plus the pair's own predicted error (measured, it has none left), the error removed
        from the completed grid as a whole; this favours hard pairs themselves.
    key
        ``key_added`` of an earlier :func:`scimpute.tl.impute` run whose
        ``obs[f"{key}_error"]`` to use instead of imputing (``method`` is then ignored).
    candidates
        Name of a boolean ``obs`` column marking the unmeasured pairs that can be measured
        (cells, reagents at hand); the others are not ranked (rank 0) but their error still
        counts. Default: every unmeasured non-control pair.
    key_added
        Name of the results; default ``"acquisition"``.
    interval
        Interval level passed to :func:`scimpute.tl.impute` when ``method`` is run.
    random_state
        Seed of the imputation and of the subsample used to fit the surrogate on large grids
        (same seed, same ranking).
    copy
        Return a modified copy instead of writing into ``grid``.
    **method_params
        Parameters of ``method``.

    Returns
    -------
    ``None``, or the copy, with

    - ``obs[f"{key_added}_rank"]``: 1 for the pair to measure first, 2 next, ...; ``-1`` for
      measured rows and control rows, ``0`` for unmeasured pairs that are not candidates;
    - ``obs[f"{key_added}_gain"]``: the pair's gain when it was ranked (expected error it
      removes from the other unmeasured pairs, in the units of the error used); NaN where
      the rank is ``-1``;
    - ``uns[key_added]``: ``{"tool", "params", "error_from", "surrogate": {"components",
      "weights", "noise", "n_fit"}, "n_candidates", "n_unmeasured", "top"}``; ``top`` is a table (context,
      perturbation, rank, gain, error) of the first ``n`` pairs (at most 100 by default).

    Raises
    ------
    ValueError
        When no pair is left to rank, when ``key`` holds no ``_error`` column, or when
        ``key_added`` would overwrite something rank_experiments did not write. Nothing is
        written if an error is raised.

    """
    opts = RankParams.from_kwargs(_OWNER, {"n": n, "objective": objective, "interval": interval})
    random_state = check_random_state_value(_OWNER, random_state)
    key_added = _check_key(grid, RANK_KEY if key_added is None else key_added)
    data, order = to_grid_data(grid)
    targets = default_targets(data)
    if targets.shape[0] == 0:
        raise ValueError(
            f"{_OWNER}: the grid has no unmeasured pair to rank (every non-control pair is "
            "measured)."
        )
    n_a = data.n_perturbations
    flat_t = targets[:, 0] * n_a + targets[:, 1]
    rows_t = order[flat_t]  # grid row of each target
    error = None
    error_from = "surrogate predictive variance"
    if key is not None:
        col = Key.obs.error(key)
        if col not in grid.obs.columns:
            raise ValueError(
                f"{_OWNER}: grid.obs[{col!r}] not found; run scimpute.tl.impute(..., "
                f"key_added={key!r}, interval=...) first, or pass method= instead of key=."
            )
        error = grid.obs[col].to_numpy(dtype=float)[rows_t]
        error_from = f"obs[{col!r}]"
    elif method is not None:
        errs, error_from = _impute_errors(grid, method, opts.interval, random_state, method_params)
        if errs is not None:
            error = errs.to_numpy(dtype=float)[rows_t]
    elif method_params:
        raise TypeError(
            f"{_OWNER}: method parameters {sorted(method_params)} given without a method."
        )
    pick = None
    if candidates is not None:
        if candidates not in grid.obs.columns:
            raise ValueError(f"{_OWNER}: candidates={candidates!r} is not a column of grid.obs.")
        col = grid.obs[candidates]
        if col.dtype != bool:
            raise ValueError(
                f"{_OWNER}: grid.obs[{candidates!r}] must be boolean (True: can be measured), "
                f"got dtype {col.dtype}."
            )
        pick = col.to_numpy()[rows_t]
        if not pick.any():
            raise ValueError(
                f"{_OWNER}: no unmeasured pair is marked in grid.obs[{candidates!r}]: nothing "
                "to rank."
            )
    res = rank_pairs(
        data,
        targets,
        error=error,
        candidates=pick,
        n=opts.n,
        objective=opts.objective,
        random_state=random_state,
    )

    rank_col = np.full(grid.n_obs, -1, dtype=np.int64)
    gain_col = np.full(grid.n_obs, np.nan)
    rank_col[rows_t] = res.rank
    gain_col[rows_t] = res.gain
    info_ctx, info_pert = _label_columns(grid)
    n_top = min(res.order.size, opts.n if opts.n is not None else 100)
    top_rows = rows_t[res.order[:n_top]]
    top = pd.DataFrame(
        {
            Key.table.context: grid.obs[info_ctx].astype(str).to_numpy()[top_rows],
            Key.table.perturbation: grid.obs[info_pert].astype(str).to_numpy()[top_rows],
            "rank": np.arange(1, n_top + 1),
            "gain": res.gain[res.order[:n_top]],
            "error": res.error[res.order[:n_top]],
        },
        index=[str(x) for x in grid.obs_names[top_rows]],
    )
    record = {
        "tool": _OWNER,
        "params": h5ad_safe(
            {
                "method": method,
                "key": key,
                "n": opts.n,
                "objective": opts.objective,
                "candidates": candidates,
                "interval": opts.interval,
                "random_state": random_state,
                **method_params,
            }
        ),
        "error_from": error_from,
        "surrogate": h5ad_safe(res.surrogate),
        "n_candidates": int(res.order.size),
        "n_unmeasured": int(targets.shape[0]),
        "top": top,
    }
    out = grid.copy() if copy else grid
    rc, gc = _columns(key_added)
    out.obs[rc] = rank_col
    out.obs[gc] = gain_col
    out.uns[key_added] = record
    return out if copy else None


def _label_columns(grid: AnnData) -> tuple[str, str]:
    from .._validate import check_grid

    info = check_grid(grid)
    return info.context_key, info.perturbation_key


def top_pairs(grid: AnnData, *, key: str = RANK_KEY, n: int | None = None) -> pd.DataFrame:
    """The ranked pairs of a :func:`rank_experiments` run, best first.

    Parameters
    ----------
    grid
        A grid ranked by :func:`rank_experiments`.
    key
        Its ``key_added``.
    n
        Number of pairs (default: all ranked ones).

    Returns
    -------
    A table indexed by grid row with ``context``, ``perturbation``, ``rank`` and ``gain``,
    read from ``obs[f"{key}_rank"]`` and ``obs[f"{key}_gain"]``.

    """
    rc, gc = _columns(key)
    if rc not in grid.obs.columns:
        raise KeyError(f"grid.obs[{rc!r}] not found: run scimpute.tl.rank_experiments first.")
    ctx, pert = _label_columns(grid)
    obs = grid.obs
    ranked = obs[obs[rc] > 0].sort_values(rc)
    table = pd.DataFrame(
        {
            Key.table.context: ranked[ctx].astype(str),
            Key.table.perturbation: ranked[pert].astype(str),
            "rank": ranked[rc].astype(int),
            "gain": ranked[gc].astype(float),
        }
    )
    return table if n is None else table.head(n)

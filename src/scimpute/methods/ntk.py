"""NTK matrix completion: kernel regression with the neural tangent kernel of a ReLU network.

Radhakrishnan, Stefanakis, Belkin & Uhler (PNAS 2022). The grid is a matrix whose rows are
features (genes) and whose columns are (context, perturbation) pairs. Every column ``j`` has
a feature-prior vector ``z_j`` (unit norm). Each feature row is an independent kernel
regression over its observed columns with the kernel ``kappa_d(z_j . z_j')`` of an infinitely
wide fully connected ReLU network of depth ``d``::

    prediction[i, t] = sum_{j, j' observed in row i} kappa(z_t . z_j) [(K_O + reg I)^{-1}]_{j j'} M[i, j']

All feature rows that share an observation pattern share one kernel matrix and one Cholesky
factorisation; a grid in which whole pairs are missing (the usual case) has one pattern.

Numerics: kernel construction, Cholesky factorisation, solves and predictions are
jit-compiled JAX functions, batched over all feature rows at once (no Python loop over
features). They run in **float64** by default inside a local ``jax.enable_x64(True)`` context
(the global JAX configuration is never changed), because the NTK Gram matrix of many similar
columns is ill conditioned; ``dtype="float32"`` halves memory for very large grids. Shapes are
padded to a few bucket sizes (the training set to ``_bucket(n)``, targets to fixed chunks), so
repeated calls, e.g. leave-one-out cross-validation, compile once.

Feature priors (``prior=``, one name or a list whose blocks are concatenated)
-------------------------------------------------------------------------------------------
``"identity"``
    A one-hot vector of the pair itself. Alone, it reduces the prediction of any unmeasured
    pair to a scaled mean of the row's observed entries,
    ``c * mean`` with ``c = n kappa(0) / (kappa(1) - kappa(0) + reg + n kappa(0))``.
``"onehot"``
    Context one-hot (weight ``weights["context"]``) + perturbation one-hot (weight
    ``weights["perturbation"]``); every distinct perturbation label is its own category.
``"components"``
    Context one-hot + the sum of the perturbation's components' vectors: ``"A@dA+B@dB"`` has
    ``s_A(dA) e_A + s_B(dB) e_B`` with ``e_A`` a one-hot over component names and the
    monotone dose map ``s_A(d) = log2(1 + d / d_A)`` (``dose_transform="log"``; ``d_A`` is the
    median dose of component ``A`` among the grid's labels, so a typical dose has weight 1 and
    dose 0 (the control) has weight 0). ``"linear"`` uses ``d / d_A``, ``"none"`` ignores doses.
    Labels without a dose have weight 1. The control has the zero vector, so low doses sit
    between the control and high doses. Unseen combinations and unseen doses of seen
    components get sensible vectors.
``"data"``
    Built from the measured training columns only (the published CMap prior, generalised):
    ``[w_c ||e|| m_c / ||m_c||, w_e e]`` where ``m_c`` is context c's mean training profile
    minus the mean over contexts, and ``e`` is the perturbation's mean effect (profile minus
    the context's control profile, or minus the context mean without a control) in the *other*
    training contexts (for a training column its own context is left out, so training and
    target columns are built alike), divided by the median norm of those effects, plus a
    one-hot of the pair (``weights["identity"]``). The paper used ``w_c = 0.75``, ``w_e = 1``,
    identity 1.5 and the uncentred context mean; here the defaults are ``w_c = 2.5``,
    ``w_e = 1``, identity 0.5 with the centred context mean, chosen by leave-one-out on a
    third of the CMap pairs (``benchmarks/ntk_cmap.py``; the paper's weights are
    ``weights={"data_context": 0.75, "identity": 1.5}``). Perturbations measured in no other
    context get ``e = 0``.

User features (``features=``) are concatenated: a name (a dense ``.obsm`` key of the grid, i.e.
a key of :attr:`GridData.covariates`, or numeric ``.obs`` column(s)), an array or a
:class:`pandas.DataFrame` (e.g. ``grid.uns["fingerprints"]``: tables in ``.uns`` are passed as
objects, not by name) at the level of pairs (``n_contexts * n_perturbations`` rows, grid order), perturbations (indexed by
perturbation label, or ``n_perturbations`` rows) or contexts. Each column is standardised and
the block divided by the square root of its width (weight ``weights["features"]``).

``center``: ``"control"`` (default) regresses the effects (profiles minus the context's control
profile, the mean control where it is missing, the context mean on grids without control) and
adds it back; ``"context"`` subtracts the context's mean treated training profile; ``"mean"``
the per-feature mean of the training columns; ``None`` regresses the raw profiles, as the
paper. With ``"identity"`` alone the scaled-mean identity holds for ``center=None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._labels import parse_perturbation
from .._params import Params, param
from .._sharding import batched_call
from .._utils import RandomState
from ..ntk import _duals
from ._base import GridData, MethodResult, as_targets
from ._registry import register
from ._stats import baseline_profiles, group_means, indicator, measured_rows

_REF = (
    "Radhakrishnan, Stefanakis, Belkin & Uhler, PNAS 2022 (simple, fast and flexible matrix "
    "completion with infinite width neural networks)"
)
Prior = Literal["identity", "onehot", "components", "data"]
PRIORS: tuple[str, ...] = get_args(Prior)
DEFAULT_WEIGHTS = {
    "context": 1.0,
    "perturbation": 1.0,
    "components": 1.0,
    "data_context": 2.5,
    "data_effect": 1.0,
    "features": 1.0,
}
#: default ``weights["identity"]`` with the data prior (1.0 with the "identity" prior, else 0).
IDENTITY_WEIGHT_DATA = 0.5
#: ridges tried by ``reg="auto"`` (multiplied by ``kappa(1) = depth + 1``).
REG_GRID = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
#: show a progress bar when predictions take at least this many chunks.
_PROGRESS_MIN_CHUNKS = 50
#: largest number of (target x training) kernel entries evaluated at once.
_CHUNK_ENTRIES = 2**24


def _check_weights(w: Mapping[str, float] | None) -> str | None:
    accepted = [*DEFAULT_WEIGHTS, "identity"]
    unknown = sorted(set(w or {}) - set(accepted))
    if unknown:
        return f"must have keys among {', '.join(map(repr, accepted))} (unknown: {unknown})"
    return None


def _check_prior(p: str | tuple[str, ...]) -> str | None:
    return "must name at least one prior" if isinstance(p, tuple) and not p else None


@dataclass(frozen=True)
class NtkParams(Params):
    """Parameters of the ``ntk`` method (:func:`ntk`).

    Parameters
    ----------
    prior
        ``"identity"``, ``"onehot"``, ``"components"``, ``"data"`` or a list of them
        (concatenated). ``"auto"`` (default) is ``"data"`` on grids with measured pairs in at
        least two contexts (best on CMap, see ``benchmarks/results/ntk_cmap.md``) and
        ``"components"`` otherwise (one-context combination and dose grids, where the data
        prior has no other context to learn effects from).
    depth
        Number of hidden layers of the ReLU network (1 as published for CMap).
    reg
        Ridge added to the kernel matrix's diagonal, whose entries are ``depth + 1``. A small
        value (default ``1e-6``) only guards the factorisation (near interpolation, as
        published); larger values smooth noisy data. ``"auto"`` picks the ridge from
        ``REG_GRID * (depth + 1)`` that minimises the exact leave-one-pair-out error of the
        training pairs (one eigendecomposition; recorded in ``info``).
    weights
        Block weights (each >= 0), keys ``context``, ``perturbation``, ``components``,
        ``data_context``, ``data_effect``, ``identity``, ``features`` (defaults in
        ``DEFAULT_WEIGHTS``; ``identity`` is 0.5 with the data prior, 1 with the identity
        prior, else 0).
    features
        User features concatenated to the prior: a dense ``.obsm`` key of the grid, numeric
        ``.obs`` column name(s), an array or a DataFrame (pairs, perturbations or contexts;
        pass a table kept in ``grid.uns`` as the object, ``features=grid.uns["fp"]``).
    dose_transform
        Dose map of the ``"components"`` prior: ``"log"``, ``"linear"`` or ``"none"``.
    center
        ``"control"`` (regress effects over the context's control), ``"context"`` (over the
        context's mean treated profile), ``"mean"`` (subtract the feature means of the
        training pairs) or ``None`` (raw profiles, as published).
    dtype
        ``"float64"`` (default, inside a local ``jax.enable_x64`` context) or ``"float32"``.
    backend
        ``"auto"`` (default): numpy/scipy LAPACK when JAX's default device is the CPU, JAX
        otherwise (GPU/TPU); ``"numpy"`` or ``"jax"`` force one. On 2 CPU cores the
        numpy path is faster at every measured shape (``benchmarks/results/ntk_scale_*``:
        compilation, padding and XLA's CPU ``eigh``/Cholesky cost more than they save); the
        arithmetic is the same (predictions agree to ~1e-12). The backend used is recorded
        in ``info["backend"]`` and the rule in ``info["backend_rule"]``.

    """

    prior: Literal["auto"] | Prior | tuple[Prior, ...] = param("auto", check=_check_prior)  # noqa: RUF009
    depth: int = param(1, ge=1, doc="Hidden layers of the ReLU network.")
    reg: float | Literal["auto"] = param(1e-6, ge=0, doc="Ridge, or 'auto' (leave-one-out).")
    weights: Mapping[str, float] | None = param(None, ge=0, check=_check_weights)
    features: str | tuple[str, ...] | np.ndarray | pd.DataFrame | None = param(  # noqa: RUF009
        None, doc="User features of the pairs, perturbations or contexts."
    )
    dose_transform: Literal["log", "linear", "none"] = param("log")
    center: Literal["control", "context", "mean"] | None = param("control")
    dtype: Literal["float64", "float32"] = param("float64")
    backend: Literal["auto", "numpy", "jax"] = param("auto")


# --------------------------------------------------------------------------------------------
# the kernel
# --------------------------------------------------------------------------------------------
def relu_dual(x):
    """Dual activation of the ReLU normalised so that ``phi(1) = 1`` (arc-cosine kernel).

    ``phi(x) = (sqrt(1 - x^2) + (pi - arccos x) x) / pi``; inputs are clipped to [-1, 1].
    The JAX form of :func:`scimpute.ntk.relu_dual` (one implementation, shared with the CNTK).
    """
    return _duals.relu_dual(x, xp=jnp)


def relu_dual_derivative(x):
    """Derivative of :func:`relu_dual`: ``phi'(x) = (pi - arccos x) / pi`` (clipped input)."""
    return _duals.relu_dual_derivative(x, xp=jnp)


def ntk_kernel(x, depth: int = 1):
    """Neural tangent kernel ``kappa_d(x)`` of a fully connected ReLU network of depth ``d``.

    A pure JAX function of the cosine ``x`` between two unit-norm inputs (any shape; clipped
    to [-1, 1]). Recursion: ``Sigma_0 = K_0 = x``, ``Sigma_l = phi(Sigma_{l-1})``,
    ``K_l = Sigma_l + K_{l-1} phi'(Sigma_{l-1})``; returns ``K_depth``.
    ``kappa_d(1) = d + 1``, ``kappa_1(0) = 1 / pi``, ``kappa_2(0) = 0.6857``,
    ``kappa_3(0) = 1.0604``. :func:`scimpute.ntk.fc_ntk` with ``xp=jax.numpy`` (the layer
    step is the one the convolutional NTK uses, :func:`scimpute.ntk.ntk_layer`).

    Parameters
    ----------
    x
        Cosines (array-like).
    depth
        Number of hidden layers, ``>= 1`` (static under ``jit``).

    """
    depth = NtkParams.check_value("ntk_kernel", "depth", depth)
    return _duals.fc_ntk(x, depth, xp=jnp)


# --------------------------------------------------------------------------------------------
# columns and their prior vectors
# --------------------------------------------------------------------------------------------
@dataclass
class ColumnPrior:
    """Feature-prior vectors of matrix columns, in a form that never materialises one-hots.

    The (unnormalised) inner product of columns ``j`` and ``j'`` is::

        dense(j) . dense(j') + w_context [ctx_j == ctx_j'] + w_perturbation [pert_j == pert_j']
        + w_identity [id_j == id_j']

    where the ``w`` are squared block weights. ``dense(cols, train)`` returns the dense part
    for columns given by context and perturbation indices (``train`` marks training columns,
    for priors that leave a column's own measurement out).
    """

    dense: Any  # callable (ci, ai, train) -> (n, d) float64
    dim: int
    w_context: float = 0.0
    w_perturbation: float = 0.0
    w_identity: float = 0.0
    blocks: dict[str, int] = field(default_factory=dict)


def _component_matrix(
    labels: Sequence[str], control: int | None, sep: str, dose_transform: str
) -> tuple[np.ndarray, list[str]]:
    """``(n_perturbations, n_components)`` dose-weighted component vectors of the labels."""
    parsed = [parse_perturbation(str(lab), sep=sep) for lab in labels]
    names: list[str] = []
    doses: dict[str, list[float]] = {}
    for k, comps in enumerate(parsed):
        if control is not None and k == control:
            continue
        for name, dose in comps:
            if name not in doses:
                names.append(name)
                doses[name] = []
            if dose is not None and dose > 0:
                doses[name].append(dose)
    ref = {n: (float(np.median(v)) if v else 1.0) for n, v in doses.items()}
    col = {n: i for i, n in enumerate(names)}
    P = np.zeros((len(parsed), len(names)))
    for k, comps in enumerate(parsed):
        if control is not None and k == control:
            continue
        for name, dose in comps:
            if dose is None or dose_transform == "none":
                s = 1.0
            elif dose < 0:
                raise ValueError(f"Perturbation {labels[k]!r} has a negative dose.")
            elif dose_transform == "log":
                s = math.log2(1.0 + dose / ref[name])
            else:
                s = dose / ref[name]
            P[k, col[name]] += s
    return P, names


def _data_prior(data: GridData, w_context: float, w_effect: float):
    """Dense function of the ``"data"`` prior (see the module docstring)."""
    train = data.measured
    gm = group_means(data)
    ci, _, ym = measured_rows(data, train)
    C, A, p = data.Y.shape
    ctx_sum = np.asarray(indicator(ci, C) @ ym)
    ctx_n = np.bincount(ci, minlength=C).astype(float)
    has_ctx = ctx_n > 0
    mu = np.zeros((C, p))
    mu[has_ctx] = ctx_sum[has_ctx] / ctx_n[has_ctx, None]
    if has_ctx.sum() > 1:
        mu[has_ctx] -= mu[has_ctx].mean(axis=0)
    mu_norm = np.linalg.norm(mu, axis=1)
    mu_unit = np.divide(mu, mu_norm[:, None], out=np.zeros_like(mu), where=mu_norm[:, None] > 0)

    b, has_b = baseline_profiles(data, gm)
    tci, tai, tym = measured_rows(data)  # treated measured
    keep = has_b[tci]
    tci, tai, tym = tci[keep], tai[keep], tym[keep]
    eff = tym - b[tci]
    e_sum = np.asarray(indicator(tai, A) @ eff)
    e_n = np.bincount(tai, minlength=A).astype(float)
    own = np.full((C, A), -1, dtype=np.int64)  # row of eff for each measured treated pair
    own[tci, tai] = np.arange(tci.size)
    pos = e_n > 0
    scale = 1.0
    if pos.any():
        norms = np.linalg.norm(e_sum[pos] / e_n[pos, None], axis=1)
        med = float(np.median(norms))
        scale = med if med > 0 else 1.0

    def dense(cidx: np.ndarray, aidx: np.ndarray, is_train: np.ndarray) -> np.ndarray:
        s = e_sum[aidx].copy()
        n = e_n[aidx].copy()
        k = own[cidx, aidx]
        leave = is_train & (k >= 0)
        s[leave] -= eff[k[leave]]
        n[leave] -= 1
        e = np.divide(s, n[:, None], out=np.zeros_like(s), where=n[:, None] > 0) / scale
        if data.control is not None:
            e[aidx == data.control] = 0.0
        enorm = np.linalg.norm(e, axis=1, keepdims=True)
        return np.hstack([w_context * enorm * mu_unit[cidx], w_effect * e])

    return dense, 2 * p


def _resolve_user_features(data: GridData, features) -> tuple[np.ndarray, str] | None:
    """User features as ``(array, level)`` with level in {"pair", "perturbation", "context"}."""
    if features is None:
        return None
    C, A = data.n_contexts, data.n_perturbations
    value = features
    if isinstance(features, str | tuple):
        names = [features] if isinstance(features, str) else list(features)
        covariates = data.covariates
        obs = data.obs
        if len(names) == 1 and names[0] in covariates:
            value = covariates[names[0]]
        elif obs is not None and all(n in obs.columns for n in names):
            cols = []
            for n in names:
                col = obs[n]
                if not pd.api.types.is_numeric_dtype(col):
                    raise ValueError(
                        f"ntk: features: obs column {n!r} is not numeric; encode it first (e.g. "
                        "one-hot with pandas.get_dummies) and pass the columns or an array."
                    )
                cols.append(col.to_numpy(dtype=float))
            value = np.column_stack(cols)
        else:
            avail = sorted(list(covariates) + ([] if obs is None else list(obs.columns)))
            shown = ", ".join(map(repr, avail[:20])) or "none"
            raise KeyError(
                f"ntk: features={features!r} is neither a dense .obsm key nor numeric .obs "
                f"column(s) of the grid (they are: {shown}). Pass an array or a DataFrame "
                "instead, e.g. features=grid.uns[name] for a table kept in .uns."
            )
    if isinstance(value, pd.DataFrame):
        idx = value.index.astype(str)
        perts = pd.Index(np.asarray(data.perturbations, dtype=str))
        ctxs = pd.Index(np.asarray(data.contexts, dtype=str))
        if set(perts) <= set(idx):
            return _as_feature_array(value.loc[perts].to_numpy(), A), "perturbation"
        if set(ctxs) <= set(idx):
            return _as_feature_array(value.loc[ctxs].to_numpy(), C), "context"
        if len(value) == C * A:
            return _as_feature_array(value.to_numpy(), C * A), "pair"
        raise ValueError(
            "features: a DataFrame must be indexed by all perturbation labels or all context "
            f"labels of the grid, or have one row per pair ({C * A})."
        )
    arr = np.asarray(value)
    if arr.ndim == 1:
        arr = arr[:, None]
    n = arr.shape[0]
    levels = [lvl for lvl, m in (("pair", C * A), ("perturbation", A), ("context", C)) if n == m]
    if not levels:
        raise ValueError(
            f"features has {n} rows; expected {C * A} (pairs, grid order), {A} (perturbations) "
            f"or {C} (contexts)."
        )
    if len(levels) > 1:
        raise ValueError(
            f"features has {n} rows, which matches several levels ({levels}); pass a DataFrame "
            "indexed by perturbation or context labels instead."
        )
    return _as_feature_array(arr, n), levels[0]


def _as_feature_array(arr: np.ndarray, n: int) -> np.ndarray:
    try:
        arr = np.asarray(arr, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError("features must be numeric.") from err
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] != n or arr.ndim != 2:
        raise ValueError(f"features must have shape ({n}, d), got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or infinite values; impute or drop them.")
    sd = arr.std(axis=0)
    keep = sd > 0
    if not keep.any():
        raise ValueError("features are constant: they carry no information.")
    arr = (arr[:, keep] - arr[:, keep].mean(axis=0)) / sd[keep]
    return arr / np.sqrt(arr.shape[1])


def _normalise_prior(prior) -> list[str]:
    """The prior blocks as a list without repeats (values checked by :class:`NtkParams`)."""
    names = [prior] if isinstance(prior, str) else list(prior)
    return list(dict.fromkeys(names))


def _normalise_weights(weights, blocks: list[str]) -> dict[str, float]:
    """Every block weight: the defaults updated by ``weights`` (checked by the spec)."""
    w = dict(DEFAULT_WEIGHTS)
    w["identity"] = (
        1.0 if "identity" in blocks else IDENTITY_WEIGHT_DATA if "data" in blocks else 0.0
    )
    w.update({k: float(v) for k, v in (weights or {}).items()})
    return w


def build_prior(
    data: GridData,
    prior: str | Sequence[str] = "data",
    *,
    weights: Mapping[str, float] | None = None,
    features=None,
    dose_transform: str = "log",
) -> ColumnPrior:
    """The feature prior of every (context, perturbation) column of a grid.

    Everything data-driven is computed from ``data.measured`` only (the training columns).
    See the module docstring for the blocks and :class:`NtkParams` for the parameters
    (already checked: this function does not re-check them).
    """
    blocks = _normalise_prior(prior)
    w = _normalise_weights(weights, blocks)
    sep = data.combination_sep

    w_ctx = w_pert = 0.0
    if "onehot" in blocks or "components" in blocks:
        w_ctx = w["context"] ** 2
    if "onehot" in blocks:
        w_pert = w["perturbation"] ** 2
    w_id = w["identity"] ** 2

    parts = []  # (name, dim, fn(ci, ai, train) -> array)
    if "components" in blocks:
        P, _ = _component_matrix(list(data.perturbations), data.control, sep, dose_transform)
        P = w["components"] * P
        parts.append(("components", P.shape[1], lambda ci, ai, tr, P=P: P[ai]))
    if "data" in blocks:
        fn, d = _data_prior(data, w["data_context"], w["data_effect"])
        parts.append(("data", d, fn))
    user = _resolve_user_features(data, features)
    if user is not None:
        arr, level = user
        arr = w["features"] * arr
        A = data.n_perturbations
        if level == "pair":
            fn = lambda ci, ai, tr, arr=arr: arr[ci * A + ai]  # noqa: E731
        elif level == "perturbation":
            fn = lambda ci, ai, tr, arr=arr: arr[ai]  # noqa: E731
        else:
            fn = lambda ci, ai, tr, arr=arr: arr[ci]  # noqa: E731
        parts.append((f"features:{level}", arr.shape[1], fn))

    dim = int(sum(d for _, d, _ in parts))

    def dense(ci: np.ndarray, ai: np.ndarray, train: np.ndarray) -> np.ndarray:
        ci = np.asarray(ci, dtype=np.int64)
        ai = np.asarray(ai, dtype=np.int64)
        train = np.asarray(train, dtype=bool)
        if not parts:
            return np.zeros((ci.size, 1))
        return np.hstack([np.asarray(fn(ci, ai, train), dtype=np.float64) for _, _, fn in parts])

    return ColumnPrior(
        dense=dense,
        dim=max(dim, 1),
        w_context=w_ctx,
        w_perturbation=w_pert,
        w_identity=w_id,
        blocks={name: int(d) for name, d, _ in parts},
    )


# --------------------------------------------------------------------------------------------
# jit-compiled kernel regression
# --------------------------------------------------------------------------------------------
def _bucket(n: int) -> int:
    """Padded size: at most 25% above ``n``, a few sizes per octave, at least 16."""
    n = max(int(n), 1)
    if n <= 16:
        return 16
    step = 2 ** max(math.floor(math.log2(n)) - 2, 2)
    return int(math.ceil(n / step) * step)


def _cosines(FL, cL, aL, iL, nL, FR, cR, aR, iR, nR, w):
    G = FL @ FR.T
    G = G + w[0] * (cL[:, None] == cR[None, :]) + w[1] * (aL[:, None] == aR[None, :])
    G = G + w[2] * (iL[:, None] == iR[None, :])
    return G / (nL[:, None] * nR[None, :])


def _norms(F, w):
    n2 = jnp.sum(F * F, axis=1) + w[0] + w[1] + w[2]
    return jnp.sqrt(jnp.where(n2 > 0, n2, 1.0))


@partial(jax.jit, static_argnames=("depth",))
def _train_kernel(F, c, a, i, mask, w, depth):
    """Kernel matrix of the (padded) training columns; padded rows/columns are the identity."""
    n = _norms(F, w)
    cos = _cosines(F, c, a, i, n, F, c, a, i, n, w)
    eye = jnp.eye(F.shape[0], dtype=bool)
    cos = jnp.where(eye, 1.0, cos)
    m2 = mask[:, None] & mask[None, :]
    K = jnp.where(m2, ntk_kernel(cos, depth), 0.0)
    return K + jnp.diag(jnp.where(mask, 0.0, 1.0).astype(K.dtype)), n


@jax.jit
def _loo_errors(K, mask, Y, regs):
    """Exact leave-one-column-out squared error of kernel ridge for each ridge in ``regs``.

    With ``A = (K + reg I)^{-1}`` and ``alpha = A Y``, the leave-one-out residual of column
    ``j`` is ``alpha_j / A_jj`` (summed over all feature rows). One eigendecomposition serves
    every ``reg``.
    """
    s, U = jnp.linalg.eigh(K)
    UtY = U.T @ Y
    U2 = U * U

    def one(r):
        dinv = 1.0 / (s + r)
        alpha = U @ (dinv[:, None] * UtY)
        diag = U2 @ dinv
        res = alpha / diag[:, None]
        return jnp.sum(jnp.where(mask[:, None], res * res, 0.0))

    return jax.lax.map(one, regs)


@jax.jit
def _fit(K, mask, Y, reg):
    """Factorise ``K + reg I`` (Cholesky) and solve for ``[Y, 1]``.

    Returns ``alpha`` (n, q + 1) (last column: the weights of a constant 1, for weight sums)
    and solve statistics.
    """
    K = K + jnp.diag(jnp.where(mask, reg, 0.0).astype(K.dtype))
    L = jnp.linalg.cholesky(K)
    rhs = jnp.concatenate([Y, mask[:, None].astype(Y.dtype)], axis=1)
    alpha = jax.scipy.linalg.cho_solve((L, True), rhs)
    resid = jnp.linalg.norm(K @ alpha - rhs) / jnp.maximum(jnp.linalg.norm(rhs), 1e-300)
    d = jnp.where(mask, jnp.abs(jnp.diagonal(L)), jnp.nan)
    stats = {
        "cond_lower_bound": (jnp.nanmax(d) / jnp.nanmin(d)) ** 2,
        "relative_residual": resid,
        "finite": jnp.all(jnp.isfinite(alpha)),
    }
    return alpha, stats


@partial(jax.jit, static_argnames=("depth",))
def _predict(FT, cT, aT, iT, F, c, a, i, nO, mask, alpha, w, depth):
    nT = _norms(FT, w)
    cos = _cosines(FT, cT, aT, iT, nT, F, c, a, i, nO, w)
    K = jnp.where(mask[None, :], ntk_kernel(cos, depth), 0.0)
    out = K @ alpha
    return out, jnp.max(jnp.where(mask[None, :], cos, -jnp.inf), axis=1)


@dataclass
class _Columns:
    F: np.ndarray
    c: np.ndarray
    a: np.ndarray
    i: np.ndarray

    def take(self, idx):
        return _Columns(self.F[idx], self.c[idx], self.a[idx], self.i[idx])

    def padded(self, size: int, dtype) -> tuple:
        n = self.F.shape[0]
        pad = size - n
        F = np.zeros((size, self.F.shape[1]), dtype=dtype)
        F[:n] = self.F
        neg = -1 - np.arange(pad)  # distinct codes that match nothing real
        c = np.concatenate([self.c, neg]).astype(np.int64)
        a = np.concatenate([self.a, neg]).astype(np.int64)
        i = np.concatenate([self.i, neg]).astype(np.int64)
        mask = np.arange(size) < n
        return F, c, a, i, mask


BACKEND_RULE = "numpy/scipy LAPACK when jax.default_backend() == 'cpu', else JAX"


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"jax"`` for ``backend="auto"`` (see :data:`BACKEND_RULE`)."""
    if backend != "auto":
        return backend
    return "numpy" if jax.default_backend() == "cpu" else "jax"


def _numpy_kernel(x, depth: int):
    from ._ntk_numpy import ntk_kernel_numpy

    return ntk_kernel_numpy(x, depth)


def _kernel_regression_numpy(train, Y, targets, weights, depth, reg, np_dtype):
    """:func:`kernel_regression` in numpy/scipy LAPACK (no padding, no compilation)."""
    import scipy.linalg as sla

    w = np.asarray(weights, dtype=np_dtype)
    F = np.asarray(train.F, dtype=np_dtype)
    n, q = F.shape[0], Y.shape[1]

    def norms(G):
        n2 = np.einsum("ij,ij->i", G, G) + w.sum()
        return np.sqrt(np.where(n2 > 0, n2, 1.0))

    nO = norms(F)
    cos = _cosines(F, train.c, train.a, train.i, nO, F, train.c, train.a, train.i, nO, w)
    np.fill_diagonal(cos, 1.0)
    K = _numpy_kernel(cos, depth).astype(np_dtype, copy=False)
    del cos
    Yd = np.asarray(Y, dtype=np_dtype)
    loo = grid = None
    if isinstance(reg, str):  # exact leave-one-out, one eigendecomposition
        grid = np.asarray(REG_GRID, dtype=np_dtype) * (depth + 1)
        s_, U = sla.eigh(K, driver="evd")
        UtY, U2 = U.T @ Yd, U * U
        loo = np.empty(grid.size)
        for k, r in enumerate(grid):
            dinv = 1.0 / (s_ + r)
            res = (U @ (dinv[:, None] * UtY)) / (U2 @ dinv)[:, None]
            loo[k] = np.sum(res * res)
        del U, U2, UtY
        loo = np.where(np.isfinite(loo), loo, np.inf)
        reg = float(grid[int(np.argmin(loo))])
    K.flat[:: n + 1] += reg
    rhs = np.concatenate([Yd, np.ones((n, 1), dtype=np_dtype)], axis=1)
    try:
        L = sla.cholesky(K, lower=True, check_finite=False)
        alpha = sla.cho_solve((L, True), rhs, check_finite=False)
        finite = bool(np.isfinite(alpha).all())
    except np.linalg.LinAlgError:
        finite = False
    if not finite:
        raise np.linalg.LinAlgError(
            "The NTK Gram matrix is not positive definite in this precision: increase "
            "`reg` (e.g. 1e-6), use dtype='float64', or add the 'identity' prior."
        )
    resid = np.linalg.norm(K @ alpha - rhs) / max(np.linalg.norm(rhs), 1e-300)
    d = np.abs(np.diagonal(L))
    del K, L
    stats = {
        "cond_lower_bound": float((d.max() / d.min()) ** 2),
        "relative_residual": float(resid),
        "finite": 1.0,
        "reg": float(reg),
    }
    if loo is not None:
        stats["loo_errors"] = loo / max(n * q, 1)
        stats["reg_grid"] = grid
    n_t = targets.n if callable(targets) else targets.F.shape[0]
    chunk = max(16, _CHUNK_ENTRIES // max(n, 1))
    preds, wsum, maxcos = [], [], []
    for start in range(0, n_t, chunk):
        stop = min(start + chunk, n_t)
        tc = targets(start, stop) if callable(targets) else targets.take(slice(start, stop))
        FT = np.asarray(tc.F, dtype=np_dtype)
        cosT = _cosines(FT, tc.c, tc.a, tc.i, norms(FT), F, train.c, train.a, train.i, nO, w)
        out = _numpy_kernel(cosT, depth).astype(np_dtype, copy=False) @ alpha
        preds.append(np.asarray(out[:, :q], dtype=np.float64))
        wsum.append(np.asarray(out[:, q], dtype=np.float64))
        maxcos.append(cosT.max(axis=1).astype(np.float64))
    stats.update({"n_observed": n, "n_padded": n, "n_rows": q, "n_targets": n_t})
    if n_t == 0:
        return np.zeros((0, q)), np.zeros(0), np.zeros(0), stats
    return np.vstack(preds), np.concatenate(wsum), np.concatenate(maxcos), stats


def kernel_regression(
    train: _Columns,
    Y: np.ndarray,
    targets: _Columns | Any,
    *,
    weights: tuple[float, float, float],
    depth: int,
    reg: float,
    dtype: str = "float64",
    backend: str = "jax",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One observation pattern: predictions of ``Y``'s columns at the target columns.

    ``Y`` is ``(n_train, q)`` (training columns x feature rows sharing the pattern);
    ``targets`` is a :class:`_Columns` or a callable ``(start, stop) -> _Columns`` with a
    ``len`` attribute ``n`` (to build target priors chunk by chunk). Returns
    ``(prediction (n_targets, q), weight_sum (n_targets,), max_cosine (n_targets,), stats)``.
    """
    x64 = dtype == "float64"
    np_dtype = np.float64 if x64 else np.float32
    if resolve_backend(backend) == "numpy":
        return _kernel_regression_numpy(train, Y, targets, weights, depth, reg, np_dtype)
    n = train.F.shape[0]
    q = Y.shape[1]
    n_pad = _bucket(n)
    # full-precision matmuls: GPUs would otherwise use TF32 for float32 kernels
    with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
        F, c, a, i, mask = train.padded(n_pad, np_dtype)
        Yp = np.zeros((n_pad, q), dtype=np_dtype)
        Yp[:n] = Y
        w = jnp.asarray(weights, dtype=np_dtype)
        K, nO = _train_kernel(
            jnp.asarray(F), jnp.asarray(c), jnp.asarray(a), jnp.asarray(i), jnp.asarray(mask),
            w, depth,
        )  # fmt: skip
        Yj = jnp.asarray(Yp)
        loo = None
        if isinstance(reg, str):  # "auto": exact leave-one-out over a grid of ridges
            grid = np.asarray(REG_GRID, dtype=np_dtype) * (depth + 1)
            loo = np.asarray(_loo_errors(K, jnp.asarray(mask), Yj, jnp.asarray(grid)))
            loo = np.where(np.isfinite(loo), loo, np.inf)
            reg = float(grid[int(np.argmin(loo))])
        alpha, stats = _fit(K, jnp.asarray(mask), Yj, jnp.asarray(reg, dtype=np_dtype))
        del K
        stats = {k: float(v) for k, v in stats.items()}
        stats["reg"] = float(reg)
        if loo is not None:
            stats["loo_errors"] = loo / max(n * q, 1)
            stats["reg_grid"] = grid
        if not stats["finite"]:
            raise np.linalg.LinAlgError(
                "The NTK Gram matrix is not positive definite in this precision: increase "
                "`reg` (e.g. 1e-6), use dtype='float64', or add the 'identity' prior."
            )
        n_t = targets.n if callable(targets) else targets.F.shape[0]
        chunk = int(
            min(_bucket(max(n_t, 1)), max(16, 2 ** int(math.log2(_CHUNK_ENTRIES // n_pad))))
        )
        preds, wsum, maxcos = [], [], []
        args = (jnp.asarray(F), jnp.asarray(c), jnp.asarray(a), jnp.asarray(i), nO)
        m = jnp.asarray(mask)
        starts = range(0, n_t, chunk)
        bar = tqdm(starts, desc="ntk predict", disable=len(starts) < _PROGRESS_MIN_CHUNKS)
        for start in bar:
            stop = min(start + chunk, n_t)
            tcols = targets(start, stop) if callable(targets) else targets.take(slice(start, stop))
            FT, cT, aT, iT, _ = tcols.padded(chunk, np_dtype)
            out, mc = batched_call(
                _predict, (jnp.asarray(FT), jnp.asarray(cT), jnp.asarray(aT), jnp.asarray(iT)),
                (*args, m, alpha, w), static={"depth": depth},
            )  # fmt: skip
            out = np.asarray(out, dtype=np.float64)[: stop - start]
            preds.append(out[:, :q])
            wsum.append(out[:, q])
            maxcos.append(np.asarray(mc, dtype=np.float64)[: stop - start])
    stats.update({"n_observed": n, "n_padded": n_pad, "n_rows": q, "n_targets": n_t})
    if n_t == 0:
        return np.zeros((0, q)), np.zeros(0), np.zeros(0), stats
    return np.vstack(preds), np.concatenate(wsum), np.concatenate(maxcos), stats


# --------------------------------------------------------------------------------------------
# the general matrix form (arbitrary observation masks)
# --------------------------------------------------------------------------------------------
def ntk_complete(
    M: np.ndarray,
    observed: np.ndarray,
    Z: np.ndarray,
    *,
    depth: int = 1,
    reg: float = 1e-6,
    dtype: str = "float64",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Complete a matrix by NTK regression, one factorisation per observation pattern.

    Parameters
    ----------
    M
        ``(n_rows, n_columns)`` matrix (rows: features; columns: samples). Unobserved entries
        are ignored (may be NaN).
    observed
        ``(n_rows, n_columns)`` bool mask of the observed entries; rows may differ.
    Z
        ``(n_columns, d)`` feature-prior vectors of the columns (normalised here to unit norm;
        an all-zero row is orthogonal to every other column).
    depth
        Depth of the ReLU network whose NTK is used.
    reg
        Ridge added to the diagonal of the kernel matrix (kernel values are of order
        ``kappa(1) = depth + 1``).
    dtype
        ``"float64"`` (local ``jax.enable_x64``) or ``"float32"``.

    Returns
    -------
    ``(completed, patterns)``: the matrix with every unobserved entry predicted (observed
    entries kept) and per-pattern statistics (``n_observed``, ``n_rows``, ``n_padded``,
    ``cond_lower_bound``, ``relative_residual``), one entry per distinct pattern.

    """
    depth = NtkParams.check_value("ntk_complete", "depth", depth)
    reg = NtkParams.check_value("ntk_complete", "reg", reg)
    dtype = NtkParams.check_value("ntk_complete", "dtype", dtype)
    M = np.asarray(M, dtype=np.float64)
    observed = np.asarray(observed, dtype=bool)
    Z = np.asarray(Z, dtype=np.float64)
    if M.ndim != 2 or observed.shape != M.shape:
        raise ValueError(
            f"M and observed must be 2-d of the same shape, got {M.shape}, {observed.shape}."
        )
    if Z.ndim != 2 or Z.shape[0] != M.shape[1]:
        raise ValueError(f"Z must have shape ({M.shape[1]}, d), got {Z.shape}.")
    if not np.isfinite(M[observed]).all():
        raise ValueError("M has NaN or inf among its observed entries.")
    n_cols = M.shape[1]
    idx = np.arange(n_cols)
    allc = _Columns(Z, idx, idx, idx)
    out = M.copy()
    patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    stats_list = []
    for k, pat in enumerate(patterns):
        rows = np.nonzero(inverse == k)[0]
        obs_cols = np.nonzero(pat)[0]
        tgt_cols = np.nonzero(~pat)[0]
        if obs_cols.size == 0:
            raise ValueError(f"{rows.size} row(s) have no observed entry: nothing to learn from.")
        pred, _, _, st = kernel_regression(
            allc.take(obs_cols), M[np.ix_(rows, obs_cols)].T, allc.take(tgt_cols),
            weights=(0.0, 0.0, 0.0), depth=depth, reg=reg, dtype=dtype,
        )  # fmt: skip
        out[np.ix_(rows, tgt_cols)] = pred.T
        stats_list.append(st)
    return out, _stack_stats(stats_list)


def _stack_stats(stats_list: list[dict]) -> dict[str, np.ndarray]:
    keys = [
        "n_observed", "n_padded", "n_rows", "n_targets", "reg", "cond_lower_bound",
        "relative_residual",
    ]  # fmt: skip
    out = {k: np.asarray([s[k] for s in stats_list]) for k in keys}
    if stats_list and "loo_errors" in stats_list[0]:
        out["reg_grid"] = np.asarray(stats_list[0]["reg_grid"])
        out["loo_errors"] = np.vstack([s["loo_errors"] for s in stats_list])
    return out


# --------------------------------------------------------------------------------------------
# the registered method
# --------------------------------------------------------------------------------------------
def _centering(data: GridData, center) -> np.ndarray:
    """``(C, p)`` offset subtracted from every profile of a context before the regression."""
    C, _, p = data.Y.shape
    _, _, ym = measured_rows(data, data.measured)
    grand = ym.mean(axis=0)
    if center is None:
        return np.zeros((C, p))
    if center == "mean":
        return np.broadcast_to(grand, (C, p)).copy()
    gm = group_means(data)
    if center == "context":
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = gm.ctx_sum / gm.ctx_n[:, None]
        has = gm.ctx_n > 0
        fill = cm[has].mean(axis=0) if has.any() else grand
        return np.where(has[:, None], cm, fill)
    # "control": the context's control profile (the mean control where it is missing)
    base, has = baseline_profiles(data, gm)
    if not has.any():
        return np.broadcast_to(grand, (C, p)).copy()
    fill = base[has].mean(axis=0)
    return np.where(has[:, None], np.nan_to_num(base), fill)


def _auto_prior(data: GridData) -> str:
    """``prior="auto"``: the data prior where two or more contexts have treated pairs."""
    return "data" if int(data.treated_mask().any(axis=1).sum()) >= 2 else "components"


@register(
    "ntk",
    description="NTK matrix completion: infinite-width ReLU kernel regression over pair priors.",
    reference=_REF,
    params=NtkParams,
)
def ntk(
    data: GridData,
    targets,
    params: NtkParams | None = None,
    *,
    random_state: RandomState = 0,
) -> MethodResult:
    """Predict each target pair by NTK kernel regression over the measured pairs.

    Every feature (gene) is an independent kernel regression whose samples are the measured
    (context, perturbation) pairs, with the kernel ``kappa_depth(z . z')`` of the pairs'
    feature-prior vectors ``z`` (see :mod:`scimpute.methods.ntk`). All features share one
    kernel matrix, so one Cholesky factorisation serves the whole grid.

    Parameters
    ----------
    data
        The grid's arrays; ``data.measured`` marks the training pairs.
    targets
        ``(n, 2)`` (context, perturbation) index pairs to predict.
    params
        :class:`NtkParams` (prior, depth, reg, weights, features, dose_transform, center,
        dtype; documented there); ``None`` for the defaults.
    random_state
        Unused (the estimator is deterministic); accepted for a uniform signature.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["weight_sum"]`` (the sum of the
    kernel regression weights, 1 = an average, smaller = shrinkage towards the centre) and
    ``per_target["max_similarity"]`` (largest prior cosine to a training pair), and ``info``
    with the depth, prior, regularisation, weights, and the per-pattern solve statistics
    (``info["patterns"]``: ``n_observed``, ``n_padded``, ``n_rows``, ``n_targets``,
    ``cond_lower_bound``, ``relative_residual``).

    """
    p = NtkParams() if params is None else params
    t = as_targets(targets)
    depth, reg, dtype, center = p.depth, p.reg, p.dtype, p.center
    backend = resolve_backend(p.backend)
    prior = _auto_prior(data) if p.prior == "auto" else p.prior
    blocks = _normalise_prior(prior)
    if "data" in blocks and int(data.treated_mask().any(axis=1).sum()) < 2:
        raise ValueError(
            "ntk: prior='data' needs measured pairs in at least two contexts (it uses the "
            "perturbation's effect in other contexts); this grid has fewer. Use "
            "prior='components' or 'onehot'."
        )
    cp = build_prior(
        data, blocks, weights=p.weights, features=p.features, dose_transform=p.dose_transform
    )
    A = data.n_perturbations
    tci, tai = np.nonzero(data.measured)
    offset = _centering(data, center)
    Y = np.asarray(data.Y[tci, tai], dtype=np.float64) - offset[tci]
    train = _Columns(cp.dense(tci, tai, np.ones(tci.size, bool)), tci, tai, tci * A + tai)

    class _Targets:
        n = t.shape[0]

        def __call__(self, start, stop):
            c, a = t[start:stop, 0], t[start:stop, 1]
            return _Columns(cp.dense(c, a, np.zeros(c.size, bool)), c, a, c * A + a)

    pred, wsum, maxcos, st = kernel_regression(
        train, Y, _Targets(), weights=(cp.w_context, cp.w_perturbation, cp.w_identity),
        depth=depth, reg=reg, dtype=dtype, backend=backend,
    )  # fmt: skip
    pred = pred + offset[t[:, 0]]
    w = _normalise_weights(p.weights, blocks)
    info = {
        "depth": depth,
        "prior": blocks,
        "reg": reg,
        "reg_selected": float(st["reg"]),
        "center": "None" if center is None else center,
        "dtype": dtype,
        "backend": backend,
        "backend_rule": BACKEND_RULE if p.backend == "auto" else f"backend={p.backend!r}",
        "dose_transform": p.dose_transform,
        "weights": w,
        "prior_dims": cp.blocks,
        "kernel_at_0": float(ntk_kernel(0.0, depth)),
        "kernel_at_1": float(depth + 1),
        "n_patterns": 1,
        "patterns": _stack_stats([st]),
    }
    return MethodResult(
        prediction=pred,
        source=np.full(t.shape[0], "ntk", dtype=object),
        per_target={"weight_sum": wsum, "max_similarity": maxcos},
        info=info,
    )

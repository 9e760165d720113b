r"""Synthetic interventions: impute a pair by regressing it on donor profiles.

The estimator of Agarwal, Shah & Shen (2020), generalised to arbitrary sparsity patterns by
Squires, Shen, Agarwal, Shah & Uhler (CLeaR 2022). For a target pair (context c,
perturbation a) that is not measured:

``donors="perturbations"`` (SI-Action, the default)
    Donors are perturbations measured in c; training contexts are contexts where a and all
    chosen donors are measured. The profiles of a over the training contexts (features of
    all training contexts stacked as samples) are regressed on the donors' profiles; the
    prediction applies the weights to c's donor profiles:
    ``y[c, a] = sum_d w_d y[c, d] + b``.
``donors="contexts"`` (SI-Context)
    The same with contexts and perturbations swapped: donors are contexts where a is
    measured, training units are perturbations measured in c and in every donor context.

Below, "units" are contexts for SI-Action and perturbations for SI-Context.

Greedy donor path (deterministic)
    Candidates are the donors measured in the target's unit, ordered by the number of units
    they are measured in (more first), then by grid order. The training units start as the
    units where the target is measured. Repeatedly: every candidate measured in all current
    training units is added (in that order; ``max_donors`` caps the total); then the
    candidate measured in the most current training units is chosen (ties: the same order),
    the training units shrink to where it is measured, and it joins in the next step. The
    path stops when no remaining candidate is measured in any training unit, when the
    candidates run out or when ``max_donors`` is reached. Each (training units, donors)
    state before a shrink and at the end is a *level*: later levels have more donors and
    fewer training units. (The published code picks the next donor by comparing Python sets
    with ``max``, which depends on hash order; this rule does not.)
Regression (centred principal component regression, optional ridge)
    With the design ``X`` (stacked features x donors) and response ``y``, both centred by
    their means, and ``X^T X = V diag(lambda) V^T``, the weights are
    ``w = V diag(f) V^T X^T y`` with ``f_l = 1 / (lambda_l + mu)`` for retained components
    and 0 otherwise; ``b = mean(y) - mean(X) w``. Components are retained by ``rank`` (an
    int), by ``rank="gavish_donoho"`` (singular values above ``omega(beta) median``,
    ``omega(beta) = 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43``, ``beta`` the aspect
    ratio), or else by the smallest number carrying ``energy`` of ``sum lambda``
    (``energy=1`` keeps every non-zero component: minimum-norm least squares). Components
    with ``lambda <= 1e-10 lambda_max`` are always dropped. ``mu = ridge * mean(lambda)``.
Affine weights (``sum_to_one=True``, preset ``"validated"``)
    Before the regression every profile is centred by the mean of the donors' profiles in
    its unit; the resulting weights sum to one, so a component shared by all profiles of a
    unit (a cell line's baseline) transfers exactly, and ridge shrinks towards the donors'
    mean. ``sum_to_one=False`` is the published, unconstrained regression.
Validation and selection (``select="validation"``, preset ``"validated"``)
    Levels with fewer than ``min_train_units`` training units (default 1) are not used.
    Every remaining level and every regularisation (``rank`` x ``ridge`` when either is a
    list; by default ridge in 0, 0.01, 0.1, 1) is scored by validation:
    leave-one-training-unit-out when the level has at least two training units (the error
    of transferring the weights to a unit they were not fitted on), otherwise 5-fold
    cross-validation over the features of its single training unit (folds drawn from
    ``random_state``; such a level is used only if its donors number at least
    ``single_unit_redundancy`` times the principal components carrying 90% of its design's
    energy). The (level, regularisation) with the smallest mean squared validation error
    is used (ties: the earlier level, then the earlier regularisation).
    ``select="max_donors"`` uses the last level only (the published estimator), choosing
    among regularisations the same way.
Per-pair fallback (``fallback=True``, preset ``"validated"``)
    ``context_mean`` is scored on the same held-out pairs (for each held-out training pair,
    the mean of its context's other measured non-control profiles). Unless the fit's
    validation error is below ``(1 - fallback_margin)`` (default 0.9) times that of
    ``context_mean`` (and it wins on at least ``min_win_fraction`` of the held-out units),
    the pair is imputed by ``context_mean``. The margin guards against the optimism of
    picking the best of several validated candidates.

Presets
    ``preset="validated"`` (the default) validates the path level and the ridge, uses affine
    weights and the per-pair fallback; single-training-unit levels are allowed when their
    donors number at least 1.5 times the components carrying 90% of the design's energy.
    ``preset="published"`` is the literature's estimator: the last level of the path,
    minimum-norm least squares, free weights, no fallback. On CMap leave-one-out the two are
    within 0.001 median R2 for SI-Action (0.877 / 0.876) and the validated one is 0.025
    better for SI-Context (0.744 / 0.719); on the simulator (70 x 500, rank 10) both
    recover the truth (median R2 0.655 / 0.656, context_mean 0.547), and on a simulation
    with a strong per-context component and noise the published estimator's error is 1.4
    times that of ``context_mean`` while the validated one matches it
    (``benchmarks/results/si_*.md``).

Fallbacks, counted in ``.uns[key]["fallback_reasons"]`` and named in ``source``:
``no_training_units`` (the perturbation is measured in no other context; for SI-Context,
the context has no measured perturbation), ``no_donors`` (no candidate donor is measured in
any training unit), ``few_training_units`` (every level has fewer than
``min_train_units`` training units) and ``validation`` (the fit did not beat
``context_mean`` on held-out pairs) all use ``context_mean``, which itself falls back to
``perturbation_mean`` for a context without measured non-control pairs, then to the global
mean. Control rows are donors (and training units) like any profile but never targets.

The computation uses the Gram-matrix algebra of the stacked design (``X^T X`` is a sum of
per-unit Gram matrices, precomputed once); targets that share a (unit, training units,
donors) combination share one eigendecomposition, and all are solved in padded batches by
jit-compiled JAX kernels in float64 (:mod:`._si_kernels`). A plain per-pair numpy version
of the same estimator is :func:`scimpute.methods._si_reference.reference_si`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import jax
import numpy as np
import scipy.sparse as sp

from .._utils import check_random_state
from . import _si_engine as E
from ._base import GridData, MethodResult, as_targets
from ._registry import register
from .baselines import _chain, group_means

NAME = "synthetic_interventions"
_REF = (
    "Agarwal, Shah & Shen, Synthetic interventions (2020); Squires, Shen, Agarwal, Shah & "
    "Uhler, Causal imputation via synthetic interventions, CLeaR 2022"
)
#: names of the per-pair diagnostics (written to ``grid.obs[f"{key}_{name}"]``)
DIAGNOSTICS = (
    "n_donors",
    "n_train",
    "r2_train",
    "r2_heldout",
    "validation_mse",
    "context_mean_validation_mse",
    "ridge",
    "subspace_stat",
    "subspace_pass",
)
FALLBACK_REASONS = ("no_training_units", "no_donors", "few_training_units", "validation")


def _as_list(x) -> list:
    if isinstance(x, str) or x is None or np.isscalar(x):
        return [x]
    return list(x)


PRESETS = {
    "published": {
        "ridge": 0.0,
        "select": "max_donors",
        "fallback": False,
        "min_train_units": 1,
        "sum_to_one": False,
    },
    "validated": {
        "ridge": (0.0, 0.01, 0.1, 1.0),
        "select": "validation",
        "fallback": True,
        "min_train_units": 1,
        "sum_to_one": True,
    },
}


def _ranges(starts, counts) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, counts)])``, vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(counts)])
    return np.repeat(np.asarray(starts, dtype=np.int64), counts) + (
        np.arange(int(off[-1]), dtype=np.int64) - np.repeat(off[:-1], counts)
    )


def _resolve_preset(preset, donors, **explicit) -> dict:
    """The preset's defaults, overridden by the parameters that were passed (not ``None``)."""
    if preset is None:
        preset = "validated"
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}.")
    out = dict(PRESETS[preset])
    out.update({k: v for k, v in explicit.items() if v is not None})
    out["preset"] = preset
    return out


def _check_params(
    rank,
    energy,
    ridge,
    donors,
    select,
    max_donors,
    n_feature_folds,
    n_features,
    subspace_energy,
    subspace_threshold,
    fallback_margin,
    min_train_units,
    min_win_fraction,
    single_unit_redundancy=2.0,
) -> tuple:
    if donors not in ("perturbations", "contexts", "both"):
        raise ValueError(f"donors must be 'perturbations', 'contexts' or 'both', got {donors!r}.")
    if select not in ("validation", "max_donors"):
        raise ValueError(f"select must be 'validation' or 'max_donors', got {select!r}.")
    if not (isinstance(energy, int | float) and 0 < energy <= 1):
        raise ValueError(f"energy must be in (0, 1], got {energy!r}.")
    ranks = []
    for r in _as_list(rank):
        if r is None or r == "gavish_donoho":
            ranks.append(r)
        elif isinstance(r, int | np.integer) and not isinstance(r, bool) and r >= 1:
            ranks.append(int(r))
        else:
            raise ValueError(
                f"rank must be a positive int, None (use energy) or 'gavish_donoho', got {r!r}."
            )
    ridges = []
    for g in _as_list(ridge):
        if not (isinstance(g, int | float | np.floating) and np.isfinite(g) and g >= 0):
            raise ValueError(f"ridge must be a number >= 0 or a list of them, got {g!r}.")
        ridges.append(float(g))
    if not ranks or not ridges:
        raise ValueError("rank and ridge must not be empty lists.")
    if max_donors is not None and not (
        isinstance(max_donors, int | np.integer) and max_donors >= 1
    ):
        raise ValueError(f"max_donors must be None or an int >= 1, got {max_donors!r}.")
    if not (isinstance(n_feature_folds, int | np.integer) and 2 <= n_feature_folds <= n_features):
        raise ValueError(
            f"n_feature_folds must be an int between 2 and the number of features "
            f"({n_features}), got {n_feature_folds!r}."
        )
    if not 0 < subspace_energy <= 1:
        raise ValueError(f"subspace_energy must be in (0, 1], got {subspace_energy!r}.")
    if not 0 <= subspace_threshold <= 1:
        raise ValueError(f"subspace_threshold must be in [0, 1], got {subspace_threshold!r}.")
    if not (isinstance(fallback_margin, int | float) and 0 <= fallback_margin < 1):
        raise ValueError(f"fallback_margin must be in [0, 1), got {fallback_margin!r}.")
    if not (isinstance(min_win_fraction, int | float) and 0 <= min_win_fraction <= 1):
        raise ValueError(f"min_win_fraction must be in [0, 1], got {min_win_fraction!r}.")
    if not (isinstance(single_unit_redundancy, int | float) and single_unit_redundancy >= 0):
        raise ValueError(
            f"single_unit_redundancy must be a number >= 0, got {single_unit_redundancy!r}."
        )
    if not (isinstance(min_train_units, int | np.integer) and min_train_units >= 1):
        raise ValueError(f"min_train_units must be an int >= 1, got {min_train_units!r}.")
    return tuple(product(ranks, ridges))


def _check_data(data: GridData, t: np.ndarray) -> None:
    for name, labels in (("context", data.contexts), ("perturbation", data.perturbations)):
        if len(set(map(str, labels))) != len(labels):
            raise ValueError(
                f"The grid has duplicate {name} labels; make them unique before imputing."
            )
    if not data.measured.any():
        raise ValueError("No pair of the grid is measured: there is nothing to learn from.")
    ci, ai = np.nonzero(data.measured)
    bad = ~np.isfinite(np.asarray(data.Y[ci, ai])).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} measured pair(s) hold NaN or inf (e.g. context "
            f"{data.contexts[ci[bad][0]]!r}, perturbation {data.perturbations[ai[bad][0]]!r}). "
            "Fix the values or mark those pairs as unmeasured."
        )
    if t.size and (
        (t[:, 0] < 0).any()
        or (t[:, 0] >= data.n_contexts).any()
        or (t[:, 1] < 0).any()
        or (t[:, 1] >= data.n_perturbations).any()
    ):
        raise ValueError("targets hold indices outside the grid.")
    if data.control is not None and (t[:, 1] == data.control).any():
        raise ValueError(
            "Control rows are donors, never targets: remove the control pairs from targets."
        )


def _context_mean_errors(data: GridData) -> np.ndarray:
    """``||y[c, a] - context_mean(c without a)||^2`` of every measured pair, (C, A).

    Inf where the context has no other measured non-control profile, NaN where unmeasured.
    """
    gm = group_means(data)
    S, n = gm.ctx_sum, gm.ctx_n
    ci, ai = np.nonzero(data.measured)
    out = np.full(data.measured.shape, np.nan)
    SS_all = np.einsum("ij,ij->i", S, S)
    for lo in range(0, ci.size, 8192):  # chunks bound the memory of the gathers
        c, a = ci[lo : lo + 8192], ai[lo : lo + 8192]
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


@register(
    NAME,
    description=(
        "Regress the target on donor profiles learned across training contexts (SI-Action) or "
        "perturbations (SI-Context), with validated rank/ridge and per-pair fallback."
    ),
    reference=_REF,
)
def synthetic_interventions(
    data: GridData,
    targets,
    *,
    random_state=0,
    donors: str = "perturbations",
    rank: int | str | Sequence | None = None,
    energy: float = 1.0,
    preset: str | None = None,
    ridge: float | Sequence[float] | None = None,
    select: str | None = None,
    fallback: bool | None = None,
    fallback_margin: float = 0.1,
    min_train_units: int | None = None,
    min_win_fraction: float = 0.0,
    single_unit_redundancy: float = 1.5,
    sum_to_one: bool | None = None,
    max_donors: int | None = None,
    n_feature_folds: int = 5,
    subspace_energy: float = 0.99,
    subspace_threshold: float = 0.1,
) -> MethodResult:
    """Impute target pairs by synthetic interventions (see the module docstring).

    Parameters
    ----------
    data
        The grid's arrays.
    targets
        ``(n, 2)`` (context index, perturbation index) pairs to predict (unmeasured, not the
        control).
    random_state
        Seed or generator for the feature folds of single-training-unit validation.
    donors
        ``"perturbations"`` (SI-Action), ``"contexts"`` (SI-Context) or ``"both"``: the
        two predictions averaged with weights ``1 / validation_mse`` (pairs where only one
        direction passes validation take that one; ``per_target`` then holds SI-Action's
        diagnostics and ``action_share``, the weight of SI-Action, and ``info`` also
        ``context_donor_weights`` and ``context_donor_intercepts``).
    rank
        Number of principal components, ``"gavish_donoho"``, ``None`` (use ``energy``), or
        a list of these to choose from by validation.
    energy
        Fraction of spectral energy kept when ``rank`` is ``None``; ``1.0`` gives
        minimum-norm least squares (``0.99`` is the literature's PCR default).
    preset
        Defaults for ``ridge``, ``select``, ``fallback``, ``min_train_units`` and
        ``sum_to_one`` (a parameter passed explicitly wins):

        - ``"validated"`` (``None``, the default): validated path level and ridge, affine
          weights and the per-pair ``context_mean`` fallback (``select="validation"``,
          ``ridge=(0, 0.01, 0.1, 1)``, ``fallback=True``, ``min_train_units=1``,
          ``sum_to_one=True``);
        - ``"published"``: the literature's estimator (``select="max_donors"``,
          ``ridge=0``, ``fallback=False``, ``min_train_units=1``, ``sum_to_one=False``);
          diagnostics are still computed. It can lose to ``context_mean`` where profiles
          share a strong per-context component (see the module docstring).

    ridge
        Ridge penalty relative to the mean eigenvalue of the centred design Gram, or a list
        of penalties to choose from by validation.
    select
        ``"validation"``: choose the level of the greedy path (donors versus training
        units) and the regularisation by validation error; ``"max_donors"``: always the
        last level (the published estimator).
    fallback
        Impute by ``context_mean`` where the fit does not beat it on the held-out pairs
        (see ``fallback_margin`` and ``min_win_fraction``).
    fallback_margin
        The fit is kept only if its validation error is below ``(1 - fallback_margin)``
        times that of ``context_mean``.
    min_train_units
        Levels of the greedy path with fewer training units are not used. With 2, every
        fit is validated on held-out training units (transfer to a new unit); 1 (both
        presets) also allows single-unit levels, validated on held-out features and
        guarded by ``single_unit_redundancy``.
    min_win_fraction
        The fit is kept only if it beats ``context_mean`` on at least this fraction of the
        held-out training units (leave-one-unit-out levels).
    single_unit_redundancy
        A level with a single training unit (validated on held-out features, which cannot
        show that the weights transfer to another unit) is used only if its donors number
        at least this many times the principal components that carry 90% of its design's
        energy: the donors then over-span the design's dominant subspace, the condition
        under which weights learned in one unit carry over.
    sum_to_one
        Centre every profile by the mean of the donors' profiles in its unit before the
        regression, so that the donor weights sum to one (an affine combination; a
        per-unit common component then transfers exactly, and ridge shrinks towards the
        donors' mean). ``False`` is the published estimator.
    max_donors
        Cap on the number of donors (``None``: no cap).
    n_feature_folds
        Folds of the features for validation of single-training-unit levels.
    subspace_energy
        Spectral energy kept on both sides of the subspace-inclusion statistic.
    subspace_threshold
        Largest subspace statistic that passes.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult`. ``per_target`` holds, for each target (NaN
    where no fit exists): ``n_donors``, ``n_train`` (training contexts for SI-Action,
    training perturbations for SI-Context), ``r2_train`` (in-sample R2 over the stacked
    training rows), ``r2_heldout`` (leave-one-training-unit-out R2, NaN with a single
    training unit), ``validation_mse`` and ``context_mean_validation_mse`` (the errors the
    fallback compares), ``ridge`` (chosen penalty), ``subspace_stat``
    (``||V2 - V2 V1^T V1||_F^2 / rank(V2)`` in [0, 1], with ``V1`` / ``V2`` the right singular vectors of the
    centred training design / of the target unit's centred donor profiles, each truncated
    at ``subspace_energy``; 0 when the target's donor profiles lie in the training row
    space) and ``subspace_pass`` (1.0 if ``subspace_stat <= subspace_threshold``). ``info``
    holds ``donor_weights`` (``scipy.sparse.csr_matrix``, targets x donor-axis labels; a
    pair that fell back keeps the weights that were rejected), ``donor_intercepts``,
    ``train_units`` (``csr_matrix`` of 0/1, targets x units), ``donor_axis``,
    ``donor_labels``, ``unit_labels``, ``target_contexts``, ``target_perturbations``,
    ``fallback_reasons`` (counts), ``regularisations`` (the (rank, ridge) grid) and
    ``settings`` (the preset and the resolved ``select``, ``ridge``, ``fallback``,
    ``min_train_units`` and ``sum_to_one``).

    """
    t = as_targets(targets)
    chosen = _resolve_preset(
        preset,
        donors,
        ridge=ridge,
        select=select,
        fallback=fallback,
        min_train_units=min_train_units,
        sum_to_one=sum_to_one,
    )
    ridge, select, fallback = chosen["ridge"], chosen["select"], chosen["fallback"]
    min_train_units, sum_to_one = chosen["min_train_units"], chosen["sum_to_one"]
    regs = _check_params(
        rank,
        energy,
        ridge,
        donors,
        select,
        max_donors,
        n_feature_folds,
        data.n_features,
        subspace_energy,
        subspace_threshold,
        fallback_margin,
        min_train_units,
        min_win_fraction,
        single_unit_redundancy,
    )
    _check_data(data, t)
    n_t, p = t.shape[0], data.n_features
    rng = check_random_state(random_state)
    folds = rng.permutation(np.arange(p) % n_feature_folds)
    progress = n_t > E._SHOW_PROGRESS
    opts = {
        "regs": regs,
        "energy": float(energy),
        "select": select,
        "fallback": bool(fallback),
        "fallback_margin": float(fallback_margin),
        "min_train_units": int(min_train_units),
        "min_win_fraction": float(min_win_fraction),
        "single_unit_redundancy": float(single_unit_redundancy),
        "sum_to_one": bool(sum_to_one),
        "max_donors": max_donors,
        "subspace_energy": float(subspace_energy),
        "subspace_threshold": float(subspace_threshold),
        "folds": folds,
        "progress": progress,
    }
    if donors != "both":
        res = _fit_direction(data, t, donors, **opts)
    else:
        res = _combine(
            _fit_direction(data, t, "perturbations", **opts),
            _fit_direction(data, t, "contexts", **opts),
        )
    # the settings in effect (preset and explicit parameters resolved), h5ad-safe
    res.info["settings"] = {
        "preset": chosen["preset"],
        "select": select,
        "ridge": np.asarray(_as_list(ridge), dtype=float),
        "fallback": bool(fallback),
        "min_train_units": int(min_train_units),
        "sum_to_one": bool(sum_to_one),
    }
    return res


def _combine(ra: MethodResult, rc: MethodResult) -> MethodResult:
    """SI-Action and SI-Context averaged with weights 1 / validation MSE (``donors="both"``)."""
    wa = np.where(ra.source == NAME, 1.0 / ra.per_target["validation_mse"], 0.0)
    wc = np.where(rc.source == NAME, 1.0 / rc.per_target["validation_mse"], 0.0)
    tot = wa + wc
    ok = tot > 0
    pred = ra.prediction.copy()
    share = np.full(tot.shape, np.nan)
    share[ok] = wa[ok] / tot[ok]
    pred[ok] = share[ok, None] * ra.prediction[ok] + (1 - share[ok, None]) * rc.prediction[ok]
    source = ra.source.copy()
    source[ok] = NAME
    info = dict(ra.info)
    info["donor_axis"] = "both"
    info["context_donor_weights"] = rc.info["donor_weights"]
    info["context_donor_intercepts"] = rc.info["donor_intercepts"]
    info["action_fallback_reasons"] = ra.info["fallback_reasons"]
    info["context_fallback_reasons"] = rc.info["fallback_reasons"]
    info["fallback_reasons"] = {"neither_direction": int((~ok).sum())}
    per_target = {**ra.per_target, "action_share": share}
    return MethodResult(prediction=pred, source=source, per_target=per_target, info=info)


def _fit_direction(
    data: GridData,
    t: np.ndarray,
    donors: str,
    *,
    regs: tuple,
    energy: float,
    select: str,
    fallback: bool,
    fallback_margin: float,
    min_train_units: int,
    min_win_fraction: float,
    single_unit_redundancy: float,
    sum_to_one: bool,
    max_donors: int | None,
    subspace_energy: float,
    subspace_threshold: float,
    folds: np.ndarray,
    progress: bool,
) -> MethodResult:
    """One donor direction of :func:`synthetic_interventions` (arguments checked)."""
    n_t, p = t.shape[0], data.n_features
    if donors == "perturbations":
        Yd, Md, tgt = data.Y, data.measured, t
    else:
        Yd, Md, tgt = np.swapaxes(data.Y, 0, 1), data.measured.T, t[:, ::-1]
    paths = E.greedy_paths(np.ascontiguousarray(Md), tgt, max_donors)
    had_level = np.zeros(n_t, dtype=bool)
    had_level[paths.cand_target] = True
    enough = paths.n_T[paths.cand_key] >= min_train_units
    paths.cand_target = paths.cand_target[enough]
    paths.cand_step = paths.cand_step[enough]
    paths.cand_key = paths.cand_key[enough]
    if select == "max_donors" and paths.cand_target.size:
        last = np.zeros(n_t, dtype=np.int64) - 1
        np.maximum.at(last, paths.cand_target, paths.cand_step)
        keep = paths.cand_step == last[paths.cand_target]
        paths.cand_target = paths.cand_target[keep]
        paths.cand_step = paths.cand_step[keep]
        paths.cand_key = paths.cand_key[keep]
    single = paths.n_T == 1
    used_keys = np.unique(paths.cand_key)
    fold_units = paths.T_flat[paths.T_off[used_keys[single[used_keys]]]]
    with jax.enable_x64(True):
        store = E.build_store(Yd, Md, folds, fold_units)
        fits = E.fit_all(
            store,
            paths,
            tgt,
            regs=regs,
            energy=float(energy),
            sub_energy=float(subspace_energy),
            sum_to_one=bool(sum_to_one),
            n_features=p,
            progress=progress,
        )

    # context_mean on the held-out pairs of each candidate's validation
    L = paths.cand_key.size
    nT = paths.n_T[paths.cand_key]
    rep = np.repeat(np.arange(L), nT)
    units = (
        paths.T_flat[
            np.repeat(paths.T_off[paths.cand_key], nT)
            + (np.arange(rep.size) - np.repeat(np.concatenate([[0], np.cumsum(nT)[:-1]]), nT))
        ]
        if L
        else np.zeros(0, dtype=np.int64)
    )
    v = tgt[paths.cand_target[rep], 1] if L else np.zeros(0, dtype=np.int64)
    pc, pa = (units, v) if donors == "perturbations" else (v, units)
    err = _context_mean_errors(data)[pc, pa]
    cm_sse = np.bincount(rep, weights=np.where(np.isfinite(err), err, 0.0), minlength=L)
    cm_bad = np.bincount(rep, weights=~np.isfinite(err), minlength=L) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        val = fits.val_sse / fits.val_n[:, None]
        cm_mse = np.where(cm_bad, np.inf, cm_sse / fits.val_n)
    val = np.where(np.isfinite(val), val, np.inf)
    # a single training unit cannot show that the weights transfer to other units; trust
    # it only when its donors over-span the design's dominant components
    single = nT == 1
    redundant = paths.n_D[paths.cand_key] >= single_unit_redundancy * fits.rank90[paths.cand_key]
    val[single & ~redundant] = np.inf
    best_r = fits.best
    best_val = val[np.arange(L), best_r]

    # per target: first minimum over its levels (in path order)
    sel = np.full(n_t, -1, dtype=np.int64)
    if L:
        o = np.lexsort((paths.cand_step, paths.cand_target))
        tg = paths.cand_target[o]
        starts = np.flatnonzero(np.r_[True, tg[1:] != tg[:-1]])
        seg_min = np.minimum.reduceat(best_val[o], starts)
        seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, o.size]))
        hit = best_val[o] == seg_min[seg]
        hit_seg, first = np.unique(seg[hit], return_index=True)
        sel[tg[starts[hit_seg]]] = o[np.flatnonzero(hit)[first]]
    has = sel >= 0
    cs = sel[has]
    rs = best_r[cs]
    use_si = np.zeros(n_t, dtype=bool)
    # wins: held-out training units where the fit beats context_mean
    win = np.where(
        np.isnan(fits.val_blocks), 0.0, fits.val_blocks < np.where(np.isfinite(err), err, np.inf)
    )
    wins = np.bincount(rep, weights=win, minlength=L)
    frac_win = wins / np.maximum(nT, 1)
    use_si[has] = (not fallback) | (
        (best_val[cs] < (1 - fallback_margin) * cm_mse[cs])
        & (frac_win[cs] >= min_win_fraction - 1e-12)
    )

    # predictions: context_mean chain everywhere, synthetic interventions where chosen
    out_dtype = np.result_type(data.Y.dtype, np.float32)
    pred = np.empty((n_t, p), dtype=out_dtype)
    source = np.full(n_t, NAME, dtype=object)
    fb = np.flatnonzero(~use_si)
    if fb.size:
        gm = group_means(data)
        for lo in range(0, fb.size, 16384):  # chunks bound the memory of the fallbacks
            rows = fb[lo : lo + 16384]
            base = _chain(data, t[rows], ["context_mean", "perturbation_mean", "global_mean"], gm)
            pred[rows] = base.prediction
            source[rows] = base.source
    keys_sel = paths.cand_key[cs]
    nD_sel = paths.n_D[keys_sel]
    w_off_sel = np.concatenate([[0], np.cumsum(nD_sel)]).astype(np.int64)
    w_sel = fits.w_flat[_ranges(fits.w_off[cs], nD_sel)]
    b_sel = fits.b[cs]
    si_rows = np.flatnonzero(use_si[has])
    if si_rows.size:
        sub_off = np.concatenate([[0], np.cumsum(nD_sel[si_rows])]).astype(np.int64)
        sub_src = _ranges(w_off_sel[si_rows], nD_sel[si_rows])
        with jax.enable_x64(True):
            E.predict_selected(
                Yd,
                paths,
                cs[si_rows],
                w_sel[sub_src],
                sub_off,
                b_sel[si_rows],
                pred,
                np.flatnonzero(has)[si_rows],
                progress,
            )

    # fallback reasons
    reasons = {r: 0 for r in FALLBACK_REASONS}
    reasons["no_training_units"] = int((~has & (paths.n_start == 0)).sum())
    reasons["no_donors"] = int((~has & (paths.n_start > 0) & ~had_level).sum())
    reasons["few_training_units"] = int((~has & had_level).sum())
    reasons["validation"] = int((has & ~use_si).sum())

    # per-target diagnostics
    diag = {k: np.full(n_t, np.nan) for k in DIAGNOSTICS}
    nT_sel = paths.n_T[keys_sel]
    diag["n_donors"][has] = nD_sel
    diag["n_train"][has] = nT_sel
    with np.errstate(divide="ignore", invalid="ignore"):
        diag["r2_train"][has] = 1 - fits.sse_in[cs] / fits.sst_in[cs]
        diag["r2_heldout"][has] = np.where(
            nT_sel >= 2, 1 - fits.val_sse[cs, rs] / fits.sst_ho[cs], np.nan
        )
    diag["validation_mse"][has] = best_val[cs]
    diag["context_mean_validation_mse"][has] = cm_mse[cs]
    diag["ridge"][has] = np.array([regs[r][1] for r in rs], dtype=float)
    stat = fits.subspace[keys_sel]
    diag["subspace_stat"][has] = stat
    diag["subspace_pass"][has] = (stat <= subspace_threshold).astype(float)

    # donor weights (targets x donor axis) and training units (targets x units)
    rows_has = np.flatnonzero(has)
    n_donor_axis = Md.shape[1]
    d_cols = paths.D_flat[_ranges(paths.D_off[keys_sel], nD_sel)]
    weights = sp.csr_matrix(
        (w_sel, (np.repeat(rows_has, nD_sel), d_cols)), shape=(n_t, n_donor_axis)
    )
    t_cols = paths.T_flat[_ranges(paths.T_off[keys_sel], nT_sel)]
    train_units = sp.csr_matrix(
        (np.ones(t_cols.size, dtype=np.float32), (np.repeat(rows_has, nT_sel), t_cols)),
        shape=(n_t, Md.shape[0]),
    )
    intercepts = np.full(n_t, np.nan)
    intercepts[has] = b_sel
    ctx_labels = np.asarray(data.contexts).astype(str)
    pert_labels = np.asarray(data.perturbations).astype(str)
    info = {
        "donor_weights": weights,
        "donor_intercepts": intercepts,
        "train_units": train_units,
        "donor_axis": donors,
        "donor_labels": pert_labels if donors == "perturbations" else ctx_labels,
        "unit_labels": ctx_labels if donors == "perturbations" else pert_labels,
        "target_contexts": ctx_labels[t[:, 0]],
        "target_perturbations": pert_labels[t[:, 1]],
        "fallback_reasons": reasons,
        "regularisations": {
            "rank": np.array(["None" if r is None else str(r) for r, _ in regs], dtype=object),
            "ridge": np.array([g for _, g in regs], dtype=float),
        },
        "subspace_threshold": float(subspace_threshold),
        "n_groups": int(np.unique(paths.cand_key).size),
    }
    return MethodResult(prediction=pred, source=source, per_target=diag, info=info)

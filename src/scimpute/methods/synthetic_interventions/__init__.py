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
    the pair gets the fallback below. The margin guards against the optimism of
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
``context_mean`` on held-out pairs) all use the grid's best baseline by leave-one-out
(:func:`~scimpute.methods._stats.validated_order`: ``context_mean``, ``perturbation_mean`` or
``two_way_mean``), then the other group mean, then the global mean. Control rows are donors (and training units) like any profile but never targets.

The computation uses the Gram-matrix algebra of the stacked design (``X^T X`` is a sum of
per-unit Gram matrices, precomputed once). Targets that share a (unit, training units,
donors) combination, a *group*, share its factorisations (one eigendecomposition per
training set of the validation and one for the full fit) and its validation; only the
right-hand sides (the targets' cross moments) differ. For SI-Action a target (c, a) is
unmeasured in c, so its candidate donors (everything measured in c) do not depend on a: all
targets of a context whose perturbations are measured in the same training contexts walk
the same greedy path and fall in the same groups at every level, which on dense grids (few
contexts, many perturbations) leaves a few hundred groups for thousands of targets. The
selection of the level and of the regularisation is per target, not per group, because the
validation error of each (level, regularisation) depends on the target's own held-out
profiles; it is computed from the group's shared factorisations at the cost of matrix
products only. Groups with at least ``HOST_MIN_DONORS`` (64) donors are fitted one by one,
unpadded, in numpy/LAPACK (:mod:`._host`), in two phases: the validation of every group
first, where each held-out training set is solved by one Cholesky factorisation per ridge
when a shifted Cholesky certifies that the spectral filter would keep every component
(ridge-only regularisations, i.e. ``rank=None`` and ``energy=1``: both presets), else by
``eigh``; then the full fit and the subspace statistic (two ``eigh``) only for the groups
some target selected. Single-training-unit groups whose validation the selection ignores
(donors fewer than ``single_unit_redundancy`` x rank90) are validated only if selected.
The predictions are those of the all-``eigh`` computation (to rounding). Smaller groups run
in padded batches by jit-compiled JAX kernels (:mod:`._kernels`, the same arithmetic), all
in float64. The statistics of single-training-unit groups (feature-fold validation) are
read from a per-unit fold-Gram store, or, when that store would exceed
:data:`._engine.FOLD_STORE_BUDGET` (1 GiB; 1.8 GB at 70 x 10,000 at CMap's density, 7 GB
at 70 x 20,000), computed from each group's own rows of the grid; the store holds only the
units the other groups read. With ``select="max_donors"`` (the published preset) the
greedy path keys only each target's last usable level, and a single regularisation is
not padded. Groups with at least 8 selected pairs are predicted by one numpy product
each, unpadded. Where a per-group factorisation cannot be shared: the held-out sets of
different groups differ (their donor sets differ), and rank-deficient sets (more donors than
training rows) need ``eigh`` for the minimum-norm solution in the primal.

Primal or dual (rule, :data:`._engine.DUAL`): a host group whose training rows (its training
units' stacked features: ``|T| x n_features``) are fewer than its donors is solved in the
dual (:mod:`._dual`): one ``rows x rows`` kernel ``X X^T`` per group instead of the
``donors x donors`` Gram; every held-out set's kernel is a double-centred block of it,
solved (for all ridges and all targets of the group) by certified Cholesky factorisations or
``eigh``, and the full fit, the principal-component filters (the kernel's non-zero
eigenpairs give the design's SVD) and the subspace statistic by one ``eigh`` of the kernel
and one of the target unit's. The two forms give the same numbers to rounding; the cost
per group falls from ``donors^3`` to ``rows^2 donors``, which puts the genome-wide
Perturb-seq shape (4 x 10,000 x 1,000: ~8,000 donors, 1,000-3,000 rows) in reach. How many
groups went each way is recorded in ``.uns[key]["solvers"]`` (``dual``, ``primal_host``,
``primal_batched``, ``cholesky_sets``). No donor set is capped unless ``max_donors`` is
given. A plain per-pair numpy version of the same estimator is
:func:`._reference.reference_si`.

The package: :mod:`._params` (:class:`SIParams`, every parameter declared once, and the
presets), :mod:`._direction` (one donor direction as named stages), :mod:`._engine`
(greedy paths, unit statistics, bucketed kernel calls), :mod:`._kernels` (the JAX kernels),
:mod:`._host` (large groups in LAPACK), :mod:`._dual` (large groups with more donors than
training rows, in the dual) and :mod:`._reference` (the per-pair numpy
specification).
"""

from __future__ import annotations

import numpy as np

from ..._keys import (
    SI_ACTION_FALLBACK_REASONS,
    SI_ACTION_SHARE,
    SI_CONTEXT_DONOR_INTERCEPTS,
    SI_CONTEXT_DONOR_WEIGHTS,
    SI_CONTEXT_FALLBACK_REASONS,
    SI_DIAGNOSTICS,
    SI_DONOR_AXIS,
    SI_DONOR_INTERCEPTS,
    SI_DONOR_WEIGHTS,
    SI_FALLBACK_REASONS,
    SI_SETTINGS,
    SI_VALIDATION_MSE,
)
from ..._utils import check_random_state
from .._base import GridData, MethodResult, as_targets
from .._registry import register
from ._params import PRESETS, SIParams

__all__ = ["DIAGNOSTICS", "FALLBACK_REASONS", "PRESETS", "SIParams", "synthetic_interventions"]

NAME = "synthetic_interventions"
_REF = (
    "Agarwal, Shah & Shen, Synthetic interventions (2020); Squires, Shen, Agarwal, Shah & "
    "Uhler, Causal imputation via synthetic interventions, CLeaR 2022"
)
#: names of the per-pair diagnostics (written to ``grid.obs[f"{key}_{name}"]``)
DIAGNOSTICS = SI_DIAGNOSTICS
FALLBACK_REASONS = ("no_training_units", "no_donors", "few_training_units", "validation")
_SHOW_PROGRESS = 20000  # targets above which progress bars are shown


def _check_data(data: GridData, t: np.ndarray, params: SIParams) -> None:
    """What the spec cannot check: the grid, the targets, and folds versus features."""
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
    if params.n_feature_folds > data.n_features:
        raise ValueError(
            f"{NAME}: n_feature_folds must be at most the number of features "
            f"({data.n_features}), got {params.n_feature_folds}."
        )


@register(
    NAME,
    description=(
        "Regress the target on donor profiles learned across training contexts (SI-Action) or "
        "perturbations (SI-Context), with validated rank/ridge and per-pair fallback."
    ),
    params=SIParams,
    reference=_REF,
)
def synthetic_interventions(
    data: GridData, targets, params: SIParams | None = None, *, random_state=0, out=None
) -> MethodResult:
    """Impute target pairs by synthetic interventions (see the package docstring).

    Parameters
    ----------
    data
        The grid's arrays.
    targets
        ``(n, 2)`` (context index, perturbation index) pairs to predict (unmeasured, not the
        control).
    params
        The checked parameters (:class:`SIParams`; ``None``: the defaults). The parameters
        left at ``None`` (``ridge``, ``select``, ``fallback``, ``sum_to_one``) take the
        values of ``params.preset`` (:data:`PRESETS`):

        - ``"validated"`` (the default): validated path level and ridge, affine weights and
          the per-pair ``context_mean`` fallback (``select="validation"``,
          ``ridge=(0, 0.01, 0.1, 1)``, ``fallback=True``, ``sum_to_one=True``);
        - ``"published"``: the literature's estimator (``select="max_donors"``,
          ``ridge=0``, ``fallback=False``, ``sum_to_one=False``); diagnostics are still
          computed. It can lose to ``context_mean`` where profiles share a strong
          per-context component (see the package docstring).

        ``donors="both"`` averages SI-Action and SI-Context with weights
        ``1 / validation_mse`` (pairs where only one direction passes validation take that
        one; ``per_target`` then holds SI-Action's diagnostics and ``action_share``, the
        weight of SI-Action, and ``info`` also ``context_donor_weights`` and
        ``context_donor_intercepts``). Every parameter is documented in
        :class:`SIParams` (``SIParams.describe()`` lists them).
    random_state
        Seed or generator for the feature folds of single-training-unit validation.
    out
        Where the predictions go: anything of shape ``(n_targets, n_features)`` that takes
        ``out[rows] = values`` (an array, or a sink of :mod:`scimpute.tl._sink`, which
        :func:`scimpute.tl.impute` passes so that the predictions land group by group in
        the completed layer or in the ``out_store`` staging file). ``None``: a new array
        (float32 for float32 profiles). The result's ``prediction`` is ``out``.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult`. ``per_target`` holds, for each target (NaN
    where no fit exists): ``n_donors``, ``n_train`` (training contexts for SI-Action,
    training perturbations for SI-Context), ``r2_train`` (in-sample R2 over the stacked
    training rows), ``r2_heldout`` (leave-one-training-unit-out R2, NaN with a single
    training unit), ``validation_mse`` and ``context_mean_validation_mse`` (the errors the
    fallback compares), ``ridge`` (chosen penalty), ``subspace_stat``
    (``||V2 - V2 V1^T V1||_F^2 / rank(V2)`` in [0, 1], with ``V1`` / ``V2`` the right
    singular vectors of the centred training design / of the target unit's centred donor
    profiles, each truncated at ``subspace_energy``; 0 when the target's donor profiles lie
    in the training row space) and ``subspace_pass`` (1.0 if
    ``subspace_stat <= subspace_threshold``). ``info`` (written to ``.uns[key]``; names in
    :mod:`scimpute._keys`) holds ``donor_weights`` (``scipy.sparse.csr_matrix``, targets x
    donor-axis labels; a pair that fell back keeps the weights that were rejected),
    ``donor_intercepts``, ``train_units`` (``csr_matrix`` of 0/1, targets x units),
    ``donor_axis``, ``donor_labels``, ``unit_labels``, ``target_contexts``,
    ``target_perturbations``, ``fallback_reasons`` (counts), ``regularisations`` (the
    (rank, ridge) grid), ``solvers`` (groups solved in the dual, in the primal on the host,
    in padded JAX batches; see the package docstring) and ``settings`` (the preset and the resolved ``select``,
    ``ridge``, ``fallback``, ``min_train_units`` and ``sum_to_one``).

    """
    from ._direction import fit_direction  # JAX loads on first use

    params = (SIParams() if params is None else params).resolved()
    t = as_targets(targets)
    _check_data(data, t, params)
    rng = check_random_state(random_state)
    folds = rng.permutation(np.arange(data.n_features) % params.n_feature_folds)
    progress = t.shape[0] > _SHOW_PROGRESS
    if out is not None and tuple(out.shape) != (t.shape[0], data.n_features):
        raise ValueError(f"out has shape {out.shape}, expected {(t.shape[0], data.n_features)}.")
    if params.donors != "both":
        res = fit_direction(data, t, params.donors, params, folds, progress, out=out)
    else:
        res = _combine(
            fit_direction(data, t, "perturbations", params, folds, progress),
            fit_direction(data, t, "contexts", params, folds, progress),
        )
        if out is not None:  # both directions' predictions are needed before combining
            out[np.arange(t.shape[0])] = res.prediction
            res.prediction = out
    res.info[SI_SETTINGS] = params.settings()
    return res


def _combine(ra: MethodResult, rc: MethodResult) -> MethodResult:
    """SI-Action and SI-Context averaged with weights 1 / validation MSE (``donors="both"``)."""
    wa = np.where(ra.source == NAME, 1.0 / ra.per_target[SI_VALIDATION_MSE], 0.0)
    wc = np.where(rc.source == NAME, 1.0 / rc.per_target[SI_VALIDATION_MSE], 0.0)
    tot = wa + wc
    ok = tot > 0
    pred = ra.prediction.copy()
    share = np.full(tot.shape, np.nan)
    share[ok] = wa[ok] / tot[ok]
    pred[ok] = share[ok, None] * ra.prediction[ok] + (1 - share[ok, None]) * rc.prediction[ok]
    source = ra.source.copy()
    source[ok] = NAME
    info = dict(ra.info)
    info[SI_DONOR_AXIS] = "both"
    info[SI_CONTEXT_DONOR_WEIGHTS] = rc.info[SI_DONOR_WEIGHTS]
    info[SI_CONTEXT_DONOR_INTERCEPTS] = rc.info[SI_DONOR_INTERCEPTS]
    info[SI_ACTION_FALLBACK_REASONS] = ra.info[SI_FALLBACK_REASONS]
    info[SI_CONTEXT_FALLBACK_REASONS] = rc.info[SI_FALLBACK_REASONS]
    info[SI_FALLBACK_REASONS] = {"neither_direction": int((~ok).sum())}
    per_target = {**ra.per_target, SI_ACTION_SHARE: share}
    return MethodResult(prediction=pred, source=source, per_target=per_target, info=info)

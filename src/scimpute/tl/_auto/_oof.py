"""Out-of-fold predictions of the candidates of ``auto`` on the inner hold-out."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..._params import Params
from ..._utils import RandomState, check_random_state
from ...methods import GridData, Method
from ...methods._stats import fallback_chain, group_means, validated_order
from ...metrics import r2
from .._run import check_result, prepare_method, run_method
from ._features import component_support, context_difficulty
from ._holdout import hidden_support, importance_weights, inner_folds, support
from ._params import NOT_CANDIDATES, VALIDATED_SETTINGS

#: per-pair diagnostics of the candidates used as pre-measurement features (when present).
DIAGNOSTIC_FEATURES = (
    "r2_heldout",
    "validation_mse",
    "context_mean_validation_mse",
    "n_donors",
    "n_train",
    "weight_sum",
    "max_similarity",
)


@dataclass
class OOFRecord:
    """Out-of-fold predictions of candidate methods for the measured pairs of a grid.

    Attributes
    ----------
    pairs
        ``(n, 2)`` (context, perturbation) indices of the hidden pairs, fold by fold.
    fold
        ``(n,)`` fold of each pair.
    truth
        ``(n, p)`` measured profiles of the pairs.
    weight
        ``(n,)`` importance weights (mean 1) that match the hidden pairs' supports to the
        targets' (:mod:`scimpute.tl._auto._holdout`).
    support
        ``(n, 5)`` measured non-control pairs in each pair's row and column with its fold
        hidden, the log leave-one-out error of the baseline in that row and column
        (:func:`~scimpute.tl._auto._features.context_difficulty`) and the log count of
        measured pairs sharing a component (:func:`~scimpute.tl._auto._features.component_support`),
        both on the fold's training part.
    preds, sources, diagnostics
        Per candidate that ran on every fold: ``(n, p)`` predictions, ``(n,)`` sources and the
        per-pair diagnostics named in :data:`DIAGNOSTIC_FEATURES` that it returned.
    screen
        Candidate -> median R2 on the first fold (every candidate, screened out or not).
    baseline
        Name of the grid's validated best baseline (:func:`~scimpute.methods._stats.validated_order`).
    baseline_pred
        ``(n, p)`` its out-of-fold predictions.
    feature_var
        ``(p,)`` variance of each feature over the measured non-control profiles (the unit of
        the normalised errors).

    """

    pairs: np.ndarray
    fold: np.ndarray
    truth: np.ndarray
    weight: np.ndarray
    support: np.ndarray
    preds: dict[str, np.ndarray]
    sources: dict[str, np.ndarray]
    diagnostics: dict[str, dict[str, np.ndarray]]
    screen: dict[str, float]
    baseline: str
    baseline_pred: np.ndarray
    feature_var: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def candidates(self) -> list[str]:
        return list(self.preds)

    @property
    def n_folds(self) -> int:
        return int(self.fold.max()) + 1 if self.fold.size else 0

    def nmse(self, pred: np.ndarray) -> np.ndarray:
        """Per-pair mean squared error in units of :attr:`feature_var`."""
        return np.mean((pred - self.truth) ** 2 / self.feature_var, axis=1)


def feature_variance(data: GridData) -> np.ndarray:
    """Variance of each feature over the measured non-control profiles (floored)."""
    y = np.asarray(data.Y[data.treated_mask()], dtype=np.float64)
    if y.shape[0] < 2:
        y = np.asarray(data.Y[data.measured], dtype=np.float64)
    v = y.var(axis=0) if y.shape[0] > 1 else np.ones(data.n_features)
    floor = max(float(np.median(v)) * 1e-3, 1e-12)
    return np.maximum(v, floor)


def candidate_specs(
    data: GridData, candidates=None, exclude=()
) -> tuple[dict[str, tuple[Method, Params]], dict[str, str]]:
    """Applicable candidates ``{name: (method, typed params)}`` and ``{name: why skipped}``.

    ``candidates=None`` takes every registered method except ``auto``; a method that needs a
    control on a grid without one, or whose ``applies`` hook gives a reason, is skipped (the
    reason is returned; no warning).
    """
    from ...methods._registry import _REGISTRY

    names = [n for n in _REGISTRY if n not in NOT_CANDIDATES] if candidates is None else candidates
    out, skipped = {}, {}
    for name in names:
        if name in exclude:
            continue
        m, typed = prepare_method(name, VALIDATED_SETTINGS.get(name))
        if m.needs_control and data.control is None:
            skipped[name] = "needs a control perturbation"
            continue
        reason = m.applies(data) if m.applies is not None else None
        if reason:
            skipped[name] = reason
            continue
        out[name] = (m, typed)
    if not out:
        raise ValueError(f"auto: no candidate method applies to this grid ({skipped}).")
    return out, skipped


def _run_folds(m, typed, data, folds, seeds, grouped_seed):
    """One result per fold (the method's ``grouped_refit`` hook when it has one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if m.grouped_refit is not None:
            out = m.grouped_refit(data, folds, typed, random_state=grouped_seed, progress=False)
            return [check_result(m, f, r, data.n_features) for f, r in zip(folds, out, strict=True)]
        res = []
        for hidden, seed in zip(folds, seeds, strict=True):
            mask = data.measured.copy()
            mask[hidden[:, 0], hidden[:, 1]] = False
            res.append(
                run_method(
                    m, data.with_measured(mask), hidden, random_state=int(seed), params=typed
                )
            )
        return res


def _fold_baselines(data: GridData, folds) -> tuple[np.ndarray, np.ndarray]:
    """Per fold, on the fold's training part only: baseline difficulty and baseline predictions.

    The grid's best baseline (:func:`~scimpute.methods._stats.validated_order`) is chosen by
    leave-one-out errors of the *measured* pairs, so it is re-chosen per fold with the fold
    hidden (choosing it on ``data`` would let the hidden pairs' values pick the baseline that
    their own trust labels and features are measured against); the difficulty is in units of
    the fold's own feature variances, as the targets' is in those of the grid they are
    predicted from. One :func:`group_means` per fold serves the order, the difficulty and the
    fallback chain.
    """
    diff, pred = [], []
    for hidden in folds:
        mask = data.measured.copy()
        mask[hidden[:, 0], hidden[:, 1]] = False
        fd = data.with_measured(mask)
        gm = group_means(fd)
        order = list(validated_order(fd, gm))
        d = context_difficulty(fd, hidden, feature_variance(fd), gm=gm, order=order)
        diff.append(np.column_stack([d, component_support(fd, hidden)]))
        pred.append(fallback_chain(fd, hidden, order, gm).prediction)
    return np.concatenate(diff), np.concatenate(pred)


def _diag(res_list) -> dict[str, np.ndarray]:
    keys = [k for k in DIAGNOSTIC_FEATURES if all(k in r.per_target for r in res_list)]
    return {
        k: np.concatenate([np.asarray(r.per_target[k], dtype=float) for r in res_list])
        for k in keys
    }


def out_of_fold(
    data: GridData,
    candidates: dict[str, tuple[Method, Params]] | None = None,
    *,
    targets: np.ndarray | None = None,
    n_folds: int = 5,
    screen_margin: float | None = 0.1,
    random_state: RandomState = 0,
    progress: bool = False,
) -> OOFRecord:
    """Out-of-fold predictions of each candidate for every measured non-control pair.

    Parameters
    ----------
    data
        The grid's arrays; ``data.measured`` holds what the candidates may learn from.
    candidates
        ``{name: (method, typed params)}`` (:func:`candidate_specs`); ``None`` takes every
        applicable registered method with its validated settings.
    targets
        ``(m, 2)`` pairs to be imputed: their supports set the importance weights of the
        hold-out (:mod:`scimpute.tl._auto._holdout`). Default: every unmeasured non-control
        pair.
    n_folds
        Folds of the inner hold-out.
    screen_margin
        Expensive candidates (those fitted by a ``grouped_refit`` hook: trained networks)
        whose median R2 on the first fold is below the best candidate's there by more than
        this skip the other folds (``None``: no screening). Every other candidate runs on
        every fold.
    random_state
        Seed of the folds and of the candidates.
    progress
        Progress bar naming the stage (``screen``, ``folds``) and the candidate.

    Returns
    -------
    An :class:`OOFRecord`; :meth:`OOFRecord.nmse` gives each candidate's per-pair error.
    :func:`scimpute.tl.rank_experiments` reuses it for the predicted error of unmeasured pairs.

    """
    from tqdm.auto import tqdm

    skipped: dict[str, str] = {}
    if candidates is None:
        candidates, skipped = candidate_specs(data)
    rng = check_random_state(random_state)
    folds = inner_folds(data, n_folds, rng)
    seeds = rng.integers(0, 2**31 - 1, size=len(folds))
    grouped_seed = int(rng.integers(0, 2**31 - 1))
    if targets is None:
        t_mask = ~data.measured
        if data.control is not None:
            t_mask[:, data.control] = False
        targets = np.argwhere(t_mask)
    var = feature_variance(data)
    hs = hidden_support(data, folds)
    ts = support(data.treated_mask(), targets)
    weight = importance_weights(hs, ts)
    fold_diff, base_pred = _fold_baselines(data, folds)
    hs = np.column_stack([hs, fold_diff])
    pairs = np.concatenate(folds)
    fold = np.concatenate([np.full(len(f), i) for i, f in enumerate(folds)])
    truth = np.asarray(data.Y[pairs[:, 0], pairs[:, 1]], dtype=np.float64)

    bar = tqdm(total=2 * len(candidates), desc="auto", disable=not progress, leave=False)
    first: dict[str, object] = {}
    screen: dict[str, float] = {}
    n0 = len(folds[0])
    for name, (m, typed) in candidates.items():
        bar.set_description(f"auto [screen] {name}")
        first[name] = _run_folds(m, typed, data, folds[:1], seeds[:1], grouped_seed)[0]
        screen[name] = float(np.nanmedian(r2(truth[:n0], first[name].prediction)))
        bar.update()
    best = max(screen.values())
    keep = [  # only the expensive candidates (trained networks) are screened out
        n
        for n, (m, _) in candidates.items()
        if screen_margin is None or m.grouped_refit is None or screen[n] >= best - screen_margin
    ]
    preds, sources, diagnostics = {}, {}, {}
    for name in candidates:
        if name not in keep:
            bar.update()
            continue
        m, typed = candidates[name]
        bar.set_description(f"auto [folds] {name}")
        rest = (
            _run_folds(m, typed, data, folds[1:], seeds[1:], grouped_seed) if len(folds) > 1 else []
        )
        res = [first[name], *rest]
        preds[name] = np.concatenate([np.asarray(r.prediction, dtype=np.float64) for r in res])
        sources[name] = np.concatenate([np.asarray(r.source, dtype=object) for r in res])
        diagnostics[name] = _diag(res)
        bar.update()
    bar.close()

    return OOFRecord(
        pairs=pairs,
        fold=fold,
        truth=truth,
        weight=weight,
        support=hs,
        preds=preds,
        sources=sources,
        diagnostics=diagnostics,
        screen=screen,
        baseline=validated_order(data)[0],
        baseline_pred=base_pred,
        feature_var=var,
        skipped=skipped,
    )

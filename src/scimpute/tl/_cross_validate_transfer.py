"""Leave-one-out of a method with a ``grouped_refit`` hook (the grid autoencoders)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import Key
from .._params import check_choice, check_random_state_value
from .._utils import RandomState, check_random_state, h5ad_safe
from ..methods import get_method
from ..metrics import fold_scores, pca_basis, top_changed_genes, transfer_scores
from ._cross_validate import make_folds
from ._data import to_grid_data
from ._run import resolve_method, run_method
from ._transfer._data import cell_labels, dense, expression

CROSS_VALIDATION_TRANSFER_KEY = "cross_validation_transfer"


def cross_validate_transfer(
    grid: AnnData,
    context_key: str | None = None,
    perturbation_key: str | None = None,
    *,
    method: str = "autoencoder",
    random_state: RandomState = 0,
    key_added: str | None = CROSS_VALIDATION_TRANSFER_KEY,
    progress: bool = True,
    **params: Any,
) -> pd.DataFrame:
    """Leave-one-out of the transfer: on cells (with ``context_key``) or on a grid.

    **On cells** (``context_key`` and ``perturbation_key`` given): every (context,
    perturbation) pair in turn has its perturbed cells hidden; :func:`fit_transfer` is run on
    the rest (its own inner validation included) and :func:`transfer` predicts the hidden
    cells; see :func:`cross_validate_cells` for the keywords and the table (the scores of
    :func:`scimpute.metrics.transfer_scores` next to the no-change and mean-shift baselines
    and a split-half ceiling).

    **On a grid** (the default, ``grid`` made by :func:`scimpute.pp.perturbation_grid`):
    leave-one-out of ``"autoencoder"`` / ``"vae"`` with the method's grouped refit.

    :func:`cross_validate` with ``holdout="leave_one_out"`` trains one network per measured
    pair (302 on CMap). This function gives every pair the same information (all other
    measured pairs are encoded for the latent arithmetic) but trains only ``n_groups`` (a
    parameter of the method) networks, vmapped in one compiled loop: the method's
    ``grouped_refit`` hook (:func:`scimpute.methods.autoencoder.grouped_refit`). No
    prediction depends on its own pair's profile.

    Parameters
    ----------
    grid
        A grid made by :func:`scimpute.pp.perturbation_grid`, or cells (see above).
    context_key, perturbation_key
        Columns of ``obs`` naming the context and the perturbation of each cell: given, the
        leave-one-out runs on cells; ``None`` (default), on the grid.
    method
        A method with a ``grouped_refit`` hook (``"autoencoder"`` or ``"vae"``).
    random_state
        Seed of the groups and of training.
    key_added
        ``grid.uns`` key for ``{"scores": table, "params": {...}}``; ``None`` writes nothing.
    progress
        Progress bar over epochs.
    **params
        Parameters of the method (e.g. ``n_groups``, the networks to train).

    Returns
    -------
    The table of :func:`cross_validate` (``method``, ``context``, ``perturbation``,
    ``fold``, ``source``, ``r2``, ``r2_effect``, ``pearson_effect``, ``cosine_effect``,
    ``mse``, ``relative_mse``); concatenate it with a :func:`cross_validate` table of the
    baselines and pass it to :func:`summarize_cross_validation`.``fold`` numbers the pairs (one per fold).

    """
    owner = "cross_validate_transfer"
    check_random_state_value(owner, random_state)
    if context_key is not None or perturbation_key is not None:
        if context_key is None or perturbation_key is None:
            raise ValueError(f"{owner}: pass both context_key and perturbation_key for cells.")
        return cross_validate_cells(
            grid,
            context_key,
            perturbation_key,
            random_state=random_state,
            key_added=key_added,
            progress=progress,
            **params,
        )
    data, _ = to_grid_data(grid)
    m = resolve_method(method, {}, data)
    if m.grouped_refit is None:
        raise ValueError(f"{owner}: method {method!r} has no grouped_refit hook.")
    spec = m.parse(params)
    folds = make_folds(data, "leave_one_out", 2, random_state)
    results = m.grouped_refit(data, folds, spec, random_state=random_state, progress=progress)
    reference = get_method("context_mean")
    tables = []
    for f, (hidden, res) in enumerate(zip(folds, results, strict=True)):
        mask = data.measured.copy()
        mask[hidden[:, 0], hidden[:, 1]] = False
        ref = run_method(reference, data.with_measured(mask), hidden, random_state=0, params={})
        tables.append(
            fold_scores(data, method, hidden, res.prediction, res.source, ref.prediction, f)
        )
    table = pd.concat(tables, ignore_index=True)
    info = results[0].info if results else {}
    table.attrs["train_seconds"] = float(info.get("train_seconds", float("nan")))
    table.attrs["n_epochs"] = int(info.get("n_epochs", 0))
    table.attrs["best_epoch"] = list(info.get("best_epoch", []))
    if key_added is not None:
        grid.uns[key_added] = {
            Key.uns.scores: table,
            "params": h5ad_safe(
                {
                    "method": method,
                    "random_state": random_state,
                    **spec.to_dict(),
                    "train_seconds": table.attrs["train_seconds"],
                }
            ),
        }
    return table


#: the methods of :func:`cross_validate_cells`, in row order
CELL_METHODS = ("scimpute", "no change", "mean shift", "split-half ceiling")


def held_out_truth(
    adata: AnnData,
    ctx: np.ndarray,
    pert: np.ndarray,
    control: str,
    context: str,
    perturbation: str,
    *,
    n_comps: int = 30,
    deg_method: str = "t",
    layer: str | None = None,
) -> dict[str, Any]:
    """What every prediction of one hidden pair is scored against.

    The real perturbed cells and the context's controls, the genes ranked by differential
    expression (``"t"``: :func:`~scimpute.metrics.top_changed_genes`; ``"wilcoxon"``:
    scanpy's ``rank_genes_groups`` within the context, the up-regulated top of the perturbed
    group as in scGen), a PCA basis fitted on every cell except the hidden ones, and the
    mean of the perturbed cells of the other contexts (the systematic-variation reference).
    """
    X = expression(adata, layer)
    held = (ctx == context) & (pert == perturbation)
    ctrl = (ctx == context) & (pert == control)
    if deg_method == "wilcoxon":
        import scanpy as sc

        sub = AnnData(
            X=X[held | ctrl], obs=pd.DataFrame({"g": np.where(held, "p", "c")[held | ctrl]})
        )
        sub.obs["g"] = sub.obs["g"].astype("category")
        sub.var_names = adata.var_names.astype(str)
        sc.tl.rank_genes_groups(sub, "g", groups=["p"], reference="c", method="wilcoxon",
                                n_genes=100)  # fmt: skip
        names = list(sub.uns["rank_genes_groups"]["names"]["p"])
        degs = adata.var_names.get_indexer(names)
    else:
        degs = top_changed_genes(X[held], X[ctrl], 100)
    center, basis = pca_basis(X[~held], n_comps)
    others = (pert == perturbation) & (ctx != context)
    return {
        "real": X[held],
        "control": X[ctrl],
        "degs": degs,
        "basis": basis,
        "center": center,
        "perturbed_mean": X[others].mean(0) if others.any() else None,
        "mean_shift": _mean_shift(X, ctx, pert, control, context, perturbation),
    }


def _mean_shift(X, ctx, pert, control, context, perturbation) -> np.ndarray:
    """The gene-space shift of the other contexts, each weighing the same."""
    shifts = [
        X[(ctx == c) & (pert == perturbation)].mean(0) - X[(ctx == c) & (pert == control)].mean(0)
        for c in sorted(set(ctx[pert == perturbation]) & set(ctx[pert == control]) - {context})
    ]
    return np.mean(shifts, axis=0) if shifts else np.zeros(X.shape[1], np.float32)


def score_held_out(truth: dict[str, Any], predictions: dict[str, np.ndarray], *, random_state=0):
    """Rows of scores for each named prediction and for the baselines of one hidden pair.

    ``predictions`` maps a method name to its ``(n_cells, n_genes)`` predicted cells; the
    baselines ``"no change"`` (the controls), ``"mean shift"`` (the controls plus the
    gene-space shift of the other contexts) and ``"split-half ceiling"`` (a random half of
    the real cells scored against the other half) are added.
    """
    rng = check_random_state(random_state)
    real, ctrl = truth["real"], truth["control"]
    preds = {
        **predictions,
        "no change": ctrl,
        "mean shift": ctrl + truth["mean_shift"],
    }
    kw = {k: truth[k] for k in ("degs", "basis", "center", "perturbed_mean")}
    rows = [{"method": m, **transfer_scores(p, real, ctrl, **kw)} for m, p in preds.items()]
    if real.shape[0] >= 4:
        perm = rng.permutation(real.shape[0])
        a, b = perm[: real.shape[0] // 2], perm[real.shape[0] // 2 :]
        rows.append(
            {"method": "split-half ceiling", **transfer_scores(real[a], real[b], ctrl, **kw)}
        )
    return rows


def cross_validate_cells(
    adata: AnnData,
    context_key: str,
    perturbation_key: str,
    *,
    control: str = "control",
    contexts: list[str] | None = None,
    perturbations: list[str] | None = None,
    n_comps: int = 30,
    deg_method: str = "t",
    random_state: RandomState = 0,
    key_added: str | None = CROSS_VALIDATION_TRANSFER_KEY,
    progress: bool = True,
    **params: Any,
) -> pd.DataFrame:
    """Hide each (context, perturbation) pair's perturbed cells in turn, fit, transfer, score.

    Parameters
    ----------
    adata
        Cells with ``obs[context_key]`` and ``obs[perturbation_key]`` (not modified, except
        ``uns[key_added]``).
    context_key, perturbation_key
        Columns of ``obs`` naming each cell's context and perturbation.
    control
        The control label.
    contexts, perturbations
        Restrict the hidden pairs (default every context with controls, every perturbation
        measured in it and in another context with controls).
    n_comps
        Principal components (fitted on every cell except the hidden ones) for the
        E-distance and the MMD.
    deg_method
        ``"t"`` (Welch t, fast) or ``"wilcoxon"`` (scanpy) for the top-20/100 genes.
    random_state
        Seed of the fits and of the split-half ceiling.
    key_added
        ``adata.uns`` key for ``{"scores": table, "params": {...}}``; ``None`` writes nothing.
    progress
        Progress bars of the fits.
    **params
        Parameters of :func:`fit_transfer`.

    Returns
    -------
    One row per hidden pair and method (:data:`CELL_METHODS`) with ``context``,
    ``perturbation``, the :data:`scimpute.metrics.TRANSFER_METRICS`, ``train_seconds`` and,
    for scimpute, the chosen ``rule``, ``output`` and architecture.

    """
    from ._transfer import fit_transfer, transfer

    check_choice("cross_validate_transfer", "deg_method", deg_method, ("t", "wilcoxon"))
    ctx, pert = cell_labels(adata, context_key, perturbation_key, control)
    rows = []
    for c, a in _pairs(ctx, pert, control, contexts, perturbations):
        held = (ctx == c) & (pert == a)
        train = adata[~held].copy()
        for k in list(train.uns):
            if k == key_added:
                del train.uns[k]
        t0 = time.perf_counter()
        fit_transfer(train, context_key, perturbation_key, control=control, key_added="cv",
                     random_state=random_state, progress=progress, **params)  # fmt: skip
        secs = time.perf_counter() - t0
        pred = transfer(train, context_key, perturbation_key, control=control,
                        target_context=c, target_perturbation=a, key="cv")  # fmt: skip
        truth = held_out_truth(adata, ctx, pert, control, c, a, n_comps=n_comps,
                               deg_method=deg_method, layer=params.get("layer"))  # fmt: skip
        p = train.uns["cv"]["params"]
        info = {"rule": str(p["rule"]), "output": str(pred.uns["transfer"]["output"]),
                "width": int(p["width"]), "depth": int(p["depth"]),
                "latent_dim": str(p["latent_dim"]), "train_seconds": secs}  # fmt: skip
        for r in score_held_out(truth, {"scimpute": dense(pred.X)}, random_state=random_state):
            rows.append(
                {
                    "context": c,
                    "perturbation": a,
                    **r,
                    **(info if r["method"] == "scimpute" else {}),
                }
            )
    table = pd.DataFrame(rows)
    if key_added is not None:
        adata.uns[key_added] = {
            Key.uns.scores: table.astype({c: str for c in ("rule", "output", "latent_dim") if c in table}),
            "params": h5ad_safe({"context_key": context_key, "perturbation_key": perturbation_key,
                                 "control": control, "n_comps": n_comps, "deg_method": deg_method,
                                 "random_state": random_state, **params}),
        }  # fmt: skip
    return table


def _pairs(ctx, pert, control, contexts, perturbations) -> list[tuple[str, str]]:
    with_ctrl = set(ctx[pert == control])
    out = []
    for a in sorted(set(pert) - {control}):
        if perturbations is not None and a not in perturbations:
            continue
        where = sorted(set(ctx[pert == a]) & with_ctrl)
        for c in where:
            if len(where) >= 2 and (contexts is None or c in contexts):
                out.append((c, a))
    if not out:
        raise ValueError(
            "cross_validate_transfer: no (context, perturbation) pair can be hidden "
            "(each needs controls and the perturbation measured in another context)."
        )
    return out

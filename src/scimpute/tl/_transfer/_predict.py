"""Move the control cells of a context by a perturbation's latent shift (scGen's prediction)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._keys import COMBINATION_SEP, PREDICTED_COL, SOURCE_CELL_COL, TRANSFER_KEY
from ..._params import check_choice, check_random_state_value
from ..._utils import RandomState, check_random_state
from ..._validate import _suggest
from ...nn import decode, encode
from ...nn._shift import BALANCE
from ._data import cell_labels, expression
from ._fit import fit_transfer
from ._io import load_network
from ._rules import RULES, move

OWNER = "transfer"
OUTPUTS = ("auto", "decoded", "residual")
TRANSFER_RULES = ("auto", *RULES)


#: strength of a rule the record holds no validated strength for
DEFAULT_STRENGTH = {"shift": np.inf, "transport": 1.0, "kernel": 0.1}


def rule_strength(record, params, rule: str) -> float:
    """The strength of ``rule``: the chosen one, else the best validated, else the default.

    The chosen rule's strength is ``params["transport_alpha"]``; for another rule, the
    strength that scored best in the record's validation table under the chosen
    architecture; for records without one, :data:`DEFAULT_STRENGTH`.
    """
    if rule == "shift":
        return np.inf
    if rule == str(params.get("rule", "shift")) and "transport_alpha" in params:
        return float(params["transport_alpha"])
    table = (record.get("validation") or {}).get("candidates") if hasattr(record, "get") else None
    if table is not None and {"rule", "alpha", "score"} <= set(table):
        df = pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
        for k in ("representation", "width", "depth", "latent_dim"):
            if k in df and k in params:
                df = df[df[k].astype(str) == str(params[k])]
        df = df[df["rule"].astype(str) == rule]
        if len(df):
            return float(df.loc[df["score"].astype(float).idxmax(), "alpha"])
    return DEFAULT_STRENGTH[rule]


def _components(label: str, sep: str) -> list[str]:
    return [p.strip() for p in str(label).split(sep)] if sep in str(label) else [str(label)]


def transfer(
    adata: AnnData,
    context_key: str = "cell_type",
    perturbation_key: str = "perturbation",
    *,
    control: str = "control",
    target_context: str,
    target_perturbation: str,
    key: str = TRANSFER_KEY,
    balance: str = "mean",
    output: str = "auto",
    rule: str = "auto",
    combination_sep: str = COMBINATION_SEP,
    random_state: RandomState = 0,
    **fit_params: Any,
) -> AnnData:
    """Predict the cells of an unmeasured (context, perturbation) pair in the latent space.

    The control cells of ``target_context`` are encoded, moved by the transfer rule and
    decoded, one predicted cell per control cell. Rules (``rule``; ``"auto"`` applies the one
    :func:`fit_transfer` chose by validation, recorded in ``uns[key]["params"]["rule"]``):

    ``"shift"`` (scGen's latent arithmetic)::

        z_pred = z + mean_{c'} [mean z(c', a) - mean z(c', control)]

    ``"transport"`` (a shift that depends linearly on where the control cell lies)::

        z_pred = z + b + (z - center) @ A

    ``"kernel"`` (each control cell moved like its nearest cells of the other contexts)::

        z_pred = z + sum_j k(z, p_j) w_j D_j / sum_j k(z, p_j) w_j,
        k(z, p) = exp(-|z - p|^2 / (h m))

    where, in every other context c', each control cell's optimal-transport displacement
    towards the perturbed cells of c' is computed (entropic OT, barycentric projection) and
    ``A`` is the ridge regression (strength ``uns[key]["params"]["transport_alpha"]``) of
    these displacements on the cells' positions; ``b`` is their balanced mean, the shift
    above; the kernel rule averages the displacements ``D_j`` of the other contexts' control
    cells at ``p_j`` with Gaussian weights (bandwidth ``h``, the recorded strength, relative to
    the median squared distance ``m``), so that a context whose controls lie near the
    target's weighs most. All rules use every other context c' where both the perturbation
    and the control were measured, each context weighing the same; the target context itself
    is never used.
    A combination ``"A+B"`` measured nowhere is predicted by adding the moves of its
    components (latent additivity) when each component is measured somewhere.

    Parameters
    ----------
    adata
        The cells the model was fitted on, or any cells with the same genes and label
        columns (for example the same file read back from disk, also ``backed="r"``).
    context_key, perturbation_key, control
        As in :func:`fit_transfer`.
    target_context
        Context whose cells to predict; it must have control cells.
    target_perturbation
        Perturbation to transfer; measured (with control) in at least one other context, or a
        combination of such perturbations.
    key
        ``adata.uns`` key of the model. If none is there, :func:`fit_transfer` is run first
        with ``key_added=key``, ``random_state`` and ``**fit_params`` (and writes into
        ``adata``).
    balance
        For the shift rule: ``"mean"`` (each context weighs the same, exact),
        ``"resample"`` (scGen's resampling of every context to the same size, seeded by
        ``random_state``) or ``"pooled"`` (no balancing); see
        :func:`scimpute.nn.latent_shift`.
    output
        ``"decoded"``: the decoded moved codes (scGen; smooth cells); ``"residual"``: each
        control cell plus the decoded change ``dec(z_pred) - dec(z)``, which keeps the
        cell's own detail that the network does not reconstruct; ``"auto"``: the one chosen
        by validation (``uns[key]["params"]["output"]``; ``"decoded"`` for older records).
    rule
        ``"auto"`` (the validated choice; ``"shift"`` for older records), ``"shift"``,
        ``"transport"`` or ``"kernel"`` (strength: the chosen one, or the best validated one
        of that rule, see :func:`rule_strength`).
    combination_sep
        Separator of combination labels.
    random_state
        Seed for ``balance="resample"`` and for fitting.
    **fit_params
        Passed to :func:`fit_transfer` when a model has to be fitted.

    Returns
    -------
    A new AnnData of predicted cells, one per control cell of ``target_context`` (same
    ``var``), with ``obs[context_key] = target_context``,
    ``obs[perturbation_key] = target_perturbation``, ``obs["predicted"] = True`` and
    ``obs["source_cell"]`` (the control cell each was moved from); ``obsm[f"X_{key}"]`` the
    moved latent codes; ``uns["transfer"]`` the shift, the contexts it was averaged over,
    ``balance``, ``output`` and ``key``. It concatenates with real cells
    (:func:`anndata.concat`) for pertpy's distances and comparisons. ``adata`` is not modified
    unless a model had to be fitted.

    """
    check_choice(OWNER, "balance", balance, BALANCE)
    check_choice(OWNER, "output", output, OUTPUTS)
    check_choice(OWNER, "rule", rule, TRANSFER_RULES)
    check_random_state_value(OWNER, random_state)
    ctx, pert = cell_labels(adata, context_key, perturbation_key, control)
    target_context = str(target_context)
    target_perturbation = str(target_perturbation)
    contexts = sorted(set(ctx))
    if target_context not in contexts:
        raise KeyError(
            f"target_context {target_context!r} does not occur in obs[{context_key!r}]."
            + _suggest(target_context, contexts)
        )
    if target_perturbation == control:
        raise ValueError("target_perturbation is the control; choose a perturbation.")
    is_target_ctrl = (ctx == target_context) & (pert == control)
    if not is_target_ctrl.any():
        raise ValueError(
            f"Context {target_context!r} has no control cells (obs[{perturbation_key!r}] == "
            f"{control!r}): there is nothing to move. Transfer needs the target's own "
            "unperturbed cells."
        )
    codes = pd.Categorical(ctx, categories=contexts).codes.astype(np.int64)
    target_code = contexts.index(target_context)
    exclude = np.zeros(len(contexts), dtype=bool)
    exclude[target_code] = True
    is_ctrl = pert == control
    perts = set(pert)

    def measured_in(label: str) -> bool:
        rows = pert == label
        both = set(codes[rows]) & set(codes[is_ctrl]) - {target_code}
        return bool(both)

    if measured_in(target_perturbation):
        parts = [target_perturbation]
        how = "measured"
    else:
        parts = _components(target_perturbation, combination_sep)
        if len(parts) < 2 or not all(measured_in(p) for p in parts):
            where = f"only in {target_context!r}" if target_perturbation in perts else "nowhere"
            missing = [p for p in parts if not measured_in(p)]
            raise ValueError(
                f"Perturbation {target_perturbation!r} is measured {where} among the other "
                f"contexts with control cells, so there is no effect to transfer"
                + (
                    f" (components measured nowhere: {missing})"
                    if len(parts) > 1
                    else _suggest(target_perturbation, sorted(perts - {control}))
                )
                + "."
            )
        how = "sum_of_components"

    if key not in adata.uns:
        fit_transfer(
            adata,
            context_key,
            perturbation_key,
            control=control,
            key_added=key,
            random_state=random_state,
            **fit_params,
        )
    elif fit_params:
        warnings.warn(
            f"A model is already stored under {key!r}; ignoring {sorted(fit_params)}. Refit "
            "with scimpute.tl.fit_transfer to change it.",
            UserWarning,
            stacklevel=2,
        )
    net, params = load_network(adata, key=key)
    layer = params.get("layer", "X")
    X = expression(adata, None if layer == "X" else layer)
    Z = encode(net, X)
    rng = check_random_state(random_state)
    if rule == "auto":
        rule = str(params.get("rule", "shift"))
    if output == "auto":
        output = str(params.get("output", "decoded"))
    alpha = rule_strength(adata.uns[key], params, rule)
    moved, info = move(
        Z,
        codes,
        len(contexts),
        target_code,
        [pert == part for part in parts],
        is_ctrl,
        rule=rule,
        alpha=alpha,
        balance=balance,
        rng=rng,
    )
    shift, used_all = info["shift"], info["used"]
    Xp = decode(net, moved)
    if output == "residual":
        Xp = X[is_target_ctrl] + Xp - decode(net, Z[is_target_ctrl].astype(np.float32))
    src = adata.obs_names[is_target_ctrl]
    obs = pd.DataFrame(
        {
            context_key: pd.Categorical([target_context] * len(src)),
            perturbation_key: pd.Categorical([target_perturbation] * len(src)),
            PREDICTED_COL: True,
            SOURCE_CELL_COL: np.asarray(src, dtype=object),
        },
        index=pd.Index([f"{s}-predicted" for s in src]),
    )
    out = AnnData(X=Xp.astype(np.float32), obs=obs, var=adata.var.copy())
    out.obsm[f"X_{key}"] = moved
    out.uns["transfer"] = {
        "shift": shift.astype(np.float32),
        "contexts_used": np.asarray(
            [c for c, u in zip(contexts, used_all, strict=True) if u], dtype=object
        ),
        "how": how,
        "rule": rule,
        "components": np.asarray(parts, dtype=object),
        "balance": balance,
        "output": output,
        "key": key,
        "target_context": target_context,
        "target_perturbation": target_perturbation,
    }
    return out

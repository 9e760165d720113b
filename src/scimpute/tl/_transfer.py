"""Cell-level style transfer: train an autoencoder on cells, move cells by latent arithmetic."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._keys import COMBINATION_SEP, PREDICTED_COL, SOURCE_CELL_COL, TRANSFER_KEY
from .._utils import RandomState, check_random_state, h5ad_safe, seed_from
from .._validate import _suggest, check_labels, check_layer, check_obs_key
from ..nn import (
    NetConfig,
    Network,
    TrainConfig,
    decode,
    encode,
    latent_shift,
    network_from_arrays,
    network_to_arrays,
    select,
    train_networks,
)
from ..nn._shift import BALANCE

#: per-model defaults of fit_transfer (chosen on the Kang benchmark; see benchmarks/).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "autoencoder": {"width": 256, "depth": 2, "latent_dim": 64, "dropout": 0.2},
    "vae": {"width": 256, "depth": 2, "latent_dim": 32, "dropout": 0.2},
}
MIN_CELLS = 10
OUTPUTS = ("decoded", "residual")


def _dense(x) -> np.ndarray:
    if sp.issparse(x):
        x = x.toarray()
    elif hasattr(x, "to_memory"):
        x = x.to_memory()
    return np.asarray(x, dtype=np.float32)


def _labels(adata: AnnData, context_key: str, perturbation_key: str, control: str):
    ctx = check_labels(check_obs_key(adata, context_key, what="context key"), context_key)
    pert = check_labels(
        check_obs_key(adata, perturbation_key, what="perturbation key"), perturbation_key
    )
    if context_key == perturbation_key:
        raise ValueError("context_key and perturbation_key must name different columns.")
    if not (pert == control).any():
        raise ValueError(
            f"Control label {control!r} does not occur in obs[{perturbation_key!r}]."
            + _suggest(control, sorted(pert.unique()))
            + " Pass control=<label>."
        )
    return ctx.to_numpy(), pert.to_numpy()


def fit_transfer(
    adata: AnnData,
    context_key: str = "cell_type",
    perturbation_key: str = "perturbation",
    *,
    control: str = "control",
    model: str = "autoencoder",
    key_added: str = TRANSFER_KEY,
    layer: str | None = None,
    width: int | None = None,
    depth: int | None = None,
    latent_dim: int | str | None = "default",
    dropout: float | None = None,
    kl_weight: float = 5e-5,
    standardize: bool = False,
    batch_size: int = 128,
    max_epochs: int = 100,
    patience: int = 10,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    validation_fraction: float = 0.1,
    random_state: RandomState = 0,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Train an autoencoder (or VAE) on the cells, for latent arithmetic with :func:`transfer`.

    All cells are used (controls and every perturbation); a seeded random
    ``validation_fraction`` of them is held out for early stopping. Training is float32,
    mini-batched and jit-compiled (:func:`scimpute.nn.train_networks`), the same on CPU and
    GPU; equal ``random_state`` gives equal weights.

    Parameters
    ----------
    adata
        Cells (or bulk / pseudobulk profiles) x genes, log-normalised (``X`` or ``layer``,
        dense or sparse).
    context_key
        Column of ``adata.obs`` naming the context (cell type, cell line, donor); default
        ``"cell_type"`` as in pertpy.
    perturbation_key
        Column naming the perturbation (pertpy's default ``"perturbation"``; ``"condition"``
        for Kang et al.). Combinations are labelled ``"A+B"``.
    control
        Label of the control cells in ``obs[perturbation_key]``.
    model
        ``"autoencoder"``: a deterministic autoencoder (wide and over-parameterised with
        ``latent_dim=None``, Belyaeva et al. 2021); ``"vae"``: scGen's variational
        autoencoder (Gaussian latent, KL weight ``kl_weight``, dropout).
    key_added
        Where results go (see Returns).
    layer
        Layer to train on instead of ``X``.
    width, depth, latent_dim, dropout
        Architecture (:class:`scimpute.nn.NetConfig`); defaults per model (chosen on the
        Kang benchmark, ``MODEL_DEFAULTS``): autoencoder 256 units x 2 layers, latent 64,
        dropout 0.2; VAE 256 x 2, latent 32, dropout 0.2 (a compact scGen: its paper used
        800 x 2 and latent 100). ``latent_dim=None`` makes the autoencoder's latent space its
        last hidden layer (``width`` units, Belyaeva et al.'s over-parameterised network with
        ``depth=1``).
    kl_weight
        KL weight of the VAE (scGen: 5e-5).
    standardize
        Scale every gene to unit variance (on the training cells) before the network.
    batch_size, max_epochs, patience, learning_rate, weight_decay
        Adam training with early stopping (:func:`scimpute.nn.train_networks`).
    validation_fraction
        Fraction of cells held out for early stopping (0 trains ``max_epochs`` epochs).
    random_state
        Seed of the split and of training.
    progress
        Progress bar over epochs.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``), having written

    - ``obsm[f"X_{key_added}"]``: ``(n_cells, n_latent)`` float32 latent codes (posterior
      means for the VAE);
    - ``uns[key_added]``: ``{"params": {...}, "weights": {name: array}, "history":
      {"train_loss", "val_loss"}, "training": {...}, "var_names": array}``. ``params``
      holds the architecture and every argument; ``weights`` every array of the network
      (input scaling included) as plain float32 arrays, so that a written and re-read
      ``.h5ad`` can still :func:`transfer`.

    Nothing is written if an error is raised.

    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    if model not in MODEL_DEFAULTS:
        raise ValueError(f"model must be one of {tuple(MODEL_DEFAULTS)}, got {model!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError("key_added must be a non-empty string.")
    _labels(adata, context_key, perturbation_key, control)
    if adata.n_obs < MIN_CELLS:
        raise ValueError(
            f"fit_transfer needs at least {MIN_CELLS} cells (profiles) to train a network; "
            f"adata has {adata.n_obs}. Use a grid method (scimpute.tl.impute) for a handful of "
            "profiles."
        )
    if not 0.0 <= validation_fraction < 0.5:
        raise ValueError(f"validation_fraction must be in [0, 0.5), got {validation_fraction!r}.")
    d = MODEL_DEFAULTS[model]
    cfg = NetConfig(
        model=model,
        n_features=adata.n_vars,
        width=d["width"] if width is None else int(width),
        depth=d["depth"] if depth is None else int(depth),
        latent_dim=d["latent_dim"] if isinstance(latent_dim, str) else latent_dim,
        dropout=d["dropout"] if dropout is None else float(dropout),
        kl_weight=float(kl_weight),
    )
    X = _dense(check_layer(adata, layer))
    if not np.isfinite(X).all():
        raise ValueError("The expression matrix holds NaN or infinite values; remove them first.")
    rng = check_random_state(random_state)
    n = X.shape[0]
    n_val = round(validation_fraction * n)
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    mean = np.zeros(X.shape[1], np.float32)
    scale = np.ones(X.shape[1], np.float32)
    if standardize:
        mean = X[train_idx].mean(axis=0)
        sd = X[train_idx].std(axis=0)
        scale = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
    res = train_networks(
        cfg,
        X[train_idx],
        X_val=X[val_idx] if n_val else None,
        val_weights=np.ones((1, n_val), np.float32) if n_val else None,
        input_mean=mean,
        input_scale=scale,
        config=TrainConfig(
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
        ),
        seed=seed_from(rng),
        progress=progress,
        desc=f"fit_transfer ({model})",
    )
    net = select(res.networks, 0)
    Z = encode(net, X)
    params = {
        "context_key": context_key,
        "perturbation_key": perturbation_key,
        "control": control,
        "layer": "X" if layer is None else layer,
        **cfg.to_dict(),
        "standardize": bool(standardize),
        "batch_size": int(batch_size),
        "max_epochs": int(max_epochs),
        "patience": int(patience),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "validation_fraction": float(validation_fraction),
        "random_state": random_state,
    }
    record = {
        "params": h5ad_safe(params),
        "weights": network_to_arrays(net),
        "history": {
            "train_loss": res.train_loss[:, 0].astype(np.float32),
            "val_loss": res.val_loss[:, 0].astype(np.float32),
        },
        "training": {
            "n_epochs": int(res.n_epochs),
            "best_epoch": int(res.best_epoch[0]),
            "seconds": float(res.seconds),
            "n_train": int(train_idx.size),
            "n_val": int(val_idx.size),
        },
        "var_names": np.asarray(adata.var_names.astype(str), dtype=object),
    }
    out = adata.copy() if copy else adata
    out.obsm[f"X_{key_added}"] = Z.astype(np.float32)
    out.uns[key_added] = record
    return out if copy else None


def load_network(adata: AnnData, key: str = TRANSFER_KEY) -> tuple[Network, dict]:
    """Rebuild the network stored by :func:`fit_transfer` in ``adata.uns[key]``.

    Returns ``(network, params)``. Works on an AnnData read back from an ``.h5ad``.
    """
    rec = adata.uns.get(key)
    if not isinstance(rec, Mapping) or "weights" not in rec or "params" not in rec:
        raise KeyError(
            f"adata.uns[{key!r}] holds no fitted model. Run "
            f"scimpute.tl.fit_transfer(adata, ..., key_added={key!r}) first."
        )
    params = dict(rec["params"])
    cfg = NetConfig.from_dict(params)
    if cfg.n_features != adata.n_vars:
        raise ValueError(
            f"The model under {key!r} was trained on {cfg.n_features} genes, adata has "
            f"{adata.n_vars}. Subset adata to the genes of training (uns[{key!r}]['var_names'])."
        )
    names = rec.get("var_names")
    if names is not None and not np.array_equal(
        np.asarray(names).astype(str), np.asarray(adata.var_names.astype(str))
    ):
        raise ValueError(
            f"adata.var_names differ from the genes the model under {key!r} was trained on "
            "(same number, other names or order). Reorder adata to uns[key]['var_names']."
        )
    return network_from_arrays(cfg, rec["weights"]), params


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
    output: str = "decoded",
    combination_sep: str = COMBINATION_SEP,
    random_state: RandomState = 0,
    **fit_params: Any,
) -> AnnData:
    """Predict the cells of an unmeasured (context, perturbation) pair by latent arithmetic.

    The control cells of ``target_context`` are encoded, moved by the perturbation's latent
    shift and decoded (scGen's prediction)::

        z_pred = z(control cell of target) + mean_{c'} [mean z(c', a) - mean z(c', control)]

    The shift averages over every other context c' where both the perturbation and the
    control were measured, each context weighing the same (``balance``); the target context
    itself is never used. A combination ``"A+B"`` measured nowhere is predicted with the sum
    of the shifts of its components (latent additivity) when each component is measured
    somewhere.

    Parameters
    ----------
    adata
        The cells the model was fitted on, or any cells with the same genes and label
        columns (for example the same file read back from disk).
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
        ``"mean"`` (each context weighs the same, exact), ``"resample"`` (scGen's resampling
        of every context to the same size, seeded by ``random_state``) or ``"pooled"`` (no
        balancing); see :func:`scimpute.nn.latent_shift`.
    output
        ``"decoded"``: the decoded moved codes (scGen); ``"residual"``: each control cell
        plus the decoded change ``dec(z + shift) - dec(z)``, which keeps the cell's own
        detail that the network does not reconstruct.
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
    if balance not in BALANCE:
        raise ValueError(f"balance must be one of {BALANCE}, got {balance!r}.")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
    ctx, pert = _labels(adata, context_key, perturbation_key, control)
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
    net, params = load_network(adata, key)
    layer = params.get("layer", "X")
    X = _dense(check_layer(adata, None if layer == "X" else layer))
    Z = encode(net, X)
    rng = check_random_state(random_state)
    shift = np.zeros(Z.shape[1])
    used_all = np.zeros(len(contexts), dtype=bool)
    for part in parts:
        s, used = latent_shift(
            Z,
            codes,
            pert == part,
            is_ctrl,
            len(contexts),
            balance=balance,
            exclude=exclude,
            rng=rng,
        )
        shift += s
        used_all |= used
    z0 = Z[is_target_ctrl]
    moved = (z0 + shift).astype(np.float32)
    Xp = decode(net, moved)
    if output == "residual":
        Xp = X[is_target_ctrl] + Xp - decode(net, z0.astype(np.float32))
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
        "components": np.asarray(parts, dtype=object),
        "balance": balance,
        "output": output,
        "key": key,
        "target_context": target_context,
        "target_perturbation": target_perturbation,
    }
    return out


PERTPY_HINT = (
    "pertpy is an optional extra of scimpute: pip install 'pertpy==1.0.3' 'statsmodels<0.15' "
    "filelock (the versions CI tests with on Python 3.11)."
)


def _import_pertpy():
    """Import pertpy lazily, or raise an :class:`ImportError` that says how to install it."""
    try:
        import pertpy
    except ImportError as err:
        raise ImportError(PERTPY_HINT) from err
    return pertpy


def compare_transfer(
    predicted: AnnData,
    real: AnnData,
    control: AnnData | None = None,
    *,
    metric: str = "edistance",
    layer: str | None = None,
    n_comps: int = 20,
) -> pd.DataFrame:
    """Distances between predicted cells, the real cells they stand for and the controls.

    Uses pertpy's :class:`pertpy.tools.Distance` (pertpy is imported lazily; see the
    install hint in the error when it is missing). The three groups are concatenated
    (common genes), projected on ``n_comps`` principal components fitted on all of them (or
    compared on ``layer``) and compared pairwise. A good prediction is closer to ``real``
    than ``control`` is.

    Parameters
    ----------
    predicted
        Output of :func:`transfer`.
    real
        The measured cells of the same (context, perturbation).
    control
        Optionally the control cells of the context (the "no effect" prediction).
    metric
        Any metric of :class:`pertpy.tools.Distance` (``"edistance"``, ``"mmd"``,
        ``"mean_pairwise"``, ...).
    layer
        Compare on this layer (present in all inputs) instead of principal components.
    n_comps
        Principal components when ``layer`` is ``None``.

    Returns
    -------
    Symmetric :class:`pandas.DataFrame` of distances between the groups ``"predicted"``,
    ``"real"`` (and ``"control"``).

    """
    import anndata as ad
    import scanpy as sc

    pt = _import_pertpy()
    groups = {"predicted": predicted, "real": real}
    if control is not None:
        groups["control"] = control
    parts = []
    for name, a in groups.items():
        if a.n_obs == 0:
            raise ValueError(f"The {name!r} cells are empty.")
        b = AnnData(
            X=_dense(a.X if layer is None else check_layer(a, layer)),
            obs=pd.DataFrame({"group": name}, index=[f"{name}-{i}" for i in range(a.n_obs)]),
            var=pd.DataFrame(index=a.var_names.astype(str)),
        )
        parts.append(b)
    both = ad.concat(parts, join="inner")
    if both.n_vars == 0:
        raise ValueError("The inputs share no gene names.")
    if layer is None:
        n = int(min(n_comps, both.n_obs - 1, both.n_vars - 1))
        sc.pp.pca(both, n_comps=n)
        dist = pt.tl.Distance(metric=metric, obsm_key="X_pca")
    else:
        both.layers["compare"] = both.X
        dist = pt.tl.Distance(metric=metric, layer_key="compare")
    return dist.pairwise(both, groupby="group", show_progressbar=False, n_jobs=1)

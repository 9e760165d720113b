"""Latent arithmetic on grids: autoencoders that transfer effects across contexts.

A network (a wide autoencoder, or a scGen-style VAE) is trained to reconstruct the measured
profiles of the grid (controls included). A target pair (c, a) is then predicted by latent
arithmetic, the "word2vec analogy" of Belyaeva et al. (2021) and scGen::

    z(c, a) = z_b(c) + mean_{c'} [z(c', a) - z_b(c')]

over the contexts c' where a and the baseline are measured, with ``z_b(c)`` the latent code of
c's control profile (or, on grids without control, the mean code of c's measured profiles),
and decoded. With ``output="residual"`` the decoded change is added to the measured baseline
instead, ``b(c) + dec(z(c, a)) - dec(z_b(c))``, which removes the network's reconstruction
error of ``b(c)`` from the prediction.

Fallbacks (recorded per pair in ``source``): a context without baseline profile ->
``perturbation_mean``; a perturbation measured in no other context with a baseline ->
``context_mean``.

:func:`leave_one_out` evaluates the method on every measured pair with a grouped-training
scheme that trains ``n_groups`` networks (vmapped, in one compiled loop) instead of one per
pair; see its docstring for why it is an honest leave-one-out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._utils import RandomState, check_random_state, seed_from
from ..metrics import METRICS, score_pairs
from ..nn import NetConfig, TrainConfig, decode, encode, select, train_networks
from ._base import GridData, MethodResult, as_targets
from ._registry import register
from .baselines import _chain, group_means

_REF = (
    "Belyaeva et al., Nat Commun 2021 (over-parameterised autoencoders); "
    "Lotfollahi et al., Nat Methods 2019 (scGen)"
)
OUTPUTS = ("decoded", "residual")
BASELINES = ("auto", "control", "context_mean")
#: training rows of a grid are padded to a multiple of this (one compiled shape per bucket)
ROW_BUCKET = 32
TRANSFORMS = ("none", "log1p")


def _forward(Y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        if np.nanmin(Y) < 0:
            raise ValueError(
                "transform='log1p' needs non-negative profiles; these hold negative values "
                "(z-scores or log ratios?). Use transform='none'."
            )
        return np.log1p(Y)
    return Y


def _inverse(Y: np.ndarray, transform: str) -> np.ndarray:
    return np.expm1(Y) if transform == "log1p" else Y


def _check_choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}.")


def _resolve_baseline(baseline: str, data: GridData) -> str:
    _check_choice("baseline", baseline, BASELINES)
    if baseline == "auto":
        return "control" if data.control is not None else "context_mean"
    if baseline == "control" and data.control is None:
        raise ValueError(
            "baseline='control' needs a grid with a control; this grid was built with "
            "control=None. Use baseline='context_mean'."
        )
    return baseline


def _config(model, n_features, width, depth, latent_dim, dropout, kl_weight) -> NetConfig:
    if model == "vae" and latent_dim is None:
        latent_dim = 16
    return NetConfig(
        model=model,
        n_features=int(n_features),
        width=int(width),
        depth=int(depth),
        latent_dim=latent_dim,
        dropout=float(dropout),
        kl_weight=float(kl_weight),
    )


def fit_grid_networks(
    data: GridData,
    train_masks: np.ndarray,
    cfg: NetConfig,
    *,
    transform: str = "none",
    standardize: bool = True,
    validation_fraction: float = 0.1,
    batch_size: int = 64,
    max_epochs: int = 300,
    patience: int = 20,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    random_state: RandomState = 0,
    progress: bool = False,
):
    """Train one network per mask on the grid's profiles, all at once.

    Parameters
    ----------
    data
        The grid's arrays.
    train_masks
        ``(n_models, n_contexts, n_perturbations)`` bool: the pairs each network may learn
        from (each must be a subset of ``data.measured``).
    cfg
        Architecture.
    transform, standardize
        Profiles are transformed (``"log1p"``: ``log(1 + y)``) and, with ``standardize``,
        scaled to zero mean and unit variance per feature using each network's own training
        rows; the networks undo both when decoding (the inverse transform is applied by the
        caller).
    validation_fraction
        Fraction of each network's pairs (seeded) used for early stopping instead of
        training; 0 trains every pair for ``max_epochs``.
    batch_size, max_epochs, patience, learning_rate, weight_decay, progress
        See :func:`scimpute.nn.train_networks`.
    random_state
        Seed of the splits and of training.

    Returns
    -------
    ``(result, rows)``: the :class:`~scimpute.nn.TrainResult` and the ``(n_rows, 2)`` pair
    indices of the training rows (all measured pairs).

    """
    masks = np.asarray(train_masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if (masks & ~data.measured[None]).any():
        raise ValueError("train_masks may only contain measured pairs.")
    rng = check_random_state(random_state)
    rows = np.argwhere(data.measured)
    X = _forward(np.asarray(data.Y[rows[:, 0], rows[:, 1]], dtype=np.float64), transform)
    W = masks[:, rows[:, 0], rows[:, 1]].astype(np.float32)  # (K, n_rows)
    if (W.sum(axis=1) < 2).any():
        raise ValueError("Each network needs at least 2 measured profiles to learn from.")
    V = np.zeros_like(W)
    if validation_fraction > 0:
        for k in range(W.shape[0]):
            idx = np.flatnonzero(W[k])
            n_val = round(validation_fraction * idx.size)
            if n_val >= 1 and idx.size - n_val >= 2:
                pick = rng.choice(idx, size=n_val, replace=False)
                V[k, pick], W[k, pick] = 1.0, 0.0
    means = (W @ X) / W.sum(axis=1, keepdims=True)
    if standardize:
        var = (W @ X**2) / W.sum(axis=1, keepdims=True) - means**2
        scales = np.sqrt(np.maximum(var, 0))
        scales = np.where(scales > 1e-6 * max(float(scales.max()), 1e-12), scales, 1.0)
    else:
        means = np.zeros_like(means)
        scales = np.ones_like(means)
    use_val = bool(V.sum() > 0)
    # pad the rows to a multiple of ROW_BUCKET with zero-weight rows: grids with slightly
    # different numbers of measured pairs share one compiled training loop
    n_pad = -X.shape[0] % ROW_BUCKET
    if n_pad:
        X = np.concatenate([X, np.zeros((n_pad, X.shape[1]))])
        W = np.concatenate([W, np.zeros((W.shape[0], n_pad), W.dtype)], axis=1)
        V = np.concatenate([V, np.zeros((V.shape[0], n_pad), V.dtype)], axis=1)
    res = train_networks(
        cfg,
        X.astype(np.float32),
        train_weights=W,
        val_weights=V if use_val else None,
        input_mean=means,
        input_scale=scales,
        config=TrainConfig(
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
        ),
        seed=seed_from(rng),
        progress=progress,
        desc=f"{cfg.model} x{W.shape[0]}",
    )
    return res, rows


def latent_arithmetic(
    net,
    data: GridData,
    visible: np.ndarray,
    targets: np.ndarray,
    *,
    transform: str = "none",
    output: str = "decoded",
    baseline: str = "control",
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict targets by latent arithmetic with a trained network.

    Parameters
    ----------
    net
        A trained :class:`~scimpute.nn.Network`.
    data
        The grid's arrays.
    visible
        ``(n_contexts, n_perturbations)`` bool: the measured pairs that may be encoded.
    targets
        ``(n, 2)`` pairs to predict.
    transform, output, baseline
        See :func:`autoencoder`.
    exclude_self
        Remove each target's own pair from the pairs it uses (for leave-one-out over
        measured pairs, where the target is itself visible).

    Returns
    -------
    ``(prediction, ok, n_contexts_used)``: ``(n, p)`` predictions on the original scale (NaN
    where ``ok`` is False: no baseline in c, or a measured in no other context).

    """
    t = as_targets(targets)
    C, A, p = data.Y.shape
    rows = np.argwhere(visible)
    Y = _forward(np.asarray(data.Y[rows[:, 0], rows[:, 1]], dtype=np.float64), transform)
    Zr = encode(net, Y).astype(np.float64)
    d = Zr.shape[1]
    Z = np.zeros((C, A, d))
    Z[rows[:, 0], rows[:, 1]] = Zr
    Yf = np.zeros((C, A, p))
    Yf[rows[:, 0], rows[:, 1]] = Y
    vis = np.asarray(visible, dtype=bool).copy()
    c, a = t[:, 0], t[:, 1]
    own = vis[c, a] & exclude_self  # the target's own pair, visible, to be left out
    vis_treated = vis.copy()
    if data.control is not None:
        vis_treated[:, data.control] = False
    if baseline == "control":
        if data.control is None:
            raise ValueError("baseline='control' needs a grid with a control perturbation.")
        has_b = vis[:, data.control]
        zb = Z[:, data.control]
        yb = Yf[:, data.control]
        zb_t, yb_t, has_b_t = zb[c], yb[c], has_b[c]
    else:  # mean of the context's measured non-control profiles (codes)
        n_c = vis_treated.sum(axis=1).astype(float)
        sum_z = (Z * vis_treated[..., None]).sum(axis=1)
        sum_y = (Yf * vis_treated[..., None]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            zb = sum_z / n_c[:, None]
            yb = sum_y / n_c[:, None]
        has_b = n_c > 0
        own_t = own & vis_treated[c, a]
        n_t = n_c[c] - own_t
        with np.errstate(invalid="ignore", divide="ignore"):
            zb_t = (sum_z[c] - own_t[:, None] * Z[c, a]) / n_t[:, None]
            yb_t = (sum_y[c] - own_t[:, None] * Yf[c, a]) / n_t[:, None]
        has_b_t = n_t > 0
    use = vis_treated & has_b[:, None]  # (C, A) pairs contributing a shift
    diff = np.where(use[..., None], Z - np.nan_to_num(zb)[:, None, :], 0.0)
    s_sum = diff.sum(axis=0)  # (A, d)
    s_n = use.sum(axis=0).astype(float)  # (A,)
    self_use = use[c, a] & own
    sum_t = s_sum[a] - self_use[:, None] * diff[c, a]
    n_t = s_n[a] - self_use
    ok = has_b_t & (n_t > 0)
    pred = np.full((len(t), p), np.nan)
    if ok.any():
        shift = sum_t[ok] / n_t[ok, None]
        z0 = zb_t[ok]
        moved = decode(net, (z0 + shift).astype(np.float32)).astype(np.float64)
        if output == "residual":
            moved = yb_t[ok] + moved - decode(net, z0.astype(np.float32))
        pred[ok] = _inverse(moved, transform)
    return pred, ok, n_t


def _fallback(data: GridData, t: np.ndarray, pred, ok, n_used, name) -> MethodResult:
    gm = group_means(data)
    res = _chain(data, t, ["context_mean", "perturbation_mean", "global_mean"], gm)
    if data.control is not None:
        no_b = ~data.measured[t[:, 0], data.control]
        if no_b.any():
            alt = _chain(data, t[no_b], ["perturbation_mean", "context_mean", "global_mean"], gm)
            res.prediction[no_b] = alt.prediction
            res.source[no_b] = alt.source
    res.prediction[ok] = pred[ok]
    res.source[ok] = name
    res.per_target = {"n_contexts": np.where(ok, n_used, 0.0)}
    return res


def _run(
    name: str,
    data: GridData,
    targets,
    *,
    random_state: RandomState,
    width: int,
    depth: int,
    latent_dim: int | None,
    dropout: float,
    kl_weight: float,
    transform: str,
    standardize: bool,
    output: str,
    baseline: str,
    validation_fraction: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    learning_rate: float,
    weight_decay: float,
    progress: bool,
) -> MethodResult:
    _check_choice("output", output, OUTPUTS)
    baseline = _resolve_baseline(baseline, data)
    _check_choice("transform", transform, TRANSFORMS)
    t = as_targets(targets)
    cfg = _config(name, data.n_features, width, depth, latent_dim, dropout, kl_weight)
    res, _ = fit_grid_networks(
        data,
        data.measured[None],
        cfg,
        transform=transform,
        standardize=standardize,
        validation_fraction=validation_fraction,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        random_state=random_state,
        progress=progress,
    )
    net = select(res.networks, 0)
    pred, ok, n_used = latent_arithmetic(
        net, data, data.measured, t, transform=transform, output=output, baseline=baseline
    )
    out = _fallback(data, t, pred, ok, n_used, name)
    out.info = {
        "n_epochs": int(res.n_epochs),
        "best_epoch": int(res.best_epoch[0]),
        "train_seconds": float(res.seconds),
        "final_train_loss": float(res.train_loss[-1, 0]),
    }
    return out


@register(
    "autoencoder",
    description="Latent arithmetic with a wide autoencoder trained on the grid's profiles.",
    reference=_REF,
)
def autoencoder(
    data: GridData,
    targets,
    *,
    random_state: RandomState = 0,
    width: int = 256,
    depth: int = 1,
    latent_dim: int | None = None,
    dropout: float = 0.0,
    transform: str = "none",
    standardize: bool = True,
    output: str = "decoded",
    baseline: str = "auto",
    validation_fraction: float = 0.1,
    batch_size: int = 64,
    max_epochs: int = 300,
    patience: int = 20,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    progress: bool = False,
) -> MethodResult:
    """Predict each target (c, a) by latent arithmetic with an over-parameterised autoencoder.

    Parameters
    ----------
    data
        The grid's arrays.
    targets
        ``(n, 2)`` (context index, perturbation index) pairs to predict.
    random_state
        Seed of initialisation, validation split, shuffling.
    width, depth, latent_dim
        Hidden units per layer, hidden layers, latent dimension (``None``: the latent space is
        the last hidden layer, ``width`` units; see :class:`scimpute.nn.NetConfig`).
    dropout
        Dropout rate during training.
    transform
        ``"log1p"`` trains on ``log(1 + y)`` and maps predictions back (for intensities such
        as CMap Level 2); ``"none"`` trains on the profiles as they are.
    standardize
        Scale each feature to zero mean and unit variance before the network.
    output
        ``"decoded"``: the decoded shifted code; ``"residual"``: the measured baseline plus
        the decoded change (see the module docstring).
    baseline
        What a perturbation's shift is measured from: ``"control"`` (the context's control
        profile, z(c', a) - z(c', control)), ``"context_mean"`` (the mean code of the
        context's measured non-control profiles: the two-way additive model in latent space),
        or ``"auto"`` (the control when the grid has one).
    validation_fraction, batch_size, max_epochs, patience, learning_rate, weight_decay
        Training settings (see :func:`scimpute.nn.train_networks`).
    progress
        Show a progress bar over epochs.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["n_contexts"]`` (contexts whose
    shift was averaged; 0 for fallbacks) and training diagnostics in ``info``.

    """
    return _run(
        "autoencoder",
        data,
        targets,
        random_state=random_state,
        width=width,
        depth=depth,
        latent_dim=latent_dim,
        dropout=dropout,
        kl_weight=0.0,
        transform=transform,
        standardize=standardize,
        output=output,
        baseline=baseline,
        validation_fraction=validation_fraction,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        progress=progress,
    )


@register(
    "vae",
    description="Latent arithmetic with a scGen-style variational autoencoder.",
    reference=_REF,
)
def vae(
    data: GridData,
    targets,
    *,
    random_state: RandomState = 0,
    width: int = 256,
    depth: int = 2,
    latent_dim: int = 16,
    dropout: float = 0.2,
    kl_weight: float = 5e-5,
    transform: str = "none",
    standardize: bool = True,
    output: str = "decoded",
    baseline: str = "auto",
    validation_fraction: float = 0.1,
    batch_size: int = 64,
    max_epochs: int = 300,
    patience: int = 20,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    progress: bool = False,
) -> MethodResult:
    """Predict each target by latent arithmetic with a scGen-style VAE (posterior means).

    ``kl_weight`` weighs the KL term of the loss (scGen: 5e-5); the other parameters are those
    of :func:`autoencoder`.
    """
    return _run(
        "vae",
        data,
        targets,
        random_state=random_state,
        width=width,
        depth=depth,
        latent_dim=latent_dim,
        dropout=dropout,
        kl_weight=kl_weight,
        transform=transform,
        standardize=standardize,
        output=output,
        baseline=baseline,
        validation_fraction=validation_fraction,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        progress=progress,
    )


def leave_one_out_predictions(
    data: GridData,
    *,
    method: str = "autoencoder",
    n_groups: int = 20,
    random_state: RandomState = 0,
    progress: bool = True,
    **params,
) -> dict:
    """Leave-one-out predictions of every measured non-control pair with ``n_groups`` networks.

    The measured non-control pairs are split (seeded) into ``n_groups`` groups; network k is
    trained on every measured pair except those of group k (all networks at once, vmapped).
    Each pair of group k is then predicted with network k from everything else that is
    measured, exactly the information leave-one-out gives. The prediction of a pair never
    depends on its own profile: network k never saw it (and it is excluded from the
    arithmetic), so the scheme is honest; it is conservative, since each network is trained on
    ``1 - 1/n_groups`` of the pairs instead of all but one. With ``n_groups`` equal to the
    number of pairs it is plain leave-one-out.

    Parameters
    ----------
    data
        The grid's arrays (needs a control, or a grid of effects without one).
    method
        ``"autoencoder"`` or ``"vae"``.
    n_groups
        Number of networks trained.
    random_state
        Seed of the groups, the validation splits and training.
    progress
        Progress bar over epochs.
    **params
        Parameters of :func:`autoencoder` / :func:`vae`.

    Returns
    -------
    ``{"targets": (n, 2) pairs, "prediction": (n, p), "source": (n,), "group": (n,),
    "result": TrainResult}``.

    """
    from ._registry import get_method

    m = get_method(method)
    if method not in ("autoencoder", "vae"):
        raise ValueError("method must be 'autoencoder' or 'vae'.")
    unknown = set(params) - set(m.defaults)
    if unknown:
        raise TypeError(f"Unknown parameter(s) {sorted(unknown)} for {method!r}.")
    p = {**m.defaults, **params}
    _check_choice("output", p["output"], OUTPUTS)
    _check_choice("transform", p["transform"], TRANSFORMS)
    baseline = _resolve_baseline(p["baseline"], data)
    rng = check_random_state(random_state)
    cand = np.argwhere(data.treated_mask())
    if cand.shape[0] == 0:
        raise ValueError("The grid has no measured non-control pairs to hold out.")
    n_groups = int(min(max(n_groups, 1), cand.shape[0]))
    group = np.empty(cand.shape[0], dtype=np.int64)
    group[rng.permutation(cand.shape[0])] = np.arange(cand.shape[0]) % n_groups
    masks = np.repeat(data.measured[None], n_groups, axis=0)
    masks[group, cand[:, 0], cand[:, 1]] = False
    cfg = _config(
        method,
        data.n_features,
        p["width"],
        p["depth"],
        p["latent_dim"],
        p["dropout"],
        p.get("kl_weight", 0.0),
    )
    res, _ = fit_grid_networks(
        data,
        masks,
        cfg,
        transform=p["transform"],
        standardize=p["standardize"],
        validation_fraction=p["validation_fraction"],
        batch_size=p["batch_size"],
        max_epochs=p["max_epochs"],
        patience=p["patience"],
        learning_rate=p["learning_rate"],
        weight_decay=p["weight_decay"],
        random_state=rng,
        progress=progress,
    )
    pred = np.full((cand.shape[0], data.n_features), np.nan)
    source = np.empty(cand.shape[0], dtype=object)
    for k in range(n_groups):
        sel = np.flatnonzero(group == k)
        t = cand[sel]
        net = select(res.networks, k)
        pk, ok, n_used = latent_arithmetic(
            net,
            data,
            data.measured,
            t,
            transform=p["transform"],
            output=p["output"],
            baseline=baseline,
            exclude_self=True,
        )
        # fallbacks see the grid with only these targets hidden
        for j, (c, a) in enumerate(t):
            if not ok[j]:
                mask = data.measured.copy()
                mask[c, a] = False
                fb = _fallback(
                    data.with_measured(mask),
                    t[j : j + 1],
                    pk[j : j + 1],
                    ok[j : j + 1],
                    n_used[j : j + 1],
                    method,
                )
                pk[j] = fb.prediction[0]
                source[sel[j]] = fb.source[0]
            else:
                source[sel[j]] = method
        pred[sel] = pk
    return {"targets": cand, "prediction": pred, "source": source, "group": group, "result": res}


def leave_one_out(
    data: GridData,
    *,
    method: str = "autoencoder",
    n_groups: int = 20,
    random_state: RandomState = 0,
    progress: bool = True,
    **params,
) -> pd.DataFrame:
    """Score :func:`leave_one_out_predictions` like :func:`scimpute.tl.cross_validate`.

    Parameters are those of :func:`leave_one_out_predictions`.

    Returns
    -------
    A table with the columns of :func:`scimpute.tl.cross_validate` (``method``, ``context``,
    ``perturbation``, ``fold``, ``source`` and the scores), one row per pair; ``fold`` is the
    group. ``relative_mse`` compares with ``context_mean`` computed with the same pair hidden.

    """
    out = leave_one_out_predictions(
        data,
        method=method,
        n_groups=n_groups,
        random_state=random_state,
        progress=progress,
        **params,
    )
    cand, pred, source, group, res = (
        out["targets"],
        out["prediction"],
        out["source"],
        out["group"],
        out["result"],
    )
    truth = np.asarray(data.Y[cand[:, 0], cand[:, 1]], dtype=np.float64)
    ref = np.empty_like(truth)
    for i, (c, a) in enumerate(cand):  # context_mean reference with this pair hidden
        mask = data.measured.copy()
        mask[c, a] = False
        ref[i] = _chain(
            data.with_measured(mask),
            cand[i : i + 1],
            ["context_mean", "perturbation_mean", "global_mean"],
        ).prediction[0]
    if data.control is None:
        base = None
    else:
        has = data.measured[cand[:, 0], data.control]
        base = np.where(has[:, None], data.Y[cand[:, 0], data.control], np.nan)
    scores = score_pairs(truth, pred, baseline=base, reference_pred=ref)
    table = pd.DataFrame(
        {
            "method": method,
            "context": data.contexts[cand[:, 0]].astype(str),
            "perturbation": data.perturbations[cand[:, 1]].astype(str),
            "fold": group,
            "source": source.astype(str),
            **{k: scores[k] for k in METRICS},
        }
    )
    table.attrs["train_seconds"] = float(res.seconds)
    table.attrs["n_epochs"] = int(res.n_epochs)
    table.attrs["best_epoch"] = res.best_epoch.tolist()
    return table

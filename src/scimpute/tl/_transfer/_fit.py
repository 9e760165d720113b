"""Train the style-transfer network on the cells and store it in the AnnData."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..._keys import TRANSFER_KEY
from ..._params import check_random_state_value
from ..._utils import RandomState, check_random_state, h5ad_safe, seed_from
from ...nn import NetConfig, TrainConfig, encode, network_to_arrays, select, train_networks
from ._data import cell_labels, expression
from ._params import DEFAULT_COMPS, OWNER, PCA_COMPS, TransferParams, transfer_params
from ._search import Search, candidates, inner_folds, representation

MIN_CELLS = 10


def fit_transfer(
    adata: AnnData,
    context_key: str = "cell_type",
    perturbation_key: str = "perturbation",
    *,
    control: str = "control",
    key_added: str = TRANSFER_KEY,
    random_state: RandomState = 0,
    copy: bool = False,
    **params,
) -> AnnData | None:
    """Fit the representation cells are moved in (autoencoder, VAE or PCA), by validation.

    An inner leave-one-context-out on the cells of the call chooses the representation
    (``representation="auto"``: the latent space of a trained autoencoder, or the principal
    components of the cells, no network, with ``n_comps`` among
    :data:`~scimpute.tl._transfer._params.PCA_COMPS`, each fold fitting its own PCA without
    the cells it hides), the architecture
    (``width``, ``depth``, ``latent_dim`` not passed explicitly: a seeded random search of
    ``n_candidates`` points of :data:`~scimpute.tl._transfer._params.SEARCH_GRID`), the
    epochs (early stopping on a seeded ``validation_fraction`` of the cells), the transfer
    rule (``rule="auto"``: the constant latent shift, the linear latent transport with its
    ridge strength, or the kernel transport with its bandwidth, see
    :func:`~scimpute.tl.transfer`) and the output (decoded or residual): each of
    ``inner_folds`` seeded (context, perturbation) pairs in turn has its perturbed cells
    hidden from a network of each candidate architecture (the fold networks and the final
    one, trained on every cell, share one vmapped, compiled loop per architecture), and every
    rule predicts them from the context's controls. Training is float32, mini-batched and jit-compiled
    (:func:`scimpute.nn.train_networks`), the same on CPU and GPU; equal ``random_state``
    gives equal weights and equal choices.

    Parameters
    ----------
    adata
        Cells (or bulk / pseudobulk profiles) x genes, log-normalised (``X`` or ``layer``:
        dense, sparse, float16 to float64, in memory or backed on disk).
    context_key
        Column of ``adata.obs`` naming the context (cell type, cell line, donor); default
        ``"cell_type"`` as in pertpy.
    perturbation_key
        Column naming the perturbation (pertpy's default ``"perturbation"``; ``"condition"``
        for Kang et al.). Combinations are labelled ``"A+B"``.
    control
        Label of the control cells in ``obs[perturbation_key]``.
    key_added
        Where results go (see Returns).
    random_state
        Seed of the split and of training.
    copy
        Return a copy instead of writing into ``adata``.
    **params
        The fields of :class:`~scimpute.tl._transfer.TransferParams`, checked with one
        message format: ``model`` (``"autoencoder"``: deterministic, wide and
        over-parameterised with ``latent_dim=None`` as in Belyaeva et al. 2021; ``"vae"``:
        scGen's variational autoencoder with KL weight ``kl_weight``), ``layer``, the
        architecture ``width``, ``depth``, ``latent_dim``, ``dropout`` (defaults per model,
        used when nothing is validated, ``inner_folds=0``: autoencoder 256 x 2, latent 64,
        dropout 0.2; VAE 256 x 2, latent 32, dropout 0.2), ``kl_weight``, ``standardize``,
        ``rule``, ``n_pcs`` (train the network on that many principal components; ``None``:
        genes), ``representation`` (``"auto"``, ``"autoencoder"``: the network of ``model``,
        ``"pca"``: no network), ``n_comps`` (components of the PCA representation; ``None``:
        validated), ``inner_folds``, ``n_candidates``, the training block
        (:class:`~scimpute.nn.TrainConfig`: ``batch_size``, ``max_epochs``, ``patience``,
        ``learning_rate``, ``weight_decay``, ``validation_fraction`` < 0.5) and
        ``progress``.

    Returns
    -------
    ``None`` (or the copy when ``copy=True``), having written

    - ``obsm[f"X_{key_added}"]``: ``(n_cells, n_latent)`` float32 latent codes (posterior
      means for the VAE; the principal component scores for the PCA representation);
    - ``uns[key_added]``: ``{"params": {...}, "weights": {name: array}, "history":
      {"train_loss", "val_loss"}, "training": {...}, "var_names": array}``. ``params``
      holds the architecture and every argument; ``weights`` every array of the network
      (input scaling included) as plain float32 arrays, so that a written and re-read
      ``.h5ad`` can still :func:`transfer` (empty for the PCA representation); ``pca``
      (``center``, ``loadings``) when trained on principal components, or the PCA
      representation's basis itself; ``validation``: ``{"candidates": table of every
      (representation, architecture, rule, alpha, output) with its mean fold scores (a PCA
      row has ``width = depth = 0`` and its components as ``latent_dim``), "folds",
      "chosen", "criterion"}``, and the chosen ``representation``, ``rule``, ``transport_alpha`` (the rule's strength: the ridge penalty of
      ``"transport"``, the kernel bandwidth of ``"kernel"``, ``inf`` for ``"shift"``) and
      ``output`` in ``params``.

    Nothing is written if an error is raised (a training that diverges raises
    :class:`~scimpute.nn.TrainingDivergedError`).

    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    spec = transfer_params(params)
    check_random_state_value(OWNER, random_state)
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"{OWNER}: key_added must be a non-empty string, got {key_added!r}.")
    ctx, pert = cell_labels(adata, context_key, perturbation_key, control)
    if adata.n_obs < MIN_CELLS:
        raise ValueError(
            f"fit_transfer needs at least {MIN_CELLS} cells (profiles) to train a network; "
            f"adata has {adata.n_obs}. Use a grid method (scimpute.tl.impute) for a handful of "
            "profiles."
        )
    X = expression(adata, spec.layer)
    rng = check_random_state(random_state)
    center, loadings = representation(X, spec.n_pcs, rng)
    inputs = X if loadings is None else (X - center) @ loadings
    folds = inner_folds(ctx, pert, control, spec.inner_folds, rng)
    search = Search(inputs, ctx, pert, control, folds, center, loadings, X)
    use_ae, comps = _representations(spec, validated=bool(folds))
    rows, trained, seconds = [], [], 0.0
    if use_ae:
        archs = candidates(spec, set(params), rng, validated=bool(folds))
        rows, trained, seconds = _train(inputs, spec, archs, search, rng)
    if comps and folds:
        for c, scored in search.score_pca(comps, spec.rule, rng).items():
            rows += [{"representation": "pca", "width": 0, "depth": 0, "latent_dim": c,
                      **r, "epochs": 0} for r in scored]  # fmt: skip
    chosen = search.choose(rows, spec.rule)
    if not chosen["validated"]:
        chosen.update(_unvalidated(spec, use_ae, comps))
    if chosen["representation"] == "pca":
        Z, record = _pca_record(X, int(chosen["latent_dim"]), rng, seconds)
    else:
        Z, record = _network_record(inputs, trained, chosen, seconds)
    record["validation"] = search.record(rows, chosen)
    # the genes' basis the codes sit on: the representation itself, or the network's inputs
    basis = record["pca"]["loadings"] if chosen["representation"] == "pca" else loadings
    record["params"] = h5ad_safe(
        {
            "context_key": context_key,
            "perturbation_key": perturbation_key,
            "control": control,
            "layer": "X" if spec.layer is None else spec.layer,
            "representation": chosen["representation"],
            **record.pop("architecture"),
            "standardize": spec.standardize,
            **TrainConfig.pick(spec).to_dict(),
            "input": "genes" if basis is None else "pca",
            "n_pcs": 0 if basis is None else int(basis.shape[1]),
            "rule": chosen["rule"],
            "transport_alpha": float(chosen["alpha"]),
            "output": chosen["output"],
            "random_state": random_state,
        }
    )
    if chosen["representation"] != "pca" and loadings is not None:
        record["pca"] = {"center": center.astype(np.float32), "loadings": loadings}
    record["var_names"] = np.asarray(adata.var_names.astype(str), dtype=object)
    out = adata.copy() if copy else adata
    out.obsm[f"X_{key_added}"] = Z
    out.uns[key_added] = record
    return out if copy else None


def _representations(spec: TransferParams, *, validated: bool) -> tuple[bool, tuple[int, ...]]:
    """Whether autoencoders are trained, and the PCA sizes scored (none: no PCA).

    Without validation one representation: the PCA of ``n_comps`` (or
    :data:`DEFAULT_COMPS`) components for ``representation="pca"``, else the autoencoder.
    """
    if not validated:
        if spec.representation == "pca":
            return False, (spec.n_comps or DEFAULT_COMPS,)
        return True, ()
    comps = (spec.n_comps,) if spec.n_comps is not None else PCA_COMPS
    use_ae = spec.representation in ("auto", "autoencoder")
    return use_ae, (comps if spec.representation in ("auto", "pca") else ())


def _unvalidated(spec: TransferParams, use_ae: bool, comps: tuple[int, ...]) -> dict:
    """The candidate used when nothing was validated."""
    if use_ae:
        return {"representation": "autoencoder", "width": spec.width, "depth": spec.depth,
                "latent_dim": str(spec.latent_dim)}  # fmt: skip
    return {"representation": "pca", "width": 0, "depth": 0, "latent_dim": str(comps[0])}


def _pca_record(X: np.ndarray, n_comps: int, rng, seconds: float):
    """Codes and record of the PCA representation, fitted on every cell of the call."""
    center, L = representation(X, n_comps, rng)
    k = int(L.shape[1])
    Z = ((X - center) @ L).astype(np.float32)
    record = {
        "architecture": {
            "model": "pca",
            "n_features": int(X.shape[1]),
            "width": 0,
            "depth": 0,
            "latent_dim": k,
        },
        "weights": {},
        "pca": {"center": center.astype(np.float32), "loadings": L},
        "history": {"train_loss": np.zeros(0, np.float32), "val_loss": np.zeros(0, np.float32)},
        "training": {
            "n_epochs": 0,
            "best_epoch": -1,
            "seconds": seconds,
            "n_train": int(X.shape[0]),
            "n_val": 0,
        },
    }
    return Z, record


def _network_record(X: np.ndarray, trained: list, chosen: dict, seconds: float):
    """Codes and record of the chosen trained network (its copy fitted on every cell)."""
    cfg, res, is_val = next(
        (c, r, v) for c, r, v in trained
        if (c.width, c.depth, str(c.latent_dim))
        == (int(chosen["width"]), int(chosen["depth"]), str(chosen["latent_dim"]))
    )  # fmt: skip
    net = select(res.networks, len(res.best_epoch) - 1)  # the last: fitted on every cell
    record = {
        "architecture": cfg.to_dict(),
        "weights": network_to_arrays(net),
        "history": {
            "train_loss": res.train_loss[:, -1].astype(np.float32),
            "val_loss": res.val_loss[:, -1].astype(np.float32),
        },
        "training": {
            "n_epochs": int(res.n_epochs),
            "best_epoch": int(res.best_epoch[-1]),
            "seconds": seconds,
            "n_train": int((~is_val).sum()),
            "n_val": int(is_val.sum()),
        },
    }
    return encode(net, X).astype(np.float32), record


def _train(X: np.ndarray, spec: TransferParams, archs: list[dict], search, rng):
    """Train every candidate architecture on the inner folds and the whole data, vmapped.

    For each architecture one :func:`~scimpute.nn.train_networks` call trains
    ``len(folds) + 1`` networks of the same shape at once: network ``k`` without the
    perturbed cells of fold ``k`` (scored on them by :class:`Search`), the last on every
    cell (kept if the architecture wins). Returns the candidates' rows, the trained
    ``(config, result, validation mask)`` of each architecture and the training seconds.
    """
    n = X.shape[0]
    n_val = round(spec.validation_fraction * n)
    perm = rng.permutation(n)
    is_val = np.zeros(n, dtype=bool)
    is_val[perm[:n_val]] = True
    mean = np.zeros(X.shape[1], np.float32)
    scale = np.ones(X.shape[1], np.float32)
    if spec.standardize:
        mean = X[~is_val].mean(axis=0)
        sd = X[~is_val].std(axis=0)
        scale = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
    keep = np.ones((len(search.folds) + 1, n), dtype=bool)
    for k, held in enumerate(search.held_masks):
        keep[k] &= ~held
    train_w = (keep & ~is_val).astype(np.float32)
    val_w = (keep & is_val).astype(np.float32) if n_val else None
    seed = seed_from(rng)
    rows, trained, seconds = [], [], 0.0
    for i, arch in enumerate(archs):
        cfg = NetConfig(
            model=spec.model,
            n_features=X.shape[1],
            width=arch["width"],
            depth=arch["depth"],
            latent_dim=arch["latent_dim"],
            dropout=spec.dropout,
            kl_weight=spec.kl_weight,
        )
        res = train_networks(
            cfg,
            X,
            TrainConfig.pick(spec),
            train_weights=train_w,
            val_weights=val_w,
            input_mean=mean,
            input_scale=scale,
            seed=seed,
            progress=spec.progress,
            desc=f"fit_transfer ({spec.model}, candidate {i + 1}/{len(archs)})",
        )
        seconds += float(res.seconds)
        for r in search.score(res.networks, spec.rule):
            rows.append({"representation": "autoencoder", **arch, **r,
                         "epochs": int(res.best_epoch[-1]) + 1})  # fmt: skip
        trained.append((cfg, res, is_val))
    return rows, trained, seconds

"""Train the style-transfer network on the cells and store it in the AnnData."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..._keys import TRANSFER_KEY
from ..._params import check_random_state_value
from ..._utils import RandomState, check_random_state, h5ad_safe, seed_from
from ...nn import NetConfig, TrainConfig, encode, network_to_arrays, select, train_networks
from ._data import cell_labels, expression
from ._params import OWNER, TransferParams, transfer_params

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
    """Train an autoencoder (or VAE) on the cells, for latent arithmetic with :func:`transfer`.

    All cells are used (controls and every perturbation); a seeded random
    ``validation_fraction`` of them is held out for early stopping. Training is float32,
    mini-batched and jit-compiled (:func:`scimpute.nn.train_networks`), the same on CPU and
    GPU; equal ``random_state`` gives equal weights.

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
        chosen on the Kang benchmark: autoencoder 256 x 2, latent 64, dropout 0.2; VAE 256 x
        2, latent 32, dropout 0.2), ``kl_weight``, ``standardize``, the training block
        (:class:`~scimpute.nn.TrainConfig`: ``batch_size``, ``max_epochs``, ``patience``,
        ``learning_rate``, ``weight_decay``, ``validation_fraction`` < 0.5) and
        ``progress``.

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

    Nothing is written if an error is raised (a training that diverges raises
    :class:`~scimpute.nn.TrainingDivergedError`).

    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    spec = transfer_params(params)
    check_random_state_value(OWNER, random_state)
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"{OWNER}: key_added must be a non-empty string, got {key_added!r}.")
    cell_labels(adata, context_key, perturbation_key, control)
    if adata.n_obs < MIN_CELLS:
        raise ValueError(
            f"fit_transfer needs at least {MIN_CELLS} cells (profiles) to train a network; "
            f"adata has {adata.n_obs}. Use a grid method (scimpute.tl.impute) for a handful of "
            "profiles."
        )
    X = expression(adata, spec.layer)
    Z, record = _train(X, spec, random_state)
    record["params"] = h5ad_safe(
        {
            "context_key": context_key,
            "perturbation_key": perturbation_key,
            "control": control,
            "layer": "X" if spec.layer is None else spec.layer,
            **record.pop("architecture"),
            "standardize": spec.standardize,
            **TrainConfig.pick(spec).to_dict(),
            "random_state": random_state,
        }
    )
    record["var_names"] = np.asarray(adata.var_names.astype(str), dtype=object)
    out = adata.copy() if copy else adata
    out.obsm[f"X_{key_added}"] = Z
    out.uns[key_added] = record
    return out if copy else None


def _train(X: np.ndarray, spec: TransferParams, random_state: RandomState):
    """Split, scale and train; the latent codes of every cell and the record (no params)."""
    cfg = NetConfig(
        model=spec.model,
        n_features=X.shape[1],
        width=spec.width,
        depth=spec.depth,
        latent_dim=spec.latent_dim,
        dropout=spec.dropout,
        kl_weight=spec.kl_weight,
    )
    rng = check_random_state(random_state)
    n = X.shape[0]
    n_val = round(spec.validation_fraction * n)
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    mean = np.zeros(X.shape[1], np.float32)
    scale = np.ones(X.shape[1], np.float32)
    if spec.standardize:
        mean = X[train_idx].mean(axis=0)
        sd = X[train_idx].std(axis=0)
        scale = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
    res = train_networks(
        cfg,
        X[train_idx],
        TrainConfig.pick(spec),
        X_val=X[val_idx] if n_val else None,
        val_weights=np.ones((1, n_val), np.float32) if n_val else None,
        input_mean=mean,
        input_scale=scale,
        seed=seed_from(rng),
        progress=spec.progress,
        desc=f"fit_transfer ({spec.model})",
    )
    net = select(res.networks, 0)
    record = {
        "architecture": cfg.to_dict(),
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
    }
    return encode(net, X).astype(np.float32), record

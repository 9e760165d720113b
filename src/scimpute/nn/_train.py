"""Seeded training of one or several autoencoders/VAEs at once, on :func:`scimpute.nn.fit`.

Several networks (the same architecture, each with its own weights, input scaling and
per-row training weights) are trained together with :func:`jax.vmap`; a single network is
the case ``n_models=1``. The loop is the generic one of :mod:`scimpute.nn._loop`: one epoch
is one compiled call (a :func:`jax.lax.scan` over
mini-batches of a fixed size, the last incomplete batch dropped after shuffling), so nothing
recompiles from epoch to epoch, and repeated fits with the same shapes and settings reuse the
compiled code. Early stopping keeps, for each network, the weights of its best epoch on the
validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._config import TrainConfig
from ._loop import _shuffled, fit, n_batches
from ._models import NetConfig, Network, build_network


@dataclass
class TrainResult:
    """Outcome of :func:`train_networks`.

    Attributes
    ----------
    networks
        The trained networks stacked along a leading axis of length ``n_models`` (index one
        with :func:`select`).
    train_loss, val_loss
        ``(n_epochs, n_models)`` mean training loss and validation loss per epoch (validation
        NaN without validation rows).
    best_epoch
        ``(n_models,)`` epoch (0-based) whose weights were kept.
    n_epochs
        Epochs run.
    seconds
        Wall-clock training time (compilation included).

    """

    networks: Network
    train_loss: np.ndarray
    val_loss: np.ndarray
    best_epoch: np.ndarray
    n_epochs: int
    seconds: float
    extra: dict = field(default_factory=dict)


def select(networks: Network, i: int) -> Network:
    """Network ``i`` of a stacked set of networks."""
    params, static = eqx.partition(networks, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(lambda a: a[i], params), static)


def _freeze_scaling(new: Network, old: Network) -> Network:
    """Keep the input scaling fixed: it is data, not a weight to learn."""
    return eqx.tree_at(
        lambda n: (n.input_mean, n.input_scale), new, (old.input_mean, old.input_scale)
    )


def _weighted_loss(net: Network, x, w, key, kl_weight: float, stochastic: bool):
    if stochastic:
        keys = jax.random.split(key, x.shape[0])
        losses = jax.vmap(lambda xi, ki: net.loss(xi, ki, kl_weight))(x, keys)
    else:
        losses = jax.vmap(lambda xi: net.loss(xi, None, kl_weight))(x)
    return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1e-12)


@lru_cache(maxsize=32)
def _losses(kl_weight: float, stochastic: bool):
    """Training and validation losses of :func:`fit` (cached: one compiled epoch per setting)."""

    def train_loss(net, data, batch, key, state):
        idx, w = batch
        return _weighted_loss(net, data["X"][idx], w, key, kl_weight, stochastic)

    def val_loss(nets, data, state):
        params, static = eqx.partition(nets, eqx.is_array)
        return jax.vmap(
            lambda p, w: _weighted_loss(
                eqx.combine(p, static), data["Xv"], w, None, kl_weight, False
            )
        )(params, data["Wv"])

    return train_loss, val_loss


@partial(jax.jit, static_argnums=(2, 3, 4))
def _weighted_batches(key, W, steps: int, batch: int, n_models: int):
    """Per-model shuffles ``(steps, n_models, batch)`` and the rows' weights in each model."""
    idx = _shuffled(key, W.shape[1], steps, batch, n_models)
    w = jnp.take_along_axis(W[None], idx, axis=2)
    return idx, w


def _init(cfg: NetConfig, keys, means, scales) -> Network:
    """Initial networks, stacked along a leading axis (one compiled build per architecture)."""
    nets = [
        build_network(cfg, keys[k], mean=means[k], scale=scales[k]) for k in range(keys.shape[0])
    ]
    params = [eqx.filter(n, eqx.is_array) for n in nets]
    static = eqx.partition(nets[0], eqx.is_array)[1]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params)
    return eqx.combine(stacked, static)


def train_networks(
    cfg: NetConfig,
    X: np.ndarray,
    config: TrainConfig | None = None,
    *,
    train_weights: np.ndarray | None = None,
    val_weights: np.ndarray | None = None,
    X_val: np.ndarray | None = None,
    input_mean: np.ndarray | None = None,
    input_scale: np.ndarray | None = None,
    min_delta: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """Train ``n_models`` networks of architecture ``cfg`` with Adam on mini-batches.

    The networks are trained together by :func:`scimpute.nn.fit` (vmapped): each with its
    own weights, input scaling, training rows and validation rows.

    Parameters
    ----------
    cfg
        Architecture.
    X
        ``(n, n_features)`` training rows (cast to float32).
    config
        The training block (default :class:`~scimpute.nn.TrainConfig`): batch size (reduced
        to ``n`` when fewer rows exist; batches have a fixed shape), epochs, patience,
        learning rate and weight decay (AdamW when > 0). Its ``validation_fraction`` is not
        used here: the caller chooses the validation rows with ``val_weights``.
    train_weights
        ``(n_models, n)`` non-negative weight of each row in each model's loss (0 excludes a
        row); default one model with every row weighted 1.
    val_weights
        ``(n_models, n_val)`` weights of the validation rows; ``None`` (or all zero) disables
        early stopping (the last epoch is kept).
    X_val
        ``(n_val, n_features)`` validation rows; defaults to ``X`` (then ``val_weights`` selects
        each model's validation rows among the training rows).
    input_mean, input_scale
        ``(n_features,)`` or ``(n_models, n_features)`` affine scaling applied before the
        encoder and undone after the decoder (default 0 and 1).
    min_delta
        Smallest decrease of the validation loss that counts as an improvement.
    seed
        Seed of initialisation, shuffling, dropout and VAE sampling: equal seeds give equal
        weights.
    progress, desc
        Show a tqdm progress bar over epochs, with this label.

    Raises
    ------
    scimpute.nn.TrainingDivergedError
        When the loss becomes NaN or infinite (no network is returned).

    """
    config = TrainConfig() if config is None else config
    X = jnp.asarray(np.asarray(X, dtype=np.float32))
    n, p = X.shape
    if p != cfg.n_features:
        raise ValueError(f"X has {p} features, the network expects {cfg.n_features}.")
    W = np.ones((1, n), np.float32) if train_weights is None else np.asarray(train_weights)
    W = jnp.asarray(np.atleast_2d(W).astype(np.float32))
    n_models = W.shape[0]
    if W.shape[1] != n:
        raise ValueError(f"train_weights has {W.shape[1]} columns, X has {n} rows.")
    steps, batch = n_batches(n, config.batch_size)

    def per_model(v, default):
        v = np.full(p, default, np.float32) if v is None else np.asarray(v, np.float32)
        return jnp.asarray(np.broadcast_to(v, (n_models, p)))

    key = jax.random.PRNGKey(int(seed) % (2**32))
    k_init, k_train = jax.random.split(key)
    nets = _init(
        cfg,
        jax.random.split(k_init, n_models),
        per_model(input_mean, 0.0),
        per_model(input_scale, 1.0),
    )
    stochastic = cfg.model == "vae" or cfg.dropout > 0
    # a static argument of the compiled epoch: 0 for the autoencoder, whose loss ignores it
    kl_weight = float(cfg.kl_weight) if cfg.model == "vae" else 0.0
    train_loss, val_loss = _losses(kl_weight, stochastic)

    data = {"X": X}
    if val_weights is not None:
        Xv = X if X_val is None else jnp.asarray(np.asarray(X_val, dtype=np.float32))
        Wv = jnp.asarray(np.atleast_2d(np.asarray(val_weights, dtype=np.float32)))
        if Wv.shape != (n_models, Xv.shape[0]):
            raise ValueError(
                f"val_weights has shape {Wv.shape}, expected {(n_models, Xv.shape[0])}."
            )
        if bool(Wv.sum() > 0):
            data.update(Xv=Xv, Wv=Wv)
    res = fit(
        nets,
        train_loss,
        data,
        n,
        config,
        key=k_train,
        val_fn=val_loss if "Wv" in data else None,
        schedule=lambda k, epoch: _weighted_batches(k, W, steps, batch, n_models),
        n_models=n_models,
        constrain=_freeze_scaling,
        min_delta=min_delta,
        progress=progress,
        desc=desc,
    )
    return TrainResult(
        networks=res.params,
        train_loss=res.history["loss"].reshape(-1, n_models),
        val_loss=res.history["val_loss"].reshape(-1, n_models),
        best_epoch=np.asarray(res.best_epoch),
        n_epochs=res.n_epochs,
        seconds=res.seconds,
    )


def _bucket(n: int, chunk: int) -> int:
    size = 16
    while size < min(n, chunk):
        size *= 2
    return min(size, chunk)


@eqx.filter_jit
def _encode_batch(net: Network, x):
    return jax.vmap(net.encode)(x)


@eqx.filter_jit
def _decode_batch(net: Network, z):
    return jax.vmap(net.decode)(z)


def _apply_chunks(fn, net, X, chunk: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if n == 0:
        out = fn(net, jnp.zeros((1, X.shape[1]), jnp.float32))
        return np.zeros((0, out.shape[1]), np.float32)
    size = _bucket(n, chunk)
    outs = []
    for start in range(0, n, size):
        block = X[start : start + size]
        m = block.shape[0]
        if m < size:  # pad to the bucket size: one compiled shape per bucket
            block = np.concatenate([block, np.zeros((size - m, X.shape[1]), np.float32)])
        outs.append(np.asarray(fn(net, jnp.asarray(block)))[:m])
    return np.concatenate(outs)


def encode(net: Network, X, *, chunk: int = 2048) -> np.ndarray:
    """Latent codes ``(n, n_latent)`` of the rows of ``X`` (original scale)."""
    return _apply_chunks(_encode_batch, net, X, chunk)


def decode(net: Network, Z, *, chunk: int = 2048) -> np.ndarray:
    """Profiles ``(n, n_features)`` decoded from latent codes ``Z``."""
    return _apply_chunks(_decode_batch, net, Z, chunk)

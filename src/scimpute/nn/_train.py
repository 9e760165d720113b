"""Seeded, jit-compiled training of one or several networks at once.

Several networks (the same architecture, each with its own weights, input scaling and
per-row training weights) are trained together with :func:`jax.vmap`; a single network is
the case ``n_models=1``. One epoch is one compiled call (a :func:`jax.lax.scan` over
mini-batches of a fixed size, the last incomplete batch dropped after shuffling), so nothing
recompiles from epoch to epoch, and repeated fits with the same shapes and settings reuse the
compiled code. Early stopping keeps, for each network, the weights of its best epoch on the
validation rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

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


@lru_cache(maxsize=32)
def _optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    # cached so that repeated fits with the same settings reuse the compiled epoch
    if weight_decay > 0:
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    return optax.adam(learning_rate)


def _freeze_scaling(new: Network, old: Network) -> Network:
    return eqx.tree_at(
        lambda n: (n.input_mean, n.input_scale), new, (old.input_mean, old.input_scale)
    )


def _weighted_loss(params, static, x, w, key, kl_weight, stochastic):
    net = eqx.combine(params, static)
    if stochastic:
        keys = jax.random.split(key, x.shape[0])
        losses = jax.vmap(lambda xi, ki: net.loss(xi, ki, kl_weight))(x, keys)
    else:
        losses = jax.vmap(lambda xi: net.loss(xi, None, kl_weight))(x)
    return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1e-12)


@eqx.filter_jit
def _epoch(params, static, opt_state, opt, X, W, key, n_batches, batch_size, kl_weight, stochastic):
    """One epoch for every model: shuffle, then scan over ``n_batches`` full batches."""
    n_models, n = W.shape
    k_perm, k_steps = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_perm, n_models))
    idx = perms[:, : n_batches * batch_size].reshape(n_models, n_batches, batch_size)
    idx = jnp.swapaxes(idx, 0, 1)  # (n_batches, n_models, batch)
    step_keys = jax.random.split(k_steps, n_batches * n_models).reshape(n_batches, n_models, -1)
    grad_fn = jax.value_and_grad(_weighted_loss)

    def step(carry, inp):
        p, s = carry
        bidx, bkeys = inp
        xb = X[bidx]  # (n_models, batch, features)
        wb = jnp.take_along_axis(W, bidx, axis=1)
        loss, grads = jax.vmap(grad_fn, in_axes=(0, None, 0, 0, 0, None, None))(
            p, static, xb, wb, bkeys, kl_weight, stochastic
        )
        updates, s = jax.vmap(opt.update)(grads, s, p)
        new = jax.vmap(eqx.apply_updates)(p, updates)
        return (_freeze_scaling(new, p), s), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (idx, step_keys))
    return params, opt_state, losses.mean(axis=0)


@eqx.filter_jit
def _validation_loss(params, static, X, W, kl_weight):
    return jax.vmap(_weighted_loss, in_axes=(0, None, None, 0, None, None, None))(
        params, static, X, W, None, kl_weight, False
    )


@eqx.filter_jit
def _where_tree(mask, new, old):
    def pick(a, b):
        m = mask.reshape((-1,) + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(pick, new, old)


@eqx.filter_jit
def _opt_init(opt, params):
    return jax.vmap(opt.init)(params)


def _init(cfg: NetConfig, opt, keys, means, scales):
    """Initial networks (stacked along a leading axis) and their optimiser states."""
    # one compiled initialisation per architecture, whatever the number of models
    nets = [
        build_network(cfg, keys[k], mean=means[k], scale=scales[k]) for k in range(keys.shape[0])
    ]
    params = [eqx.filter(n, eqx.is_array) for n in nets]
    static = eqx.partition(nets[0], eqx.is_array)[1]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params)
    return eqx.combine(stacked, static), _opt_init(opt, stacked)


def train_networks(
    cfg: NetConfig,
    X: np.ndarray,
    *,
    train_weights: np.ndarray | None = None,
    val_weights: np.ndarray | None = None,
    X_val: np.ndarray | None = None,
    input_mean: np.ndarray | None = None,
    input_scale: np.ndarray | None = None,
    batch_size: int = 128,
    max_epochs: int = 100,
    patience: int = 10,
    min_delta: float = 0.0,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """Train ``n_models`` networks of architecture ``cfg`` with Adam on mini-batches.

    Parameters
    ----------
    cfg
        Architecture.
    X
        ``(n, n_features)`` training rows (float32; a sparse matrix is densified).
    train_weights
        ``(n_models, n)`` non-negative weight of each row in each model's loss (0 excludes a
        row); default one model with every row weighted 1.
    val_weights
        ``(n_models, n_val)`` weights of the validation rows; ``None`` disables early stopping
        (the last epoch is kept).
    X_val
        ``(n_val, n_features)`` validation rows; defaults to ``X`` (then ``val_weights`` selects
        each model's validation rows among the training rows).
    input_mean, input_scale
        ``(n_features,)`` or ``(n_models, n_features)`` affine scaling applied before the
        encoder and undone after the decoder (default 0 and 1).
    batch_size
        Rows per step (reduced to ``n`` when fewer rows exist). Batches have a fixed shape.
    max_epochs, patience, min_delta
        Stop after ``max_epochs`` or when no model improved its validation loss by more than
        ``min_delta`` for ``patience`` epochs.
    learning_rate, weight_decay
        Adam (AdamW when ``weight_decay > 0``) settings.
    seed
        Seed of initialisation, shuffling, dropout and VAE sampling: equal seeds give equal
        weights.
    progress
        Show a tqdm progress bar over epochs.
    desc
        Label of the progress bar.

    """
    t0 = time.perf_counter()
    X = jnp.asarray(np.asarray(X, dtype=np.float32))
    n, p = X.shape
    if p != cfg.n_features:
        raise ValueError(f"X has {p} features, the network expects {cfg.n_features}.")
    W = np.ones((1, n), np.float32) if train_weights is None else np.asarray(train_weights)
    W = jnp.asarray(np.atleast_2d(W).astype(np.float32))
    n_models = W.shape[0]
    if W.shape[1] != n:
        raise ValueError(f"train_weights has {W.shape[1]} columns, X has {n} rows.")
    batch = int(min(batch_size, n))
    if batch < 1:
        raise ValueError("No training rows.")
    n_batches = max(n // batch, 1)

    def per_model(v, default):
        v = np.full(p, default, np.float32) if v is None else np.asarray(v, np.float32)
        return jnp.asarray(np.broadcast_to(v, (n_models, p)))

    means, scales = per_model(input_mean, 0.0), per_model(input_scale, 1.0)
    key = jax.random.PRNGKey(int(seed) % (2**32))
    k_init, k_train = jax.random.split(key)
    init_keys = jax.random.split(k_init, n_models)
    opt = _optimizer(float(learning_rate), float(weight_decay))
    nets, opt_state = _init(cfg, opt, init_keys, means, scales)
    params, static = eqx.partition(nets, eqx.is_array)
    stochastic = cfg.model == "vae" or cfg.dropout > 0
    # a static argument of the compiled epoch: 0 for the autoencoder, whose loss ignores it
    kl_weight = float(cfg.kl_weight) if cfg.model == "vae" else 0.0

    use_val = val_weights is not None
    if use_val:
        Xv = X if X_val is None else jnp.asarray(np.asarray(X_val, dtype=np.float32))
        Wv = jnp.asarray(np.atleast_2d(np.asarray(val_weights, dtype=np.float32)))
        if Wv.shape != (n_models, Xv.shape[0]):
            raise ValueError(
                f"val_weights has shape {Wv.shape}, expected {(n_models, Xv.shape[0])}."
            )
        use_val = bool(Wv.sum() > 0)
    best = params
    best_loss = np.full(n_models, np.inf)
    best_epoch = np.zeros(n_models, dtype=np.int64)
    wait = np.zeros(n_models, dtype=np.int64)
    train_hist, val_hist = [], []
    epoch_keys = jax.random.split(k_train, max_epochs)
    bar = tqdm(range(max_epochs), desc=desc, disable=not progress, leave=False)
    epoch = -1
    for epoch in bar:
        params, opt_state, tl = _epoch(
            params,
            static,
            opt_state,
            opt,
            X,
            W,
            epoch_keys[epoch],
            n_batches,
            batch,
            kl_weight,
            stochastic,
        )
        tl = np.asarray(tl)
        train_hist.append(tl)
        if use_val:
            vl = np.asarray(_validation_loss(params, static, Xv, Wv, kl_weight))
            val_hist.append(vl)
            improved = vl < best_loss - min_delta
            if improved.any():
                best = _where_tree(jnp.asarray(improved), params, best)
            best_loss = np.where(improved, vl, best_loss)
            best_epoch = np.where(improved, epoch, best_epoch)
            wait = np.where(improved, 0, wait + 1)
            bar.set_postfix(train=f"{tl.mean():.4g}", val=f"{vl.mean():.4g}")
            if (wait >= patience).all():
                break
        else:
            val_hist.append(np.full(n_models, np.nan))
            bar.set_postfix(train=f"{tl.mean():.4g}")
    bar.close()
    if not use_val:
        best = params
        best_epoch = np.full(n_models, epoch)
    nets = eqx.combine(best, static)
    jax.block_until_ready(jax.tree_util.tree_leaves(best))
    return TrainResult(
        networks=nets,
        train_loss=np.asarray(train_hist, dtype=np.float32).reshape(-1, n_models),
        val_loss=np.asarray(val_hist, dtype=np.float32).reshape(-1, n_models),
        best_epoch=np.asarray(best_epoch),
        n_epochs=epoch + 1,
        seconds=time.perf_counter() - t0,
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

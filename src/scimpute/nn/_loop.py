"""The one training loop of scimpute: mini-batches in a compiled epoch, early stopping.

:func:`fit` optimises any pytree of parameters (an :mod:`equinox` module, a dict of arrays)
against a loss function. Everything that trains a network in scimpute goes through it (the
grid autoencoders and the style-transfer networks via :func:`scimpute.nn.train_networks`, the
cross-modal model of :mod:`scimpute.mm`); callers contribute networks, losses and batch
schedules only.

What the loop does, once for everyone:

- **One compiled call per epoch**: a :func:`jax.lax.scan` over the epoch's steps, every step a
  mini-batch of a fixed shape, so nothing recompiles from epoch to epoch. The compiled epoch
  is cached by JAX on the identity of ``loss_fn``, ``optimizer``, ``aux_step`` and
  ``constrain`` and on the shapes: pass the *same* function objects (module-level functions
  or ones returned by an :func:`functools.lru_cache` factory) to reuse it across fits.
- **Early stopping** on the validation loss with ``config.patience``; the parameters of the
  best epoch are kept (the last epoch without ``val_fn``).
- **Divergence check**: a non-finite training or validation loss raises
  :class:`TrainingDivergedError` (a :class:`FloatingPointError`) at the epoch where it
  appears, so a diverged model is never returned (and so never stored).
- **Several independent models at once** (``n_models``): parameters, batches and keys carry a
  leading model axis and steps are :func:`jax.vmap`-ped; each model keeps its own best epoch,
  and training stops when every model has run out of patience.

The step, written out (``state`` is ``None`` unless ``aux_step`` is given)::

    for each epoch e (keys: split(key, config.max_epochs)[e] -> k_schedule, k_steps):
        xs = schedule(k_schedule, e)            # pytree, leading axis = steps of the epoch
        for each step s (scan):  k = split(k_steps, n_steps * prod(key_shape))[s]
            state, aux_parts = aux_step(params, state, data, xs[s], k)   # optional
            loss, parts = loss_fn(params, data, xs[s], k, state)
            params = constrain(optimizer.update(grad(loss)), old params)
        val_loss, val_parts = val_fn(params, data, state)                 # optional

Examples
--------
>>> import jax.numpy as jnp, numpy as np
>>> from scimpute.nn import TrainConfig, fit
>>> x = np.linspace(-1, 1, 64, dtype=np.float32); y = 3 * x + 1
>>> def loss(p, data, idx, key, state):
...     return jnp.mean((p["a"] * data["x"][idx] + p["b"] - data["y"][idx]) ** 2)
>>> def val(p, data, state):
...     return jnp.mean((p["a"] * data["x"] + p["b"] - data["y"]) ** 2)
>>> cfg = TrainConfig(batch_size=16, max_epochs=300, patience=20, learning_rate=0.05)
>>> res = fit({"a": jnp.zeros(()), "b": jnp.zeros(())}, loss, {"x": x, "y": y}, 64, cfg,
...           val_fn=val, progress=False)
>>> round(float(res.params["a"]), 1), round(float(res.params["b"]), 1)
(3.0, 1.0)

"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ._config import TrainConfig

__all__ = [
    "FitResult",
    "TrainingDivergedError",
    "default_optimizer",
    "fit",
    "n_batches",
    "shuffled_batches",
]

#: ``loss_fn(params, data, batch, key, state) -> loss`` or ``(loss, parts)``
LossFn = Callable[..., Any]


class TrainingDivergedError(FloatingPointError):
    """The training or validation loss became NaN or infinite (nothing is returned)."""


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    params
        The parameters of the best epoch (of the last epoch without validation), with the
        structure of the ``params`` given to :func:`fit` (for ``n_models``, stacked).
    state
        The auxiliary state (e.g. a discriminator and its optimiser state) at that epoch
        (``None`` without ``aux_step``).
    history
        Per-epoch means over the epoch's steps: ``"loss"`` (``(n_epochs,)``, or
        ``(n_epochs, n_models)``), ``"val_loss"`` (NaN without ``val_fn``) and every named
        part returned by ``loss_fn``/``aux_step`` (and ``"val_<name>"`` by ``val_fn``).
    best_epoch
        Epoch (0-based) whose parameters were kept: an int, or ``(n_models,)``.
    n_epochs
        Epochs run.
    stopped_early
        Whether patience ran out before ``config.max_epochs``.
    seconds
        Wall-clock time (compilation included).

    """

    params: Any
    state: Any
    history: dict[str, np.ndarray]
    best_epoch: Any
    n_epochs: int
    stopped_early: bool
    seconds: float


@lru_cache(maxsize=32)
def default_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """Adam, or AdamW when ``weight_decay > 0`` (cached: equal settings, one compiled epoch)."""
    if weight_decay > 0:
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    return optax.adam(learning_rate)


def n_batches(n_rows: int, batch_size: int) -> tuple[int, int]:
    """``(steps, batch)`` of an epoch over ``n_rows``: full batches, the remainder dropped.

    The batch is ``min(batch_size, n_rows)``, so a small data set gives one full batch.
    """
    batch = int(min(batch_size, n_rows))
    if batch < 1:
        raise ValueError("No training rows: the data to train on is empty.")
    return max(n_rows // batch, 1), batch


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _shuffled(key, n_rows: int, steps: int, batch: int, n_models: int | None):
    if n_models is None:
        perm = jax.random.permutation(key, n_rows)
        return perm[: steps * batch].reshape(steps, batch)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n_rows))(jax.random.split(key, n_models))
    idx = perms[:, : steps * batch].reshape(n_models, steps, batch)
    return jnp.swapaxes(idx, 0, 1)  # (steps, n_models, batch)


def shuffled_batches(
    n_rows: int, batch_size: int, *, n_models: int | None = None
) -> Callable[[jax.Array, int], jax.Array]:
    """The default schedule: each epoch a fresh shuffle cut into full batches of row indices.

    Returns ``schedule(key, epoch)`` giving ``(steps, batch)`` indices, or
    ``(steps, n_models, batch)`` with an independent shuffle per model.
    """
    steps, batch = n_batches(n_rows, batch_size)
    return lambda key, epoch: _shuffled(key, int(n_rows), steps, batch, n_models)


def _as_pair(out) -> tuple[jax.Array, dict]:
    """``(loss, parts)`` from a loss function's output (a loss alone has no parts)."""
    if isinstance(out, tuple):
        loss, parts = out
        return loss, dict(parts)
    return out, {}


def _step_one(loss_fn, optimizer, constrain, static, params, opt_state, data, batch, key, state):
    def objective(p):
        loss, parts = _as_pair(loss_fn(eqx.combine(p, static), data, batch, key, state))
        return loss, parts

    (loss, parts), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    new = eqx.apply_updates(params, updates)
    if constrain is not None:
        new = constrain(new, params)
    return new, opt_state, loss, parts


@eqx.filter_jit
def _epoch(
    loss_fn, optimizer, aux_step, constrain, vmapped, static, params, opt_state, state, data, xs
):
    """One epoch: ``lax.scan`` of the training step over the leading axis of ``xs``."""

    def step(carry, inp):
        p, s, st = carry
        batch, key = inp
        aux_parts = {}
        if aux_step is not None:
            st, aux_parts = aux_step(eqx.combine(p, static), st, data, batch, key)
        if vmapped:
            p, s, loss, parts = jax.vmap(
                lambda pp, ss, b, k: _step_one(
                    loss_fn, optimizer, constrain, static, pp, ss, data, b, k, st
                )
            )(p, s, batch, key)
        else:
            p, s, loss, parts = _step_one(
                loss_fn, optimizer, constrain, static, p, s, data, batch, key, st
            )
        return (p, s, st), (loss, {**dict(aux_parts), **parts})

    (params, opt_state, state), (losses, parts) = jax.lax.scan(step, (params, opt_state, state), xs)
    mean = partial(jnp.mean, axis=0)
    return params, opt_state, state, mean(losses), jax.tree_util.tree_map(mean, parts)


@eqx.filter_jit
def _evaluate(val_fn, static, params, data, state):
    return _as_pair(val_fn(eqx.combine(params, static), data, state))


@eqx.filter_jit
def _opt_init(optimizer, params, vmapped):
    return jax.vmap(optimizer.init)(params) if vmapped else optimizer.init(params)


@eqx.filter_jit
def _where_tree(mask, new, old):
    def pick(a, b):
        m = mask.reshape((-1,) + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _check_finite(what: str, value: np.ndarray, epoch: int, desc: str) -> None:
    flat = np.asarray(value).ravel()
    bad = flat[~np.isfinite(flat)]
    if bad.size:
        raise TrainingDivergedError(
            f"{desc}: training diverged: the {what} is {bad[0]} at epoch {epoch + 1}; no model "
            "was kept. Lower learning_rate, or check the input for extreme values."
        )


def fit(
    params: Any,
    loss_fn: LossFn,
    data: Mapping[str, Any] | Any,
    n_rows: int,
    config: TrainConfig,
    *,
    key: jax.Array | int = 0,
    optimizer: optax.GradientTransformation | None = None,
    val_fn: Callable[..., Any] | None = None,
    schedule: Callable[[jax.Array, int], Any] | None = None,
    n_models: int | None = None,
    key_shape: tuple[int, ...] = (),
    aux_step: Callable[..., Any] | None = None,
    state: Any = None,
    constrain: Callable[[Any, Any], Any] | None = None,
    min_delta: float = 0.0,
    early_stopping: bool = True,
    progress: bool = True,
    desc: str = "training",
) -> FitResult:
    """Minimise ``loss_fn`` over ``params`` by mini-batch gradient descent with early stopping.

    Parameters
    ----------
    params
        Initial parameters: a pytree (an equinox module may hold non-array fields, which are
        kept static). With ``n_models``, every array has a leading axis of that length.
    loss_fn
        ``loss_fn(params, data, batch, key, state)`` -> a scalar loss, or ``(loss, parts)``
        with ``parts`` a dict of scalars recorded in the history. ``batch`` is one step of the
        schedule (by default ``(batch,)`` row indices into ``data``), ``key`` a PRNG key for
        dropout or sampling (of shape ``key_shape + (2,)``). With ``n_models`` it is called per
        model (vmapped over ``params``, ``batch`` and ``key``; ``data`` and ``state`` shared).
    data
        The training data, any pytree of arrays (typically a dict of arrays with rows along
        the first axis); it is passed whole to every step, the batch selects from it.
    n_rows
        Number of training rows (for the default schedule).
    config
        The training block: ``batch_size``, ``max_epochs``, ``patience``, ``learning_rate``,
        ``weight_decay`` (``validation_fraction`` is the caller's: it decides which rows
        ``val_fn`` sees).
    key
        PRNG key (or integer seed) of shuffling and of the step keys.
    optimizer
        An optax transformation; default :func:`default_optimizer` of the config.
    val_fn
        ``val_fn(params, data, state)`` -> the validation loss (a scalar, ``(n_models,)``
        with ``n_models``: called once with the stacked parameters) or ``(loss, parts)``;
        ``None`` disables early stopping (the last epoch is kept).
    schedule
        ``schedule(key, epoch)`` -> the epoch's steps (a pytree whose arrays have the steps
        along their first axis, every epoch the same shapes); it runs on the host, so it may
        use NumPy. Default :func:`shuffled_batches` over ``n_rows``.
    n_models
        Train that many independent models at once (see ``params``).
    key_shape
        Shape of the key batch each step gets (default one key; ``(n_models,)`` is implied
        by ``n_models``).
    aux_step
        ``aux_step(params, state, data, batch, key)`` -> ``(state, parts)``, run before every
        step of the main loss (e.g. an adversary's update; its optimiser state lives in
        ``state``). Not available with ``n_models``.
    state
        Initial auxiliary state for ``aux_step`` (a pytree of arrays).
    constrain
        ``constrain(new_params, old_params)`` -> params, applied after every update (e.g. to
        keep frozen leaves).
    min_delta
        Smallest decrease of the validation loss that counts as an improvement.
    early_stopping
        Stop when patience runs out and keep the best epoch; ``False`` records the validation
        loss but runs every epoch and keeps the last.
    progress, desc
        tqdm progress bar over epochs and its label (also the prefix of error messages).

    Returns
    -------
    :class:`FitResult`.

    Raises
    ------
    TrainingDivergedError
        When a training or validation loss is NaN or infinite.

    """
    t0 = time.perf_counter()
    vmapped = n_models is not None
    if vmapped and aux_step is not None:
        raise ValueError("aux_step is not available when training n_models models at once.")
    if not isinstance(key, jax.Array):
        key = jax.random.PRNGKey(int(key) % (2**32))
    max_epochs, patience = int(config.max_epochs), int(config.patience)
    opt = optimizer or default_optimizer(float(config.learning_rate), float(config.weight_decay))
    schedule = schedule or shuffled_batches(n_rows, config.batch_size, n_models=n_models)
    kshape = (n_models,) if vmapped else tuple(key_shape)
    n_keys = math.prod(kshape)

    arrays, static = eqx.partition(params, eqx.is_array)
    opt_state = _opt_init(opt, arrays, vmapped)
    shape = (n_models,) if vmapped else ()
    best, best_state = arrays, state
    best_loss = np.full(shape, np.inf)
    best_epoch = np.zeros(shape, dtype=np.int64)
    wait = np.zeros(shape, dtype=np.int64)
    hist: dict[str, list] = {"loss": [], "val_loss": []}
    epoch_keys = jax.random.split(key, max_epochs)
    bar = tqdm(range(max_epochs), desc=desc, disable=not progress, leave=False)
    epoch, stopped = -1, False
    for epoch in bar:
        k_sched, k_steps = jax.random.split(epoch_keys[epoch])
        xs = schedule(k_sched, epoch)
        steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
        step_keys = jax.random.split(k_steps, steps * n_keys).reshape(steps, *kshape, -1)
        arrays, opt_state, state, loss, parts = _epoch(
            loss_fn, opt, aux_step, constrain, vmapped, static, arrays, opt_state, state, data,
            (xs, step_keys),
        )  # fmt: skip
        loss = np.asarray(loss)
        _check_finite("training loss", loss, epoch, desc)
        hist["loss"].append(loss)
        for k, v in parts.items():
            hist.setdefault(k, []).append(np.asarray(v))
        if val_fn is None:
            hist["val_loss"].append(np.full(shape, np.nan))
            bar.set_postfix(train=f"{loss.mean():.4g}")
            continue
        vl, vparts = _evaluate(val_fn, static, arrays, data, state)
        vl = np.broadcast_to(np.asarray(vl), shape)
        _check_finite("validation loss", vl, epoch, desc)
        hist["val_loss"].append(vl)
        for k, v in vparts.items():
            hist.setdefault(f"val_{k}", []).append(np.asarray(v))
        bar.set_postfix(train=f"{loss.mean():.4g}", val=f"{vl.mean():.4g}")
        improved = vl < best_loss - min_delta
        if improved.any():
            if vmapped:
                best = _where_tree(jnp.asarray(improved), arrays, best)
            else:
                best, best_state = arrays, state
        best_loss = np.where(improved, vl, best_loss)
        best_epoch = np.where(improved, epoch, best_epoch)
        wait = np.where(improved, 0, wait + 1)
        if early_stopping and (wait >= patience).all():
            stopped = epoch + 1 < max_epochs
            break
    bar.close()
    if val_fn is None or not early_stopping:
        best, best_state = arrays, state
        best_epoch = np.full(shape, epoch)
    jax.block_until_ready(jax.tree_util.tree_leaves(best))
    history = {k: np.asarray(v, dtype=np.float32) for k, v in hist.items()}
    return FitResult(
        params=eqx.combine(best, static),
        state=best_state,
        history=history,
        best_epoch=best_epoch if vmapped else int(best_epoch),
        n_epochs=epoch + 1,
        stopped_early=stopped,
        seconds=time.perf_counter() - t0,
    )

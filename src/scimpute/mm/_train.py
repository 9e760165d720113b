"""Training of the cross-modal autoencoder through scimpute's one trainer, :func:`scimpute.nn.fit`.

mm contributes what is its own: the batch schedule (cells of every modality and anchor
cells, drawn with the run's NumPy generator), the loss (:func:`scimpute.mm._model.ae_loss`),
the discriminator's update (an ``aux_step`` of the trainer, with its own optimiser) and the
validation loss. The loop itself (compiled epochs, early stopping, keeping the best epoch,
divergence check) is :func:`scimpute.nn.fit`.

The loss, discriminator step, validation function and optimiser are built by cached factories,
so that fits with the same settings pass the same function objects and reuse the compiled
epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..nn._config import TrainConfig
from ..nn._loop import fit
from ._model import (
    Architecture,
    CrossModalAE,
    LossConfig,
    ae_loss,
    disc_loss,
    discriminator_sizes,
    discriminator_static,
)
from ._params import INTEGRATE, IntegrateParams

#: global norm the autoencoder's gradients are clipped to.
CLIP_NORM = 5.0
#: most validation cells per modality (and validation pairs) in the validation loss of early
#: stopping; beyond it a random subset, drawn once, so that the loss (an MMD and a
#: contrastive term over all of them: quadratic in their number) stays bounded in time and
#: memory on large data.
MAX_VALIDATION_CELLS = 2048


@dataclass(frozen=True)
class TrainingSet:
    """Arrays of one integration run, as the trainer needs them.

    Attributes
    ----------
    inputs
        Per modality ``(encoder inputs, standardised profiles)``, one row per cell of the
        modality, and for a guided fit the linear solution's shared latent of those cells.
    train_rows, val_rows
        Per modality, rows trained on and rows held out for validation.
    anchors
        Indices (into the union of cells) of the anchor cells.
    cell_rows
        ``(n_cells, n_modalities)`` row of every cell in each modality (-1 when absent).
    val_pairs
        Indices of the validation cells measured in two or more modalities.

    """

    inputs: dict[str, tuple[np.ndarray, ...]]
    train_rows: dict[str, np.ndarray]
    val_rows: dict[str, np.ndarray]
    anchors: np.ndarray
    cell_rows: np.ndarray
    val_pairs: np.ndarray

    @property
    def modalities(self) -> list[str]:
        """Modalities, in model order."""
        return list(self.inputs)

    @property
    def has_validation(self) -> bool:
        """Whether every modality has validation cells (at least 2) for early stopping."""
        return all(self.val_rows[m].size >= 2 for m in self.modalities)

    def anchor_batch(self, cells: np.ndarray) -> tuple[dict, dict]:
        """Rows of ``cells`` in every modality (0 where absent) and the presence masks."""
        r = self.cell_rows[cells]
        mods = self.modalities
        rows = {m: jnp.asarray(np.maximum(r[..., j], 0)) for j, m in enumerate(mods)}
        mask = {m: jnp.asarray((r[..., j] >= 0).astype(np.float32)) for j, m in enumerate(mods)}
        return rows, mask


@dataclass
class Trained:
    """Outcome of :func:`train`."""

    model: CrossModalAE
    history: dict[str, np.ndarray]
    n_steps: int
    n_epochs: int
    best_epoch: int  # 0-based


def make_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """AdamW with gradients clipped to global norm :data:`CLIP_NORM`."""
    return _optimizer(float(learning_rate), float(weight_decay))


@lru_cache(maxsize=16)
def _optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(CLIP_NORM),
        optax.adamw(learning_rate, weight_decay=weight_decay),
    )


#: what fixes the discriminator's structure, ``(n_latent, n_modalities, n_hidden)``, or
#: ``None`` without one.
DiscSizes = tuple[int, int, int] | None


def _discriminator(sizes: DiscSizes, state):
    """The discriminator held in the trainer's auxiliary state (``None`` without one)."""
    if state is None or sizes is None:
        return None
    return eqx.combine(state[0], discriminator_static(sizes))


@lru_cache(maxsize=16)
def loss_function(cfg: LossConfig, sizes: DiscSizes):
    """``loss_fn(model, data, batch, key, state)`` of the trainer: :func:`ae_loss` with dropout."""

    def loss_fn(model, data, batch, key, state):
        idx, aidx, amask, key = batch  # mm's own dropout key (see _schedule)
        disc = _discriminator(sizes, state)
        return ae_loss(model, disc, data["weights"], data["x"], idx, aidx, amask, key, cfg, True)

    return loss_fn


@lru_cache(maxsize=16)
def validation_function(cfg: LossConfig, sizes: DiscSizes):
    """``val_fn(model, data, state)``: the loss of every validation cell, without dropout."""

    def val_fn(model, data, state):
        idx, aidx, amask = data["validation"]
        disc = _discriminator(sizes, state)
        key = jax.random.PRNGKey(0)
        return ae_loss(model, disc, data["weights"], data["x"], idx, aidx, amask, key, cfg, False)

    return val_fn


@lru_cache(maxsize=16)
def discriminator_step(sizes: tuple[int, int, int], learning_rate: float):
    """``(aux_step, optimizer)``: one Adam step of the discriminator before each AE step.

    The discriminator's parameters and optimiser state are the trainer's auxiliary state;
    its loss (:func:`disc_loss`) sees the shared latents with their gradient stopped.
    """
    opt = optax.adam(learning_rate)

    def aux_step(model, state, data, batch, key):
        params, opt_state = state
        disc = eqx.combine(params, discriminator_static(sizes))
        loss, grads = eqx.filter_value_and_grad(disc_loss)(disc, model, data["x"], batch[0])
        updates, opt_state = opt.update(eqx.filter(grads, eqx.is_array), opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), {"discriminator": loss}

    return aux_step, opt


def schedule_draws(pool: np.ndarray, n_steps: int, size: int, rng: np.random.Generator):
    """``(n_steps, size)`` draws from ``pool``: consecutive shuffles, so every item is used."""
    reps = -(-n_steps * size // pool.size)
    draws = np.concatenate([rng.permutation(pool) for _ in range(reps)])
    return draws[: n_steps * size].reshape(n_steps, size)


@partial(jax.jit, static_argnums=1)
def _key_chain(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``(next key, (n, 2) step keys)``: ``key, k = split(key)`` repeated ``n`` times."""

    def step(k, _):
        k, out = jax.random.split(k)
        return k, out

    return jax.lax.scan(step, key, None, length=n)


def _schedule(ts: TrainingSet, n_steps: int, batch_size: int, rng: np.random.Generator, seed: int):
    """``schedule(key, epoch)`` of the trainer: every step's batches and dropout key.

    Batches of every modality and of the anchors are drawn with ``rng``; the dropout keys
    form one chain from ``seed`` across the steps of all epochs. Both are mm's own, so that a
    seed gives the same numbers as before mm trained through :func:`scimpute.nn.fit` (whose
    own per-step keys mm does not use).
    """
    sizes = {m: min(batch_size, ts.train_rows[m].size) for m in ts.modalities}
    a_size = min(batch_size, ts.anchors.size)
    chain = [jax.random.PRNGKey(seed)]

    def schedule(key, epoch):
        idx = {
            m: jnp.asarray(schedule_draws(ts.train_rows[m], n_steps, sizes[m], rng))
            for m in ts.modalities
        }
        if ts.anchors.size:
            aidx, amask = ts.anchor_batch(schedule_draws(ts.anchors, n_steps, a_size, rng))
        else:
            aidx, amask = {}, {}
        chain[0], keys = _key_chain(chain[0], n_steps)
        return idx, aidx, amask, keys

    return schedule


def _at_most(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``rows``, or a sorted random ``size`` of them when there are more.

    ``rng`` is only drawn from when there are more, so small data keep their numbers.
    """
    return rows if rows.size <= size else np.sort(rng.choice(rows, size, replace=False))


def _validation_batch(ts: TrainingSet, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """The validation cells of every modality, and the anchor terms of the paired ones.

    At most :data:`MAX_VALIDATION_CELLS` of each (a random subset, drawn once, beyond it).
    """
    cap = MAX_VALIDATION_CELLS
    idx = {m: jnp.asarray(_at_most(ts.val_rows[m], cap, rng)) for m in ts.modalities}
    if ts.anchors.size and ts.val_pairs.size:
        aidx, amask = ts.anchor_batch(_at_most(ts.val_pairs, cap, rng))
    else:  # one masked-out row: the anchor terms are 0
        aidx = {m: jnp.zeros(1, jnp.int32) for m in ts.modalities}
        amask = {m: jnp.zeros(1, jnp.float32) for m in ts.modalities}
    return idx, aidx, amask


def train(
    model: CrossModalAE,
    disc: eqx.nn.MLP | None,
    arch: Architecture,
    ts: TrainingSet,
    spec: IntegrateParams,
    cfg: LossConfig,
    *,
    seed: int,
    rng: np.random.Generator,
    progress: bool,
) -> Trained:
    """Train ``model`` (and the discriminator ``disc``) on ``ts`` with :func:`scimpute.nn.fit`.

    An epoch is ``ceil(max_m n_m / batch_size)`` steps; each step sees a batch of every
    modality and of the anchor cells. ``seed`` seeds the step keys (dropout), ``rng`` draws
    the batches.
    """
    n_steps = max(1, -(-max(r.size for r in ts.train_rows.values()) // spec.batch_size))
    data = {
        "x": {m: tuple(jnp.asarray(v) for v in arrays) for m, arrays in ts.inputs.items()},
        "weights": jnp.asarray(spec.weights(), dtype=jnp.float32),
    }
    use_val = ts.has_validation
    if use_val:
        data["validation"] = _validation_batch(ts, rng)
    sizes = aux_step = state = None
    if disc is not None:
        sizes = discriminator_sizes(arch)
        aux_step, dopt = discriminator_step(sizes, float(spec.learning_rate))
        dparams = eqx.filter(disc, eqx.is_array)
        state = (dparams, dopt.init(dparams))
    res = fit(
        model,
        loss_function(cfg, sizes),
        data,
        n_rows=max(r.size for r in ts.train_rows.values()),
        config=TrainConfig.pick(spec),
        key=seed,
        optimizer=make_optimizer(spec.learning_rate, spec.weight_decay),
        val_fn=validation_function(cfg, sizes) if use_val else None,
        schedule=_schedule(ts, n_steps, spec.batch_size, rng, seed),
        aux_step=aux_step,
        state=state,
        early_stopping=spec.early_stopping,
        progress=progress,
        desc=INTEGRATE,
    )
    history = dict(res.history)
    if not use_val:
        history.pop("val_loss", None)
    return Trained(res.params, history, n_steps, res.n_epochs, int(res.best_epoch))

"""Cross-modal autoencoder: networks (equinox) and losses; no training loop.

Nothing here knows about AnnData or MuData: arrays in, arrays out. Training goes through
scimpute's one trainer (:func:`scimpute.nn.fit`, wired up in ``_train.py``); the plumbing
between MuData and arrays lives in ``_integrate.py``.

Model. For every modality ``m`` an encoder MLP maps a standardised profile ``x`` to a shared
latent ``z`` (``n_latent`` dims) and a private latent ``u`` (``n_private`` dims); a decoder
MLP maps ``[z, u]`` back to ``x``. Losses of one step (each a mean over its cells):

- reconstruction: ``|x - dec_m(enc_m(x))|^2`` per feature, for a batch of every modality;
- scale: ``(1 - sqrt(mean_d var(z_d)))^2`` per modality, so the latent can neither shrink
  to make the anchor and alignment terms vanish nor grow to make the contrastive term
  trivial;
- alignment of the shared latents of different modalities: a multi-scale Gaussian-kernel
  MMD between the batches (``"mmd"``), or a discriminator that guesses the modality of
  ``z`` and a confusion loss (cross-entropy of its guess to the uniform distribution,
  Tzeng et al. 2015) for the encoders (``"adversarial"``);
- anchors (cells known to be the same in two modalities): ``mean_d (z_m - z_m')^2`` plus a
  symmetric InfoNCE term that picks each anchor's partner among the batch's anchors
  (``anchor_weight``; see :func:`_anchor_distance`);, and cross-reconstruction
  ``|x_m' - dec_m'([z_m, mean u_m'])|^2`` (``cross_weight``), with the gradient into ``z_m``
  stopped: it trains the decoders to translate, but cannot push the encoders to memorise
  modality-private variation of the anchor cells into the shared latent (which they would
  otherwise do to predict the unpredictable part of the other modality).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Architecture:
    """Sizes of the networks (everything needed to rebuild them from stored weights)."""

    modalities: tuple[str, ...]
    n_inputs: tuple[int, ...]
    n_features: tuple[int, ...]
    n_latent: int
    n_private: int
    n_hidden: int
    n_layers: int


@dataclass(frozen=True)
class LossConfig:
    """Static settings of the loss (hashable: one compiled epoch per configuration)."""

    alignment: str
    dropout: float
    n_modalities: int
    has_anchors: bool
    temperature: float = 2.0
    guided: bool = False
    mmd_scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


class CrossModalAE(eqx.Module):
    """One encoder and one decoder MLP per modality."""

    encoders: dict
    decoders: dict
    n_latent: int = eqx.field(static=True)

    def encode(self, m: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(z, u)``: shared and private latents of a batch ``x`` of modality ``m``."""
        h = jax.vmap(self.encoders[m])(x)
        return h[:, : self.n_latent], h[:, self.n_latent :]

    def decode(self, m: str, z: jax.Array, u: jax.Array) -> jax.Array:
        """Profiles of modality ``m`` (standardised) from shared and private latents."""
        return jax.vmap(self.decoders[m])(jnp.concatenate([z, u], axis=1))


def _is_param(x) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct | jax.Array)


def _skeleton(arch: Architecture) -> CrossModalAE:
    """Networks of architecture ``arch`` with abstract leaves (nothing is computed)."""

    def make():
        enc, dec = {}, {}
        width = arch.n_latent + arch.n_private
        key = jax.random.PRNGKey(0)
        for m, k, p in zip(arch.modalities, arch.n_inputs, arch.n_features, strict=True):
            enc[m] = eqx.nn.MLP(k, width, arch.n_hidden, arch.n_layers, jax.nn.gelu, key=key)
            dec[m] = eqx.nn.MLP(width, p, arch.n_hidden, arch.n_layers, jax.nn.gelu, key=key)
        return CrossModalAE(enc, dec, arch.n_latent)

    return eqx.filter_eval_shape(make)


def _fill(skeleton, values) -> eqx.Module:
    params, static = eqx.partition(skeleton, _is_param)
    treedef = jax.tree_util.tree_structure(params)
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, values), static)


def _uniform_init(skeleton, rng: np.random.Generator) -> eqx.Module:
    """Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (equinox's default), from numpy.

    Drawing them with numpy avoids compiling one XLA program per layer shape.
    """
    params = eqx.filter(skeleton, _is_param)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    values = []
    for path, leaf in flat:
        name = _name(path)
        # a weight is (out, in); its bias shares the fan-in of the weight before it
        fan_in = leaf.shape[1] if name.endswith("weight") else values[-1].shape[1]
        bound = 1.0 / np.sqrt(fan_in)
        values.append(jnp.asarray(rng.uniform(-bound, bound, size=leaf.shape).astype(np.float32)))
    return _fill(skeleton, values)


def build(arch: Architecture, rng: np.random.Generator) -> CrossModalAE:
    """New networks with random weights drawn from ``rng``."""
    return _uniform_init(_skeleton(arch), rng)


@lru_cache(maxsize=16)
def discriminator_skeleton(n_latent: int, n_modalities: int, n_hidden: int) -> eqx.nn.MLP:
    """The discriminator's structure with abstract leaves (its static part is shared)."""
    return eqx.filter_eval_shape(
        lambda: eqx.nn.MLP(
            n_latent, n_modalities, n_hidden, 1, jax.nn.gelu, key=jax.random.PRNGKey(0)
        )
    )


def discriminator_sizes(arch: Architecture) -> tuple[int, int, int]:
    """``(n_latent, n_modalities, n_hidden)``: what fixes the discriminator's structure."""
    return (arch.n_latent, len(arch.modalities), arch.n_hidden)


def discriminator_static(sizes: tuple[int, int, int]):
    """The discriminator's static part (what :func:`equinox.partition` leaves besides arrays)."""
    return eqx.partition(discriminator_skeleton(*sizes), _is_param)[1]


def build_discriminator(arch: Architecture, rng: np.random.Generator) -> eqx.nn.MLP:
    """MLP that guesses the modality of a shared latent vector."""
    return _uniform_init(discriminator_skeleton(*discriminator_sizes(arch)), rng)


# ---------------------------------------------------------------------------- serialisation


def _name(path) -> str:
    s = jax.tree_util.keystr(path)
    return re.sub(r"[^0-9A-Za-z_]+", ".", s).strip(".")


def to_arrays(model: eqx.Module) -> dict[str, np.ndarray]:
    """The weights of ``model`` as a flat ``{name: numpy array}`` dict (h5-storable)."""
    params = eqx.filter(model, eqx.is_array)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_name(p): np.asarray(leaf) for p, leaf in flat}


def from_arrays(arch: Architecture, arrays: Mapping[str, np.ndarray]) -> CrossModalAE:
    """Rebuild networks of architecture ``arch`` from :func:`to_arrays` output."""
    skeleton = _skeleton(arch)
    flat = jax.tree_util.tree_flatten_with_path(eqx.filter(skeleton, _is_param))[0]
    leaves = []
    for path, leaf in flat:
        name = _name(path)
        if name not in arrays:
            raise ValueError(
                f"Stored weights lack {name!r}: they were not written by this version of "
                "scimpute.mm.integrate. Run integrate again."
            )
        value = np.asarray(arrays[name], dtype=np.float32)
        if value.shape != tuple(leaf.shape):
            raise ValueError(
                f"Stored weight {name!r} has shape {value.shape}, expected {tuple(leaf.shape)}."
            )
        leaves.append(jnp.asarray(value))
    return _fill(skeleton, leaves)


# ---------------------------------------------------------------------------- losses


def _sqdist(a: jax.Array, b: jax.Array) -> jax.Array:
    d = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(d, 0.0)


def mmd(a: jax.Array, b: jax.Array, scales: tuple[float, ...]) -> jax.Array:
    """Biased squared MMD with a sum of Gaussian kernels of bandwidth^2 ``s * dim``."""
    dim = a.shape[1]

    def k(x, y):
        d = _sqdist(x, y)
        return sum(jnp.exp(-d / (2.0 * s * dim)) for s in scales)

    return k(a, a).mean() + k(b, b).mean() - 2.0 * k(a, b).mean()


def _scale_penalty(z: jax.Array) -> jax.Array:
    """``(1 - sqrt(mean_d var(z_d)))^2``: keeps the mean variance of the latent at 1."""
    v = jnp.mean(jnp.var(z, axis=0))
    return (1.0 - jnp.sqrt(v + 1e-8)) ** 2


def _anchor_distance(
    za: jax.Array, zb: jax.Array, w: jax.Array, denom: jax.Array, temperature: float
) -> jax.Array:
    """Anchor loss of paired latents (rows ``i`` of ``za`` and ``zb``, weights ``w``).

    ``mean_d (za_id - zb_id)^2`` plus a symmetric InfoNCE term: the cross-entropy of picking
    the partner of each anchor among the anchors of the batch, with logits
    ``-|za_i - zb_j|^2 / (temperature * dim)``. The first pulls partners together, the
    second also pushes non-partners apart, so the latent keeps what tells cells apart rather
    than collapsing onto the single most shared direction.
    """
    dim = za.shape[1]
    mse = jnp.mean((za - zb) ** 2, axis=1)
    logits = -_sqdist(za, zb) / (temperature * dim)
    invalid = jnp.where(w > 0, 0.0, -1e9)
    row = jax.nn.log_softmax(logits + invalid[None, :], axis=1)
    col = jax.nn.log_softmax(logits + invalid[:, None], axis=0)
    nce = -0.5 * (jnp.diagonal(row) + jnp.diagonal(col))
    return jnp.sum(w * (mse + nce)) / denom


def _dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    if rate <= 0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _log_softmax_disc(disc: eqx.nn.MLP, z: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(jax.vmap(disc)(z), axis=-1)


def ae_loss(
    model: CrossModalAE,
    disc,
    weights: jax.Array,
    data: dict,
    idx: dict,
    aidx: dict,
    amask: dict,
    key: jax.Array,
    cfg: LossConfig,
    train: bool,
):
    """Total loss of one batch and its parts.

    ``weights`` = ``(anchor, cross, alignment, scale, guide)`` weights (traced, so changing
    them does not recompile). ``data[m]`` = ``(encoder inputs, standardised profiles)`` of
    modality ``m``, plus (``cfg.guided``) the linear solution's shared latent of its cells,
    which the batch's shared latents are pulled towards; ``idx[m]``: rows of modality ``m`` in the batch; ``aidx[m]``/``amask[m]``:
    rows of the anchor cells in modality ``m`` and whether the cell is present there.
    """
    mods = list(data)
    keys = jax.random.split(key, len(mods))
    rec = 0.0
    scale = 0.0
    guide = jnp.zeros(())
    zs, umean, za, xa = {}, {}, {}, {}
    for i, m in enumerate(mods):
        inp, out = data[m][:2]
        xi, x = inp[idx[m]], out[idx[m]]
        nb = x.shape[0]
        if cfg.has_anchors:  # one encoder pass for the batch and the anchor cells
            xi = jnp.concatenate([xi, inp[aidx[m]]], axis=0)
            x = jnp.concatenate([x, out[aidx[m]]], axis=0)
        xin = _dropout(xi, cfg.dropout, keys[i]) if train else xi
        z, u = model.encode(m, xin)
        xhat = model.decode(m, z[:nb], u[:nb])
        rec = rec + jnp.mean((x[:nb] - xhat) ** 2)
        scale = scale + _scale_penalty(z[:nb])
        if cfg.guided:
            guide = guide + jnp.mean((z[:nb] - data[m][2][idx[m]]) ** 2)
        zs[m] = z[:nb]
        umean[m] = jax.lax.stop_gradient(jnp.mean(u[:nb], axis=0, keepdims=True))
        za[m], xa[m] = z[nb:], x[nb:]

    align = jnp.zeros(())
    if cfg.alignment == "mmd":
        pairs = [(a, b) for i, a in enumerate(mods) for b in mods[i + 1 :]]
        for a, b in pairs:
            align = align + mmd(zs[a], zs[b], cfg.mmd_scales)
        align = align / len(pairs)
    elif cfg.alignment == "adversarial":
        logk = jnp.log(len(mods))
        for m in mods:
            lp = _log_softmax_disc(disc, zs[m])
            align = align + (-jnp.mean(lp) - logk)  # CE to uniform, 0 at best
        align = align / len(mods)

    anchor = jnp.zeros(())
    cross = jnp.zeros(())
    if cfg.has_anchors:
        n_pairs = 0
        for a in mods:
            for b in mods:
                if a == b:
                    continue
                w = amask[a] * amask[b]
                denom = jnp.maximum(jnp.sum(w), 1.0)
                if a < b:
                    anchor = anchor + _anchor_distance(za[a], za[b], w, denom, cfg.temperature)
                u = jnp.broadcast_to(umean[b], (za[a].shape[0], umean[b].shape[1]))
                pred = model.decode(b, jax.lax.stop_gradient(za[a]), u)
                err = jnp.mean((xa[b] - pred) ** 2, axis=1)
                cross = cross + jnp.sum(w * err) / denom
                n_pairs += 1
        cross = cross / n_pairs
        anchor = anchor / (n_pairs / 2)

    rec = rec / len(mods)
    scale = scale / len(mods)
    guide = guide / len(mods)
    total = rec + weights[0] * anchor + weights[1] * cross + weights[2] * align + weights[3] * scale
    total = total + weights[4] * guide
    parts = {
        "reconstruction": rec,
        "anchor": anchor,
        "cross": cross,
        "alignment": align,
        "scale": scale,
    }
    if cfg.guided:
        parts["guide"] = guide
    return total, parts


def disc_loss(disc, model: CrossModalAE, data: dict, idx: dict) -> jax.Array:
    """Cross-entropy of the discriminator's guess of each batch's modality."""
    loss = 0.0
    for j, m in enumerate(data):
        z = jax.lax.stop_gradient(model.encode(m, data[m][0][idx[m]])[0])
        loss = loss - jnp.mean(_log_softmax_disc(disc, z)[:, j])
    return loss / len(data)


# ---------------------------------------------------------------------------- inference


@eqx.filter_jit
def _encode_chunk(model: CrossModalAE, m: str, x: jax.Array):
    return model.encode(m, x)


@eqx.filter_jit
def _decode_chunk(model: CrossModalAE, m: str, z: jax.Array, u: jax.Array):
    return model.decode(m, z, u)


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    out = np.zeros((size, *x.shape[1:]), dtype=x.dtype)
    out[: x.shape[0]] = x
    return out


def encode_all(
    model: CrossModalAE, m: str, x: np.ndarray, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Shared and private latents of every row of ``x`` (chunks padded to one shape)."""
    size = min(chunk, max(1, x.shape[0]))
    zs, us = [], []
    for s, e in _chunks(x.shape[0], size):
        z, u = _encode_chunk(model, m, jnp.asarray(_pad(x[s:e], size)))
        zs.append(np.asarray(z)[: e - s])
        us.append(np.asarray(u)[: e - s])
    return np.concatenate(zs), np.concatenate(us)


def decode_all(
    model: CrossModalAE, m: str, z: np.ndarray, u: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """Standardised profiles of modality ``m`` decoded from every row of ``(z, u)``."""
    size = min(chunk, max(1, z.shape[0]))
    out = []
    for s, e in _chunks(z.shape[0], size):
        zz = jnp.asarray(_pad(z[s:e].astype(np.float32), size))
        uu = jnp.asarray(_pad(u[s:e].astype(np.float32), size))
        out.append(np.asarray(_decode_chunk(model, m, zz, uu))[: e - s])
    return np.concatenate(out)

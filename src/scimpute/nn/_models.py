"""Networks of the latent-arithmetic route: a wide autoencoder and a scGen-style VAE.

Both are :mod:`equinox` modules acting on one profile (a vector of ``n_features``); batches
are handled with :func:`jax.vmap`. Every model carries the affine input scaling it was trained
with (``input_mean``, ``input_scale``) so that encoding and decoding work on the original
scale of the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

MODELS = ("autoencoder", "vae")


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a network (everything needed to rebuild it from its weights).

    Attributes
    ----------
    model
        ``"autoencoder"`` or ``"vae"``.
    n_features
        Input and output dimension (genes).
    width
        Units of every hidden layer.
    depth
        Number of hidden layers of the encoder (the decoder mirrors it).
    latent_dim
        Dimension of the latent space. For the autoencoder ``None`` means that the latent
        space is the last hidden layer itself (``width`` units after the activation, the
        over-parameterised single-hidden-layer network of Belyaeva et al. when ``depth=1``);
        the VAE needs an integer.
    dropout
        Dropout rate after each hidden layer during training (0 disables it).
    negative_slope
        Slope of the leaky ReLU for negative inputs.
    kl_weight
        Weight of the KL term of the VAE loss (ignored by the autoencoder).
    use_bias
        Whether the linear layers have biases.

    """

    model: str
    n_features: int
    width: int = 1024
    depth: int = 1
    latent_dim: int | None = None
    dropout: float = 0.0
    negative_slope: float = 0.01
    kl_weight: float = 5e-5
    use_bias: bool = True

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}.")
        for name in ("n_features", "width", "depth"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        if self.latent_dim is not None and (
            not isinstance(self.latent_dim, int | np.integer) or self.latent_dim < 1
        ):
            raise ValueError(
                f"latent_dim must be a positive integer or None, got {self.latent_dim!r}."
            )
        if self.model == "vae" and self.latent_dim is None:
            raise ValueError("The VAE needs an integer latent_dim (scGen uses 10 to 100).")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if float(self.kl_weight) < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight!r}.")

    @property
    def n_latent(self) -> int:
        """Dimension of the latent space."""
        return int(self.width if self.latent_dim is None else self.latent_dim)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``latent_dim=None`` stored as ``-1`` so that h5ad keeps it)."""
        d = asdict(self)
        d["latent_dim"] = -1 if self.latent_dim is None else int(self.latent_dim)
        return d

    @classmethod
    def from_dict(cls, d) -> NetConfig:
        """Inverse of :meth:`to_dict` (accepts the values read back from an h5ad)."""
        lat = int(d["latent_dim"])
        return cls(
            model=str(d["model"]),
            n_features=int(d["n_features"]),
            width=int(d["width"]),
            depth=int(d["depth"]),
            latent_dim=None if lat < 0 else lat,
            dropout=float(d["dropout"]),
            negative_slope=float(d["negative_slope"]),
            kl_weight=float(d["kl_weight"]),
            use_bias=bool(d["use_bias"]),
        )


class MLP(eqx.Module):
    """Stack of linear layers with leaky-ReLU activations (and dropout) between them."""

    layers: tuple[eqx.nn.Linear, ...]
    activate_last: bool = eqx.field(static=True)
    negative_slope: float = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(
        self,
        sizes: list[int],
        *,
        activate_last: bool,
        negative_slope: float,
        dropout: float,
        use_bias: bool,
        key: jax.Array,
    ):
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            eqx.nn.Linear(sizes[i], sizes[i + 1], use_bias=use_bias, key=keys[i])
            for i in range(len(sizes) - 1)
        )
        self.activate_last = activate_last
        self.negative_slope = negative_slope
        self.dropout = dropout

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        n = len(self.layers)
        keys = [None] * n if key is None else list(jax.random.split(key, n))
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1 or self.activate_last:
                x = jax.nn.leaky_relu(x, self.negative_slope)
                if self.dropout > 0 and keys[i] is not None:
                    keep = jax.random.bernoulli(keys[i], 1.0 - self.dropout, x.shape)
                    x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
        return x


class Network(eqx.Module):
    """An autoencoder or VAE with its input scaling.

    ``encode(x)`` returns the latent code (the posterior mean for the VAE), ``decode(z)`` the
    profile on the original scale.
    """

    encoder: MLP
    decoder: MLP
    input_mean: jax.Array
    input_scale: jax.Array
    model: str = eqx.field(static=True)
    n_latent: int = eqx.field(static=True)

    def __init__(self, cfg: NetConfig, key: jax.Array):
        k1, k2 = jax.random.split(key)
        hidden = [cfg.width] * cfg.depth
        common = {
            "negative_slope": float(cfg.negative_slope),
            "dropout": float(cfg.dropout),
            "use_bias": bool(cfg.use_bias),
        }
        if cfg.model == "autoencoder" and cfg.latent_dim is None:
            enc = [cfg.n_features, *hidden]
            dec = [cfg.width] * cfg.depth + [cfg.n_features]
            self.encoder = MLP(enc, activate_last=True, key=k1, **common)
        else:
            out = cfg.n_latent * (2 if cfg.model == "vae" else 1)
            self.encoder = MLP(
                [cfg.n_features, *hidden, out], activate_last=False, key=k1, **common
            )
            dec = [cfg.n_latent, *hidden, cfg.n_features]
        self.decoder = MLP(dec, activate_last=False, key=k2, **common)
        self.input_mean = jnp.zeros(cfg.n_features, dtype=jnp.float32)
        self.input_scale = jnp.ones(cfg.n_features, dtype=jnp.float32)
        self.model = cfg.model
        self.n_latent = cfg.n_latent

    def _encode_scaled(self, xs: jax.Array, key: jax.Array | None = None):
        h = self.encoder(xs, key)
        if self.model == "vae":
            return h[: self.n_latent], h[self.n_latent :]
        return h, None

    def encode(self, x: jax.Array) -> jax.Array:
        """Latent code of one profile (posterior mean for the VAE)."""
        mu, _ = self._encode_scaled((x - self.input_mean) / self.input_scale)
        return mu

    def decode(self, z: jax.Array) -> jax.Array:
        """Profile (original scale) decoded from one latent code."""
        return self.decoder(z) * self.input_scale + self.input_mean

    def loss(self, x: jax.Array, key: jax.Array | None, kl_weight: float) -> jax.Array:
        """Training loss of one profile, on the scaled data.

        Autoencoder: mean squared reconstruction error over features. VAE (scGen's
        objective): ``0.5 * sum of squared errors + kl_weight * KL(q(z|x) || N(0, I))``,
        divided by the number of features so that both losses have the same scale.
        """
        xs = (x - self.input_mean) / self.input_scale
        if key is None:
            k_enc = k_z = k_dec = None
        else:
            k_enc, k_z, k_dec = jax.random.split(key, 3)
        mu, logvar = self._encode_scaled(xs, k_enc)
        if self.model == "vae":
            if k_z is None:
                z = mu
            else:
                z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, mu.shape)
            rec = self.decoder(z, k_dec)
            kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1.0 - logvar)
            return (0.5 * jnp.sum((rec - xs) ** 2) + kl_weight * kl) / xs.shape[0]
        rec = self.decoder(mu, k_dec)
        return jnp.mean((rec - xs) ** 2)


@eqx.filter_jit
def _build(cfg: NetConfig, key: jax.Array, mean: jax.Array, scale: jax.Array) -> Network:
    net = Network(cfg, key)
    # float32 weights even when a library (e.g. pertpy) switched JAX to 64-bit by default
    net = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, net
    )
    return eqx.tree_at(lambda n: (n.input_mean, n.input_scale), net, (mean, scale))


def build_network(cfg: NetConfig, key: jax.Array, *, mean=None, scale=None) -> Network:
    """A freshly initialised :class:`Network` with the given input scaling (default 0 and 1).

    Initialisation is compiled once per architecture (the weights equal those of an eager
    ``Network(cfg, key)``).
    """
    p = cfg.n_features
    mean = jnp.zeros(p, jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
    scale = jnp.ones(p, jnp.float32) if scale is None else jnp.asarray(scale, jnp.float32)
    # the KL weight is not part of the architecture: one compiled program for all values
    return _build(replace(cfg, kl_weight=0.0), key, mean, scale)


def _leaf_names(tree) -> list[str]:
    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    names = []
    for path, _leaf in paths:
        parts = []
        for k in path:
            if isinstance(k, jax.tree_util.GetAttrKey):
                parts.append(k.name)
            elif isinstance(k, jax.tree_util.SequenceKey):
                parts.append(str(k.idx))
            elif isinstance(k, jax.tree_util.DictKey):
                parts.append(str(k.key))
            else:  # pragma: no cover - other key kinds do not occur in these modules
                parts.append(str(k))
        names.append("_".join(parts))
    return names


def network_to_arrays(net: Network) -> dict[str, np.ndarray]:
    """The weights of a network as a flat ``{name: float32 array}`` dict (h5ad-safe).

    Names are the attribute paths joined with ``_`` (``encoder_layers_0_weight``, ...).
    """
    params = eqx.filter(net, eqx.is_array)
    leaves = jax.tree_util.tree_leaves(params)
    return {
        n: np.asarray(v, dtype=np.float32) for n, v in zip(_leaf_names(params), leaves, strict=True)
    }


def _checked_weight(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """A stored weight as float32, after checking its type, shape and finiteness.

    Only numeric arrays are accepted: text, bytes (a pickle, for instance) and object arrays
    are refused without being interpreted, so that loading never runs stored code.
    """
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        kind = type(value).__name__
        if isinstance(value, np.ndarray):
            kind = f"an array of dtype {value.dtype}"
        raise ValueError(
            f"Stored weight {name!r} is not a numeric array (got {kind}); only float arrays "
            "are read, nothing stored is executed or unpickled. Refit the model."
        )
    if value.shape != shape:
        raise ValueError(
            f"Stored weight {name!r} has shape {value.shape}, the architecture needs {shape}."
        )
    a = value.astype(np.float32)
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise ValueError(
            f"Stored weight {name!r} holds {bad} NaN or infinite value(s): the model is corrupt "
            "(a diverged training or a modified file). Refit the model."
        )
    return a


def network_from_arrays(cfg: NetConfig, arrays) -> Network:
    """Rebuild a network from :func:`network_to_arrays` output (e.g. read from an h5ad).

    Raises
    ------
    ValueError
        When a weight is missing, not a numeric array, of the wrong shape, or not finite.

    """
    skeleton = Network(cfg, jax.random.PRNGKey(0))
    params, static = eqx.partition(skeleton, eqx.is_array)
    names = _leaf_names(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(
            f"The stored weights lack {len(missing)} array(s), e.g. {missing[:3]}: they were not "
            "written by this version of scimpute or were modified. Refit the model."
        )
    new = []
    for n, leaf in zip(names, leaves, strict=True):
        new.append(jnp.asarray(_checked_weight(n, arrays[n], leaf.shape)))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)

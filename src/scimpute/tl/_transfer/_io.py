"""The fitted network in ``adata.uns[key]``: written as plain arrays, read back with checks.

A record holds only numbers, strings and numeric arrays (h5ad-safe). Reading it never
executes anything: no pickle, no ``eval``; every stored entry is checked for its type, its
shape and its finiteness before a network is built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np
from anndata import AnnData

from ..._keys import TRANSFER_KEY
from ...nn import NetConfig, Network, network_from_arrays

#: architecture entries of ``uns[key]["params"]`` and how each is read
ARCHITECTURE: dict[str, type] = {
    "model": str,
    "n_features": int,
    "width": int,
    "depth": int,
    "latent_dim": int,
    "dropout": float,
    "negative_slope": float,
    "kl_weight": float,
    "use_bias": bool,
}


def _entry(params: Mapping[str, Any], name: str, kind: type, key: str) -> Any:
    where = f"adata.uns[{key!r}]['params'][{name!r}]"
    if name not in params:
        raise ValueError(
            f"The model under {key!r} lacks the architecture entry {name!r} ({where}): the "
            "record was modified or not written by scimpute.tl.fit_transfer. Refit the model."
        )
    v = params[name]
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    ok = {
        str: isinstance(v, str),
        bool: isinstance(v, bool),
        int: isinstance(v, int) and not isinstance(v, bool),
        float: isinstance(v, int | float) and not isinstance(v, bool),
    }[kind]
    if not ok:
        what = {str: "a string", bool: "True or False", int: "an integer", float: "a number"}
        raise ValueError(
            f"The model under {key!r} has an invalid architecture entry: {where} must be "
            f"{what[kind]}, got {v!r:.60}. Refit the model."
        )
    return v


def read_architecture(params: Mapping[str, Any], key: str) -> NetConfig:
    """The :class:`~scimpute.nn.NetConfig` stored in a record's ``params`` (checked)."""
    d = {name: _entry(params, name, kind, key) for name, kind in ARCHITECTURE.items()}
    try:
        return NetConfig.from_dict(d)
    except ValueError as err:
        raise ValueError(
            f"The model under {key!r} has an invalid architecture: {err} Refit the model."
        ) from None


def load_network(adata: AnnData, *, key: str = TRANSFER_KEY) -> tuple[Network, dict]:
    """Rebuild the network stored by :func:`~scimpute.tl.fit_transfer` in ``adata.uns[key]``.

    Works on an AnnData read back from an ``.h5ad``. Every entry is checked (architecture,
    weight names, types, shapes, finiteness); nothing stored is ever executed.

    Parameters
    ----------
    adata
        The AnnData holding the record.
    key
        Its ``.uns`` key.

    Returns
    -------
    ``(network, params)``: the network and the stored parameters.

    Raises
    ------
    KeyError
        When ``adata.uns[key]`` holds no fitted model.
    ValueError
        When the record is damaged (each message names the entry) or the genes differ.

    """
    rec = adata.uns.get(key)
    if not isinstance(rec, Mapping) or "weights" not in rec or "params" not in rec:
        raise KeyError(
            f"adata.uns[{key!r}] holds no fitted model. Run "
            f"scimpute.tl.fit_transfer(adata, ..., key_added={key!r}) first."
        )
    if not isinstance(rec["params"], Mapping) or not isinstance(rec["weights"], Mapping):
        raise ValueError(
            f"adata.uns[{key!r}]['params'] and ['weights'] must be mappings; the record was "
            "modified. Refit the model."
        )
    params = dict(rec["params"])
    if str(params.get("representation", "autoencoder")) == "pca":
        n_comps = _entry(params, "latent_dim", int, key)
        _check_genes(rec, adata, key)
        center, loadings = read_pca(rec.get("pca"), key, adata.n_vars, n_comps)
        return PCABasis(center, loadings), params
    cfg = read_architecture(params, key)
    pca = rec.get("pca")
    if pca is not None:
        center, loadings = read_pca(pca, key, adata.n_vars, cfg.n_features)
    elif cfg.n_features != adata.n_vars:
        raise ValueError(
            f"The model under {key!r} was trained on {cfg.n_features} genes, adata has "
            f"{adata.n_vars}. Subset adata to the genes of training (uns[{key!r}]['var_names'])."
        )
    _check_genes(rec, adata, key)
    try:
        net = network_from_arrays(cfg, rec["weights"])
    except ValueError as err:
        raise ValueError(f"The model under {key!r} cannot be loaded: {err}") from None
    if pca is not None:
        net = ProjectedNetwork(net, center, loadings)
    return net, params


def _check_genes(rec: Mapping, adata: AnnData, key: str) -> None:
    names = rec.get("var_names")
    if names is not None and not np.array_equal(
        np.asarray(names).astype(str), np.asarray(adata.var_names.astype(str))
    ):
        raise ValueError(
            f"adata.var_names differ from the genes the model under {key!r} was trained on "
            "(same number, other names or order). Reorder adata to uns[key]['var_names']."
        )


class PCABasis(eqx.Module):
    """The PCA representation (no network): codes are the principal component scores.

    ``encode(x) = (x - center) @ loadings`` and ``decode(z) = center + z @ loadings.T``: it
    works wherever a :class:`~scimpute.nn.Network` does (:func:`scimpute.nn.encode`,
    :func:`scimpute.nn.decode`).
    """

    center: jax.Array
    loadings: jax.Array

    def encode(self, x: jax.Array) -> jax.Array:
        """Principal component scores of one profile (genes)."""
        return (x - self.center) @ self.loadings

    def decode(self, z: jax.Array) -> jax.Array:
        """Profile (genes) of principal component scores ``z``."""
        return self.center + z @ self.loadings.T


class ProjectedNetwork(eqx.Module):
    """A network trained on principal components, seen from the genes.

    ``encode(x) = net.encode((x - center) @ loadings)`` and ``decode(z) = center +
    net.decode(z) @ loadings.T``: it works wherever a :class:`~scimpute.nn.Network` does
    (:func:`scimpute.nn.encode`, :func:`scimpute.nn.decode`).
    """

    net: Network
    center: jax.Array
    loadings: jax.Array

    def encode(self, x: jax.Array) -> jax.Array:
        """Latent code of one profile (genes)."""
        return self.net.encode((x - self.center) @ self.loadings)

    def decode(self, z: jax.Array) -> jax.Array:
        """Profile (genes) decoded from one latent code."""
        return self.center + self.net.decode(z) @ self.loadings.T


def read_pca(pca: Any, key: str, n_vars: int, n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """The checked ``(center, loadings)`` of a record's ``pca`` entry."""
    where = f"adata.uns[{key!r}]['pca']"
    if not isinstance(pca, Mapping) or not {"center", "loadings"} <= set(pca):  # also None
        raise ValueError(f"{where} must hold 'center' and 'loadings'; refit the model.")
    out = []
    for name, shape in (("center", (n_vars,)), ("loadings", (n_vars, n_comps))):
        v = pca[name]
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f" or v.shape != shape:
            raise ValueError(
                f"{where}[{name!r}] must be a float array of shape {shape} (the model's genes "
                f"x components), got {getattr(v, 'shape', type(v).__name__)}. Refit the model "
                "or subset adata to the genes of training."
            )
        if not np.isfinite(v).all():
            raise ValueError(f"{where}[{name!r}] holds NaN or infinite values; refit the model.")
        out.append(v.astype(np.float32))
    return out[0], out[1]

"""The fitted network in ``adata.uns[key]``: written as plain arrays, read back with checks.

A record holds only numbers, strings and numeric arrays (h5ad-safe). Reading it never
executes anything: no pickle, no ``eval``; every stored entry is checked for its type, its
shape and its finiteness before a network is built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    cfg = read_architecture(params, key)
    if cfg.n_features != adata.n_vars:
        raise ValueError(
            f"The model under {key!r} was trained on {cfg.n_features} genes, adata has "
            f"{adata.n_vars}. Subset adata to the genes of training (uns[{key!r}]['var_names'])."
        )
    names = rec.get("var_names")
    if names is not None and not np.array_equal(
        np.asarray(names).astype(str), np.asarray(adata.var_names.astype(str))
    ):
        raise ValueError(
            f"adata.var_names differ from the genes the model under {key!r} was trained on "
            "(same number, other names or order). Reorder adata to uns[key]['var_names']."
        )
    try:
        net = network_from_arrays(cfg, rec["weights"])
    except ValueError as err:
        raise ValueError(f"The model under {key!r} cannot be loaded: {err}") from None
    return net, params

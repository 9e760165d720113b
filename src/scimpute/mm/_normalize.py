"""``normalize``: the input ``integrate`` expects, from raw counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .._keys import MM_FEATURES, MM_NORM_LAYER
from ._data import check_mudata, per_modality

_METHODS = ("log1p", "clr", "none")
_PROTEIN_NAMES = ("prot", "protein", "proteins", "adt", "cite")


def _auto(m: str) -> str:
    return "clr" if m.lower() in _PROTEIN_NAMES else "log1p"


def _log1p_total(x, target_sum: float) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float64)
    tot = x.sum(1, keepdims=True)
    tot[tot == 0] = 1.0
    return np.log1p(x / tot * target_sum).astype(np.float32)


def _clr(x) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    lx = np.log1p(x.astype(np.float64))
    return (lx - lx.mean(1, keepdims=True)).astype(np.float32)


def normalize(
    mdata,
    *,
    modalities: Sequence[str] | None = None,
    methods: str | Mapping[str, str] = "auto",
    target_sum: float = 1e4,
    n_top_features: int | Mapping[str, int | None] | None = None,
    layer: str | Mapping[str, str | None] | None = None,
    layer_added: str = MM_NORM_LAYER,
    features_added: str = MM_FEATURES,
    copy: bool = False,
):
    """Normalise raw counts of each modality for :func:`scimpute.mm.integrate`.

    Methods, per cell ``i`` and feature ``f`` of a modality's counts ``c``:

    - ``"log1p"`` (RNA, ATAC): ``log(1 + target_sum * c_if / sum_f c_if)``;
    - ``"clr"`` (antibody-derived tags): centred log-ratio over the features of the cell,
      ``log(1 + c_if) - mean_f log(1 + c_if)``;
    - ``"none"``: the values as they are (already normalised data).

    ``"auto"`` uses ``"clr"`` for modalities named ``prot``/``protein``/``adt``/``cite`` and
    ``"log1p"`` otherwise. Feature selection: with ``n_top_features`` the top features by
    normalised dispersion are kept (:func:`scanpy.pp.highly_variable_genes`,
    ``flavor="seurat"``, on the normalised values); otherwise every feature.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData` with raw counts.
    modalities
        Modalities to normalise (default all).
    methods
        One method for all, or a mapping modality -> method (missing: ``"auto"``).
    target_sum
        Library size after normalisation (``"log1p"``).
    n_top_features
        Number of features to select, for all modalities or per modality (``None``: all).
    layer
        Layer holding the counts (``None``: ``X``), or a mapping modality -> layer.
    layer_added
        Layer to write the normalised values to.
    features_added
        Boolean ``.var`` column to write the selection to.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or the copy). Writes ``mdata[m].layers[layer_added]`` (dense float32) and
    ``mdata[m].var[features_added]`` for each modality, and ``mdata.uns[layer_added]`` (the
    method used per modality). Then call
    ``integrate(mdata, layer=layer_added, use_var=features_added)``.

    """
    import anndata as ad
    import scanpy as sc

    check_mudata(mdata)
    mods = list(mdata.mod) if modalities is None else [str(m) for m in modalities]
    for m in mods:
        if m not in mdata.mod:
            raise KeyError(f"Modality {m!r} is not in mdata; available: {list(mdata.mod)}.")
    out, chosen, used = {}, {}, {}
    for m in mods:
        a = mdata[m]
        how = per_modality(methods, m) or "auto"
        how = _auto(m) if how == "auto" else how
        if how not in _METHODS:
            raise ValueError(f"Unknown method {how!r} for {m!r}; use one of {_METHODS} or 'auto'.")
        lay = per_modality(layer, m)
        x = a.X if lay is None else a.layers[lay]
        data = x.data if sp.issparse(x) else np.asarray(x)
        if not np.isfinite(data).all():
            raise ValueError(f"mdata[{m!r}] contains NaN or infinite values.")
        if how != "none" and (data < 0).any():
            raise ValueError(
                f"mdata[{m!r}] has negative values: {how!r} needs counts. Use methods={{'{m}': "
                "'none'}} for data that are already normalised."
            )
        if how == "log1p":
            y = _log1p_total(x, target_sum)
        elif how == "clr":
            y = _clr(x)
        else:
            y = (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float32)
        n_top = per_modality(n_top_features, m)
        sel = np.ones(a.n_vars, dtype=bool)
        if n_top is not None and int(n_top) < a.n_vars:
            tmp = ad.AnnData(X=y.copy())
            tmp.var_names = a.var_names.copy()
            hv = sc.pp.highly_variable_genes(
                tmp, n_top_genes=int(n_top), flavor="seurat", inplace=False
            )
            sel = hv["highly_variable"].to_numpy(dtype=bool)
        out[m], chosen[m], used[m] = y, sel, how
    target = mdata.copy() if copy else mdata
    for m in mods:
        target[m].layers[layer_added] = out[m]
        target[m].var[features_added] = chosen[m]
    target.uns[layer_added] = {"methods": used, "target_sum": float(target_sum)}
    return target if copy else None

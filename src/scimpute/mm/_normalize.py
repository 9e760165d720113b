"""``normalize``: the input ``integrate`` expects, from raw counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._keys import MM_FEATURES, MM_NORM_LAYER
from ._data import check_mudata, layer_data, per_modality
from ._params import NORMALIZE, NormalizeParams, document_params

if TYPE_CHECKING:
    from mudata import MuData

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


@document_params(NormalizeParams)
def normalize(
    mdata: MuData,
    *,
    modalities: Sequence[str] | None = None,
    layer: str | Mapping[str, str | None] | None = None,
    layer_added: str = MM_NORM_LAYER,
    features_added: str = MM_FEATURES,
    copy: bool = False,
    **params: Any,
) -> MuData | None:
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
    layer
        Layer holding the counts (``None``: ``X``), or a mapping modality -> layer.
    layer_added
        Layer to write the normalised values to.
    features_added
        Boolean ``.var`` column to write the selection to.
    copy
        Work on a copy and return it.
    **params
        Options of :class:`scimpute.mm._params.NormalizeParams` (listed below), checked once.

    Other Parameters
    ----------------
    {params}

    Returns
    -------
    ``None`` (or the copy). Writes ``mdata[m].layers[layer_added]`` (dense float32) and
    ``mdata[m].var[features_added]`` for each modality, and ``mdata.uns[layer_added]`` (the
    method used per modality). Then call
    ``integrate(mdata, layer=layer_added, use_var=features_added)``.

    Raises
    ------
    KeyError
        A modality or a layer that ``mdata`` lacks (the message lists what it has).
    ValueError
        An option of the wrong type or out of range, NaN or infinite values, or negative
        values for a method that needs counts. Nothing is written when an error is raised.

    """
    spec = NormalizeParams.from_kwargs(NORMALIZE, params)
    check_mudata(mdata)
    mods = list(mdata.mod) if modalities is None else [str(m) for m in modalities]
    for m in mods:
        if m not in mdata.mod:
            raise KeyError(
                f"Modality {m!r} is not in mdata; its modalities: "
                + ", ".join(map(repr, mdata.mod))
                + "."
            )
    out, chosen, used = {}, {}, {}
    for m in mods:
        how = per_modality(spec.methods, m) or "auto"
        how = _auto(m) if how == "auto" else how
        x = layer_data(mdata[m], per_modality(layer, m), m)
        out[m], used[m] = _transform(x, how, spec.target_sum, m), how
        chosen[m] = _select(out[m], mdata[m].var_names, per_modality(spec.n_top_features, m))
    target = mdata.copy() if copy else mdata
    for m in mods:
        target[m].layers[layer_added] = out[m]
        target[m].var[features_added] = chosen[m]
    target.uns[layer_added] = {"methods": used, "target_sum": float(spec.target_sum)}
    return target if copy else None


def _transform(x, how: str, target_sum: float, m: str) -> np.ndarray:
    """The normalised values of one modality's matrix ``x`` (checked first)."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    if not np.isfinite(data).all():
        raise ValueError(f"mdata[{m!r}] contains NaN or infinite values.")
    if how != "none" and (data < 0).any():
        raise ValueError(
            f"mdata[{m!r}] has negative values: {how!r} needs counts. Use methods={{'{m}': "
            "'none'}} for data that are already normalised."
        )
    if how == "log1p":
        return _log1p_total(x, target_sum)
    if how == "clr":
        return _clr(x)
    return (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float32)


def _select(y: np.ndarray, var_names, n_top: int | None) -> np.ndarray:
    """Mask of the ``n_top`` most dispersed features (every feature when ``None``)."""
    if n_top is None or n_top >= y.shape[1]:
        return np.ones(y.shape[1], dtype=bool)
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=y.copy())
    tmp.var_names = var_names.copy()
    hv = sc.pp.highly_variable_genes(tmp, n_top_genes=int(n_top), flavor="seurat", inplace=False)
    return hv["highly_variable"].to_numpy(dtype=bool)

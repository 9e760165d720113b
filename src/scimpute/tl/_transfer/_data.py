"""The cells' labels and expression matrix, read once (dense, sparse or backed)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ..._validate import _suggest, check_labels, check_layer, check_obs_key

#: rows read at a time from a backed (on-disk) matrix
CHUNK_ROWS = 8192


def _block(x) -> np.ndarray:
    if sp.issparse(x):
        if x.dtype == np.float16:  # pragma: no cover - scipy refuses float16 data
            x = x.astype(np.float32)
        x = x.toarray()
    return np.asarray(x, dtype=np.float32)


def dense(x, *, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """``x`` as a dense float32 array: in memory, sparse, or backed on disk (read in chunks).

    A backed sparse matrix (an ``.h5ad`` opened with ``backed="r"``) is read ``chunk`` rows
    at a time, so the file is never loaded whole as a sparse matrix next to the dense copy.
    """
    if sp.issparse(x) or isinstance(x, np.ndarray):
        return _block(x)
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        return _block(np.asarray(x))
    out = np.empty(shape, dtype=np.float32)
    for s in range(0, shape[0], chunk):
        e = min(shape[0], s + chunk)
        out[s:e] = _block(x[s:e])
    return out


def expression(adata: AnnData, layer: str | None) -> np.ndarray:
    """The matrix to train on or move (``X`` or ``layer``), dense float32 and finite."""
    X = dense(check_layer(adata, layer))
    if not np.isfinite(X).all():
        raise ValueError("The expression matrix holds NaN or infinite values; remove them first.")
    return X


def cell_labels(adata: AnnData, context_key: str, perturbation_key: str, control: str):
    """``(contexts, perturbations)`` of the cells as string arrays, checked."""
    if adata.n_obs == 0:
        raise ValueError("adata has no cells (n_obs == 0): there is nothing to train or move.")
    ctx = check_labels(check_obs_key(adata, context_key, what="context key"), context_key)
    pert = check_labels(
        check_obs_key(adata, perturbation_key, what="perturbation key"), perturbation_key
    )
    if context_key == perturbation_key:
        raise ValueError("context_key and perturbation_key must name different columns.")
    if not (pert == control).any():
        raise ValueError(
            f"Control label {control!r} does not occur in obs[{perturbation_key!r}]."
            + _suggest(control, sorted(pert.unique()))
            + " Pass control=<label>."
        )
    return ctx.to_numpy(), pert.to_numpy()

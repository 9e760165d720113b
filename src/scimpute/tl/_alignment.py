"""How alike a perturbation's effect is across contexts, in gene space and in a latent space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._keys import ALIGNMENT_KEY, TRANSFER_KEY, Key
from .._utils import h5ad_safe
from .._validate import check_layer
from ..nn import encode, shift_by_context
from ._transfer import _labels, load_network


def _cosines(S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine of every pair of rows of S: (i, j, cos) for i < j."""
    norms = np.linalg.norm(S, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        U = S / norms[:, None]
    i, j = np.triu_indices(S.shape[0], k=1)
    return i, j, np.einsum("kd,kd->k", U[i], U[j])


def _context_means(x, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    ind = sp.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n, codes.size)
    )
    counts = np.bincount(codes, minlength=n).astype(float)
    s = ind @ x
    s = s.toarray() if sp.issparse(s) else np.asarray(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / counts[:, None], counts


def signature_alignment(
    adata: AnnData,
    context_key: str = "cell_type",
    perturbation_key: str = "perturbation",
    *,
    control: str = "control",
    key: str = TRANSFER_KEY,
    layer: str | None = None,
    key_added: str | None = ALIGNMENT_KEY,
) -> pd.DataFrame:
    """Cosine similarity of each perturbation's effect between pairs of contexts.

    For every perturbation a and context c where both a and the control were measured, the
    signature is ``mean x(c, a) - mean x(c, control)`` in gene space (``X`` or ``layer``) and
    ``mean z(c, a) - mean z(c, control)`` in the latent space of the model under ``key``
    (Belyaeva et al. 2021). A latent space in which effects are transferable makes the
    signatures of a perturbation point the same way in every context (cosines near 1).

    Parameters
    ----------
    adata
        Cells or profiles with a model fitted by :func:`fit_transfer` under ``key``.
    context_key, perturbation_key, control
        As in :func:`fit_transfer`.
    key
        ``uns`` key of the model; the latent codes are recomputed from the stored weights.
    layer
        Gene-space layer (defaults to the layer the model was trained on).
    key_added
        ``adata.uns`` key to write ``{"scores": table, "params": {...}}`` to; ``None`` writes
        nothing.

    Returns
    -------
    One row per (perturbation, pair of contexts): ``perturbation``, ``context_1``,
    ``context_2``, ``cosine_genes``, ``cosine_latent``, ``n_cells_1``, ``n_cells_2`` (treated
    cells of each context).

    """
    ctx, pert = _labels(adata, context_key, perturbation_key, control)
    net, params = load_network(adata, key=key)
    if layer is None:
        lay = params.get("layer", "X")
        layer = None if lay == "X" else lay
    X = check_layer(adata, layer)
    if not sp.issparse(X):
        X = np.asarray(X, dtype=np.float64)
    else:
        X = sp.csr_matrix(X, dtype=np.float64)
    Xd = X.toarray() if sp.issparse(X) else X
    Z = encode(net, Xd.astype(np.float32)).astype(np.float64)
    contexts = sorted(set(ctx))
    codes = pd.Categorical(ctx, categories=contexts).codes.astype(np.int64)
    is_ctrl = pert == control
    gc, _nc = _context_means(X[is_ctrl], codes[is_ctrl], len(contexts))
    rows = []
    for a in sorted(set(pert) - {control}):
        treated = pert == a
        zs, valid, nt, _ = shift_by_context(Z, codes, treated, is_ctrl, len(contexts))
        if valid.sum() < 2:
            continue
        gt, _ = _context_means(X[treated], codes[treated], len(contexts))
        gs = gt - gc
        v = np.flatnonzero(valid)
        i, j, cos_z = _cosines(zs[v])
        _, _, cos_g = _cosines(gs[v])
        rows.append(
            pd.DataFrame(
                {
                    "perturbation": a,
                    "context_1": np.asarray(contexts, dtype=object)[v[i]],
                    "context_2": np.asarray(contexts, dtype=object)[v[j]],
                    "cosine_genes": cos_g,
                    "cosine_latent": cos_z,
                    "n_cells_1": nt[v[i]].astype(np.int64),
                    "n_cells_2": nt[v[j]].astype(np.int64),
                }
            )
        )
    if not rows:
        raise ValueError(
            "No perturbation is measured together with the control in two or more contexts: "
            "there is no pair of signatures to compare."
        )
    table = pd.concat(rows, ignore_index=True)
    for col in ("perturbation", "context_1", "context_2"):
        table[col] = table[col].astype(str)
    if key_added is not None:
        adata.uns[key_added] = {
            Key.uns.scores: table,
            "params": h5ad_safe(
                {
                    "context_key": context_key,
                    "perturbation_key": perturbation_key,
                    "control": control,
                    "key": key,
                    "layer": "X" if layer is None else layer,
                }
            ),
        }
    return table

"""Build the perturbation grid: one row per (context, perturbation) pair, measured or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._keys import COMBINATION_SEP, Key
from .._records import GridInfo, write_grid_info
from .._validate import _suggest, check_finite, check_layer, check_obs_key, factorize_labels
from ._labels import combine_with_dose

_CHUNK = 100_000  # rows per block of an in-memory or backed matrix, at most
#: entries of a block's sums (min(rows, groups) x genes) and of a dense block (128 MB float64)
_CHUNK_ENTRIES = 1 << 24


def _ordered_levels(raw: pd.Series | None, codes: np.ndarray, labels: list[str]) -> list[str]:
    """Labels present, in the declared category order if categorical, else sorted."""
    present = set(np.asarray(labels, dtype=object)[np.unique(codes)])
    if raw is not None and isinstance(raw.dtype, pd.CategoricalDtype):
        return [str(c) for c in raw.cat.categories if str(c) in present]
    return sorted(present)


def _recode(codes: np.ndarray, labels: list[str], order: list[str]) -> np.ndarray:
    """Map codes into positions of ``order``."""
    pos = {lab: i for i, lab in enumerate(order)}
    lut = np.array([pos.get(lab, -1) for lab in labels], dtype=np.int64)
    return lut[codes]


def _check_components(levels: list[str], key: str, sep: str) -> None:
    """Reject combination labels with an empty component (``"d1+"``, ``"+d1"``, ``"a++b"``)."""
    for lev in levels:
        if sep in lev and any(not part.strip() for part in lev.split(sep)):
            raise ValueError(
                f"Label {lev!r} of obs[{key!r}] has an empty component: combinations are "
                f"written 'A{sep}B' with {sep!r} between two non-empty names. Fix the label, or "
                "pass combination_sep= if the separator means something else in your labels."
            )


def _check_duplicates(levels: list[str], key: str, sep: str | None) -> None:
    seen: dict[str, str] = {}
    for lev in levels:
        norm = lev.strip().lower()
        if sep is not None and sep in norm:
            norm = sep.join(sorted(p.strip() for p in norm.split(sep)))
        if norm in seen:
            raise ValueError(
                f"Labels {seen[norm]!r} and {lev!r} of obs[{key!r}] denote the same thing "
                "(they differ only in case, white space or the order of a combination's "
                "components). Harmonise them before building the grid."
            )
        seen[norm] = lev


def _is_dask(x) -> bool:
    """Whether ``x`` is a dask array (checked without importing dask)."""
    return type(x).__module__.startswith("dask.") and hasattr(x, "to_delayed")


def _as_block(block):
    """A row block as a CSR matrix or a dense array (any dtype)."""
    if not (isinstance(block, np.ndarray) or sp.issparse(block)):
        if hasattr(block, "tocsr"):  # pydata sparse
            block = block.tocsr()
        elif hasattr(block, "to_memory"):  # backed anndata dataset
            block = block.to_memory()
        else:
            block = np.asarray(block)
    if isinstance(block, sp.csr_matrix | sp.csr_array):
        return block
    return sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)


def _block_sums(block, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of the rows of ``block`` by code, in float64: ``(groups present, sums)``.

    Only the groups present in the block get a row, so the result is never larger than the
    block in float64, whatever the number of groups. A sparse block is summed in one
    weighted ``bincount`` over its stored entries, a dense one by one indicator product.
    """
    block = _as_block(block)
    check_finite(block, "The expression matrix")
    n, p = block.shape
    present, local = np.unique(codes, return_inverse=True)
    local = local.reshape(-1)
    if sp.issparse(block):
        flat = np.repeat(local * p, np.diff(block.indptr))
        flat += block.indices
        sums = np.bincount(flat, weights=block.data, minlength=present.size * p)
        return present, sums.reshape(present.size, p)
    ind = sp.csr_matrix((np.ones(n), (local, np.arange(n))), shape=(present.size, n))
    return present, np.asarray(ind @ block.astype(np.float64, copy=False))


def _aggregate_dask(x, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """:func:`_aggregate` of a dask array, out of core, block by block.

    Every block of ``x`` gives the sums of its rows by group (:func:`_block_sums`, run where
    dask runs it: threads, processes or the workers of a ``dask.distributed`` cluster when a
    client is active); the driver adds them into the ``(n_groups, n_genes)`` result as they
    arrive, at most ``2 x workers`` blocks in flight, so no more than that many blocks and
    their partial sums are in memory at once.
    """
    import dask

    rows = np.cumsum((0, *x.chunks[0]))
    cols = np.cumsum((0, *x.chunks[1]))
    blocks = x.to_delayed()
    task = dask.delayed(_block_sums, pure=True)
    jobs = [
        (cols[j], cols[j + 1], task(blocks[i, j], codes[rows[i] : rows[i + 1]]))
        for i in range(blocks.shape[0])
        for j in range(blocks.shape[1])
        if rows[i + 1] > rows[i]
    ]
    out = np.zeros((n_groups, x.shape[1]), dtype=np.float64)
    window = 2 * _n_workers()
    for lo in range(0, len(jobs), window):
        part = jobs[lo : lo + window]
        for (c0, c1, _), (present, sums) in zip(
            part, dask.compute(*[job for *_, job in part]), strict=True
        ):
            out[present, c0:c1] += sums
    return out


def _n_workers() -> int:
    """Threads of the active ``dask.distributed`` client, else the CPU count."""
    try:
        from distributed import default_client

        return max(sum(default_client().nthreads().values()), 1)
    except (ImportError, ValueError):
        import os

        return os.cpu_count() or 1


def _rows(x, start: int, stop: int):
    """Rows ``start:stop`` of ``x``; of an in-memory CSR matrix as a view (no copy)."""
    if isinstance(x, sp.csr_matrix | sp.csr_array) and x.has_canonical_format:
        lo, hi = x.indptr[start], x.indptr[stop]
        return sp.csr_matrix(
            (x.data[lo:hi], x.indices[lo:hi], x.indptr[start : stop + 1] - lo),
            shape=(stop - start, x.shape[1]),
            copy=False,
        )
    return x[start:stop]


def _aggregate(x, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``x`` by group code, in float64, a block of rows at a time.

    In-memory, backed (on-disk) and dask matrices take the same arithmetic, block by block:
    each block's sums come from one sparse indicator product (:func:`_block_sums`) and are
    added in float64, so nothing larger than a block is converted or loaded at once and the
    result does not depend on where the matrix lives (up to float64 rounding).
    """
    if _is_dask(x):
        return _aggregate_dask(x, codes, n_groups)
    n = codes.shape[0]
    out = np.zeros((n_groups, x.shape[1]), dtype=np.float64)
    p = max(x.shape[1], 1)
    dense = isinstance(x, np.ndarray)
    step = max(_CHUNK_ENTRIES // p, 1) if dense or n_groups * p > _CHUNK_ENTRIES else _CHUNK
    for start in range(0, n, step):
        stop = min(start + step, n)
        present, sums = _block_sums(_rows(x, start, stop), codes[start:stop])
        out[present] += sums
    return out


def _pandas_annotations(adata: AnnData, keys: list, layer: str | None) -> AnnData:
    """``adata`` with the used obs columns and var in memory (``read_lazy`` keeps them lazy).

    ``X`` or ``layer`` stays as it is (a dask array for a lazily read store).
    """
    if isinstance(adata.obs, pd.DataFrame) and isinstance(adata.var, pd.DataFrame):
        return adata
    cols = [k for k in dict.fromkeys(keys) if k is not None and k in adata.obs.columns]
    obs = adata.obs[cols] if cols else adata.obs[[]]
    obs = obs if isinstance(obs, pd.DataFrame) else obs.to_memory()
    var = adata.var if isinstance(adata.var, pd.DataFrame) else adata.var.to_memory()
    layers = {layer: adata.layers[layer]} if layer is not None and layer in adata.layers else {}
    return AnnData(X=adata.X, obs=obs, var=var, layers=layers)


def perturbation_grid(
    adata: AnnData,
    context_key: str,
    perturbation_key: str,
    *,
    control: str | None = "control",
    layer: str | None = None,
    min_cells: int = 1,
    dose_key: str | None = None,
    combination_sep: str = COMBINATION_SEP,
) -> AnnData:
    """Aggregate cells or bulk profiles into a (context x perturbation) grid.

    Every combination of the contexts and perturbations present in ``adata`` gets one row,
    whether it was measured or not. Measured pairs hold the mean profile of their cells (or
    replicates); unmeasured pairs hold NaN and are the pairs :func:`scimpute.tl.impute` predicts.

    Parameters
    ----------
    adata
        Single cells or bulk / pseudobulk profiles. ``X`` (or ``layer``) may be dense, sparse,
        integer or float, in memory, backed (``read_h5ad(..., backed="r")``) or a dask array
        (e.g. from :func:`anndata.experimental.read_lazy`, dense or sparse chunks; of its
        lazy annotations only the key columns and ``var`` are loaded): a dask
        array is aggregated out of core, block by block, on the active dask scheduler (the
        workers of a ``dask.distributed`` client when one is active), and gives the same
        grid as the same matrix in memory. Sums are taken in float64 whatever the dtype.
    context_key
        Column of ``adata.obs`` naming the context (cell type, cell line, donor, ...).
    perturbation_key
        Column of ``adata.obs`` naming the intervention. Combinations are written ``"A+B"``.
    control
        Label of the control (vehicle, non-targeting guide) in ``obs[perturbation_key]``.
        ``None`` for data that are already effects (z-scores, log ratios): effects are then
        the profiles themselves.
    layer
        Layer to aggregate instead of ``X``.
    min_cells
        Pairs with fewer cells (rows) than this are marked unmeasured.
    dose_key
        Optional column with the dose of each row. Interventions then become (perturbation,
        dose) pairs, labelled ``"A@1.5"`` and ``"A@1.5+B@6"`` (doses of a combination listed in
        the same order, separated by ``combination_sep``).
    combination_sep
        Separator of combination components.

    Returns
    -------
    A new AnnData with ``n_contexts * n_perturbations`` rows, context-major in a stable order
    (categories in their declared order, else sorted; the control first), holding

    - ``X``: dense float32 mean profiles, NaN for unmeasured pairs;
    - ``obs[context_key]``, ``obs[perturbation_key]``: categoricals;
    - ``obs["n_cells"]``: number of cells or replicates (0 when unmeasured);
    - ``obs["measured"]``: bool; set entries to ``False`` to hide measured pairs;
    - ``var``: copied from ``adata``;
    - ``uns["perturbation_grid"]``: keys, control label and parameters.

    Examples
    --------
    >>> import scimpute as si
    >>> adata = si.datasets.cmap()  # doctest: +SKIP
    >>> grid = si.pp.perturbation_grid(adata, "cell_id", "pert_id", control="DMSO")  # doctest: +SKIP

    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData, got {type(adata).__name__}.")
    adata = _pandas_annotations(adata, [context_key, perturbation_key, dose_key], layer)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata is empty ({adata.n_obs} x {adata.n_vars}); nothing to aggregate.")
    if context_key == perturbation_key:
        raise ValueError("context_key and perturbation_key must name different columns.")
    if not isinstance(min_cells, int | np.integer) or min_cells < 1:
        raise ValueError(f"min_cells must be a positive integer, got {min_cells!r}.")
    if not adata.var_names.is_unique:
        raise ValueError(
            "adata.var_names are not unique; call adata.var_names_make_unique() first."
        )
    ctx_raw = check_obs_key(adata, context_key, what="context key")
    pert_raw = check_obs_key(adata, perturbation_key, what="perturbation key")
    ctx_codes, ctx_labels = factorize_labels(ctx_raw, context_key)
    pert_codes, pert_labels = factorize_labels(pert_raw, perturbation_key)
    present = set(np.asarray(pert_labels, dtype=object)[np.unique(pert_codes)])
    if control is not None and control not in present:
        raise ValueError(
            f"Control label {control!r} does not occur in obs[{perturbation_key!r}]."
            + _suggest(control, sorted(present))
            + " Pass control=<label>, or control=None if the data are already effects."
        )
    if dose_key is not None:
        dose_codes, dose_labels = factorize_labels(
            check_obs_key(adata, dose_key, what="dose key"), dose_key
        )
        pair = pert_codes * len(dose_labels) + dose_codes
        pair_codes, pair_uniq = pd.factorize(pair)
        labels = combine_with_dose(
            np.asarray(pert_labels, dtype=object)[pair_uniq // len(dose_labels)],
            np.asarray(dose_labels, dtype=object)[pair_uniq % len(dose_labels)],
            control=control,
            sep=combination_sep,
        )
        lab_codes, lab_uniq = pd.factorize(labels)
        pert_codes = lab_codes.astype(np.int64)[pair_codes]
        pert_labels = [str(x) for x in lab_uniq]
        pert_raw = None
    x = check_layer(adata, layer)

    contexts = _ordered_levels(ctx_raw, ctx_codes, ctx_labels)
    perts = _ordered_levels(pert_raw, pert_codes, pert_labels)
    if control is not None:
        perts = [control] + [p for p in perts if p != control]
    _check_components(perts, perturbation_key, combination_sep)
    _check_duplicates(contexts, context_key, None)
    _check_duplicates(perts, perturbation_key, combination_sep)

    c_codes = _recode(ctx_codes, ctx_labels, contexts)
    p_codes = _recode(pert_codes, pert_labels, perts)
    n_c, n_p = len(contexts), len(perts)
    codes = c_codes * n_p + p_codes
    counts = np.bincount(codes, minlength=n_c * n_p)
    sums = _aggregate(x, codes, n_c * n_p)
    measured = counts >= min_cells
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[~measured] = np.nan
    X = means.astype(np.float32)

    obs = pd.DataFrame(
        {
            context_key: pd.Categorical(np.repeat(contexts, n_p), categories=contexts),
            perturbation_key: pd.Categorical(np.tile(perts, n_c), categories=perts),
            Key.obs.n_cells: counts.astype(np.int64),
            Key.obs.measured: measured,
        }
    )
    names = pd.Index([f"{c}|{p}" for c in contexts for p in perts])
    obs.index = names
    grid = AnnData(X=X, obs=obs, var=adata.var.copy())
    if not grid.obs_names.is_unique:
        grid.obs_names_make_unique()
    write_grid_info(
        grid,
        GridInfo(
            context_key=context_key,
            perturbation_key=perturbation_key,
            control=None if control is None else str(control),
            combination_sep=combination_sep,
            layer="X" if layer is None else layer,
            min_cells=int(min_cells),
            dose_key=dose_key,
            n_contexts=n_c,
            n_perturbations=n_p,
            n_measured=int(measured.sum()),
        ),
    )
    return grid

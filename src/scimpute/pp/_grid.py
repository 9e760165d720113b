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

_CHUNK = 100_000
#: dtypes summed as they are; others (int, bool, float16, which scipy.sparse lacks) as float64.
_SUM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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


def _aggregate(x, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``x`` by group code with one sparse indicator product per chunk.

    In memory, the whole matrix is one product; backed (on-disk) matrices are read in chunks
    of rows so that nothing larger than a chunk is loaded at once.
    """
    n = codes.shape[0]
    in_memory = isinstance(x, np.ndarray) or sp.issparse(x)
    step = n if in_memory else _CHUNK
    out = np.zeros((n_groups, x.shape[1]), dtype=np.float64)
    for start in range(0, n, max(step, 1)):
        stop = min(start + step, n)
        block = x if (in_memory and start == 0 and stop == n) else x[start:stop]
        if not (isinstance(block, np.ndarray) or sp.issparse(block)):
            block = block.to_memory() if hasattr(block, "to_memory") else np.asarray(block)
        if sp.issparse(block):
            # scipy.sparse has no float16: cast its data before building the matrix
            if block.dtype not in _SUM_DTYPES:
                block = block.astype(np.float64)
            block = sp.csr_matrix(block)
        else:
            block = np.asarray(block)
            if block.dtype not in _SUM_DTYPES:
                block = block.astype(np.float64)
        check_finite(block, "The expression matrix")
        c = codes[start:stop]
        ind = sp.csr_matrix(
            (np.ones(stop - start, dtype=block.dtype), (c, np.arange(stop - start))),
            shape=(n_groups, stop - start),
        )
        summed = ind @ block
        out += summed.toarray() if sp.issparse(summed) else np.asarray(summed)
    return out


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
        integer or float, in memory or backed.
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

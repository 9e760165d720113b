"""Input checks shared by scimpute's public functions.

Every check raises before anything is written, with a message that names the problem and the
fix, so that a user's object is never left half-modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._keys import Key
from ._records import GridInfo, read_grid_info


def _suggest(name: str, options: Iterable[str]) -> str:
    """A hint to append to a message: close matches, else the options (or that there are none)."""
    options = [str(o) for o in options]
    if not options:
        return " There are none."
    close = get_close_matches(str(name), options, n=3)
    if close:
        return f" Did you mean {', '.join(repr(c) for c in close)}?"
    shown = ", ".join(repr(o) for o in options[:12])
    more = "" if len(options) <= 12 else f", ... ({len(options)} in all)"
    return f" Available: {shown}{more}."


def check_obs_key(adata: AnnData, key: str, *, what: str = "column") -> pd.Series:
    """Return ``adata.obs[key]`` or raise a :class:`KeyError` that lists the columns."""
    if not isinstance(key, str):
        raise TypeError(f"The {what} name must be a string, got {type(key).__name__}.")
    if key not in adata.obs.columns:
        raise KeyError(
            f"{what.capitalize()} {key!r} is not a column of adata.obs."
            + _suggest(key, adata.obs.columns)
        )
    return adata.obs[key]


def factorize_labels(values: pd.Series, key: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes and string labels of a label column, checked for missing/empty labels.

    Work happens on the distinct values, so a million cells cost one pass of factorisation.
    Values that become the same string (``1`` and ``"1"``) share a code.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.int64)
        uniques = [str(c) for c in values.cat.categories]
    else:
        codes, uniq = pd.factorize(values.to_numpy(), use_na_sentinel=True)
        codes = codes.astype(np.int64)
        uniques = [str(u) for u in uniq]
    missing = codes < 0
    if missing.any():
        raise ValueError(
            f"adata.obs[{key!r}] has {int(missing.sum())} missing label(s). Fill or drop those "
            f"rows first, e.g. adata = adata[adata.obs[{key!r}].notna()].copy()."
        )
    empty = [u for u in uniques if not u.strip()]
    if empty and np.isin(codes, [uniques.index(e) for e in empty]).any():
        n = int(np.isin(codes, [uniques.index(e) for e in empty]).sum())
        raise ValueError(
            f"adata.obs[{key!r}] has {n} empty label(s). Give every row a non-empty label or "
            "drop those rows."
        )
    merged, labels = pd.factorize(np.asarray(uniques, dtype=object))
    return merged.astype(np.int64)[codes], [str(x) for x in labels]


def check_labels(values: pd.Series, key: str) -> pd.Series:
    """Check that a label column has no missing or empty labels; return it as strings."""
    codes, labels = factorize_labels(values, key)
    return pd.Series(np.asarray(labels, dtype=object)[codes], index=values.index)


def check_layer(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]`` or raise a :class:`KeyError`."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is None; pass layer= to name the layer that holds the data.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} does not exist." + _suggest(layer, adata.layers.keys()))
    return adata.layers[layer]


def check_finite(x, what: str) -> None:
    """Raise a :class:`ValueError` naming ``what`` if ``x`` (dense or sparse) holds NaN or inf."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    if data.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(data)
    if bad.any():
        raise ValueError(
            f"{what} contains {int(bad.sum())} NaN or infinite value(s). Remove or impute them "
            "before building the grid (scimpute treats a pair as unmeasured only through "
            "obs['measured'], never through NaN)."
        )


def check_grid(grid: AnnData) -> GridInfo:
    """Check that ``grid`` is a perturbation grid and return its :class:`GridInfo` record."""
    info = read_grid_info(grid)
    for what, col in (("context", info.context_key), ("perturbation", info.perturbation_key)):
        if col not in grid.obs.columns:
            raise ValueError(f"grid.obs lacks the {what} key column {col!r}.")
    if Key.obs.measured not in grid.obs.columns:
        raise ValueError(f"grid.obs lacks the {Key.obs.measured!r} column.")
    n_ctx = grid.obs[info.context_key].nunique()
    n_pert = grid.obs[info.perturbation_key].nunique()
    if n_ctx * n_pert != grid.n_obs:
        raise ValueError(
            f"The grid has {grid.n_obs} rows but {n_ctx} contexts x {n_pert} perturbations = "
            f"{n_ctx * n_pert}: rows were removed or added. Rebuild it with "
            "scimpute.pp.perturbation_grid, or subset the original data before building it."
        )
    return info


def check_unknown_params(name: str, given: dict, accepted: Sequence[str]) -> None:
    """Raise a :class:`TypeError` if ``given`` has keys a method does not take."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        acc = ", ".join(sorted(accepted)) or "none"
        raise TypeError(
            f"Method {name!r} got unexpected parameter(s) {', '.join(map(repr, unknown))}. "
            f"It accepts: {acc}."
        )

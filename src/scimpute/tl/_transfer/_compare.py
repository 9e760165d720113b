"""Compare predicted cells with real ones through pertpy's distances."""

from __future__ import annotations

import pandas as pd
from anndata import AnnData

from ..._validate import check_layer
from ._data import dense

PERTPY_HINT = (
    "pertpy is an optional extra of scimpute: pip install 'pertpy==1.0.3' 'statsmodels<0.15' "
    "filelock (the versions CI tests with on Python 3.11)."
)


def _import_pertpy():
    """Import pertpy lazily, or raise an :class:`ImportError` that says how to install it."""
    try:
        import pertpy
    except ImportError as err:
        raise ImportError(PERTPY_HINT) from err
    return pertpy


def compare_transfer(
    predicted: AnnData,
    real: AnnData,
    *,
    control: AnnData | None = None,
    metric: str = "edistance",
    layer: str | None = None,
    n_comps: int = 20,
) -> pd.DataFrame:
    """Distances between predicted cells, the real cells they stand for and the controls.

    Uses pertpy's :class:`pertpy.tools.Distance` (pertpy is imported lazily; see the
    install hint in the error when it is missing). The three groups are concatenated
    (common genes), projected on ``n_comps`` principal components fitted on all of them (or
    compared on ``layer``) and compared pairwise. A good prediction is closer to ``real``
    than ``control`` is.

    Parameters
    ----------
    predicted
        Output of :func:`transfer`.
    real
        The measured cells of the same (context, perturbation).
    control
        Optionally the control cells of the context (the "no effect" prediction).
    metric
        Any metric of :class:`pertpy.tools.Distance` (``"edistance"``, ``"mmd"``,
        ``"mean_pairwise"``, ...).
    layer
        Compare on this layer (present in all inputs) instead of principal components.
    n_comps
        Principal components when ``layer`` is ``None``.

    Returns
    -------
    Symmetric :class:`pandas.DataFrame` of distances between the groups ``"predicted"``,
    ``"real"`` (and ``"control"``).

    """
    import anndata as ad
    import scanpy as sc

    pt = _import_pertpy()
    groups = {"predicted": predicted, "real": real}
    if control is not None:
        groups["control"] = control
    parts = []
    for name, a in groups.items():
        if a.n_obs == 0:
            raise ValueError(f"The {name!r} cells are empty.")
        b = AnnData(
            X=dense(a.X if layer is None else check_layer(a, layer)),
            obs=pd.DataFrame({"group": name}, index=[f"{name}-{i}" for i in range(a.n_obs)]),
            var=pd.DataFrame(index=a.var_names.astype(str)),
        )
        parts.append(b)
    both = ad.concat(parts, join="inner")
    if both.n_vars == 0:
        raise ValueError("The inputs share no gene names.")
    if layer is None:
        n = int(min(n_comps, both.n_obs - 1, both.n_vars - 1))
        sc.pp.pca(both, n_comps=n)
        dist = pt.tl.Distance(metric=metric, obsm_key="X_pca")
    else:
        both.layers["compare"] = both.X
        dist = pt.tl.Distance(metric=metric, layer_key="compare")
    return dist.pairwise(both, groupby="group", show_progressbar=False, n_jobs=1)

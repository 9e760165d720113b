"""Fill holes in images and spatial expression lattices by kernel regression (CNTK and others)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .._keys import Key
from .._params import check_choice, check_random_state_value

__all__ = ["inpaint"]

_OWNER = "inpaint"


def _check_image(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"{_OWNER}: image must be 2-D (grey) or (rows, cols, channels) with 1, 3 or 4 "
            f"channels, got shape {arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{_OWNER}: image must be numeric, got dtype {arr.dtype}.")
    if mask is None:
        raise ValueError(f"{_OWNER}: mask is required for an image (True / 1 = observed).")
    m = np.asarray(mask)
    if m.ndim == 3 and arr.ndim == 3 and m.shape == arr.shape:
        if not np.all(m == m[..., :1]):
            raise ValueError(f"{_OWNER}: a 3-D mask must be the same in every channel.")
        m = m[..., 0]
    if m.shape != arr.shape[:2]:
        raise ValueError(
            f"{_OWNER}: mask must have the image's shape {arr.shape[:2]}, got {m.shape}."
        )
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))) and not np.issubdtype(m.dtype, np.integer):
            raise ValueError(f"{_OWNER}: mask must be boolean or 0 / 1 (or 0 / 255).")
        m = m != 0
    obs = arr[m] if arr.ndim == 2 else arr[m, :]
    if not np.all(np.isfinite(obs)):
        raise ValueError(f"{_OWNER}: the observed pixels must be finite.")
    if obs.size and (obs.min() < 0 or obs.max() > 1):
        raise ValueError(
            f"{_OWNER}: image values must lie in [0, 1] (divide 8-bit images by 255), got "
            f"[{obs.min():.3g}, {obs.max():.3g}]."
        )
    if m.all():
        raise ValueError(f"{_OWNER}: the mask marks every pixel as observed; nothing to fill.")
    if not m.any():
        raise ValueError(f"{_OWNER}: the mask marks no pixel as observed.")
    return arr, m


def _lattice(coords: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Integer lattice positions ``(n, 2)`` of spot coordinates and the lattice shape."""
    if coords.ndim != 2 or coords.shape[1] < 2 or not np.all(np.isfinite(coords[:, :2])):
        raise ValueError(f"{_OWNER}: obsm['spatial'] must be finite (n_obs, 2) coordinates.")
    pos = []
    for ax in range(2):
        x = coords[:, ax].astype(float)
        u = np.unique(x)
        steps = np.diff(u)
        step = steps.min() if steps.size else 1.0
        idx = (x - u[0]) / step
        if not np.allclose(idx, np.round(idx), atol=1e-3):
            raise ValueError(
                f"{_OWNER}: obsm['spatial'] is not on a regular square lattice (axis {ax} "
                "coordinates are not integer multiples of one step); hexagonal arrays need "
                "their row/column indices as coordinates."
            )
        pos.append(np.round(idx).astype(int))
    pos = np.stack(pos, 1)
    if len(np.unique(pos, axis=0)) != len(pos):
        raise ValueError(f"{_OWNER}: two spots share one lattice position.")
    return pos, (int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1)


def _dense(X) -> np.ndarray:
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def _fill(values: np.ndarray, mask: np.ndarray, spec, random_state: int, kernel: str = "cntk"):
    """CNTK alone: the published recipe (:func:`fill_image`); else the held-out choice."""
    if kernel == "cntk":
        from ..ntk._image import fill_image

        return fill_image(values, mask, spec, random_state=random_state)
    from ._inpaint_kernels import fill_validated

    filled, info = fill_validated(values, mask, spec, kernel, random_state=random_state)
    return filled.astype(np.float32), info


def inpaint(
    data: Any,
    mask: Any,
    *,
    kernel: Literal["auto", "cntk", "gaussian", "matern52", "matern32"] = "auto",
    key_added: str | None = None,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    n_comps: int | None = None,
    random_state: int = 0,
    **kwargs: Any,
) -> np.ndarray | None:
    """Fill missing pixels of an image, or missing spots of a spatial lattice, by kernel regression.

    The kernel is the neural tangent kernel of a deep-image-prior style convolutional
    encoder-decoder on a fixed input (:mod:`scimpute.ntk`), computed at ``base_size``
    pixels, expanded to the image and used for kernel regression on the observed pixels
    (Radhakrishnan et al., uhlerlab/ntk_matrix_completion). By default the ridge is chosen
    by the error on held-out blocks of observed pixels of the data in the call, blocks as
    wide as the mask's holes (``reg="auto"``), and so is the filter size on small images
    and spatial lattices (``kernel_size="auto"``: 3, 5 or 7 when the base kernel has at
    most 64 pixels per side, else the published 3); the fixed input is the published
    stationary one unless
    ``prior="auto"`` asks for the same held-out choice among the three inputs (the meshgrid
    and identity inputs can make the expanded kernel indefinite on large images, where a
    candidate whose solve fails is skipped).

    Parameters
    ----------
    data
        A 2-D grey image ``(rows, cols)`` or a colour image ``(rows, cols, channels)``,
        values in ``[0, 1]``; or an AnnData whose ``obsm["spatial"]`` places the spots on
        a regular square lattice (positions without a spot are treated as missing).
    mask
        Image: ``(rows, cols)`` array, True / nonzero where a pixel is observed (as in the
        published mask files, 0 = missing). AnnData: boolean ``(n_obs,)`` (spot observed),
        boolean ``(n_obs, n_vars)`` (per gene), or the name of a boolean ``.obs`` column.
    kernel
        ``"cntk"``: the convolutional NTK above. ``"gaussian"``, ``"matern52"``,
        ``"matern32"``: a stationary kernel of that smoothness (length scale
        ``length_scale`` in lattice steps, ``"auto"``: chosen on held-out blocks), solved
        exactly or by FFT conjugate gradient (:mod:`scimpute.tl._inpaint_kernels`).
        ``"auto"`` (default): on an AnnData lattice, the candidate with the lowest error on
        held-out blocks of the observed spots among the CNTK (each filter size) and the
        three stationary kernels (each length scale), each with every ridge, averaged over
        ``folds`` draws of blocks, one choice for all genes (``select="joint"``) or per gene
        (``select="column"``); on an image, the CNTK (the published recipe: a stationary
        candidate costs a full-image solve per length scale and ridge).
    key_added
        AnnData only: ``layers[key_added]`` and ``uns[key_added]`` (default ``"inpaint"``).
    layer
        AnnData only: layer to fill (default ``.X``).
    genes
        AnnData only: fill only these ``var_names`` (the others are copied unchanged).
    n_comps
        AnnData only: fill the first ``n_comps`` principal components (of the centred
        observed spots) instead of each gene, and map them back to every gene.
    random_state
        Seed of the held-out blocks used by the ``"auto"`` choices.
    **kwargs
        Parameters of :class:`scimpute.tl._inpaint_kernels.InpaintParams`: those of
        :class:`scimpute.ntk.CntkParams` (``depth``, ``kernel_size``, ``prior``, ``reg``,
        ``base_size``, ``solver``, ``backend``, ``holdout``, ...) and ``length_scale``,
        ``folds``, ``select``.

    Returns
    -------
    Image: the filled image, ``float32``, of the input's shape, observed pixels unchanged.
    AnnData: ``None``; writes ``layers[key_added]`` (observed entries unchanged, missing
    ones filled) and ``uns[key_added]`` with ``params`` (every parameter of the typed spec
    plus the call options) and ``info``, one entry per mask pattern: with ``kernel="cntk"``
    the geometry, chosen prior, filter size and ridge, held-out errors, solver accuracy and
    seconds; otherwise ``chosen`` (the candidate of each column, e.g.
    ``"gaussian, length_scale=8, reg=0.01"``), ``chosen_counts``, ``validation_score`` (every
    candidate's mean over columns of held-out MSE / column variance), ``folds``,
    ``holdout_side``, ``solver`` and seconds. The input is never modified.

    Examples
    --------
    >>> import numpy as np
    >>> import scimpute as si
    >>> img = np.tile(np.linspace(0, 1, 16), (16, 1))
    >>> mask = np.ones_like(img, bool)
    >>> mask[6:9, 6:9] = False
    >>> out = si.tl.inpaint(img, mask, depth=2, reg=1e-3, prior="stationary")
    >>> bool(np.allclose(out[mask], img[mask])), out.shape
    (True, (16, 16))

    """
    from ._inpaint_kernels import KERNELS, InpaintParams

    check_choice(_OWNER, "kernel", kernel, KERNELS)
    check_random_state_value(_OWNER, random_state)
    spec = InpaintParams.from_kwargs(_OWNER, kwargs)
    if isinstance(data, np.ndarray) or isinstance(data, list | tuple):
        for name, val in (
            ("key_added", key_added),
            ("layer", layer),
            ("genes", genes),
            ("n_comps", n_comps),
        ):
            if val is not None:
                raise TypeError(f"{_OWNER}: {name} applies to AnnData input only.")
        arr, m = _check_image(data, mask)
        chans = arr[None].astype(np.float32) if arr.ndim == 2 else np.moveaxis(arr, 2, 0)
        kern = "cntk" if kernel == "auto" else kernel
        filled, _ = _fill(chans.astype(np.float32), m, spec, random_state, kern)
        out = filled[0] if arr.ndim == 2 else np.moveaxis(filled, 0, 2)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        out[m] = arr[m]  # observed pixels exactly as given
        return out
    return _inpaint_adata(data, mask, spec, kernel, key_added, layer, genes, n_comps, random_state)


def _adata_mask(adata, mask) -> np.ndarray:
    n, g = adata.shape
    if mask is None:
        raise ValueError(
            f"{_OWNER}: mask is required (boolean per spot, per spot x gene, or an "
            "obs column name)."
        )
    if isinstance(mask, str):
        if mask not in adata.obs:
            raise KeyError(f"{_OWNER}: obs has no column {mask!r}.")
        mask = adata.obs[mask].to_numpy()
    m = np.asarray(mask)
    if m.dtype != bool:
        raise ValueError(f"{_OWNER}: the AnnData mask must be boolean (True = observed).")
    if m.shape == (n,):
        m = np.repeat(m[:, None], g, axis=1)
    if m.shape != (n, g):
        raise ValueError(f"{_OWNER}: mask must have shape ({n},) or ({n}, {g}), got {m.shape}.")
    return m


def _inpaint_adata(adata, mask, spec, kernel, key_added, layer, genes, n_comps, random_state):
    from anndata import AnnData

    from .._utils import h5ad_safe

    if not isinstance(data := adata, AnnData):
        raise TypeError(
            f"{_OWNER}: data must be an image array or an AnnData, got {type(data).__name__}."
        )
    key = key_added or Key.uns.inpaint
    if "spatial" not in adata.obsm:
        raise KeyError(f"{_OWNER}: the AnnData needs obsm['spatial'] (spot coordinates).")
    pos, shape = _lattice(np.asarray(adata.obsm["spatial"]))
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"{_OWNER}: layers has no {layer!r}.")
    if layer is not None and key == layer:
        raise ValueError(
            f"{_OWNER}: key_added={key!r} is the input layer; choose another key_added so "
            "the input is not written over."
        )
    X = _dense(adata.X if layer is None else adata.layers[layer])
    m = _adata_mask(adata, mask)
    cols = np.arange(adata.n_vars)
    if genes is not None:
        missing = [x for x in genes if x not in adata.var_names]
        if missing:
            raise KeyError(f"{_OWNER}: genes not in var_names: {missing[:5]}.")
        cols = adata.var_names.get_indexer(list(genes))
    if not np.all(np.isfinite(X[m])):
        raise ValueError(f"{_OWNER}: observed entries must be finite.")
    out = X.copy()
    infos = []
    if n_comps is not None:
        if not isinstance(n_comps, int | np.integer) or n_comps < 1:
            raise ValueError(f"{_OWNER}: n_comps must be an integer >= 1, got {n_comps!r}.")
        spot = m[:, cols].all(axis=1)
        if not np.all(m[:, cols].any(axis=1) == spot):
            raise ValueError(f"{_OWNER}: n_comps needs one mask per spot (all genes alike).")
        Xo = X[spot][:, cols]
        mu = Xo.mean(0)
        _, _, vt = np.linalg.svd(Xo - mu, full_matrices=False)
        V = vt[: min(n_comps, vt.shape[0])]
        scores = (X[:, cols] - mu) @ V.T
        filled, info = _fill_columns(
            scores, spot[:, None].repeat(len(V), 1), pos, shape, spec, random_state, kernel
        )
        rec = filled @ V + mu
        block = out[:, cols]
        block[~spot] = rec[~spot]
        out[:, cols] = block
        infos.extend(info)
    else:
        filled, info = _fill_columns(X[:, cols], m[:, cols], pos, shape, spec, random_state, kernel)
        block = out[:, cols]
        sub = m[:, cols]
        block[~sub] = filled[~sub]
        out[:, cols] = block
        infos.extend(info)
    adata.layers[key] = out.astype(np.float32)
    call = {
        "kernel": kernel,
        "layer": layer,
        "genes": None if genes is None else list(genes),
        "n_comps": n_comps,
        "random_state": random_state,
    }
    adata.uns[key] = h5ad_safe({"params": {**spec.to_dict(), **call}, "info": infos})


def _fill_columns(Y, M, pos, shape, spec, random_state, kernel):
    """Fill each column of ``Y`` (spots x columns) where ``M`` is False; group equal masks."""
    out = Y.copy()
    infos = []
    patterns: dict[bytes, list[int]] = {}
    for j in range(Y.shape[1]):
        patterns.setdefault(np.packbits(M[:, j]).tobytes(), []).append(j)
    for idx in patterns.values():
        mj = M[:, idx[0]]
        if mj.all():
            continue
        if not mj.any():
            raise ValueError(f"{_OWNER}: a gene has no observed spot.")
        grid = np.zeros((len(idx), *shape), np.float32)
        obs = np.zeros(shape, bool)
        obs[pos[mj, 0], pos[mj, 1]] = True
        vals = Y[mj][:, idx]
        mu = vals.mean(0)
        grid[:, pos[mj, 0], pos[mj, 1]] = (vals - mu).T
        filled, info = _fill(grid, obs, spec, random_state, kernel)
        out[np.ix_(~mj, idx)] = filled[:, pos[~mj, 0], pos[~mj, 1]].T + mu
        info["columns"] = len(idx)
        infos.append(info)
    return out, infos

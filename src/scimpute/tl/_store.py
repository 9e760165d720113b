"""Completed layers streamed to a zarr store (``tl.impute(..., out_store=PATH)``).

On a full-size grid (e.g. 70 cell lines x 20,000 compounds x 978 genes: 5.5 GB per float32
layer) the two completed layers that :func:`scimpute.tl.impute` writes (``layers[key]`` and
``layers[f"{key}_effect"]``) would triple the grid's memory. With ``out_store`` they are
never built in memory: :func:`write_layers` writes them to an AnnData zarr store one block
of rows at a time (the grid's ``X`` and the method's predictions are read, nothing is
copied whole), and :func:`write_annotations` adds ``obs``, ``var`` and ``uns`` once the
in-memory grid has them, so that::

    import anndata as ad
    lazy = ad.experimental.read_lazy(PATH)   # layers as dask arrays, read on demand
    full = ad.read_zarr(PATH)                # or everything in memory

The store holds the grid's rows in the grid's order, ``obs`` (with the source and
diagnostic columns impute adds), ``var``, ``uns`` (the grid's and impute's records) and the
two layers; not ``X`` (the measured input, already in the grid). An existing path is never
written over unless ``overwrite_store=True``; that is checked before any work.
"""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: rows per written block (about 32 MiB of float32 at 978 features)
_CHUNK_BYTES = 32 * 2**20


@contextmanager
def _quiet_zarr():
    """Silence zarr 3's notices about future defaults (sharding, consolidated metadata)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*autosharding.*")
        warnings.filterwarnings("ignore", message="Consolidated metadata.*")
        yield


def check_store(path: str | os.PathLike, overwrite: bool) -> Path:
    """The store's path; raises ``FileExistsError`` if it exists and ``overwrite`` is False."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"out_store must be a path (str or os.PathLike), got {path!r}.")
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"out_store {str(p)!r} exists; pass overwrite_store=True to replace it, or choose "
            "another path."
        )
    return p


class ControlFill:
    """Receives ``_fill_controls``' assignment ``completed[missing, a] = mean`` (no grid)."""

    value = None
    index = None

    def __setitem__(self, index, value):
        self.index, self.value = index, np.asarray(value, dtype=np.float32)

    def apply(self, rows: np.ndarray, order: np.ndarray, n_a: int) -> None:
        """Write the fill into ``rows`` (pairs in grid row order: flat pair f is row order[f])."""
        if self.index is None:
            return
        missing, a = self.index
        rows[order[np.flatnonzero(missing) * n_a + a]] = self.value


def _rows_per_chunk(p: int) -> int:
    return max(1, _CHUNK_BYTES // (4 * max(p, 1)))


def write_layers(path, data, order, targets, res, key: str, overwrite: bool, fill_controls):
    """Write ``layers[key]`` and ``layers[f"{key}_effect"]`` block by block.

    ``data``/``order`` as from :func:`scimpute.tl._data.to_grid_data`, ``res`` the method's
    result on ``targets``; ``fill_controls`` is impute's control filler (called on the source
    table only). Returns ``(source (C, A) object array, number of control rows filled)``,
    exactly what impute computes in memory.
    """
    import zarr

    from .._keys import SOURCE_MEASURED

    p_ = check_store(path, overwrite)
    n_c, n_a = data.measured.shape
    n = n_c * n_a
    source = np.full((n_c, n_a), SOURCE_MEASURED, dtype=object)
    pos = np.full(n, -1, dtype=np.int64)  # flat pair -> row of res.prediction
    if len(targets):
        source[targets[:, 0], targets[:, 1]] = res.source
        pos[targets[:, 0] * n_a + targets[:, 1]] = np.arange(len(targets))
    fill = ControlFill()
    n_ctrl = fill_controls(data, fill, source)
    filled = np.zeros((n_c, n_a), dtype=bool)
    if fill.index is not None:
        filled[fill.index] = True
    ctrl = None
    if data.control is not None:
        has = data.measured[:, data.control]
        ctrl = np.where(has[:, None], np.asarray(data.Y[:, data.control], np.float32), np.nan)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)  # grid row -> flat pair

    if p_.exists():
        shutil.rmtree(p_) if p_.is_dir() else p_.unlink()
    with _quiet_zarr():
        _write_blocks(
            zarr.open_group(str(p_), mode="w-"),
            data,
            res.prediction,
            pos,
            inv,
            key,
            (filled, fill.value),
            ctrl,
        )
    return source, n_ctrl


def _write_blocks(root, data, prediction, pos, inv, key, fill, ctrl) -> None:
    """The two layers, ``_CHUNK_BYTES`` of rows at a time, in grid row order."""
    from .._keys import Key

    n_c, n_a, p = data.Y.shape
    n = n_c * n_a
    filled, fill_value = fill
    layers = root.create_group("layers")
    layers.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
    step = _rows_per_chunk(p)
    arrays = {
        name: layers.create_array(name, shape=(n, p), chunks=(step, p), dtype="float32")
        for name in (key, Key.layers.effect(key))
    }
    for arr in arrays.values():
        arr.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    for lo in range(0, n, step):
        flat = inv[lo : lo + step]
        c, a = flat // n_a, flat % n_a
        block = np.asarray(data.Y[c, a], dtype=np.float32)
        hit = pos[flat] >= 0
        if hit.any():
            block[hit] = prediction[pos[flat[hit]]]
        fl = filled[c, a]
        if fl.any():
            block[fl] = fill_value
        arrays[key][lo : lo + block.shape[0]] = block
        eff = block if data.control is None else block - ctrl[c]
        arrays[Key.layers.effect(key)][lo : lo + block.shape[0]] = eff


def write_annotations(path, grid) -> None:
    """Add ``obs``, ``var`` and ``uns`` of the imputed ``grid`` to the store and close it."""
    import zarr
    from anndata.io import write_elem

    with _quiet_zarr():
        root = zarr.open_group(str(path), mode="r+")
        write_elem(root, "obs", grid.obs)
        write_elem(root, "var", grid.var)
        write_elem(root, "uns", dict(grid.uns))
        for name in ("obsm", "varm", "obsp", "varp"):
            write_elem(root, name, {})
        root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        zarr.consolidate_metadata(str(path))

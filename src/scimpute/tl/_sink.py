"""Prediction sinks: a method writes its predictions straight into their destination.

A method that accepts ``out`` (today :func:`scimpute.methods.synthetic_interventions`)
writes ``out[rows] = values`` group by group instead of filling an ``(n_targets,
n_features)`` array of its own; :func:`scimpute.tl.impute` passes one of these sinks so that
no second full-size copy of the grid is held:

- :class:`GridSink`: the rows of the completed layer itself (float32, allocated once, in
  the grid's row order), used by the in-memory ``impute``;
- :class:`DiskSink`: a float32 staging file next to ``out_store`` (page cache, not resident
  memory), read back block by block when the zarr store is written;
- :class:`ArraySink`: an in-memory array (what a method returns without a sink).

Every sink stores float32 (the dtype of the layers impute writes), records which rows
were written and how many held non-finite values, so that
:func:`scimpute.tl._run.check_result` can refuse an incomplete or non-finite result as it
does for an array. Rows are target positions (``0 .. n_targets - 1``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class RowSink(ABC):
    """``n`` rows of ``p`` float32 values, written and read by rows (base class).

    Subclasses implement ``_put(rows, values)`` and ``_get(rows)`` for sorted, unique
    integer ``rows``.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, n: int, p: int):
        self.shape = (int(n), int(p))
        self.written = np.zeros(self.shape[0], dtype=bool)
        self.n_nonfinite = 0

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 2

    def _rows(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(*rows.indices(self.shape[0]))
        r = np.asarray(rows)
        if r.dtype == bool:
            return np.flatnonzero(r)
        return r.astype(np.int64, copy=False).reshape(-1)

    def __setitem__(self, rows, values) -> None:
        r = self._rows(rows)
        v = np.asarray(values, dtype=self.dtype)
        v = np.broadcast_to(v, (r.size, self.shape[1]))
        self.n_nonfinite += int((~np.isfinite(v).all(axis=1)).sum())
        order = np.argsort(r, kind="stable")
        r, v = r[order], v[order]
        last = np.r_[r[1:] != r[:-1], True]  # a row written twice keeps its last value
        self._put(r[last], np.ascontiguousarray(v[last]))
        self.written[r] = True

    def __getitem__(self, rows) -> np.ndarray:
        r = self._rows(rows)
        uniq, inv = np.unique(r, return_inverse=True)
        return self._get(uniq)[inv.reshape(-1)]

    def __array__(self, dtype=None, copy=None):
        full = self[slice(None)]
        return full if dtype is None else full.astype(dtype)

    def missing(self) -> int:
        """Rows never written."""
        return int((~self.written).sum())

    @abstractmethod
    def _put(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values`` to the sorted, unique ``rows``."""

    @abstractmethod
    def _get(self, rows: np.ndarray) -> np.ndarray:
        """Read the sorted, unique ``rows``."""


class ArraySink(RowSink):
    """An in-memory ``(n, p)`` float32 array (``self.array``)."""

    def __init__(self, n: int, p: int):
        super().__init__(n, p)
        self.array = np.empty(self.shape, dtype=self.dtype)

    def _put(self, rows, values):
        self.array[rows] = values

    def _get(self, rows):
        return self.array[rows]


class GridSink(RowSink):
    """Target ``i`` is row ``dest_rows[i]`` of ``dest`` (e.g. the completed layer)."""

    def __init__(self, dest: np.ndarray, dest_rows: np.ndarray):
        if dest.dtype != self.dtype or dest.ndim != 2:
            raise ValueError(f"dest must be a 2-d float32 array, got {dest.dtype} {dest.shape}.")
        super().__init__(len(dest_rows), dest.shape[1])
        self.dest, self.dest_rows = dest, np.asarray(dest_rows, dtype=np.int64)

    def _put(self, rows, values):
        self.dest[self.dest_rows[rows]] = values

    def _get(self, rows):
        return self.dest[self.dest_rows[rows]]


class DiskSink(RowSink):
    """A raw float32 file of ``n x p`` values at ``path`` (created; :meth:`close` removes it).

    Each write and read maps the file for that call only, so the touched pages leave the
    process's resident memory when it returns (they stay in the page cache, which the
    kernel reclaims).
    """

    def __init__(self, path: str | os.PathLike, n: int, p: int):
        super().__init__(n, p)
        self.path = Path(path)
        with open(self.path, "xb") as fh:  # never over an existing file
            fh.truncate(max(1, self.shape[0] * self.shape[1] * self.dtype.itemsize))

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode=mode, shape=self.shape)

    def _put(self, rows, values):
        mm = self._map("r+")
        mm[rows] = values
        del mm  # unmapped: the dirty pages are written back by the kernel

    def _get(self, rows):
        mm = self._map("r")
        out = np.array(mm[rows])
        del mm
        return out

    def close(self) -> None:
        """Remove the staging file."""
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def staging_path(out_store: str | os.PathLike) -> Path:
    """Where :func:`scimpute.tl.impute` stages predictions for ``out_store`` (its folder)."""
    p = Path(out_store).absolute()
    p.parent.mkdir(parents=True, exist_ok=True)
    return p.parent / f".{p.name}.predictions-{os.getpid()}.f32"

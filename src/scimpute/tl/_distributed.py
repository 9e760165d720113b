"""Run a method's targets on the workers of a ``dask.distributed`` cluster.

``tl.impute(grid, method=..., client=client)`` splits the targets into groups of whole
contexts (whole perturbations for SI-Context, ``donors="contexts"``), one group per worker
thread, balanced by the number of targets; each group is one call of the method on a worker,
on the same grid (sent once to every worker) with the same parameters and seed, and the
results are put back in target order. Every registered method predicts each target from the
measured pairs alone (never from the other targets), so the result equals the
single-process one: predictions to floating-point rounding (batched kernels pad groups to
other sizes), sources and per-pair diagnostics exactly. Methods with one global fit (``ntk``,
the autoencoders) fit it once per group.

The methods' ``info`` (written to ``.uns[key]``) is merged by these rules:

- entries with one row per target (arrays or sparse matrices whose first axis is the
  group's size; group sizes are made unequal so that this is unambiguous) are concatenated
  in target order;
- counts (:data:`SUMMED`: fallback reasons, SI's number of groups and of groups per
  solver, NTK's targets per pattern) are added;
- entries equal in every group are kept; others (e.g. timings) become one value per group;
- ``info["distributed"]`` records the groups: ``by``, ``n_groups``, ``group_sizes``.
"""

from __future__ import annotations

import heapq
import threading
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._keys import (
    SI_ACTION_FALLBACK_REASONS,
    SI_CONTEXT_FALLBACK_REASONS,
    SI_FALLBACK_REASONS,
    SI_N_GROUPS,
    SI_SOLVERS,
)
from .._sharding import use_devices
from ..methods import GridData, Method, MethodResult
from ._run import run_method

__all__ = ["merge_results", "run_distributed", "target_groups", "use_devices"]

#: ``info`` entries (paths of keys) that are counts: added over the groups
SUMMED = (
    (SI_FALLBACK_REASONS,),
    (SI_ACTION_FALLBACK_REASONS,),
    (SI_CONTEXT_FALLBACK_REASONS,),
    (SI_N_GROUPS,),
    (SI_SOLVERS,),
    ("patterns", "n_targets"),
)
#: one method call at a time per worker process: JAX and LAPACK already use every core of
#: the process, and concurrent XLA CPU calls in one process can deadlock
_LOCK = threading.Lock()


def check_client(client) -> None:
    """Raise a :class:`TypeError` unless ``client`` looks like a ``distributed.Client``."""
    if not all(hasattr(client, a) for a in ("submit", "scatter", "gather", "nthreads")):
        raise TypeError(
            "client must be a dask.distributed.Client (pip install 'scimpute[dask]'), got "
            f"{type(client).__name__}."
        )


def split_axis(params) -> int:
    """Target column the groups are made of: 1 (perturbations) for SI-Context, else 0."""
    return 1 if getattr(params, "donors", None) == "contexts" else 0


def target_groups(units: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Positions of the targets in each group: whole units, balanced by target count.

    Units go, largest first (ties: lower index), to the group with the fewest targets
    (ties: lower group); each group keeps its targets in their original order. With two
    groups or more, sizes are made unequal (one target moves from the first group to the
    second when all are equal) so that per-target ``info`` entries are recognised.
    """
    uniq, inv, counts = np.unique(units, return_inverse=True, return_counts=True)
    n_groups = max(1, min(int(n_groups), uniq.size))
    heap = [(0, g) for g in range(n_groups)]
    owner = np.empty(uniq.size, dtype=np.int64)
    for u in sorted(range(uniq.size), key=lambda i: (-counts[i], i)):
        load, g = heapq.heappop(heap)
        owner[u] = g
        heapq.heappush(heap, (load + int(counts[u]), g))
    of_target = owner[inv.reshape(-1)]
    groups = [np.flatnonzero(of_target == g) for g in range(n_groups)]
    if n_groups > 1 and len({g.size for g in groups}) == 1:
        groups[1] = np.sort(np.append(groups[1], groups[0][-1]))
        groups[0] = groups[0][:-1]
    return [g for g in groups if g.size]


def _run_group(method: Method, data: GridData, targets, random_state, params) -> MethodResult:
    with _LOCK:
        return run_method(method, data, targets, random_state=random_state, params=params)


def run_distributed(
    client,
    method: Method,
    data: GridData,
    targets: np.ndarray,
    *,
    random_state,
    params,
    n_groups: int | None = None,
) -> MethodResult:
    """:func:`~scimpute.tl._run.run_method` with the targets split over ``client``'s workers.

    ``n_groups`` defaults to the number of worker threads. See the module docstring for the
    grouping and for how ``info`` is merged. Exceptions raised on a worker are raised here.
    """
    check_client(client)
    t = np.asarray(targets)
    axis = split_axis(params)
    if n_groups is None:
        n_groups = max(sum(client.nthreads().values()), 1)
    groups = target_groups(t[:, axis], n_groups) if t.shape[0] else []
    if len(groups) <= 1:
        res = run_method(method, data, t, random_state=random_state, params=params)
    else:
        shared = client.scatter(data, broadcast=True, hash=False)
        futures = [
            client.submit(_run_group, method, shared, t[g], random_state, params, pure=False)
            for g in groups
        ]
        res = merge_results(client.gather(futures), groups, t.shape[0])
    res.info["distributed"] = {
        "by": ("context", "perturbation")[axis],
        "n_groups": len(groups),
        "group_sizes": np.asarray([g.size for g in groups], dtype=np.int64),
    }
    return res


def merge_results(parts: list[MethodResult], groups: list[np.ndarray], n: int) -> MethodResult:
    """One :class:`MethodResult` in target order from the results of the groups."""
    pos = np.concatenate(groups)
    back = np.argsort(pos, kind="stable")  # row of the stacked results for each target
    sizes = [g.size for g in groups]
    keys = list(dict.fromkeys(k for r in parts for k in r.per_target))
    per_target = {k: _stack([np.asarray(r.per_target[k]) for r in parts])[back] for k in keys}
    return MethodResult(
        prediction=np.vstack([np.asarray(r.prediction) for r in parts])[back],
        source=np.concatenate([np.asarray(r.source, dtype=object) for r in parts])[back],
        per_target=per_target,
        info=_merge_info([r.info for r in parts], sizes, back, ()),
    )


def _stack(values: list):
    if any(sp.issparse(v) for v in values):
        return sp.vstack([sp.csr_matrix(v) for v in values], format="csr")
    return np.concatenate(values, axis=0)


def _rows(v) -> int | None:
    if sp.issparse(v):
        return v.shape[0]
    if isinstance(v, np.ndarray) and v.ndim >= 1:
        return v.shape[0]
    return None


def _equal(a, b) -> bool:
    if sp.issparse(a) or sp.issparse(b):
        return sp.issparse(a) and sp.issparse(b) and a.shape == b.shape and (a != b).nnz == 0
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    try:
        return bool(a == b) or (a != a and b != b)  # NaN == NaN
    except (TypeError, ValueError):
        return False


def _merge_info(infos: list[dict], sizes: list[int], back: np.ndarray, path: tuple) -> dict:
    out: dict[str, Any] = {}
    for k in dict.fromkeys(k for d in infos for k in d):
        vals = [d.get(k) for d in infos]
        here = (*path, k)
        if all(isinstance(v, dict) for v in vals):
            if here in SUMMED:
                out[k] = _merge_info(infos=vals, sizes=sizes, back=back, path=("<sum>",))
            else:
                out[k] = _merge_info(vals, sizes, back, here)
        elif path == ("<sum>",) or here in SUMMED:
            out[k] = sum(vals[1:], start=vals[0])
        elif all(_rows(v) == s for v, s in zip(vals, sizes, strict=True)):
            stacked = _stack(vals)
            out[k] = stacked[back]
        elif all(_equal(vals[0], v) for v in vals[1:]):
            out[k] = vals[0]
        else:
            out[k] = np.asarray(vals, dtype=object) if _rows(vals[0]) else np.asarray(vals)
    return out

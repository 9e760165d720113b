"""Split batched JAX kernels over the devices of a mesh (several GPUs of one machine).

The batched kernels of synthetic interventions (one fit per key of a chunk) and the NTK's
prediction kernel (one row per target column) treat every element of their leading axis
independently. :func:`batched_call` runs such a kernel with that axis split over the
devices of the active mesh (:func:`use_devices`), one slice per device with no
communication (:func:`jax.shard_map`), and returns the same numbers as the single-device
call; without an active mesh (the default) it is the plain call.

Examples
--------
>>> import scimpute as si
>>> with si.tl.use_devices("all"):  # doctest: +SKIP
...     si.tl.impute(grid, method="synthetic_interventions")

On CPU, several host devices are simulated by setting
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX is imported.

"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

#: ``(mesh, concurrent)`` of the innermost ``use_devices`` block (``None``: one device)
_MESH: contextvars.ContextVar[Any] = contextvars.ContextVar("scimpute_mesh", default=None)
#: calls that were split over two devices or more (read by the tests)
SHARDED_CALLS = {"n": 0}
AXIS = "targets"


def make_mesh(devices: Any = "all"):
    """A 1-d :class:`jax.sharding.Mesh` (axis ``"targets"``) from a device spec.

    ``devices`` is a :class:`~jax.sharding.Mesh` (returned as it is; its leading axis is
    split over all of its axes), ``"all"`` (every device of the default backend), an int
    ``n`` (the first ``n`` of them) or a sequence of :class:`jax.Device`.
    """
    import jax
    from jax.sharding import Mesh

    if isinstance(devices, Mesh):
        return devices
    avail = jax.devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices must be 'all', an int, devices or a Mesh, got {devices!r}.")
        chosen = avail
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= devices <= len(avail):
            raise ValueError(
                f"devices={devices} but {len(avail)} {jax.default_backend()} device(s) exist; "
                "on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before "
                "importing JAX."
            )
        chosen = avail[: int(devices)]
    elif (
        isinstance(devices, Sequence)
        and len(devices)
        and all(hasattr(d, "platform") for d in devices)
    ):
        chosen = list(devices)
    else:
        raise TypeError(
            "devices must be 'all', an int, a sequence of jax devices or a "
            f"jax.sharding.Mesh, got {type(devices).__name__}."
        )
    return Mesh(np.asarray(chosen), (AXIS,))


@contextlib.contextmanager
def use_devices(devices: Any, *, concurrent: bool | None = None) -> Iterator[Any]:
    """Split the batched kernels run inside the block over ``devices``.

    The batched kernels of ``synthetic_interventions`` (the key fits and predictions) and
    of ``ntk`` (the predictions; its one Cholesky factorisation stays on one device) split
    their targets over the devices; results equal those of a single device (to
    floating-point rounding: each device runs the same kernel on its share of the batch).

    Parameters
    ----------
    devices
        ``"all"`` (every device of JAX's default backend), an int ``n`` (the first ``n``),
        a sequence of :class:`jax.Device` or a :class:`jax.sharding.Mesh`
        (:func:`make_mesh`). Nested blocks use the innermost; ``1`` turns sharding off.
    concurrent
        Run the devices' slices at once, in one :func:`jax.shard_map` program (``True``),
        or one device after the other (``False``). ``None`` (default): at once except on
        CPU, where the simulated host devices share one thread pool and concurrent batched
        LAPACK calls (SI's eigendecompositions) can deadlock XLA; CPU devices gain nothing
        from running at once anyway.

    Returns
    -------
    A context manager yielding the :class:`jax.sharding.Mesh`.

    Examples
    --------
    >>> import scimpute as si
    >>> with si.tl.use_devices("all"):  # doctest: +SKIP
    ...     si.tl.impute(grid, method="synthetic_interventions")

    """
    mesh = make_mesh(devices)
    if concurrent is None:
        concurrent = mesh.devices.flat[0].platform != "cpu"
    token = _MESH.set((mesh, bool(concurrent)))
    try:
        yield mesh
    finally:
        _MESH.reset(token)


def active_mesh():
    """The mesh of the innermost :func:`use_devices` block, or ``None``."""
    state = _MESH.get()
    return None if state is None else state[0]


def _n_devices(mesh) -> int:
    return int(np.prod(list(mesh.shape.values()))) if mesh is not None else 1


@lru_cache(maxsize=64)
def _sharded(fn: Callable, n_batched: int, n_shared: int, static: tuple, mesh):
    import jax
    from jax.sharding import PartitionSpec as P

    split = P(tuple(mesh.axis_names))
    kw = dict(static)

    def body(*args):
        return fn(*args, **kw)

    return jax.jit(
        jax.shard_map(
            body,
            mesh=mesh,
            in_specs=(split,) * n_batched + (P(),) * n_shared,
            out_specs=split,
            check_vma=False,
        )
    )


def _pad(x, size: int):
    """``x`` with its leading axis padded to ``size`` by repeating its last row."""
    import jax.numpy as jnp

    n = x.shape[0]
    if n == size:
        return x
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.repeat(x[-1:], size - n, axis=0)], axis=0)


def batched_call(
    fn: Callable,
    batched: tuple,
    shared: tuple = (),
    *,
    static: dict | None = None,
    mesh=None,
):
    """``fn(*batched, *shared, **static)`` with the leading axis of ``batched`` split over devices.

    Parameters
    ----------
    fn
        A JAX function (usually jitted) whose outputs all have the leading batch axis of its
        ``batched`` arguments and treat its elements independently (a ``vmap``).
    batched
        Arguments (arrays or pytrees of arrays) whose leaves share a leading batch axis.
    shared
        Arguments passed whole to every device (replicated).
    static
        Keyword arguments fixed at compile time (e.g. a jitted kernel's static arguments).
    mesh
        A mesh from :func:`make_mesh`; ``None``: the active one (:func:`use_devices`, which
        also says whether the slices run at once). With no mesh or a single device this is
        the plain call.

    Returns
    -------
    ``fn``'s output; with a mesh of ``d`` devices, computed as ``d`` slices of the batch
    (padded to a multiple of ``d`` by repeating the last element, padding dropped).

    """
    import jax

    static = static or {}
    state = _MESH.get()
    concurrent = True if state is None else state[1]
    if mesh is None and state is not None:
        mesh = state[0]
    d = _n_devices(mesh)
    if d <= 1:
        return fn(*batched, *shared, **static)
    n = jax.tree_util.tree_leaves(batched)[0].shape[0]
    size = -(-n // d) * d
    padded = jax.tree_util.tree_map(lambda x: _pad(x, size), batched)
    SHARDED_CALLS["n"] += 1
    if concurrent:
        wrapped = _sharded(fn, len(batched), len(shared), tuple(sorted(static.items())), mesh)
        out = wrapped(*padded, *shared)
        return jax.tree_util.tree_map(lambda x: x[:n], out)
    step = size // d
    parts = []
    for k, dev in enumerate(mesh.devices.flat):  # one slice per device, one after the other
        piece = jax.tree_util.tree_map(lambda x, k=k: x[k * step : (k + 1) * step], padded)
        with jax.default_device(dev):
            parts.append(jax.block_until_ready(fn(*piece, *shared, **static)))
    return jax.tree_util.tree_map(
        lambda *xs: np.concatenate([np.asarray(x) for x in xs])[:n], *parts
    )

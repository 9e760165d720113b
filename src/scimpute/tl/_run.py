"""Run a registered method on grid arrays and check what it returns.

The one place where a method's parameters are checked (:func:`prepare_method`, through the
method's typed spec) and where its results are checked (:func:`check_result`); the entry
points :func:`scimpute.tl.impute` and :func:`scimpute.tl.cross_validate` call these and pass
the typed parameters down.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._params import Params
from .._utils import RandomState
from ..methods import GridData, Method, MethodResult, as_targets, get_method
from ._sink import RowSink


def prepare_method(
    name: str, params: Mapping[str, Any] | Params | None = None
) -> tuple[Method, Params]:
    """Look up ``name`` and check ``params`` against its spec: the method and typed params.

    Raises
    ------
    ValueError
        Unknown method name (with suggestions).
    TypeError
        A parameter the method does not take.
    scimpute._params.ParamError
        A parameter of the wrong type or out of range.

    """
    method = get_method(name)
    typed = params if isinstance(params, Params) else method.parse(params)
    return method, typed


def check_applicable(method: Method, data: GridData, *, warn: bool = True) -> str | None:
    """Check that ``method`` can run on ``data``; warn when it would only give its fallback.

    Raises a :class:`ValueError` if the method needs a control and the grid has none.
    Returns the reason from the method's ``applies`` hook (``None`` when it applies), after
    one :class:`UserWarning` naming it when ``warn``.
    """
    if method.needs_control and data.control is None:
        raise ValueError(
            f"Method {method.name!r} needs a control perturbation, but the grid was built with "
            "control=None. Rebuild it with control=<label>."
        )
    reason = method.applies(data) if method.applies is not None else None
    if reason and warn:
        warnings.warn(
            f"{method.name}: the method does not apply to this grid ({reason}); every target "
            "gets its fallback (see obs[<key>_source]).",
            UserWarning,
            stacklevel=3,
        )
    return reason


def resolve_method(name: str, params: Mapping[str, Any], data: GridData | None = None) -> Method:
    """:func:`prepare_method` and :func:`check_applicable` (no warning); the method only."""
    method, _ = prepare_method(name, params)
    if data is not None:
        check_applicable(method, data, warn=False)
    return method


def check_result(method: Method, targets: np.ndarray, res: MethodResult, n_features: int):
    """Check a method's result for ``targets``: shape, finiteness, diagnostic lengths.

    ``res.prediction`` may be a :class:`~scimpute.tl._sink.RowSink` the method wrote into:
    then every row must have been written, with finite values only.
    """
    pred = res.prediction
    if not isinstance(pred, RowSink):
        pred = np.asarray(pred)
    if pred.shape != (targets.shape[0], n_features):
        raise RuntimeError(
            f"Method {method.name!r} returned predictions of shape {pred.shape}, expected "
            f"{(targets.shape[0], n_features)}."
        )
    if isinstance(pred, RowSink):
        n = pred.n_nonfinite
        if pred.missing():
            raise RuntimeError(f"Method {method.name!r} left {pred.missing()} targets unwritten.")
    else:
        n = int((~np.isfinite(pred).all(axis=1)).sum())
    if n:
        raise RuntimeError(f"Method {method.name!r} returned non-finite predictions for {n} pairs.")
    res.prediction = pred
    res.source = np.asarray(res.source, dtype=object)
    if res.source.shape != (targets.shape[0],):
        raise RuntimeError(f"Method {method.name!r} returned {res.source.shape} sources.")
    for k, v in res.per_target.items():
        if np.asarray(v).shape[:1] != (targets.shape[0],):
            raise RuntimeError(f"Diagnostic {k!r} of {method.name!r} has the wrong length.")
    return res


def accepts_out(method: Method) -> bool:
    """Whether ``method.fn`` writes its predictions into an ``out`` sink itself."""
    return "out" in inspect.signature(method.fn).parameters


#: rows per block when a method's returned array is copied into a sink
_COPY_ROWS = 16384


def run_method(
    method: Method,
    data: GridData,
    targets,
    *,
    random_state: RandomState,
    params: Mapping[str, Any] | Params,
    out: RowSink | None = None,
) -> MethodResult:
    """Call ``method`` on ``targets`` and check its result (:func:`check_result`).

    ``params`` is the typed instance of :func:`prepare_method` (a mapping is parsed first, for
    callers outside the entry points). ``out``: a sink of ``(n_targets, n_features)`` that
    receives the predictions (:mod:`scimpute.tl._sink`); a method that accepts ``out``
    writes into it group by group, any other method's array is copied into it block by
    block. ``res.prediction`` is then the sink.
    """
    t = as_targets(targets)
    if out is not None and out.shape != (t.shape[0], data.n_features):
        raise ValueError(f"out has shape {out.shape}, expected {(t.shape[0], data.n_features)}.")
    if t.shape[0] == 0:
        return MethodResult(
            prediction=np.zeros((0, data.n_features)) if out is None else out,
            source=np.zeros(0, dtype=object),
        )
    if data.measured[t[:, 0], t[:, 1]].any():
        raise ValueError("Targets must be unmeasured pairs; hide them in `measured` first.")
    typed = params if isinstance(params, Params) else method.parse(params)
    if out is not None and accepts_out(method):
        res = method.fn(data, t, typed, random_state=random_state, out=out)
        return check_result(method, t, res, data.n_features)
    res = check_result(
        method, t, method.fn(data, t, typed, random_state=random_state), data.n_features
    )
    if out is not None:
        for lo in range(0, t.shape[0], _COPY_ROWS):
            out[lo : lo + _COPY_ROWS] = res.prediction[lo : lo + _COPY_ROWS]
        res.prediction = out
    return res

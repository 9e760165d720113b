"""Run a registered method on grid arrays and check what it returns."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._params import Params, check_random_state_value
from .._utils import RandomState
from ..methods import GridData, Method, MethodResult, as_targets, get_method


def resolve_method(name: str, params: dict[str, Any], data: GridData | None = None) -> Method:
    """Look up ``name``, check ``params`` against its spec and its control needs."""
    method = get_method(name)
    method.parse(params)
    if data is not None and method.needs_control and data.control is None:
        raise ValueError(
            f"Method {name!r} needs a control perturbation, but the grid was built with "
            "control=None. Rebuild it with control=<label>."
        )
    return method


def run_method(
    method: Method,
    data: GridData,
    targets,
    *,
    random_state: RandomState,
    params: dict[str, Any] | Params,
) -> MethodResult:
    """Call ``method`` on ``targets`` and validate the shapes and finiteness of its result."""
    t = as_targets(targets)
    if t.shape[0] == 0:
        return MethodResult(
            prediction=np.zeros((0, data.n_features)),
            source=np.zeros(0, dtype=object),
        )
    if data.measured[t[:, 0], t[:, 1]].any():
        raise ValueError("Targets must be unmeasured pairs; hide them in `measured` first.")
    check_random_state_value(method.name, random_state)
    typed = params if isinstance(params, Params) else method.parse(params)
    if getattr(method.fn, "_legacy_kwargs", False):  # TRANSITION: removed once all are typed
        res = method.fn(data, t, random_state=random_state, **typed.to_dict())
    else:
        res = method.fn(data, t, typed, random_state=random_state)
    pred = np.asarray(res.prediction)
    if pred.shape != (t.shape[0], data.n_features):
        raise RuntimeError(
            f"Method {method.name!r} returned predictions of shape {pred.shape}, expected "
            f"{(t.shape[0], data.n_features)}."
        )
    if not np.isfinite(pred).all():
        n = int((~np.isfinite(pred).all(axis=1)).sum())
        raise RuntimeError(f"Method {method.name!r} returned non-finite predictions for {n} pairs.")
    res.prediction = pred
    res.source = np.asarray(res.source, dtype=object)
    for k, v in res.per_target.items():
        if np.asarray(v).shape[0] != t.shape[0]:
            raise RuntimeError(f"Diagnostic {k!r} of {method.name!r} has the wrong length.")
    return res

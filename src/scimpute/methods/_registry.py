"""Name -> method registry."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from .._params import NoParams, Params
from .._validate import _suggest
from ._base import GridData, Method, MethodFn, MethodResult

_REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    *,
    description: str,
    params: type[Params] = NoParams,
    reference: str = "",
    needs_control: bool = False,
    applies: Callable[[GridData], str | None] | None = None,
    grouped_refit: Callable[..., list[MethodResult]] | None = None,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator that registers an array-level method under ``name``.

    See :class:`~scimpute.methods.Method` for the fields.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> from scimpute._params import Params, param
    >>> from scimpute.methods import register, MethodResult
    >>> @dataclass(frozen=True)
    ... class ZerosParams(Params):
    ...     scale: float = param(0.0, doc="value predicted")
    >>> @register("zeros", description="predicts zeros", params=ZerosParams)  # doctest: +SKIP
    ... def zeros(data, targets, params, *, random_state=0):
    ...     ...

    """

    def deco(fn: MethodFn) -> MethodFn:
        nonlocal params
        if params is NoParams and _legacy_kwargs(fn):  # TRANSITION
            params = _spec_from_signature(name, fn)
            fn._legacy_kwargs = True  # type: ignore[attr-defined]
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"A method named {name!r} is already registered.")
        _REGISTRY[name] = Method(
            name=name,
            fn=fn,
            description=description,
            reference=reference,
            needs_control=needs_control,
            params=params,
            applies=applies,
            grouped_refit=grouped_refit,
        )
        return fn

    return deco


def _legacy_kwargs(fn) -> bool:  # TRANSITION: removed once every method declares a spec
    import inspect

    return "params" not in inspect.signature(fn).parameters


def _spec_from_signature(name, fn):  # TRANSITION
    import dataclasses
    import inspect
    from typing import Any

    sig = inspect.signature(fn)
    flds = [
        (k, Any, dataclasses.field(default=p.default))
        for k, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "random_state"
    ]
    return dataclasses.make_dataclass(f"{name}_params", flds, bases=(Params,), frozen=True)


def get_method(name: str) -> Method:
    """Return the registered :class:`Method` called ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}.")
    if name not in _REGISTRY:
        raise ValueError(f"Unknown method {name!r}." + _suggest(name, sorted(_REGISTRY)))
    return _REGISTRY[name]


def available_methods() -> pd.DataFrame:
    """Table of the registered methods: name, description, reference, parameters."""
    rows = [
        {
            "method": m.name,
            "description": m.description,
            "reference": m.reference,
            "needs_control": m.needs_control,
            "parameters": ", ".join(f"{k}={v!r}" for k, v in m.defaults.items()),
        }
        for m in _REGISTRY.values()
    ]
    return pd.DataFrame(rows).set_index("method")

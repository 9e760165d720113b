"""Name -> method registry."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from .._validate import _suggest
from ._base import Method, MethodFn

_REGISTRY: dict[str, Method] = {}


def register(
    name: str, *, description: str, reference: str = "", needs_control: bool = False
) -> Callable[[MethodFn], MethodFn]:
    """Decorator that registers an array-level method under ``name``.

    Examples
    --------
    >>> from scimpute.methods import register, MethodResult
    >>> @register("zeros", description="predicts zeros")  # doctest: +SKIP
    ... def zeros(data, targets, *, random_state=0):
    ...     ...
    """

    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"A method named {name!r} is already registered.")
        _REGISTRY[name] = Method(
            name=name,
            fn=fn,
            description=description,
            reference=reference,
            needs_control=needs_control,
        )
        return fn

    return deco


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

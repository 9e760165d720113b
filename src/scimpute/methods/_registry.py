"""Name -> method registry, filled lazily.

Method modules (every public module of :mod:`scimpute.methods`) register themselves when
imported; :func:`_discover` imports them on the first look-up (:func:`get_method`,
:func:`available_methods`, or reading ``_REGISTRY``), so that importing the package costs
nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import pandas as pd

from .._params import NoParams, Params
from .._validate import _suggest
from ._base import GridData, Method, MethodFn, MethodResult

#: name -> method; read it through ``_REGISTRY`` (module attribute, discovered) or get_method.
_METHODS: dict[str, Method] = {}
_DISCOVERED = False


def _discover() -> None:
    """Import every public method module of the package once (they register themselves)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True  # before importing: a module may look methods up while loading
    package = importlib.import_module(__name__.rpartition(".")[0])
    try:
        for mod in pkgutil.iter_modules(package.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{mod.name}")
    except BaseException:
        _DISCOVERED = False
        raise


def __getattr__(name: str) -> Any:
    if name == "_REGISTRY":
        _discover()
        return _METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        if name in _METHODS and _METHODS[name].fn is not fn:
            raise ValueError(f"A method named {name!r} is already registered.")
        _METHODS[name] = Method(
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


def get_method(name: str) -> Method:
    """Return the registered :class:`Method` called ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}.")
    _discover()
    if name not in _METHODS:
        raise ValueError(f"Unknown method {name!r}." + _suggest(name, sorted(_METHODS)))
    return _METHODS[name]


def available_methods() -> pd.DataFrame:
    """Table of the registered methods: name, description, reference, parameters."""
    _discover()
    rows = [
        {
            "method": m.name,
            "description": m.description,
            "reference": m.reference,
            "needs_control": m.needs_control,
            "parameters": ", ".join(f"{k}={v!r}" for k, v in m.defaults.items()),
        }
        for m in _METHODS.values()
    ]
    return pd.DataFrame(rows).set_index("method")

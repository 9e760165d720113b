"""Imputation methods: one module per method, registered by name.

Each module defines a pure array function (see :class:`~scimpute.methods.GridData`) and
registers it with :func:`register`. Modules in this package are discovered automatically, so
adding a method is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import GridData, Method, MethodResult, as_targets, grid_data
from ._registry import available_methods, get_method, register

__all__ = [
    "GridData",
    "Method",
    "MethodResult",
    "as_targets",
    "available_methods",
    "get_method",
    "grid_data",
    "register",
]


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_discover()

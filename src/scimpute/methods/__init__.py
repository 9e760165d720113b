"""Imputation methods: one module per method, registered by name.

Each module defines a pure array function (see :class:`~scimpute.methods.GridData`) and
registers it with :func:`register`. Modules in this package are discovered on first use of
the registry (:func:`get_method`, :func:`available_methods`), so adding a method is adding a
file, and ``import scimpute.methods`` loads no method module (nor JAX).
"""

from __future__ import annotations

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

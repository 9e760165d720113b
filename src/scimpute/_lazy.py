"""Lazy attributes of a package (PEP 562): submodules load on first use.

``import scimpute`` then costs almost nothing; JAX, scanpy, matplotlib and the method modules
are imported when a function that needs them is first looked up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def attach(
    package: str,
    namespace: dict[str, Any],
    *,
    submodules: Iterable[str] = (),
    attributes: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Module ``__getattr__``, ``__dir__`` and ``__all__`` of a package with lazy members.

    Parameters
    ----------
    package
        ``__name__`` of the package.
    namespace
        The package's ``globals()``: resolved attributes are cached there, so each is looked
        up once.
    submodules
        Names of submodules exposed as attributes (``scimpute.tl``).
    attributes
        ``name -> submodule`` (relative, e.g. ``"_impute"``) for functions and classes
        re-exported by the package.

    Returns
    -------
    ``(__getattr__, __dir__, __all__)`` to assign in the package's ``__init__``.

    """
    subs = frozenset(submodules)
    attrs = dict(attributes or {})
    names = sorted(subs | set(attrs))

    def __getattr__(name: str) -> Any:
        if name in subs:
            value = importlib.import_module(f"{package}.{name}")
        elif name in attrs:
            module = importlib.import_module(f"{package}.{attrs[name]}")
            value = getattr(module, name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__, names

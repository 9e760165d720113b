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
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` of a package with lazy members.

    The package spells its ``__all__`` literally (for readers, linters and type checkers);
    it must name exactly the lazy members, which is checked here.

    Parameters
    ----------
    package
        ``__name__`` of the package.
    namespace
        The package's ``globals()`` (holding ``__all__``): resolved attributes are cached
        there, so each is looked up once.
    submodules
        Names of submodules exposed as attributes (``scimpute.tl``).
    attributes
        ``name -> submodule`` (relative, e.g. ``"_impute"``) for functions and classes
        re-exported by the package.

    Returns
    -------
    ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.

    """
    subs = frozenset(submodules)
    attrs = dict(attributes or {})
    names = sorted(subs | set(attrs))
    declared = sorted(namespace.get("__all__", ()))
    if declared != names:
        raise ImportError(
            f"{package}.__all__ and its lazy members differ: {sorted(set(declared) ^ set(names))}"
        )

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

    return __getattr__, __dir__

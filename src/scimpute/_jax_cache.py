r"""JAX's persistent compilation cache for the command line (``scimpute demo`` / ``impute``).

A first call compiles every kernel shape it meets (synthetic interventions' bucketed
kernels, NTK, the networks), which on a small grid can take longer than the fit. With the
persistent cache, later processes load the compiled programs from disk instead.

``scimpute demo`` and ``scimpute impute`` call :func:`enable_compile_cache` before any work.
The directory is, in order:

1. ``$SCIMPUTE_JAX_CACHE`` if set: a path, or ``0`` / ``off`` / ``false`` / ``no`` (any
   case) to leave the cache off;
2. otherwise the user cache directory: ``$XDG_CACHE_HOME/scimpute/jax`` (default
   ``~/.cache/scimpute/jax``; ``~/Library/Caches/scimpute/jax`` on macOS,
   ``%LOCALAPPDATA%\scimpute\jax`` on Windows).

Programs that compile in at least :data:`MIN_COMPILE_SECONDS` are stored. The library
itself (``import scimpute``, ``tl.impute`` from Python) never turns the cache on; call
:func:`enable_compile_cache` yourself, or set JAX's own ``jax_compilation_cache_dir``.
Delete the directory to clear the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "SCIMPUTE_JAX_CACHE"
_OFF = {"0", "off", "false", "no"}
#: smallest compile time (seconds) whose program is written to the cache
MIN_COMPILE_SECONDS = 0.2


def default_cache_dir() -> Path:
    """The user cache directory of scimpute's compiled programs (see the module docstring)."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "scimpute" / "jax"


def cache_dir() -> Path | None:
    """The directory :func:`enable_compile_cache` would use, or ``None`` when turned off."""
    value = os.environ.get(ENV)
    if value is None or not value.strip():
        return default_cache_dir()
    if value.strip().lower() in _OFF:
        return None
    return Path(value).expanduser()


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache; returns its directory (``None``: off).

    ``path`` overrides the directory; without it :func:`cache_dir` decides (the
    ``SCIMPUTE_JAX_CACHE`` variable, then the user cache directory). A directory that
    cannot be created leaves the cache off (compilation still works, only uncached).
    """
    where = Path(path).expanduser() if path is not None else cache_dir()
    if where is None:
        return None
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return where

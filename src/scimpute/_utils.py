"""Small helpers shared by the package (random state, array checks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

RandomState = int | np.random.Generator | None


def check_random_state(random_state: RandomState, owner: str = "scimpute") -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` for an int seed, a generator or ``None``.

    ``None`` means seed 0: scimpute never draws unseeded random numbers. Anything else (a
    negative int, a float, a bool, a string) raises the house
    :class:`~scimpute._params.ParamError` (``"<owner>: random_state must be ..."``).
    """
    from ._params import check_random_state_value

    random_state = check_random_state_value(owner, random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(0 if random_state is None else random_state)


def seed_from(random_state: RandomState) -> int:
    """Draw a 32-bit integer seed (for :func:`jax.random.PRNGKey`) from ``random_state``."""
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state) % (2**32)
    return int(check_random_state(random_state).integers(0, 2**32 - 1))


def h5ad_safe(value: Any) -> Any:
    """Convert a value to something ``write_h5ad`` stores in ``.uns`` and reads back.

    ``None`` becomes the string ``"None"``, tuples become arrays, numpy scalars become Python
    scalars, data frames get string column names and index, and mappings are converted
    recursively. Used for ``.uns[key]["params"]``.
    """
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, list | tuple):
        if len(value) == 0:
            return np.array([], dtype=float)
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=object)
        if all(isinstance(v, int | float | np.number | bool) for v in value):
            return np.asarray(value)
        return {str(i): h5ad_safe(v) for i, v in enumerate(value)}
    if isinstance(value, pd.DataFrame):  # h5ad needs string column names and index
        out = value.copy()
        out.columns = out.columns.astype(str)
        out.index = out.index.astype(str)
        return out
    if isinstance(value, np.random.Generator):
        return "Generator"
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return value

"""The array-level contract every imputation method follows.

A method knows nothing about AnnData. It receives a :class:`GridData` (profiles as a
``(n_contexts, n_perturbations, n_features)`` array plus a measured mask) and the list of
target pairs, and returns a :class:`MethodResult` with one predicted profile per target.
:func:`scimpute.tl.impute` and :func:`scimpute.tl.cross_validate` do the AnnData plumbing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._keys import COMBINATION_SEP
from .._params import NoParams, Params


@dataclass(frozen=True)
class GridData:
    """Arrays of a perturbation grid, valid by construction.

    Attributes
    ----------
    Y
        ``(n_contexts, n_perturbations, n_features)`` float profiles. Entries of unmeasured
        pairs are undefined (NaN in practice) and must not be read.
    measured
        ``(n_contexts, n_perturbations)`` bool mask of the pairs a method may learn from.
    control
        Index of the control perturbation, or ``None`` when the data are already effects.
    contexts, perturbations
        Labels, in grid order (``n_contexts`` and ``n_perturbations`` of them).
    features
        Feature (gene) names (``n_features`` of them), or ``None``.
    obs
        Optional per-pair side information (a :class:`pandas.DataFrame` of the grid's obs,
        ``n_contexts * n_perturbations`` rows in context-major order: row ``c * A + a`` is
        pair ``(c, a)``) for methods that use covariates.
    combination_sep
        Separator of combination labels in ``perturbations`` (``"A+B"``).
    covariates
        Named per-pair numeric arrays (the grid's dense ``.obsm`` entries), each with
        ``n_contexts * n_perturbations`` rows in the same context-major order as ``obs``.
        Tables at the level of perturbations or contexts (e.g. fingerprints kept in
        ``grid.uns``) are not carried: methods take them as parameters.

    Raises
    ------
    ValueError
        When an array has the wrong dimension, dtype or length (the message names it).

    """

    Y: np.ndarray
    measured: np.ndarray
    control: int | None
    contexts: np.ndarray
    perturbations: np.ndarray
    features: np.ndarray | None = None
    obs: Any = None
    combination_sep: str = COMBINATION_SEP
    covariates: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        Y, m = self.Y, self.measured
        if not isinstance(Y, np.ndarray) or Y.ndim != 3:
            raise ValueError(
                f"Y must be a 3-dimensional array, got shape {getattr(Y, 'shape', None)}."
            )
        if Y.dtype.kind != "f":
            raise ValueError(f"Y must hold floats, got dtype {Y.dtype}.")
        if not isinstance(m, np.ndarray) or m.dtype != bool or m.shape != Y.shape[:2]:
            raise ValueError(
                f"measured must be a bool array of shape {Y.shape[:2]}, got "
                f"{getattr(m, 'dtype', type(m).__name__)} of shape {getattr(m, 'shape', None)}."
            )
        c = self.control
        if c is not None and (
            isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < Y.shape[1]
        ):
            raise ValueError(f"control index {c!r} is out of range.")
        n_c, n_a, p = Y.shape
        for what, labels, n in (
            ("contexts", self.contexts, n_c),
            ("perturbations", self.perturbations, n_a),
            ("features", self.features, p),
        ):
            if labels is not None and len(labels) != n:
                raise ValueError(f"{what} has {len(labels)} labels, expected {n}.")
        if self.obs is not None and len(self.obs) != n_c * n_a:
            raise ValueError(f"obs has {len(self.obs)} rows, expected {n_c * n_a} (one per pair).")
        if not isinstance(self.combination_sep, str) or not self.combination_sep:
            raise ValueError("combination_sep must be a non-empty string.")
        for k, v in self.covariates.items():
            if not isinstance(v, np.ndarray) or v.ndim < 1 or v.shape[0] != n_c * n_a:
                raise ValueError(
                    f"covariates[{k!r}] must be an array with {n_c * n_a} rows (one per pair, "
                    f"context-major), got shape {getattr(v, 'shape', None)}."
                )

    @property
    def n_contexts(self) -> int:
        return self.Y.shape[0]

    @property
    def n_perturbations(self) -> int:
        return self.Y.shape[1]

    @property
    def n_features(self) -> int:
        return self.Y.shape[2]

    def with_measured(self, measured: np.ndarray) -> GridData:
        """A copy that shares ``Y`` but uses another measured mask (for hiding pairs)."""
        return replace(self, measured=np.asarray(measured, dtype=bool))

    def treated_mask(self) -> np.ndarray:
        """Measured pairs that are not the control."""
        m = self.measured.copy()
        if self.control is not None:
            m[:, self.control] = False
        return m


@dataclass
class MethodResult:
    """What a method returns.

    Attributes
    ----------
    prediction
        ``(n_targets, n_features)`` predicted profiles, in the order of the targets.
    source
        ``(n_targets,)`` strings naming the estimator that produced each prediction: the
        method's name, or the fallback used for that pair.
    per_target
        Per-target diagnostics, each ``(n_targets,)``; written to ``grid.obs``.
    info
        Anything else (h5ad-safe values); written to ``grid.uns[key]``.

    """

    prediction: np.ndarray
    source: np.ndarray
    per_target: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[..., MethodResult]


@dataclass(frozen=True)
class Method:
    """A registered imputation method.

    Attributes
    ----------
    name
        Name used by ``impute(grid, method=name)``.
    fn
        ``fn(data: GridData, targets: ndarray[int] (n, 2), params: <params>, *, random_state)``
        returning a :class:`MethodResult`. ``params`` is an instance of :attr:`params`,
        already checked by the runner: ``fn`` never re-checks it; ``params=None`` means the
        spec's defaults. ``random_state`` is a checked non-negative int, a
        :class:`numpy.random.Generator` or ``None``.
    params
        The method's typed parameter spec (a frozen :class:`scimpute._params.Params`
        dataclass): every parameter, its default, type and range, declared once.
    description
        One line for listings.
    reference
        Literature reference.
    needs_control
        Whether the method requires a control perturbation.
    applies
        Optional ``applies(data: GridData) -> str | None``: ``None`` when the method applies
        to the grid, else the reason it does not (e.g. "no combination labels"), in which
        case every target would get the method's fallback. :func:`scimpute.tl.impute`
        warns with that reason (one :class:`UserWarning`).
    grouped_refit
        Optional hook for cross-validation of methods whose fit is expensive::

            grouped_refit(
                data: GridData,
                folds: list[ndarray],  # fold i: (n_i, 2) int (context, perturbation) pairs
                params: <params>,  # the typed instance, already checked
                *,
                random_state: int,  # one seed drawn by cross_validate for the hook
                progress: bool,
            ) -> list[MethodResult]

        ``data.measured`` holds every measured pair; fold ``i``'s pairs are measured in
        ``data`` and must be hidden from whatever predicts them (the hook decides how to
        group the fits, e.g. one network per group of folds). It returns one
        :class:`MethodResult` per fold, in the order of ``folds``, whose ``prediction`` has
        one row per pair of that fold (same order) and ``source`` / ``per_target`` as
        :attr:`fn`'s. :func:`scimpute.tl.cross_validate` calls it instead of one ``fn`` call
        per fold, checks every result like ``fn``'s, and never names a specific method.

    """

    name: str
    fn: MethodFn
    description: str
    params: type[Params] = NoParams
    reference: str = ""
    needs_control: bool = False
    applies: Callable[[GridData], str | None] | None = None
    grouped_refit: Callable[..., list[MethodResult]] | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        """Name -> default of every parameter (``random_state`` excluded)."""
        return self.params.defaults()

    def parse(self, kwargs: Mapping[str, Any] | None = None) -> Params:
        """Check user keyword arguments against the spec; the typed parameters."""
        return self.params.from_kwargs(self.name, kwargs)


def as_targets(targets) -> np.ndarray:
    """Coerce targets to an ``(n, 2)`` int64 array of (context, perturbation) indices."""
    t = np.asarray(targets, dtype=np.int64)
    if t.size == 0:
        return t.reshape(0, 2)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"targets must have shape (n, 2), got {t.shape}.")
    return t


def grid_data(
    Y: np.ndarray,
    measured: np.ndarray | None = None,
    *,
    control: int | None = None,
    contexts=None,
    perturbations=None,
    features=None,
) -> GridData:
    """Build a :class:`GridData` from plain arrays (labels default to ``"c0"``, ``"p0"``, ...).

    ``measured`` defaults to the pairs whose profile has no NaN.
    """
    Y = np.asarray(Y)
    if Y.dtype.kind != "f" or Y.dtype == np.float16:
        Y = Y.astype(np.float32 if Y.dtype == np.float16 else np.float64)
    if Y.ndim != 3:
        raise ValueError(f"Y must have shape (contexts, perturbations, features), got {Y.shape}.")
    if measured is None:
        measured = ~np.isnan(Y).any(axis=2)
    n_c, n_p, _ = Y.shape
    return GridData(
        Y=Y,
        measured=np.asarray(measured, dtype=bool),
        control=control,
        contexts=np.asarray(contexts if contexts is not None else [f"c{i}" for i in range(n_c)]),
        perturbations=np.asarray(
            perturbations if perturbations is not None else [f"p{i}" for i in range(n_p)]
        ),
        features=None if features is None else np.asarray(features),
    )

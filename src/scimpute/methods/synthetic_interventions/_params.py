"""The parameters of synthetic interventions, declared once, and the presets they resolve by.

:class:`SIParams` is the method's typed spec: the runner builds it with
:meth:`~scimpute._params.Params.from_kwargs` (types, ranges and choices checked there, with
the house message), and :meth:`SIParams.resolved` fills the parameters left to the preset
(``ridge``, ``select``, ``fallback``, ``sum_to_one``) from :data:`PRESETS`, the one place
where presets are defined.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar, Literal

import numpy as np

from ..._params import Params, param

__all__ = ["PRESETS", "SIParams"]

#: values of the parameters a preset decides (those left at ``None``).
PRESETS: dict[str, dict[str, Any]] = {
    "published": {
        "ridge": 0.0,
        "select": "max_donors",
        "fallback": False,
        "sum_to_one": False,
    },
    "validated": {
        "ridge": (0.0, 0.01, 0.1, 1.0),
        "select": "validation",
        "fallback": True,
        "sum_to_one": True,
    },
}


def _non_empty(value: Any) -> str | None:
    return "must not be an empty sequence" if isinstance(value, tuple) and not value else None


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


@dataclass(frozen=True)
class SIParams(Params):
    """Parameters of ``method="synthetic_interventions"`` (see the package docstring)."""

    owner: ClassVar[str] = "synthetic_interventions"

    donors: Literal["perturbations", "contexts", "both"] = param(
        "perturbations",
        doc="'perturbations' (SI-Action), 'contexts' (SI-Context) or 'both' (averaged by "
        "1 / validation MSE).",
    )
    rank: (
        int | Literal["gavish_donoho"] | tuple[int | Literal["gavish_donoho"] | None, ...] | None
    ) = param(
        None,
        ge=1,
        check=_non_empty,
        doc="Principal components: an int, 'gavish_donoho', None (use energy), or a list "
        "of these to choose from by validation.",
    )
    energy: float = param(
        1.0,
        gt=0,
        le=1,
        doc="Fraction of spectral energy kept when rank is None (1: minimum-norm least squares).",
    )
    preset: Literal["validated", "published"] = param(
        "validated",
        doc="Defaults of ridge, select, fallback and sum_to_one: 'validated' or "
        "'published' (the literature's estimator).",
    )
    ridge: float | tuple[float, ...] | None = param(
        None,
        ge=0,
        check=_non_empty,
        doc="Ridge penalty relative to the mean eigenvalue of the design Gram, or a list "
        "to choose from by validation (None: the preset's).",
    )
    select: Literal["validation", "max_donors"] | None = param(
        None,
        doc="'validation' (validated path level) or 'max_donors' (last level) (None: the "
        "preset's).",
    )
    fallback: bool | None = param(
        None,
        doc="Impute by context_mean where the fit does not beat it on held-out pairs "
        "(None: the preset's).",
    )
    fallback_margin: float = param(
        0.1,
        ge=0,
        lt=1,
        doc="The fit is kept only if its validation error is below (1 - margin) times "
        "context_mean's.",
    )
    min_train_units: int = param(
        1, ge=1, doc="Levels of the greedy path with fewer training units are not used."
    )
    min_win_fraction: float = param(
        0.0,
        ge=0,
        le=1,
        doc="The fit is kept only if it beats context_mean on at least this fraction of "
        "the held-out units.",
    )
    single_unit_redundancy: float = param(
        1.5,
        ge=0,
        doc="A single-training-unit level is used only if its donors number at least this "
        "many times the components carrying 90% of its design's energy.",
    )
    sum_to_one: bool | None = param(
        None,
        doc="Affine donor weights (profiles centred by the donors' mean in each unit) "
        "(None: the preset's).",
    )
    max_donors: int | None = param(None, ge=1, doc="Cap on the number of donors (None: no cap).")
    n_feature_folds: int = param(
        5,
        ge=2,
        doc="Folds of the features for validation of single-training-unit levels (at most "
        "the number of features).",
    )
    subspace_energy: float = param(
        0.99,
        gt=0,
        le=1,
        doc="Spectral energy kept on both sides of the subspace-inclusion statistic.",
    )
    subspace_threshold: float = param(
        0.1, ge=0, le=1, doc="Largest subspace statistic that passes."
    )

    def resolved(self) -> SIParams:
        """A copy with the parameters left at ``None`` taken from the preset."""
        preset = PRESETS[self.preset]
        fill = {k: v for k, v in preset.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)

    @property
    def regularisations(self) -> tuple[tuple[int | str | None, float], ...]:
        """The (rank, ridge) grid scored by validation, rank-major (of a resolved spec)."""
        return tuple(product(_as_tuple(self.rank), map(float, _as_tuple(self.ridge))))

    def settings(self) -> dict[str, Any]:
        """The preset and the values it resolved (h5ad-safe; ``.uns[key]["settings"]``)."""
        r = self.resolved()
        return {
            "preset": r.preset,
            "select": r.select,
            "ridge": np.asarray(_as_tuple(r.ridge), dtype=float),
            "fallback": bool(r.fallback),
            "min_train_units": int(r.min_train_units),
            "sum_to_one": bool(r.sum_to_one),
        }

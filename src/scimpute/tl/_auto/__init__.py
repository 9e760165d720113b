"""``method="auto"``: candidates chosen by nested cross-validation, intervals, trust scores.

Modules, one job each: :mod:`._params` (:class:`AutoParams`), :mod:`._holdout` (the inner
hold-out and its importance weights), :mod:`._oof` (:func:`out_of_fold`, the candidates'
out-of-fold predictions), :mod:`._features` (pre-measurement features of pairs),
:mod:`._select` (grid / per-pair / stack rules in nested CV), :mod:`._conformal` (intervals
and the error score), :mod:`._trust` (trust score), :mod:`._assess` (all of it for a set of
targets). Heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import attach

if TYPE_CHECKING:
    from ._assess import (
        Assessment,
        Fitted,
        apply_assessment,
        assess,
        auto_method,
        fit_assessment,
        fit_from_oof,
    )
    from ._oof import OOFRecord, candidate_specs, out_of_fold
    from ._params import AutoParams

__all__ = [
    "Assessment",
    "AutoParams",
    "Fitted",
    "OOFRecord",
    "apply_assessment",
    "assess",
    "auto_method",
    "candidate_specs",
    "fit_assessment",
    "fit_from_oof",
    "out_of_fold",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={
        "AutoParams": "_params",
        "Assessment": "_assess",
        "Fitted": "_assess",
        "apply_assessment": "_assess",
        "fit_assessment": "_assess",
        "fit_from_oof": "_assess",
        "assess": "_assess",
        "auto_method": "_assess",
        "OOFRecord": "_oof",
        "candidate_specs": "_oof",
        "out_of_fold": "_oof",
    },
)

"""``auto``: the candidates chosen by nested cross-validation on the grid in the call.

The implementation lives in :mod:`scimpute.tl._auto` (it runs the other methods); this module
registers it so that ``impute``, ``cross_validate`` and the CLI find it by name.
"""

from __future__ import annotations

from .._keys import AUTO_METHOD
from .._utils import RandomState
from ..tl._auto._params import AutoParams
from ._base import GridData, MethodResult
from ._registry import register

__all__ = ["auto"]


@register(
    AUTO_METHOD,
    description="Every applicable method, chosen per grid, per pair or stacked by nested CV.",
    params=AutoParams,
    reference="scimpute (nested CV with a missingness-weighted hold-out; CV+ conformal)",
)
def auto(
    data: GridData, targets, params: AutoParams | None = None, *, random_state: RandomState = 0
) -> MethodResult:
    """Impute ``targets`` with the rule that wins the nested cross-validation.

    See :func:`scimpute.tl._auto.assess` for the steps and :func:`scimpute.tl.impute` for what
    ``method="auto"`` writes. ``per_target`` holds ``error`` and ``trust``; ``info`` the
    ``auto``, ``calibration`` and ``trust_cv`` records.
    """
    from ..tl._auto._assess import auto_method

    return auto_method(data, targets, params, random_state=random_state)

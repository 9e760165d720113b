"""Multi-modal integration: a shared latent space, translation, modality-invariant features.

``normalize`` -> (``link_features``) -> ``integrate`` -> ``translate`` / ``invariant_features``, on a
:class:`~mudata.MuData` whose modalities hold the same (or overlapping) cells. Functions load
on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

if TYPE_CHECKING:
    from ._integrate import integrate
    from ._invariance import invariant_features
    from ._links import link_features
    from ._normalize import normalize
    from ._translate import translate

__all__ = [
    "integrate",
    "invariant_features",
    "link_features",
    "normalize",
    "translate",
]

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={
        "integrate": "_integrate",
        "invariant_features": "_invariance",
        "link_features": "_links",
        "normalize": "_normalize",
        "translate": "_translate",
    },
)

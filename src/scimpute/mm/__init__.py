"""Multi-modal integration: a shared latent space, translation, modality-invariant features.

``normalize`` -> ``integrate`` -> ``translate`` / ``invariant_features``, on a
:class:`~mudata.MuData` whose modalities hold the same (or overlapping) cells.
"""

from ._integrate import integrate
from ._invariance import invariant_features
from ._normalize import normalize
from ._translate import translate

__all__ = ["integrate", "invariant_features", "normalize", "translate"]

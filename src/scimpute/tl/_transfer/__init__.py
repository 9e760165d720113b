"""Cell-level style transfer: train an autoencoder on cells, move cells by latent arithmetic.

Modules, one job each: ``_params`` (the typed parameters of :func:`fit_transfer`),
``_data`` (labels and expression matrix, dense, sparse or backed), ``_fit`` (training and
the record), ``_io`` (reading a stored network back, checked), ``_predict``
(:func:`transfer`), ``_compare`` (:func:`compare_transfer` through pertpy).
"""

from ._compare import PERTPY_HINT, compare_transfer
from ._data import cell_labels
from ._fit import fit_transfer
from ._io import load_network
from ._params import MODEL_DEFAULTS, TransferParams
from ._predict import transfer

#: the name :mod:`scimpute.tl._alignment` imports
_labels = cell_labels

__all__ = [
    "MODEL_DEFAULTS",
    "PERTPY_HINT",
    "TransferParams",
    "cell_labels",
    "compare_transfer",
    "fit_transfer",
    "load_network",
    "transfer",
]

"""Networks and training loops (JAX, equinox, optax) behind the latent-arithmetic methods.

Pure functions on arrays: nothing here knows about AnnData. :mod:`scimpute.tl` wraps them.
"""

from ._config import TrainConfig
from ._loop import (
    FitResult,
    TrainingDivergedError,
    default_optimizer,
    fit,
    n_batches,
    shuffled_batches,
)
from ._models import (
    MLP,
    MODELS,
    NetConfig,
    Network,
    build_network,
    network_from_arrays,
    network_to_arrays,
)
from ._shift import latent_shift, shift_by_context
from ._train import TrainResult, decode, encode, select, train_networks

__all__ = [
    "MLP",
    "MODELS",
    "FitResult",
    "NetConfig",
    "Network",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "build_network",
    "decode",
    "default_optimizer",
    "encode",
    "fit",
    "latent_shift",
    "n_batches",
    "network_from_arrays",
    "network_to_arrays",
    "select",
    "shift_by_context",
    "shuffled_batches",
    "train_networks",
]

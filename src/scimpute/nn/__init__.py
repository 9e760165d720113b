"""Networks and training loops (JAX, equinox, optax) behind the latent-arithmetic methods.

Pure functions on arrays: nothing here knows about AnnData. :mod:`scimpute.tl` wraps them.
"""

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
    "NetConfig",
    "Network",
    "TrainResult",
    "build_network",
    "decode",
    "encode",
    "latent_shift",
    "network_from_arrays",
    "network_to_arrays",
    "select",
    "shift_by_context",
    "train_networks",
]

"""Networks and training loops (JAX, equinox, optax) behind the latent-arithmetic methods.

Pure functions on arrays: nothing here knows about AnnData. :mod:`scimpute.tl` wraps them.
Names load on first use (PEP 562), so JAX is imported only when a network is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

if TYPE_CHECKING:
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

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    attributes={
        "FitResult": "_loop",
        "TrainConfig": "_config",
        "TrainingDivergedError": "_loop",
        "default_optimizer": "_loop",
        "fit": "_loop",
        "n_batches": "_loop",
        "shuffled_batches": "_loop",
        "MLP": "_models",
        "MODELS": "_models",
        "NetConfig": "_models",
        "Network": "_models",
        "TrainResult": "_train",
        "build_network": "_models",
        "decode": "_train",
        "encode": "_train",
        "latent_shift": "_shift",
        "network_from_arrays": "_models",
        "network_to_arrays": "_models",
        "select": "_train",
        "shift_by_context": "_shift",
        "train_networks": "_train",
    },
)

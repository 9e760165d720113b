"""The training block and the network block, declared once and shared by every trainer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from .._params import Params, param

P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class TrainConfig(Params):
    """Settings of mini-batch training with early stopping (one spec for every trainer).

    Specs of methods that train a network inherit from this class, so that the training
    parameters are declared once; :meth:`TrainConfig.pick` extracts the block from them.
    """

    batch_size: int = param(128, ge=1, doc="Rows per optimisation step.")
    max_epochs: int = param(100, ge=1, doc="Most passes over the training rows.")
    patience: int = param(
        10, ge=1, doc="Epochs without improvement of the validation loss before stopping."
    )
    learning_rate: float = param(1e-3, gt=0.0, doc="Adam step size.")
    weight_decay: float = param(0.0, ge=0.0, doc="Decoupled weight decay (AdamW) when > 0.")
    validation_fraction: float = param(
        0.1, ge=0.0, lt=1.0, doc="Share of training rows held out for early stopping."
    )


@dataclass(frozen=True)
class NetBlock(Params):
    """Architecture of an autoencoder or VAE (see :class:`scimpute.nn.NetConfig`)."""

    width: int = param(256, ge=1, doc="Units of every hidden layer.")
    depth: int = param(1, ge=1, doc="Hidden layers of the encoder (the decoder mirrors it).")
    latent_dim: int | None = param(
        None, ge=1, doc="Latent dimension; None: the last hidden layer (autoencoder only)."
    )
    dropout: float = param(0.0, ge=0.0, lt=1.0, doc="Dropout rate after each hidden layer.")


@dataclass(frozen=True)
class KLBlock(Params):
    """The KL weight of a VAE's loss."""

    kl_weight: float = param(5e-5, ge=0.0, doc="Weight of the KL term (scGen: 5e-5).")


def with_defaults(cls: type[P], name: str | None = None, **defaults: Any) -> type[P]:
    """A subclass of the spec ``cls`` whose named parameters have other defaults.

    Types, constraints and docs are those of ``cls``: a block is declared once and reused
    with the defaults a method needs (e.g. a longer training for small grids).

    Examples
    --------
    >>> Long = with_defaults(TrainConfig, max_epochs=300)
    >>> Long().max_epochs, issubclass(Long, TrainConfig)
    (300, True)

    """
    own = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - set(own))
    if unknown:
        raise TypeError(f"{cls.__name__} has no parameter(s) {unknown}.")
    for k, v in defaults.items():  # the new defaults obey the block's constraints
        cls.check_value(cls.__name__, k, v)
    fields = [
        (k, own[k].type, dataclasses.field(default=v, metadata=own[k].metadata))
        for k, v in defaults.items()
    ]
    sub = dataclasses.make_dataclass(
        name or cls.__name__, fields, bases=(cls,), frozen=True, namespace={"__doc__": cls.__doc__}
    )
    sub.__module__ = cls.__module__
    return sub

"""The training block, declared once and shared by every network scimpute trains."""

from __future__ import annotations

from dataclasses import dataclass

from .._params import Params, param


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

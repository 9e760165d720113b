"""Typed parameters of the grid autoencoders: declared once, shared by both methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..._params import ParamError, param
from ...nn._config import KLBlock, NetBlock, TrainConfig, with_defaults

#: the training block with the defaults of small grids (few hundred profiles)
GridTraining = with_defaults(
    TrainConfig, "GridTraining", batch_size=64, max_epochs=300, patience=20
)


@dataclass(frozen=True)
class AutoencoderParams(GridTraining, NetBlock):
    """Parameters of ``"autoencoder"``: architecture, training, grid arithmetic.

    The architecture (:class:`~scimpute.nn._config.NetBlock`) and the training block
    (:class:`~scimpute.nn.TrainConfig`, longer by default) are inherited, not repeated.
    """

    owner = "autoencoder"

    transform: Literal["none", "log1p"] = param(
        "none", doc="'log1p' trains on log(1 + y) and maps predictions back."
    )
    standardize: bool = param(True, doc="Scale each feature to zero mean and unit variance.")
    output: Literal["decoded", "residual"] = param(
        "decoded", doc="'residual': measured baseline plus the decoded change."
    )
    baseline: Literal["auto", "control", "context_mean"] = param(
        "auto", doc="What shifts are measured from ('auto': the control when there is one)."
    )
    n_groups: int = param(
        20, ge=1, doc="Networks trained by the grouped leave-one-out of cross-validation."
    )
    progress: bool = param(False, doc="Show a progress bar over epochs.")


@dataclass(frozen=True)
class VAEParams(
    with_defaults(AutoencoderParams, "VAEBase", depth=2, latent_dim=16, dropout=0.2), KLBlock
):
    """Parameters of ``"vae"``: those of ``"autoencoder"`` (deeper, with dropout) and the KL weight."""

    owner = "vae"

    def validate(self, owner: str) -> None:
        """The VAE needs an integer latent dimension."""
        if self.latent_dim is None:
            raise ParamError(f"{owner}: latent_dim must be an integer >= 1, got None.")

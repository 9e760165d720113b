"""The parameters of :func:`scimpute.tl.fit_transfer`, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..._params import ParamError, check_choice, param
from ...nn._config import KLBlock, NetBlock, TrainConfig, with_defaults

OWNER = "fit_transfer"
MODELS = ("autoencoder", "vae")
#: largest share of cells held out for early stopping
MAX_VALIDATION_FRACTION = 0.5


@dataclass(frozen=True)
class TransferParams(TrainConfig, NetBlock, KLBlock):
    """Parameters of :func:`~scimpute.tl.fit_transfer`: network, training, input.

    The architecture (:class:`~scimpute.nn._config.NetBlock` and the KL weight) and the
    training block (:class:`~scimpute.nn.TrainConfig`) are inherited; each model has its
    own architecture defaults (:data:`MODEL_DEFAULTS`, chosen on the Kang benchmark).
    """

    owner = OWNER

    model: Literal["autoencoder", "vae"] = param(
        "autoencoder", doc="'autoencoder' (deterministic) or 'vae' (scGen's)."
    )
    layer: str | None = param(None, doc="Layer to train on instead of X.")
    standardize: bool = param(
        False, doc="Scale every gene to unit variance (training cells) first."
    )
    progress: bool = param(True, doc="Progress bar over epochs.")
    rule: Literal["auto", "shift", "transport", "kernel"] = param(
        "auto",
        doc="Transfer rule in the latent space: 'shift' (one constant shift), 'transport' (a "
        "shift linear in the control cell's position, ridge regression of OT displacements), "
        "'kernel' (each control cell moved like its nearest cells of the other contexts, "
        "kernel regression of OT displacements) or 'auto' (chosen by the inner "
        "leave-one-context-out).",
    )
    n_pcs: int | None = param(
        100,
        ge=1,
        doc="Train on this many principal components of the training cells (the change is "
        "mapped back to the genes); None: on the genes themselves.",
    )
    inner_folds: int = param(
        3,
        ge=0,
        doc="(context, perturbation) pairs of the training cells held out in turn to choose "
        "the architecture and the rule; 0: no validation (defaults, the constant shift).",
    )
    n_candidates: int = param(
        4, ge=1, doc="Architectures tried (seeded random search over SEARCH_GRID)."
    )
    representation: Literal["auto", "autoencoder", "pca"] = param(
        "auto",
        doc="Space the rule moves cells in: 'autoencoder' (the latent codes of the trained "
        "network, `model`), 'pca' (the principal components of the cells, no network; each "
        "inner fold fits its own PCA without the hidden cells) or 'auto' (both, chosen by the "
        "inner leave-one-context-out; the autoencoder without validation).",
    )
    n_comps: int | None = param(
        None,
        ge=1,
        doc="Components of the 'pca' representation; None: each of PCA_COMPS tried by the "
        "inner validation (DEFAULT_COMPS without validation).",
    )

    def validate(self, owner: str) -> None:
        """Cell-level checks: a validation share below one half, an integer VAE latent."""
        if self.validation_fraction >= MAX_VALIDATION_FRACTION:
            raise ParamError(
                f"{owner}: validation_fraction must be a number >= 0 and < "
                f"{MAX_VALIDATION_FRACTION:g}, got {self.validation_fraction!r}."
            )
        if self.model == "vae" and self.latent_dim is None:
            raise ParamError(f"{owner}: latent_dim must be an integer >= 1 for the vae, got None.")


#: the architectures searched (the product, minus the dimensions passed explicitly)
SEARCH_GRID: dict[str, tuple[int, ...]] = {
    "width": (128, 512),
    "depth": (1, 2),
    "latent_dim": (16, 64),
}
#: ridge strengths of the transport rule tried by validation (inf: the constant shift)
TRANSPORT_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0)
#: bandwidths of the kernel rule tried by validation (relative to the median squared distance
#: between the target's control codes and the other contexts' control codes)
KERNEL_BANDWIDTHS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

#: components of the PCA representation tried by validation (n_comps=None)
PCA_COMPS: tuple[int, ...] = (20, 50, 100)
#: components of the PCA representation without validation (inner_folds=0): scanpy's default
DEFAULT_COMPS = 50

#: per-model architecture defaults of fit_transfer (used when inner_folds=0)
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "autoencoder": {"width": 256, "depth": 2, "latent_dim": 64, "dropout": 0.2},
    "vae": {"width": 256, "depth": 2, "latent_dim": 32, "dropout": 0.2},
}
SPECS: dict[str, type[TransferParams]] = {
    m: with_defaults(TransferParams, f"TransferParams_{m}", model=m, **d)
    for m, d in MODEL_DEFAULTS.items()
}


def transfer_params(kwargs: Mapping[str, Any]) -> TransferParams:
    """Check the keyword arguments of :func:`~scimpute.tl.fit_transfer` (house messages)."""
    model = check_choice(OWNER, "model", kwargs.get("model", "autoencoder"), MODELS)
    return SPECS[model].from_kwargs(OWNER, kwargs)

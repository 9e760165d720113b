"""Typed options of :mod:`scimpute.mm`: every option is declared (and checked) here, once.

:class:`IntegrateParams` is composed by inheritance of the training block
(:class:`scimpute.nn.TrainConfig`), the network block (:class:`NetworkParams`) and the loss
block (:class:`LossParams`). The public functions take these options as keyword arguments,
build the spec with :meth:`~scimpute._params.Params.from_kwargs` (one message format, unknown
names rejected) and pass the typed object down; nothing below re-checks a value.
"""

from __future__ import annotations

import numbers
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._params import ParamError, Params, param
from ..nn._config import TrainConfig, with_defaults

__all__ = [
    "IntegrateParams",
    "InvariantParams",
    "LossParams",
    "NetworkParams",
    "NormalizeParams",
    "document_params",
]

#: names of the owners in messages ("<owner>: <param> must be ..., got ...").
INTEGRATE = "mm.integrate"
INVARIANT = "mm.invariant_features"
NORMALIZE = "mm.normalize"
TRANSLATE = "mm.translate"


#: the training block with the defaults of the cross-modal autoencoder
MMTraining = with_defaults(
    TrainConfig,
    "MMTraining",
    max_epochs=200,
    patience=20,
    learning_rate=3e-4,
    weight_decay=1e-4,
    validation_fraction=0.2,
)

#: backbones of :func:`scimpute.mm.integrate`, from simplest to most complex.
BACKBONES = ("linear", "guided", "autoencoder")
#: capacity grid of the linear backbone: PCA dimensions, ranks, ridges.
LINEAR_PCS = (10, 20, 30, 50)
LINEAR_RANKS = (2, 3, 5, 8, 12, 16)
LINEAR_RIDGES = (0.05, 0.2, 0.5, 0.8)


@dataclass(frozen=True)
class NetworkParams(Params):
    """Network block of :func:`scimpute.mm.integrate`: sizes and input transformation."""

    backbone: Literal["auto", "linear", "guided", "autoencoder"] = param(
        "auto",
        doc="'linear': regularised CCA on per-modality PCA (closed form; PCA dimensions, "
        "rank and ridge chosen by cross-validation within the anchors); 'autoencoder': the "
        "cross-modal autoencoder; 'guided': the autoencoder with n_latent = the linear rank, "
        "its shared latent pulled towards the linear solution (guide_weight); 'auto': all "
        "three are fitted on the anchors and scored by FOSCTTM on the validation pairs, and "
        "the simplest one not shown worse than the best (paired one-standard-error rule) is "
        "kept; a network is only trained in full when network_floor and the screen "
        "(screen_cells) leave it a chance. Without anchors only the autoencoder applies.",
    )
    n_folds: int = param(
        5, ge=2, doc="Folds of the cross-validation of the linear backbone's capacity."
    )
    network_floor: float = param(
        0.005,
        ge=0.0,
        le=0.5,
        doc="backbone 'auto': when the linear candidate's validation FOSCTTM is at most this, "
        "the networks are not trained (the most they could gain is that score); the reason "
        "is recorded under uns[key_added]['network_screen']. 0: never skip.",
    )
    screen_cells: int = param(
        2000,
        ge=10,
        doc="backbone 'auto' with more training cells than this in some modality: each "
        "network is first trained briefly on a random screen_cells of them and scored "
        "against the linear backbone refitted on the same anchors; it is trained in full "
        "only when its screen FOSCTTM is at most (1 + screen_margin) times linear's.",
    )
    screen_margin: float = param(
        0.25,
        ge=0.0,
        doc="Allowance of the screen (screen_cells): a network is trained in full when its "
        "screen FOSCTTM is at most (1 + screen_margin) x the linear backbone's on the same "
        "cells (the short screen understates a network).",
    )
    n_latent: int = param(8, ge=1, doc="Dimension of the shared latent space.")
    n_private: int | None = param(
        None,
        ge=0,
        doc="Dimension of each modality's private latent (variation the other modalities do "
        "not share). None: 4 with anchors, 0 without (without anchors nothing tells shared "
        "from private variation, so all of it must go through the aligned space).",
    )
    n_pcs: int | Literal["auto"] | None = param(
        "auto",
        ge=1,
        doc="The encoder of a modality with more than n_pcs features reads the top n_pcs "
        "principal components of its standardised features (computed on the training cells) "
        "instead of the features: fewer weights, less noise, far less memorisation of the "
        "anchors on small data sets; the decoders always output every feature. 'auto': one "
        "component per 10 training cells, between 10 and 50; None: the encoders read the "
        "features.",
    )
    n_hidden: int = param(64, ge=1, doc="Width of the hidden layers of every encoder/decoder.")
    n_layers: int = param(1, ge=1, doc="Number of hidden layers of every encoder and decoder.")
    dropout: float = param(0.3, ge=0.0, lt=1.0, doc="Input dropout rate of the encoders.")
    standardize: Literal["feature", "global"] = param(
        "global",
        doc="'feature': scale every feature to unit variance; 'global': centre every feature "
        "and divide the modality by one common scale (keeps the relative variances of the "
        "features, so that rare, noisy features do not weigh as much as abundant ones).",
    )


@dataclass(frozen=True)
class LossParams(Params):
    """Loss block of :func:`scimpute.mm.integrate` (the reconstruction has weight 1)."""

    alignment: Literal["mmd", "adversarial", "none"] = param(
        "mmd",
        doc="'mmd': multi-scale Gaussian-kernel maximum mean discrepancy between the shared "
        "latents of each pair of modalities; 'adversarial': a discriminator learns to tell "
        "the modality from the shared latent and the encoders are trained to confuse it; "
        "'none': anchors only.",
    )
    anchor_weight: float = param(3.0, ge=0.0, doc="Weight of the anchor loss.")
    cross_weight: float = param(1.0, ge=0.0, doc="Weight of the cross-reconstruction.")
    alignment_weight: float = param(1.0, ge=0.0, doc="Weight of the alignment term.")
    scale_weight: float = param(10.0, ge=0.0, doc="Weight of the latent scale penalty.")
    guide_weight: float = param(
        1.0,
        ge=0.0,
        doc="Weight of the pull of the shared latent towards the linear solution "
        "(backbone 'guided': mean squared distance per dimension, every training cell).",
    )
    temperature: float = param(
        2.0,
        gt=0.0,
        doc="Temperature of the contrastive part of the anchor loss (logits: minus the "
        "squared distance of two shared latents, divided by temperature * n_latent).",
    )

    def weights(self) -> tuple[float, float, float, float, float]:
        """``(anchor, cross, alignment, scale, guide)`` weights, in the loss's order."""
        return (
            self.anchor_weight,
            self.cross_weight,
            self.alignment_weight,
            self.scale_weight,
            self.guide_weight,
        )


@dataclass(frozen=True)
class IntegrateParams(LossParams, NetworkParams, MMTraining):
    """Options of :func:`scimpute.mm.integrate`: training, network and loss blocks.

    The training block is :class:`scimpute.nn.TrainConfig` with defaults suited to the
    cross-modal autoencoder; ``batch_size`` must be at least 2 here (a batch of one cell has
    no variance for the scale penalty and no pairs for the MMD). ``validation_fraction`` is
    the fraction of the known pairs (the cells ``pairing`` selects) held out of training
    entirely; without anchors, a fraction of all cells. An epoch draws
    ``ceil(max_m n_m / batch_size)`` batches of every modality and of the anchors; AdamW's
    gradients are clipped to global norm 5.
    """

    owner = INTEGRATE

    early_stopping: bool = param(
        True,
        doc="Stop when the validation loss has not improved for patience epochs and keep the "
        "weights of the best epoch (needs validation cells in every modality).",
    )

    def validate(self, owner: str) -> None:
        """A batch of one cell has no variance (scale penalty) and no pairs (MMD)."""
        if self.batch_size < 2:
            raise ParamError(f"{owner}: batch_size must be an integer >= 2, got {self.batch_size}.")


def _per_modality(
    inner: Callable[[Any], str | None],
) -> Callable[[Any], str | None]:
    """A ``check=`` that applies ``inner`` to a value or to every value of a mapping."""

    def check(value: Any) -> str | None:
        values = value.values() if isinstance(value, Mapping) else [value]
        for v in values:
            msg = inner(v)
            if msg:
                return msg
        return None

    return check


#: normalisation methods of :func:`scimpute.mm.normalize`.
NORMALIZE_METHODS = ("auto", "log1p", "clr", "none")


def _method_ok(v: Any) -> str | None:
    if isinstance(v, str) and v in NORMALIZE_METHODS:
        return None
    return "must be one of " + ", ".join(map(repr, NORMALIZE_METHODS)) + " (or a mapping of them)"


def _n_top_ok(v: Any) -> str | None:
    if v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1):
        return None
    return "must be an integer >= 1 or None (or a mapping modality -> such a value)"


@dataclass(frozen=True)
class NormalizeParams(Params):
    """Options of :func:`scimpute.mm.normalize`."""

    owner = NORMALIZE

    methods: str | Mapping[str, str] = param(
        "auto",
        check=_per_modality(_method_ok),
        doc="One method for all modalities, or a mapping modality -> method (missing: "
        "'auto'): 'log1p', 'clr', 'none' or 'auto'.",
    )
    target_sum: float = param(1e4, gt=0.0, doc="Library size after normalisation ('log1p').")
    n_top_features: int | Mapping[str, int | None] | None = param(
        None,
        check=_per_modality(_n_top_ok),
        doc="Number of features to select, for all modalities or per modality (None: all).",
    )


#: evaluation cells of :func:`scimpute.mm.invariant_features` named by a string.
EVAL_CELLS = ("heldout", "validation", "all")


@dataclass(frozen=True)
class InvariantParams(Params):
    """Options of :func:`scimpute.mm.invariant_features`."""

    owner = INVARIANT

    r2_floor: float = param(
        0.1, gt=0.0, le=1.0, doc="Lower bound of the denominator of the feature score."
    )
    n_bootstrap: int = param(
        200,
        ge=0,
        doc="Bootstrap resamples of the cells for the 95% intervals of the feature scores and "
        "of the per-dimension concordance (0 skips the intervals).",
    )
    n_permutations: int = param(
        200,
        ge=0,
        doc="Permutations of the cells for the p-values of the feature scores and of the "
        "per-dimension concordance (0 skips the p-values).",
    )
    n_folds: int = param(
        5,
        ge=2,
        doc="Folds of the cross-fitting of the ridge maps from the embeddings to the features "
        "(every prediction is for a cell the map was not fitted on).",
    )


def document_params(spec: type[Params]) -> Callable[[Callable], Callable]:
    """Fill the ``{params}`` slot of a docstring with the options of ``spec``.

    Each option is listed once, from its declaration (type, default, range, description), in
    numpydoc's "Other Parameters" style, so that ``help()`` and the API docs show what
    ``**params`` accepts.
    """

    def decorate(fn: Callable) -> Callable:
        lines = []
        for row in spec.describe():
            extra = f", {row['constraint']}" if row["constraint"] else ""
            lines.append(f"    {row['name']} : {row['type']}{extra}, default {row['default']!r}")
            lines += textwrap.wrap(
                row["doc"], 92, initial_indent=" " * 8, subsequent_indent=" " * 8
            )
        if fn.__doc__:
            fn.__doc__ = fn.__doc__.replace("    {params}\n", "\n".join(lines) + "\n")
        return fn

    return decorate

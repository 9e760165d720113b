"""Every key name scimpute reads or writes, in one place.

Modules import these constants instead of spelling strings, so that a rename is one edit and
documentation can point here. The pattern follows squidpy's ``Key`` class.
"""

from __future__ import annotations

from typing import Final


class Key:
    """Names of the fields scimpute writes into AnnData / MuData objects."""

    class obs:
        """Columns of ``grid.obs``."""

        n_cells: Final = "n_cells"
        measured: Final = "measured"

        @staticmethod
        def source(key: str) -> str:
            """Column naming which estimator produced each row of ``layers[key]``."""
            return f"{key}_source"

        @staticmethod
        def diagnostic(key: str, name: str) -> str:
            """Column holding a per-pair diagnostic of an imputation run."""
            return f"{key}_{name}"

    class layers:
        """Layers of the grid."""

        @staticmethod
        def effect(key: str) -> str:
            """Layer holding completed profiles minus the context's control profile."""
            return f"{key}_effect"

    class uns:
        """Entries of ``.uns``."""

        grid: Final = "perturbation_grid"
        cross_validation: Final = "cross_validation"

        @staticmethod
        def imputed(method: str) -> str:
            """Default ``key_added`` of :func:`scimpute.tl.impute`."""
            return f"imputed_{method}"


#: value of ``obs[Key.obs.source(key)]`` for rows that were measured.
SOURCE_MEASURED: Final = "measured"
#: value of ``obs[Key.obs.source(key)]`` for unmeasured control rows.
SOURCE_CONTROL_FILL: Final = "control_mean"
#: environment variable naming the directory of the real datasets.
DATA_DIR_ENV: Final = "SCIMPUTE_DATA_DIR"
#: separator of combination labels ("A+B"), pertpy's convention.
COMBINATION_SEP: Final = "+"
#: separator between a perturbation and its dose in grid labels ("drug@1.5").
DOSE_SEP: Final = "@"
#: default ``key_added`` of :func:`scimpute.tl.fit_transfer` (``obsm["X_transfer"]``, ``uns["transfer"]``).
TRANSFER_KEY: Final = "transfer"
#: obs column of :func:`scimpute.tl.transfer` output marking cells as predicted.
PREDICTED_COL: Final = "predicted"
#: obs column of :func:`scimpute.tl.transfer` output naming the control cell each was moved from.
SOURCE_CELL_COL: Final = "source_cell"
#: default ``key_added`` of :func:`scimpute.tl.signature_alignment`.
ALIGNMENT_KEY: Final = "signature_alignment"
#: default ``key_added`` of :func:`scimpute.mm.integrate` (``.obsm`` and ``.uns`` key).
MM_KEY: Final = "X_scimpute"
#: default ``key_added`` of :func:`scimpute.mm.invariant_features`.
MM_INVARIANCE_KEY: Final = "invariance"
#: default layer written by :func:`scimpute.mm.normalize`.
MM_NORM_LAYER: Final = "scimpute_norm"
#: default boolean ``.var`` column written by :func:`scimpute.mm.normalize`.
MM_FEATURES: Final = "scimpute_features"
#: suffix of the ``mdata.obs`` column naming each cell's role in training.
MM_SPLIT_SUFFIX: Final = "_split"
#: suffix of the per-modality ``.obsm`` entry holding the private latent.
MM_PRIVATE_SUFFIX: Final = "_private"
#: ``.uns[key]`` entry of synthetic interventions: donor weights (imputed pairs x donors).
SI_DONOR_WEIGHTS: Final = "donor_weights"
#: ``.uns[key]`` entry of synthetic interventions: training units (imputed pairs x units).
SI_TRAIN_UNITS: Final = "train_units"
#: default ``key_added`` of ``impute(..., method="synthetic_interventions")``.
SI_DEFAULT_KEY: Final = "imputed_synthetic_interventions"
#: ``.uns`` entry of the AnnData returned by :func:`scimpute.mm.translate` (source, target, key).
MM_TRANSLATE_KEY: Final = "translate"
#: ``mdata.uns[key]`` entry of :func:`scimpute.mm.invariant_features`: the per-dimension table.
MM_LATENT_TABLE: Final = "latent"
#: suffix of the ``.var`` column of :func:`scimpute.mm.invariant_features` with R^2 of the
#: modality's own reconstruction.
MM_R2_SELF_SUFFIX: Final = "_r2_self"
#: suffix of the ``.var`` column of :func:`scimpute.mm.invariant_features` with the best R^2
#: of the prediction from another modality.
MM_R2_CROSS_SUFFIX: Final = "_r2_cross"

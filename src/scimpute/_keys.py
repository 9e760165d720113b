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
        def error(key: str) -> str:
            """Predicted normalised error of each imputed pair (``interval=`` / ``auto``)."""
            return f"{key}_{ERROR}"

        @staticmethod
        def trust(key: str) -> str:
            """Estimated probability that the pair's prediction beats the best baseline."""
            return f"{key}_{TRUST}"

        @staticmethod
        def diagnostic(key: str, name: str) -> str:
            """Column holding a per-pair diagnostic of an imputation run."""
            return f"{key}_{name}"

        @staticmethod
        def rank(key: str) -> str:
            """Column of :func:`scimpute.tl.rank_experiments`: 1 = measure first, -1 = measured."""
            return f"{key}_rank"

        @staticmethod
        def gain(key: str) -> str:
            """Column of :func:`scimpute.tl.rank_experiments`: expected error removed elsewhere."""
            return f"{key}_gain"

    class var:
        """Columns of ``.var``."""

        @staticmethod
        def r2_self(key: str) -> str:
            """R2 of a feature reconstructed from its own modality (``mm.invariant_features``)."""
            return f"{key}_r2_self"

        @staticmethod
        def r2_cross(key: str) -> str:
            """R2 of a feature predicted from the other modalities (``mm.invariant_features``)."""
            return f"{key}_r2_cross"

        @staticmethod
        def ci_low(key: str) -> str:
            """Lower end of a score's 95% bootstrap interval (``mm.invariant_features``)."""
            return f"{key}_ci_low"

        @staticmethod
        def ci_high(key: str) -> str:
            """Upper end of a score's 95% bootstrap interval (``mm.invariant_features``)."""
            return f"{key}_ci_high"

        @staticmethod
        def pvalue(key: str) -> str:
            """Permutation p-value of a score (``mm.invariant_features``)."""
            return f"{key}_pvalue"

    class layers:
        """Layers of the grid."""

        #: noise-free profiles of every pair of a simulated grid.
        truth: Final = "truth"
        #: noisy profiles of every pair of a simulated grid (``keep_noisy=True``).
        noisy: Final = "noisy"

        @staticmethod
        def effect(key: str) -> str:
            """Layer holding completed profiles minus the context's control profile."""
            return f"{key}_effect"

        @staticmethod
        def lower(key: str) -> str:
            """Lower bound of the conformal interval of each imputed feature value."""
            return f"{key}_lower"

        @staticmethod
        def upper(key: str) -> str:
            """Upper bound of the conformal interval of each imputed feature value."""
            return f"{key}_upper"

    class uns:
        """Entries of ``.uns``."""

        grid: Final = "perturbation_grid"
        cross_validation: Final = "cross_validation"
        #: parameters and factors of a simulator.
        simulation: Final = "simulation"
        #: entry of a record that holds a table (cross-validation, signature alignment).
        scores: Final = "scores"
        #: entry of ``uns[key]`` of ``mm.invariant_features``: per-dimension concordance.
        invariance_latent: Final = "latent"
        #: default ``key_added`` of :func:`scimpute.tl.inpaint` (``layers`` and ``uns``).
        inpaint: Final = "inpaint"

        @staticmethod
        def imputed(method: str) -> str:
            """Default ``key_added`` of :func:`scimpute.tl.impute`."""
            return f"imputed_{method}"

    class table:
        """Columns of the per-pair tables of :func:`scimpute.tl.cross_validate`."""

        method: Final = "method"
        context: Final = "context"
        perturbation: Final = "perturbation"
        fold: Final = "fold"
        source: Final = "source"


#: value of ``obs[Key.obs.source(key)]`` for rows that were measured.
SOURCE_MEASURED: Final = "measured"
#: value of ``obs[Key.obs.source(key)]`` for unmeasured control rows.
SOURCE_CONTROL_FILL: Final = "control_mean"
#: default ``key_added`` of :func:`scimpute.tl.rank_experiments`.
RANK_KEY: Final = "acquisition"
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
#: ``.uns[key]`` entries of synthetic interventions (besides donor weights and training units).
SI_DONOR_LABELS: Final = "donor_labels"
SI_UNIT_LABELS: Final = "unit_labels"
SI_DONOR_INTERCEPTS: Final = "donor_intercepts"
SI_DONOR_AXIS: Final = "donor_axis"
SI_TARGET_CONTEXTS: Final = "target_contexts"
SI_TARGET_PERTURBATIONS: Final = "target_perturbations"
SI_FALLBACK_REASONS: Final = "fallback_reasons"
SI_REGULARISATIONS: Final = "regularisations"
SI_SUBSPACE_THRESHOLD: Final = "subspace_threshold"
SI_N_GROUPS: Final = "n_groups"
#: ``.uns[key]`` entry of synthetic interventions: groups solved in the dual / primal.
SI_SOLVERS: Final = "solvers"
SI_SETTINGS: Final = "settings"
SI_CONTEXT_DONOR_WEIGHTS: Final = "context_donor_weights"
SI_CONTEXT_DONOR_INTERCEPTS: Final = "context_donor_intercepts"
SI_ACTION_FALLBACK_REASONS: Final = "action_fallback_reasons"
SI_CONTEXT_FALLBACK_REASONS: Final = "context_fallback_reasons"
#: per-pair diagnostics of synthetic interventions (``obs[Key.obs.diagnostic(key, name)]``).
SI_N_DONORS: Final = "n_donors"
SI_N_TRAIN: Final = "n_train"
SI_R2_TRAIN: Final = "r2_train"
SI_R2_HELDOUT: Final = "r2_heldout"
SI_VALIDATION_MSE: Final = "validation_mse"
SI_CONTEXT_MEAN_VALIDATION_MSE: Final = "context_mean_validation_mse"
SI_RIDGE: Final = "ridge"
SI_SUBSPACE_STAT: Final = "subspace_stat"
SI_SUBSPACE_PASS: Final = "subspace_pass"
SI_ACTION_SHARE: Final = "action_share"
SI_DIAGNOSTICS: Final = (
    SI_N_DONORS,
    SI_N_TRAIN,
    SI_R2_TRAIN,
    SI_R2_HELDOUT,
    SI_VALIDATION_MSE,
    SI_CONTEXT_MEAN_VALIDATION_MSE,
    SI_RIDGE,
    SI_SUBSPACE_STAT,
    SI_SUBSPACE_PASS,
)
#: ``.uns`` entry of the AnnData returned by :func:`scimpute.mm.translate` (source, target, key).
MM_TRANSLATE_KEY: Final = "translate"
#: per-pair outputs of ``interval=`` / ``method="auto"`` (``obs[f"{key}_{name}"]``).
ERROR: Final = "error"
TRUST: Final = "trust"
#: ``.uns[key]`` entries of ``method="auto"`` and ``interval=``.
AUTO_RECORD: Final = "auto"
CALIBRATION: Final = "calibration"
TRUST_CV: Final = "trust_cv"
INTERVAL: Final = "interval"
#: name of the auto method and of a stacked prediction in ``obs[f"{key}_source"]``.
AUTO_METHOD: Final = "auto"
SOURCE_STACK: Final = "stack"

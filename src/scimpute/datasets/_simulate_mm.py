"""Seeded simulator of multi-modal single-cell data with known shared and private factors."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import Key
from .._params import ParamError, Params, check_random_state_value, param
from .._utils import RandomState, check_random_state

if TYPE_CHECKING:
    from mudata import MuData


@dataclass(frozen=True)
class SimulateMultimodalParams(Params):
    """Parameters of :func:`simulate_multimodal`, declared and checked once."""

    owner = "datasets.simulate_multimodal"

    n_cells: int = param(600, ge=2, doc="number of distinct cells")
    n_features: tuple[int, ...] = param((120, 80), ge=1, doc="features of each modality")
    modalities: tuple[str, ...] = param(("m0", "m1"), doc="names of the modalities")
    n_shared: int = param(3, ge=1, doc="shared factors")
    n_private: int = param(2, ge=1, doc="private factors per modality")
    n_labels: int = param(4, ge=1, doc="mixture components of the shared factors")
    shared_strength: float = param(1.0, ge=0, doc="scale of the shared signal")
    private_strength: float = param(1.0, ge=0, doc="scale of the private signal")
    shortcut_strength: float = param(2.0, ge=0, doc="scale of the shortcut signal")
    fraction_shared_features: float = param(0.5, gt=0, lt=1, doc="shared features")
    fraction_shortcut_features: float = param(0.25, ge=0, le=1, doc="shortcut features")
    noise: float = param(0.3, ge=0, doc="measurement noise")
    fraction_paired: float = param(1.0, ge=0, le=1, doc="cells measured in every modality")
    nonlinear: bool = param(True, doc="monotone nonlinearity")

    def validate(self, owner: str) -> None:
        """Checks across parameters: one feature count per (unique) modality."""
        if len(self.modalities) != len(self.n_features) or len(self.modalities) < 2:
            raise ParamError(
                f"{owner}: modalities and n_features must have the same length >= 2, got "
                f"{len(self.modalities)} and {len(self.n_features)}."
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ParamError(f"{owner}: modalities must be unique, got {list(self.modalities)}.")


def simulate_multimodal(
    n_cells: int = 600,
    n_features: Sequence[int] = (120, 80),
    *,
    modalities: Sequence[str] = ("m0", "m1"),
    n_shared: int = 3,
    n_private: int = 2,
    n_labels: int = 4,
    shared_strength: float = 1.0,
    private_strength: float = 1.0,
    shortcut_strength: float = 2.0,
    fraction_shared_features: float = 0.5,
    fraction_shortcut_features: float = 0.25,
    noise: float = 0.3,
    fraction_paired: float = 1.0,
    nonlinear: bool = True,
    random_state: RandomState = 0,
) -> MuData:
    """Simulate cells measured in several modalities from shared and private latent factors.

    Every cell ``i`` has

    - shared factors ``s_i`` in R^n_shared, drawn from a mixture of ``n_labels`` Gaussians
      (``obs["label"]`` is the component; centres ``N(0, 1.5^2)``, spread 0.6), common to all
      modalities;
    - private factors ``q_i^(m)`` in R^n_private per modality, independent ``N(0, 1)``;
    - a *shortcut* factor ``t_i ~ N(0, 1)`` that exists in the first modality only and is
      strong (``shortcut_strength``): a per-modality PCA of that modality picks it first,
      but it carries no information about the other modalities.

    Features are of one kind each (``var["kind"]``): ``"shared"`` features load only on the
    shared factors, ``"private"`` features only on the modality's private factors and
    (first modality only) ``"shortcut"`` features only on the shortcut factor. The signal
    of feature ``f`` is ``a_f = strength * (factors @ w_f)`` with ``w_f ~ N(0, 1 / k)``
    (``k`` the number of factors it loads on); the measured value is
    ``g(a_f) + noise * N(0, 1)`` with ``g(a) = a + 0.5 tanh(2a)`` when ``nonlinear`` else
    ``g(a) = a``.

    Parameters
    ----------
    n_cells
        Number of distinct cells.
    n_features
        Number of features of each modality.
    modalities
        Names of the modalities (as many as ``n_features``).
    n_shared, n_private
        Numbers of shared factors and of private factors per modality.
    n_labels
        Number of mixture components of the shared factors (cell labels).
    shared_strength, private_strength, shortcut_strength
        Scales of the three kinds of signal. ``shared_strength=0`` gives modalities that
        share nothing.
    fraction_shared_features
        Fraction of each modality's features that are shared.
    fraction_shortcut_features
        Fraction of the first modality's features driven by the shortcut factor (taken from
        its non-shared features); 0 or ``shortcut_strength=0`` disables the shortcut.
    noise
        Standard deviation of the measurement noise.
    fraction_paired
        Fraction of cells measured in every modality; the other cells are each measured in
        one modality only (assigned in turn), so paired cells share obs names and unpaired
        ones do not.
    nonlinear
        Apply the monotone nonlinearity ``g`` above.
    random_state
        Seed or generator.

    Returns
    -------
    A :class:`~mudata.MuData` with one modality per name (dense float32 ``X``).
    ``mdata.obs["label"]`` and each ``mdata[m].obs["label"]`` hold the component,
    ``mdata.obsm["shared_factors"]`` the shared factors of every cell,
    ``mdata[m].obsm["private_factors"]`` the private factors of that modality's cells,
    ``mdata[m0].obs["shortcut"]`` the shortcut factor, ``mdata[m].var["kind"]`` the kind
    of each feature, and ``mdata.uns["simulation"]`` the parameters and the loadings.

    """
    import mudata as md

    spec = SimulateMultimodalParams.from_kwargs(
        SimulateMultimodalParams.owner,
        {
            "n_cells": n_cells,
            "n_features": n_features,
            "modalities": modalities,
            "n_shared": n_shared,
            "n_private": n_private,
            "n_labels": n_labels,
            "shared_strength": shared_strength,
            "private_strength": private_strength,
            "shortcut_strength": shortcut_strength,
            "fraction_shared_features": fraction_shared_features,
            "fraction_shortcut_features": fraction_shortcut_features,
            "noise": noise,
            "fraction_paired": fraction_paired,
            "nonlinear": nonlinear,
        },
    )
    check_random_state_value(SimulateMultimodalParams.owner, random_state)
    rng = check_random_state(random_state)
    names = list(spec.modalities)
    n_features = list(spec.n_features)
    n_cells, n_shared, n_private, n_labels = (
        spec.n_cells,
        spec.n_shared,
        spec.n_private,
        spec.n_labels,
    )

    labels = rng.integers(0, n_labels, size=n_cells)
    centres = 1.5 * rng.normal(size=(n_labels, n_shared))
    shared = centres[labels] + 0.6 * rng.normal(size=(n_cells, n_shared))
    shared = (shared - shared.mean(0)) / shared.std(0)
    shortcut = rng.normal(size=n_cells)
    cell_names = np.array([f"cell{i}" for i in range(n_cells)])

    n_paired = round(fraction_paired * n_cells)
    order = rng.permutation(n_cells)
    paired_cells = order[:n_paired]
    single = order[n_paired:]

    def g(a: np.ndarray) -> np.ndarray:
        return a + 0.5 * np.tanh(2 * a) if nonlinear else a

    mods: dict[str, AnnData] = {}
    loadings: dict[str, dict[str, np.ndarray]] = {}
    label_cat = pd.Categorical([f"type{i}" for i in labels], [f"type{i}" for i in range(n_labels)])
    for j, (name, p) in enumerate(zip(names, n_features, strict=True)):
        private = rng.normal(size=(n_cells, n_private))
        n_sh = max(1, round(fraction_shared_features * p))
        n_sc = 0
        if j == 0 and shortcut_strength > 0:
            n_sc = min(p - n_sh - 1, round(fraction_shortcut_features * p))
            n_sc = max(n_sc, 0)
        n_pr = p - n_sh - n_sc
        if n_pr < 1:
            raise ValueError(f"Modality {name!r} needs more features to hold private ones.")
        w_sh = rng.normal(size=(n_shared, n_sh)) / np.sqrt(n_shared)
        w_pr = rng.normal(size=(n_private, n_pr)) / np.sqrt(n_private)
        w_sc = rng.normal(size=(1, n_sc))
        signal = np.hstack(
            [
                shared_strength * shared @ w_sh,
                private_strength * private @ w_pr,
                shortcut_strength * shortcut[:, None] @ w_sc,
            ]
        )
        x = g(signal) + noise * rng.normal(size=signal.shape)
        kind = ["shared"] * n_sh + ["private"] * n_pr + ["shortcut"] * n_sc
        perm = rng.permutation(p)  # interleave the kinds
        x, kind = x[:, perm], np.asarray(kind)[perm]
        cells = np.sort(np.concatenate([paired_cells, single[j :: len(names)]]))
        obs = pd.DataFrame({"label": label_cat[cells]}, index=cell_names[cells])
        if j == 0:
            obs["shortcut"] = shortcut[cells]
        var = pd.DataFrame(
            {"kind": pd.Categorical(kind, ["shared", "private", "shortcut"])},
            index=[f"{name}_f{i}" for i in range(p)],
        )
        a = AnnData(X=x[cells].astype(np.float32), obs=obs, var=var)
        a.obsm["private_factors"] = private[cells]
        mods[name] = a
        loadings[name] = {"shared": w_sh, "private": w_pr, "shortcut": w_sc, "order": perm}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
    idx = pd.Index(cell_names).get_indexer(mdata.obs_names)
    mdata.obs["label"] = pd.Categorical(label_cat[idx], categories=label_cat.categories)
    mdata.obsm["shared_factors"] = shared[idx]
    mdata.uns[Key.uns.simulation] = {
        "params": {
            "n_shared": int(n_shared),
            "n_private": int(n_private),
            "n_labels": int(n_labels),
            "shared_strength": float(shared_strength),
            "private_strength": float(private_strength),
            "shortcut_strength": float(shortcut_strength),
            "noise": float(noise),
            "fraction_paired": float(fraction_paired),
            "nonlinear": bool(nonlinear),
        },
        "loadings": loadings,
        "centres": centres,
    }
    return mdata

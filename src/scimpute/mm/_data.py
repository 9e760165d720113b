"""Input checks and array plumbing between MuData objects and the cross-modal model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._keys import MM_SPLIT_SUFFIX
from .._params import ParamError
from .._validate import _suggest
from ._params import INTEGRATE

#: roles of the cells in training, values of ``mdata.obs[key + "_split"]``.
ROLES = ("anchor", "train", "validation", "unused")


def check_mudata(mdata) -> None:
    """Raise a :class:`TypeError` unless ``mdata`` is a :class:`~mudata.MuData`."""
    from mudata import MuData

    if not isinstance(mdata, MuData):
        raise TypeError(
            f"Expected a MuData object (one AnnData per modality), got {type(mdata).__name__}. "
            "Build one with mudata.MuData({'rna': rna, 'prot': prot})."
        )


def check_modalities(mdata, modalities: Sequence[str] | None) -> list[str]:
    """The modalities to use (all by default); at least two, each with cells and features."""
    check_mudata(mdata)
    if modalities is None:
        mods = list(mdata.mod.keys())
    elif isinstance(modalities, str):
        raise TypeError("modalities must be a list of modality names, not a single string.")
    else:
        mods = [str(m) for m in modalities]
    for m in mods:
        if m not in mdata.mod:
            raise KeyError(f"Modality {m!r} is not in mdata." + _suggest(m, mdata.mod.keys()))
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities lists a modality twice: {mods}.")
    if len(mods) < 2:
        raise ValueError(
            f"Integration needs at least 2 modalities, got {mods}. Add another modality to the "
            "MuData or pass modalities=[...] with two or more names."
        )
    for m in mods:
        a = mdata[m]
        if a.n_obs == 0:
            raise ValueError(
                f"Modality {m!r} has no cells. Remove it (modalities=[...]) or add its cells."
            )
        if a.n_vars == 0:
            raise ValueError(f"Modality {m!r} has no features.")
        if not a.obs_names.is_unique:
            raise ValueError(
                f"mdata[{m!r}].obs_names has duplicates; call mdata[{m!r}].obs_names_make_unique()."
            )
    return mods


def _hint(name: str, options, empty: str) -> str:
    """Close matches or the list of ``options`` (``empty`` when there are none)."""
    names = [str(o) for o in options]
    return _suggest(name, names) if names else f" {empty}"


def per_modality(value: Any, m: str) -> Any:
    """``value[m]`` for a mapping (``None`` when absent), else ``value`` itself."""
    if isinstance(value, Mapping):
        return value.get(m)
    return value


def _dense(x) -> np.ndarray:
    if sp.issparse(x):
        x = x.toarray()
    return np.asarray(x, dtype=np.float32)


def feature_mask(adata, use_var: str | None, m: str) -> np.ndarray:
    """Boolean mask of the features of modality ``m`` named by the ``.var`` column ``use_var``."""
    if use_var is None:
        return np.ones(adata.n_vars, dtype=bool)
    if use_var not in adata.var.columns:
        raise KeyError(
            f"use_var={use_var!r} is not a column of mdata[{m!r}].var."
            + _hint(use_var, adata.var.columns, f"mdata[{m!r}].var has no columns.")
            + " Pass a mapping (e.g. use_var={'rna': 'highly_variable'}) to select features "
            "in some modalities only."
        )
    col = adata.var[use_var]
    if col.dtype != bool:
        raise TypeError(f"mdata[{m!r}].var[{use_var!r}] must be boolean, got {col.dtype}.")
    mask = col.to_numpy(dtype=bool)
    if not mask.any():
        raise ValueError(f"mdata[{m!r}].var[{use_var!r}] selects no feature.")
    return mask


def layer_data(adata, layer: str | None, m: str):
    """``adata.X`` (``layer=None``) or ``adata.layers[layer]`` of modality ``m``, as stored.

    Raises
    ------
    KeyError
        ``layer`` is not a layer of the modality (the message lists the layers it has).
    ValueError
        ``layer=None`` and ``X`` is ``None``.

    """
    if layer is None:
        if adata.X is None:
            raise ValueError(f"mdata[{m!r}].X is None; pass layer= naming the data.")
        return adata.X
    if not isinstance(layer, str) or layer not in adata.layers:
        names = [str(k) for k in adata.layers.keys()]
        if names:
            close = _suggest(layer, names) if isinstance(layer, str) else ""
            listed = ", ".join(map(repr, names))
            hint = f". Its layers: {listed}." + (close if close.startswith(" Did") else "")
        else:
            hint = f": mdata[{m!r}] has no layers; pass layer=None to use its X."
        raise KeyError(f"Layer {layer!r} is not in mdata[{m!r}].layers{hint}")
    return adata.layers[layer]


def modality_matrix(adata, layer: str | None, features: pd.Index, m: str) -> np.ndarray:
    """Dense float32 ``(cells, features)`` matrix of one modality, checked for NaN."""
    x = layer_data(adata, layer, m)
    missing = features.difference(adata.var_names)
    if len(missing):
        raise KeyError(
            f"mdata[{m!r}] lacks {len(missing)} feature(s) the model was trained on, e.g. "
            f"{list(missing[:3])}."
        )
    cols = adata.var_names.get_indexer(features)
    x = (
        x[:, cols]
        if not (cols.size == adata.n_vars and np.all(cols == np.arange(cols.size)))
        else x
    )
    x = _dense(x)
    bad = ~np.isfinite(x)
    if bad.any():
        where = "X" if layer is None else f"layers[{layer!r}]"
        raise ValueError(
            f"mdata[{m!r}].{where} contains {int(bad.sum())} NaN or infinite value(s) "
            f"(in {int(bad.any(1).sum())} cell(s)). Remove those cells or impute the values first."
        )
    return x


def warn_if_counts(x: np.ndarray, m: str, layer: str | None) -> None:
    """Warn when a matrix looks like raw counts (integers with a large maximum)."""
    sample = x[: min(x.shape[0], 500)]
    if sample.size and sample.max() > 30 and np.all(sample == np.round(sample)):
        where = "X" if layer is None else f"layers[{layer!r}]"
        warnings.warn(
            f"mdata[{m!r}].{where} looks like raw counts (integers up to {sample.max():.0f}). "
            "integrate expects log-normalised values; call scimpute.mm.normalize(mdata) and pass "
            "layer='scimpute_norm'.",
            UserWarning,
            stacklevel=3,
        )


@dataclass
class Cells:
    """Where every cell of the union ``mdata.obs_names`` sits in each modality."""

    names: pd.Index
    rows: np.ndarray  # (n_cells, n_modalities) row in each modality, -1 when absent

    @property
    def present(self) -> np.ndarray:
        return self.rows >= 0

    @property
    def paired(self) -> np.ndarray:
        return self.present.sum(1) >= 2


def cell_table(mdata, mods: list[str]) -> Cells:
    """Rows of every cell of ``mdata.obs_names`` in each modality (matched by obs name)."""
    names = pd.Index(mdata.obs_names)
    rows = np.stack([mdata[m].obs_names.get_indexer(names) for m in mods], axis=1)
    return Cells(names, rows.astype(np.int64))


def resolve_pairing(
    pairing, mdata, cells: Cells, mods: list[str]
) -> tuple[float, np.ndarray | None]:
    """``(fraction, mask)``: a fraction of paired cells to use as anchors, or an explicit mask."""
    if pairing is None or pairing is False:
        return 0.0, None
    if pairing is True:
        frac, mask = 1.0, None
    elif isinstance(pairing, int | float | np.integer | np.floating) and not isinstance(
        pairing, bool | np.bool_
    ):
        frac, mask = float(pairing), None
        if not 0.0 <= frac <= 1.0:  # also NaN
            raise ParamError(
                f"{INTEGRATE}: pairing must be True, False, a number >= 0 and <= 1 or a "
                f"boolean mask, got {pairing!r}."
            )
    else:
        if isinstance(pairing, str):
            if pairing not in mdata.obs.columns:
                raise KeyError(
                    f"pairing={pairing!r} is not a column of mdata.obs."
                    + _hint(pairing, mdata.obs.columns, "mdata.obs has no columns.")
                )
            values = mdata.obs[pairing]
        elif isinstance(pairing, pd.Series):
            missing = cells.names.difference(pairing.index)
            if len(missing):
                raise ValueError(
                    f"The pairing Series lacks {len(missing)} cell(s) of mdata.obs_names, e.g. "
                    f"{list(missing[:3])}."
                )
            values = pairing.reindex(cells.names)
        else:
            values = np.asarray(pairing)
            if values.shape != (len(cells.names),):
                raise ValueError(
                    f"pairing as a mask must have one entry per cell of mdata.obs_names "
                    f"({len(cells.names)}), got shape {values.shape}."
                )
        mask = np.asarray(values)
        if mask.dtype != bool:
            raise TypeError(f"pairing as a mask must be boolean, got dtype {mask.dtype}.")
        frac = 0.0
    wants = frac > 0 or (mask is not None and mask.any())
    if wants and not cells.paired.any():
        raise ValueError(
            f"pairing={_describe_pairing(pairing)} asks for anchor cells, but no obs name is "
            f"shared between the modalities {mods}: scimpute pairs cells by matching obs names. "
            "Rename the cells so that the same cell has the same name in every modality, or "
            "pass pairing=False for unpaired integration."
        )
    if mask is not None:
        bad = mask & ~cells.paired
        if bad.any():
            raise ValueError(
                f"pairing marks {int(bad.sum())} cell(s) as anchors that are not present in two "
                f"or more of the modalities {mods}, e.g. {list(cells.names[bad][:3])}. Only "
                "cells measured in several modalities (same obs name) can be anchors."
            )
    return frac, mask


def _describe_pairing(pairing) -> str:
    if isinstance(pairing, bool | float | int | str | None):
        return repr(pairing)
    return f"<mask of {int(np.asarray(pairing).sum())} cells>"


def assign_roles(
    cells: Cells,
    frac: float,
    mask: np.ndarray | None,
    validation_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Role of every cell (index into :data:`ROLES`).

    The known pairs are ``mask`` or a random fraction ``frac`` of the paired cells. With known
    pairs, ``validation_fraction`` of them are held out (validation) and the rest are anchors;
    without, ``validation_fraction`` of all cells are held out. Other cells are ``"train"``.
    """
    n = len(cells.names)
    present = cells.present.any(1)
    role = np.full(n, ROLES.index("unused"), dtype=np.int64)
    role[present] = ROLES.index("train")
    if mask is not None:
        known = np.flatnonzero(mask)
    elif frac > 0:
        pool = np.flatnonzero(cells.paired)
        known = np.sort(rng.choice(pool, size=round(frac * pool.size), replace=False))
    else:
        known = np.array([], dtype=np.int64)
    if known.size:
        n_val = min(round(validation_fraction * known.size), known.size - 1)
        val = rng.choice(known, size=n_val, replace=False) if n_val > 0 else known[:0]
        role[known] = ROLES.index("anchor")
    else:
        pool = np.flatnonzero(present)
        n_val = min(round(validation_fraction * pool.size), pool.size)
        val = rng.choice(pool, size=n_val, replace=False) if n_val > 0 else pool[:0]
    role[val] = ROLES.index("validation")
    return role


def split_column(key: str) -> str:
    """Name of the ``mdata.obs`` column holding each cell's role."""
    return f"{key}{MM_SPLIT_SUFFIX}"

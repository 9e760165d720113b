"""The typed record :func:`scimpute.mm.integrate` writes into ``mdata.uns[key]``.

:class:`IntegrationRecord` is written by ``integrate`` (:meth:`IntegrationRecord.to_uns`) and
read back by :func:`scimpute.mm.translate` and :func:`scimpute.mm.invariant_features` through
one function, :func:`load`, which checks every stored array before a network is rebuilt from
it: numeric arrays only (nothing stored is ever unpickled, called or converted by its own
code), of the expected shapes, with finite values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._utils import h5ad_safe
from .._validate import _suggest
from ..nn._models import _checked_weight
from ._data import check_mudata, modality_matrix
from ._linear import readout_predict
from ._model import Architecture, CrossModalAE, decode_all, encode_all, from_arrays
from ._params import BACKBONES, INTEGRATE, IntegrateParams

__all__ = [
    "FitSummary",
    "Fitted",
    "IntegrationRecord",
    "architecture",
    "load",
    "read_integration",
]

#: entries of ``uns[key]["params"]`` that are call options, not fields of the spec.
CALL_OPTIONS = ("modalities", "pairing", "random_state")


def _none(v: Any) -> Any:
    return None if isinstance(v, str) and v == "None" else v


def numeric_array(value: Any, what: str, *, ndim: int | None = None) -> np.ndarray:
    """``value`` as a float32 array, if it is a numeric array with finite values.

    The check is nn's, for every stored network (:func:`scimpute.nn._models._checked_weight`):
    only :class:`numpy.ndarray` objects of a numeric dtype are accepted, checked before
    anything converts them, so that no object stored in a record can run its own code
    (``__array__``, unpickling) when a model is loaded.
    """
    out = _checked_weight(what, value, value.shape if isinstance(value, np.ndarray) else ())
    if ndim is not None and out.ndim != ndim:
        raise ValueError(f"{what} has {out.ndim} dimension(s), expected {ndim}.")
    return out


def architecture(
    params: IntegrateParams,
    modalities: Sequence[str],
    features: Mapping[str, pd.Index],
    projection: Mapping[str, np.ndarray | None],
) -> Architecture:
    """Sizes of the networks of a run: the one place they are derived (fit and load)."""
    mods = tuple(modalities)
    return Architecture(
        modalities=mods,
        n_inputs=tuple(
            len(features[m]) if projection[m] is None else int(projection[m].shape[1]) for m in mods
        ),
        n_features=tuple(len(features[m]) for m in mods),
        n_latent=params.n_latent,
        n_private=int(params.n_private or 0),
        n_hidden=params.n_hidden,
        n_layers=params.n_layers,
    )


def strings(value: Any, what: str) -> tuple[str, ...]:
    """``value`` (a string, or a list or array of strings) as a tuple of strings.

    Like :func:`numeric_array`, it only looks at the types of what is stored (``type(v) is
    str``): no object's own conversion code runs.
    """
    if type(value) is str:
        items: list = [value]
    elif type(value) is list:
        items = value
    elif isinstance(value, np.ndarray) and value.dtype.kind in "USO":
        items = value.ravel().tolist() if value.dtype.kind == "O" else list(value.ravel())
    else:
        items = None
    if items is None or not all(type(v) in (str, np.str_) for v in items):
        raise ValueError(
            f"{what} is not a string or a list of strings (got {type(value).__name__}): the "
            "stored model is damaged or was not written by scimpute.mm.integrate."
        )
    return tuple(str(v) for v in items)


@dataclass(frozen=True)
class FitSummary:
    """How training went: counts of cells by role, epochs, time."""

    n_anchors: int
    n_validation: int
    n_steps_per_epoch: int
    n_epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept
    training_time_s: float

    def to_uns(self) -> dict[str, Any]:
        """An h5ad-safe dict."""
        return {
            "n_anchors": int(self.n_anchors),
            "n_validation": int(self.n_validation),
            "n_steps_per_epoch": int(self.n_steps_per_epoch),
            "n_epochs_run": int(self.n_epochs_run),
            "best_epoch": int(self.best_epoch),
            "training_time_s": float(self.training_time_s),
        }

    @classmethod
    def from_uns(cls, rec: Mapping[str, Any]) -> FitSummary:
        """Read :meth:`to_uns` output (missing entries read as 0)."""
        return cls(
            n_anchors=int(rec.get("n_anchors", 0)),
            n_validation=int(rec.get("n_validation", 0)),
            n_steps_per_epoch=int(rec.get("n_steps_per_epoch", 0)),
            n_epochs_run=int(rec.get("n_epochs_run", 0)),
            best_epoch=int(rec.get("best_epoch", 0)),
            training_time_s=float(rec.get("training_time_s", 0.0)),
        )


@dataclass(frozen=True)
class IntegrationRecord:
    """What :func:`scimpute.mm.integrate` stores in ``mdata.uns[key_added]``.

    Attributes
    ----------
    params
        The options the model was trained with (``n_private`` resolved).
    modalities
        Integrated modalities, in model order.
    pairing
        The ``pairing`` argument (``"mask"`` for a mask).
    random_state
        The seed (``"Generator"`` for a generator).
    features
        Var names used per modality.
    layer
        Layer read per modality (``None``: ``X``).
    mean, scale
        Standardisation of every feature, per modality.
    private_mean
        Mean private latent of the training cells, per modality (used when translating).
    projection
        ``(n_features, n_pcs)`` PCA loadings the encoder reads, per modality (``None``: the
        encoder reads the features).
    weights
        Flat ``name -> array`` weights of the networks (:func:`scimpute.mm._model.to_arrays`).
    history
        Per-epoch means of every loss term (``val_`` terms on the validation cells).
    fit
        Counts and epochs of the training run.
    backbone
        The backbone kept (``"linear"``, ``"guided"`` or ``"autoencoder"``).
    candidates
        One row per backbone tried: ``name``, ``backbone``, ``settings``, ``score``
        (FOSCTTM on the validation pairs), ``se``, ``fit_seconds``, ``chosen``; and for the
        linear backbone one row per capacity tried in the cross-validation within the
        anchors (``name`` ``"linear-cv"``). A network not trained in full has score NaN and
        the reason in ``settings``; the screen fits are rows ``"<backbone>-screen"``
        (:mod:`scimpute.mm._screen`).
    screen
        ``backbone="auto"``: which rule decided whether the networks were trained in full
        (``rule``: ``"floor"``, ``"screen"``, ``"full"`` or ``"none"``), why (``reason``),
        and the thresholds (``network_floor``, ``screen_cells``, ``screen_margin``); stored
        as ``uns[key]["network_screen"]``.

    """

    params: IntegrateParams
    modalities: tuple[str, ...]
    pairing: str | bool | float
    random_state: int | str
    features: Mapping[str, pd.Index]
    layer: Mapping[str, str | None]
    mean: Mapping[str, np.ndarray]
    scale: Mapping[str, np.ndarray]
    private_mean: Mapping[str, np.ndarray]
    projection: Mapping[str, np.ndarray | None]
    weights: Mapping[str, np.ndarray] = field(repr=False)
    history: Mapping[str, np.ndarray] = field(repr=False)
    fit: FitSummary
    backbone: str = "autoencoder"
    candidates: pd.DataFrame | None = field(default=None, repr=False)
    screen: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def arch(self) -> Architecture:
        """Sizes of the networks, from the options and the stored arrays."""
        return architecture(self.params, self.modalities, self.features, self.projection)

    def to_uns(self) -> dict[str, Any]:
        """An h5ad-safe dict (survives :meth:`mudata.MuData.write` / :func:`mudata.read_h5mu`)."""
        mods = self.modalities
        call = {
            "modalities": list(mods),
            "pairing": self.pairing,
            "random_state": self.random_state,
        }
        return {
            "params": h5ad_safe({**self.params.to_dict(), **call}),
            "fit": self.fit.to_uns(),
            "history": {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()},
            "weights": dict(self.weights),
            "features": {m: np.asarray(self.features[m], dtype=object) for m in mods},
            "layer": {m: "None" if self.layer[m] is None else self.layer[m] for m in mods},
            "mean": dict(self.mean),
            "scale": dict(self.scale),
            "private_mean": dict(self.private_mean),
            "projection": {
                m: np.zeros((0, 0), np.float32) if v is None else v
                for m, v in self.projection.items()
            },
            "backbone": self.backbone,
            **({} if self.candidates is None else {"candidates": self.candidates}),
            **({} if self.screen is None else {"network_screen": dict(self.screen)}),
        }

    @classmethod
    def from_uns(cls, rec: Any, key: str) -> IntegrationRecord:
        """Read and check the record of ``mdata.uns[key]`` (also after an h5mu round trip)."""
        where = f"mdata.uns[{key!r}]"
        need = ("params", "weights", "features", "mean", "scale", "private_mean", "layer")
        if not isinstance(rec, Mapping) or any(k not in rec for k in need):
            raise ValueError(
                f"{where} was not written by scimpute.mm.integrate (it lacks "
                f"{', '.join(repr(k) for k in need if not isinstance(rec, Mapping) or k not in rec)}"
                "). Run integrate again."
            )
        for k in need:
            if not isinstance(rec[k], Mapping):
                raise ValueError(
                    f"{where}[{k!r}] is not a mapping (got {type(rec[k]).__name__}): the stored "
                    "model is damaged. Run scimpute.mm.integrate again."
                )
        stored = rec["params"]
        mods = strings(stored.get("modalities"), f"{where}['params']['modalities']")
        known = {k: _none(stored[k]) for k in IntegrateParams.names() if k in stored}
        params = IntegrateParams.from_kwargs(f"{INTEGRATE} (stored in {where})", known)
        features = {
            m: pd.Index(strings(rec["features"].get(m), f"{where}['features'][{m!r}]"))
            for m in mods
        }
        proj_rec = rec.get("projection", {})
        projection: dict[str, np.ndarray | None] = {}
        for m in mods:
            v = proj_rec.get(m) if isinstance(proj_rec, Mapping) else None
            if v is not None:
                v = numeric_array(v, f"{where}['projection'][{m!r}]", ndim=2)
            projection[m] = None if v is None or v.size == 0 else v  # (0, 0): no projection

        def per_mod(entry: str) -> dict[str, np.ndarray]:
            return {
                m: numeric_array(rec[entry].get(m), f"{where}[{entry!r}][{m!r}]").reshape(-1)
                for m in mods
            }

        weights = {
            str(k): numeric_array(v, f"{where}['weights'][{k!r}]")
            for k, v in rec["weights"].items()
        }
        fit_rec = rec.get("fit", stored)  # records of scimpute < 0.x kept these in params
        backbone = strings(rec.get("backbone", "autoencoder"), f"{where}['backbone']")[0]
        if backbone not in BACKBONES:
            raise ValueError(
                f"{where}['backbone'] is {backbone!r}, not one of {list(BACKBONES)}: the stored "
                "model is damaged. Run scimpute.mm.integrate again."
            )
        cand = rec.get("candidates")
        return cls(
            params=params,
            modalities=mods,
            pairing=_none(stored.get("pairing", "None")),
            random_state=stored.get("random_state", 0),
            features=features,
            layer={
                m: _none(strings(rec["layer"].get(m), f"{where}['layer'][{m!r}]")[0]) for m in mods
            },
            mean=per_mod("mean"),
            scale=per_mod("scale"),
            private_mean=per_mod("private_mean"),
            projection=projection,
            weights=weights,
            history=dict(rec.get("history", {})),
            fit=FitSummary.from_uns(fit_rec),
            backbone=backbone,
            candidates=cand if isinstance(cand, pd.DataFrame) else None,
            screen=rec.get("network_screen")
            if isinstance(rec.get("network_screen"), Mapping)
            else None,
        )


def read_integration(mdata, key: str) -> IntegrationRecord:
    """The :class:`IntegrationRecord` of ``mdata.uns[key]``, with a clear error if absent."""
    check_mudata(mdata)
    if key not in mdata.uns:
        raise KeyError(
            f"mdata.uns[{key!r}] not found: run scimpute.mm.integrate(mdata, key_added={key!r}) "
            "first." + (_suggest(key, mdata.uns.keys()) if len(mdata.uns) else "")
        )
    return IntegrationRecord.from_uns(mdata.uns[key], key)


def linear_name(kind: str, *mods: str) -> str:
    """Name of an array of the linear backbone in the record's ``weights``."""
    return ".".join(("linear", kind, *mods))


@dataclass(frozen=True)
class Fitted:
    """A stored model, read back and rebuilt: the record and its networks (or linear maps).

    :meth:`encode`, :meth:`decode` and :meth:`predict` work for every backbone: the
    networks of the autoencoders, or the linear backbone's maps and ridge read-outs.
    """

    record: IntegrationRecord
    model: CrossModalAE | None
    key: str

    @property
    def linear(self) -> bool:
        """Whether the backbone is the linear one (no networks)."""
        return self.record.backbone == "linear"

    def _weight(self, kind: str, *mods: str) -> np.ndarray:
        name = linear_name(kind, *mods)
        if name not in self.record.weights:
            raise ValueError(
                f"mdata.uns[{self.key!r}]['weights'] lacks {name!r}: the stored model is "
                "damaged. Run scimpute.mm.integrate again."
            )
        return self.record.weights[name]

    def encode(self, m: str, xstd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(shared, private)`` latents of standardised profiles ``xstd`` of modality ``m``."""
        inp = self.encoder_input(m, xstd)
        if not self.linear:
            return encode_all(self.model, m, inp)
        z = ((inp - self._weight("offset", m)) @ self._weight("map", m)).astype(np.float32)
        return z, np.zeros((z.shape[0], 0), np.float32)

    def decode(self, m: str, z: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Standardised profiles of ``m`` from shared (and private) latents ``z`` (``u``)."""
        if not self.linear:
            return decode_all(self.model, m, z, u)
        return readout_predict(self._weight("readout", m, m), z)

    def predict(self, source: str, target: str, xstd: np.ndarray) -> np.ndarray:
        """Standardised ``target`` profiles predicted from standardised ``source`` profiles.

        Autoencoders: the target decoder of the source's shared latent with the target's
        mean private latent. Linear: the ridge read-out fitted from the source's shared
        latent to the target's features on the anchors.
        """
        z, _ = self.encode(source, xstd)
        if self.linear:
            return readout_predict(self._weight("readout", source, target), z)
        u = np.broadcast_to(self.private_mean[target], (z.shape[0], self.arch.n_private))
        return decode_all(self.model, target, z, np.ascontiguousarray(u))

    @property
    def arch(self) -> Architecture:
        """Sizes of the networks."""
        return self.record.arch

    @property
    def features(self) -> Mapping[str, pd.Index]:
        """Var names used per modality."""
        return self.record.features

    @property
    def private_mean(self) -> Mapping[str, np.ndarray]:
        """Mean private latent of the training cells, per modality."""
        return self.record.private_mean

    def encoder_input(self, m: str, xstd: np.ndarray) -> np.ndarray:
        """What the encoder of ``m`` reads: the standardised profile or its PCA scores."""
        v = self.record.projection[m]
        return xstd if v is None else (xstd @ v).astype(np.float32)

    def standardise(self, m: str, x: np.ndarray) -> np.ndarray:
        """Profiles of ``m`` in the model's standardised units."""
        return ((x - self.record.mean[m]) / self.record.scale[m]).astype(np.float32)

    def unstandardise(self, m: str, x: np.ndarray) -> np.ndarray:
        """Standardised profiles of ``m`` back on the scale of the input layer."""
        return (x * self.record.scale[m] + self.record.mean[m]).astype(np.float32)

    def matrix(self, mdata, m: str) -> np.ndarray:
        """Standardised input matrix of modality ``m`` as the model was trained on it."""
        rec = self.record
        return self.standardise(m, modality_matrix(mdata[m], rec.layer[m], rec.features[m], m))


def load(mdata, key: str) -> Fitted:
    """Read the model that :func:`scimpute.mm.integrate` stored in ``mdata.uns[key]``.

    Raises
    ------
    KeyError
        ``mdata.uns[key]`` is missing, or the model uses a modality that ``mdata`` lacks.
    ValueError
        The record is not one integrate wrote, or a stored array is not numeric, has the
        wrong shape or holds NaN / infinite values.

    """
    rec = read_integration(mdata, key)
    for m in rec.modalities:
        if m not in mdata.mod:
            raise KeyError(
                f"The model of mdata.uns[{key!r}] uses modality {m!r}, not in mdata."
                + _suggest(m, mdata.mod.keys())
            )
    model = None if rec.backbone == "linear" else from_arrays(rec.arch, rec.weights)
    return Fitted(record=rec, model=model, key=key)

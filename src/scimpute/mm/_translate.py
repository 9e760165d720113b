"""``translate``: predict one modality's profiles from another through the shared latent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import MM_KEY, MM_TRANSLATE_KEY
from .._params import ParamError
from .._validate import _suggest
from ._params import TRANSLATE
from ._record import Fitted, load

if TYPE_CHECKING:
    from mudata import MuData


def _check_pair(fit: Fitted, source: str, target: str) -> None:
    for what, m in (("source", source), ("target", target)):
        if m not in fit.arch.modalities:
            raise KeyError(
                f"{what}={m!r} is not a modality of the model in mdata.uns[{fit.key!r}]."
                + _suggest(m, fit.arch.modalities)
            )


def predict_from(fit: Fitted, x_source_std: np.ndarray, source: str, target: str) -> np.ndarray:
    """Standardised target profiles predicted from standardised source profiles."""
    return fit.predict(source, target, x_source_std)


def translate(
    mdata: MuData,
    source: str,
    target: str,
    *,
    key: str = MM_KEY,
    key_added: str | None = None,
) -> AnnData:
    """Predict the ``target`` modality's profiles of the ``source`` modality's cells.

    Each cell of ``mdata[source]`` is encoded by the source encoder into the shared latent;
    the target decoder maps that latent, with the target's private latent set to its mean
    over the training cells, to target-modality values. Values are on the scale the model
    was trained on (the ``layer`` given to :func:`scimpute.mm.integrate`, e.g.
    log-normalised), for the features it used. ``source == target`` gives the
    reconstruction through the shared latent alone.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData` on which :func:`scimpute.mm.integrate` was run (or that was
        written and read back since).
    source, target
        Modality names.
    key
        ``key_added`` of the :func:`~scimpute.mm.integrate` run.
    key_added
        If given, also store the predictions in ``mdata[source].obsm[key_added]`` as a
        :class:`pandas.DataFrame` (rows = the source's obs names, columns = the target's var
        names).

    Returns
    -------
    A new :class:`~anndata.AnnData`: one row per cell of ``mdata[source]`` (its ``obs``
    copied), one column per target feature used by the model (``var`` copied from
    ``mdata[target].var``, so the var names are the target's), ``X`` the predictions
    (float32), ``uns["translate"]`` = ``{"source", "target", "key"}``. ``mdata`` is not
    modified unless ``key_added`` is given.

    Raises
    ------
    KeyError
        No model under ``key``, or ``source`` / ``target`` is not one of its modalities.
    ValueError
        The stored model is damaged: a weight or standardisation array that is not numeric,
        has the wrong shape, or holds NaN / infinite values (predictions would be NaN).

    """
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ParamError(
            f"{TRANSLATE}: key_added must be a non-empty string or None, got {key_added!r}."
        )
    fit = load(mdata, key)
    _check_pair(fit, source, target)
    x = fit.matrix(mdata, source)
    pred = fit.unstandardise(target, predict_from(fit, x, source, target))
    feats = fit.features[target]
    tvar = mdata[target].var
    var = tvar.loc[feats].copy() if feats.isin(tvar.index).all() else pd.DataFrame(index=feats)
    out = AnnData(X=pred, obs=mdata[source].obs.copy(), var=var)
    out.uns[MM_TRANSLATE_KEY] = {"source": source, "target": target, "key": key}
    if key_added is not None:
        mdata[source].obsm[key_added] = pd.DataFrame(
            pred, index=mdata[source].obs_names.copy(), columns=feats.copy()
        )
    return out

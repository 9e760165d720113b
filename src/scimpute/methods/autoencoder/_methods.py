"""The registered grid methods ``"autoencoder"`` and ``"vae"``."""

from __future__ import annotations

import numpy as np

from ..._utils import RandomState
from ...nn import select
from .._base import GridData, MethodResult, as_targets
from .._registry import register
from .._stats import validated_fallback
from ._arithmetic import latent_arithmetic, resolve_baseline
from ._fit import fit_grid_networks, net_config
from ._params import AutoencoderParams, VAEParams
from ._refit import grouped_refit

_REF = (
    "Belyaeva et al., Nat Commun 2021 (over-parameterised autoencoders); "
    "Lotfollahi et al., Nat Methods 2019 (scGen)"
)


def with_fallback(data: GridData, t: np.ndarray, pred, ok, n_used, name) -> MethodResult:
    """The predictions where ``ok``, :func:`~scimpute.methods._stats.validated_fallback` elsewhere."""
    res = validated_fallback(data, t)
    res.prediction[ok] = pred[ok]
    res.source[ok] = name
    res.per_target = {"n_contexts": np.where(ok, n_used, 0.0)}
    return res


def _run(
    name: str, data: GridData, targets, params: AutoencoderParams, random_state: RandomState
) -> MethodResult:
    baseline = resolve_baseline(name, params.baseline, data)
    t = as_targets(targets)
    cfg = net_config(name, data, params)
    res, _ = fit_grid_networks(data, data.measured[None], cfg, params, random_state=random_state)
    net = select(res.networks, 0)
    pred, ok, n_used = latent_arithmetic(
        net,
        data,
        data.measured,
        t,
        transform=params.transform,
        output=params.output,
        baseline=baseline,
    )
    out = with_fallback(data, t, pred, ok, n_used, name)
    out.info = {
        "n_epochs": int(res.n_epochs),
        "best_epoch": int(res.best_epoch[0]),
        "train_seconds": float(res.seconds),
        "final_train_loss": float(res.train_loss[-1, 0]),
    }
    return out


@register(
    "autoencoder",
    description="Latent arithmetic with a wide autoencoder trained on the grid's profiles.",
    reference=_REF,
    params=AutoencoderParams,
    grouped_refit=lambda data, folds, params, **kw: grouped_refit(
        "autoencoder", data, folds, params, **kw
    ),
)
def autoencoder(
    data: GridData,
    targets,
    params: AutoencoderParams | None = None,
    *,
    random_state: RandomState = 0,
) -> MethodResult:
    """Predict each target (c, a) by latent arithmetic with an over-parameterised autoencoder.

    Parameters
    ----------
    data
        The grid's arrays.
    targets
        ``(n, 2)`` (context index, perturbation index) pairs to predict.
    params
        :class:`~scimpute.methods.autoencoder.AutoencoderParams` (default: its defaults):
        the architecture (``width``, ``depth``, ``latent_dim``: ``None`` makes the latent
        space the last hidden layer; ``dropout``), the training block
        (:class:`~scimpute.nn.TrainConfig`), ``transform``, ``standardize``, ``output``
        (``"decoded"`` or ``"residual"``: the measured baseline plus the decoded change) and
        ``baseline`` (``"control"``: shifts z(c', a) - z(c', control); ``"context_mean"``:
        from the mean code of the context's measured non-control profiles; ``"auto"``).
    random_state
        Seed of initialisation, validation split, shuffling.

    Returns
    -------
    :class:`~scimpute.methods.MethodResult` with ``per_target["n_contexts"]`` (contexts whose
    shift was averaged; 0 for fallbacks) and training diagnostics in ``info``.

    """
    return _run("autoencoder", data, targets, params or AutoencoderParams(), random_state)


@register(
    "vae",
    description="Latent arithmetic with a scGen-style variational autoencoder.",
    reference=_REF,
    params=VAEParams,
    grouped_refit=lambda data, folds, params, **kw: grouped_refit("vae", data, folds, params, **kw),
)
def vae(
    data: GridData,
    targets,
    params: VAEParams | None = None,
    *,
    random_state: RandomState = 0,
) -> MethodResult:
    """Predict each target by latent arithmetic with a scGen-style VAE (posterior means).

    ``params`` (:class:`~scimpute.methods.autoencoder.VAEParams`) are those of
    :func:`autoencoder` (deeper and with dropout by default) and ``kl_weight``, the weight of
    the KL term of the loss (scGen: 5e-5).
    """
    return _run("vae", data, targets, params or VAEParams(), random_state)

"""Seeded simulator of single cells whose perturbation effects are a known latent shift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import Key
from .._params import Params, check_random_state_value, param
from .._utils import RandomState, check_random_state


@dataclass(frozen=True)
class SimulateCellsParams(Params):
    """Parameters of :func:`simulate_cells`, declared and checked once."""

    owner = "datasets.simulate_cells"

    n_contexts: int = param(4, ge=1, doc="number of contexts (cell types)")
    n_perturbations: int = param(2, ge=1, doc="number of perturbations besides the control")
    n_genes: int = param(50, ge=1, doc="number of genes")
    n_cells: int = param(100, ge=1, doc="cells per (context, perturbation) pair")
    latent_dim: int = param(4, ge=1, doc="dimension of the latent space")
    context_scale: float = param(2.0, ge=0, doc="spread of the context centres")
    effect_scale: float = param(2.0, ge=0, doc="spread of the shifts")
    latent_noise: float = param(0.5, ge=0, doc="cell-to-cell variation in the latent space")
    noise: float = param(0.1, ge=0, doc="measurement noise")
    nonlinear: bool = param(True, doc="softplus link")
    context_effect: float = param(
        0.0, ge=0, doc="strength of the part of each effect that depends on the cell's state"
    )
    control: str = param(
        "control",
        check=lambda v: "must be a non-empty label" if not v.strip() else None,
        doc="label of the control",
    )


def simulate_cells(
    n_contexts: int = 4,
    n_perturbations: int = 2,
    n_genes: int = 50,
    *,
    n_cells: int = 100,
    latent_dim: int = 4,
    context_scale: float = 2.0,
    effect_scale: float = 2.0,
    latent_noise: float = 0.5,
    noise: float = 0.1,
    nonlinear: bool = True,
    context_effect: float = 0.0,
    control: str = "control",
    random_state: RandomState = 0,
) -> AnnData:
    """Simulate cells in which every perturbation is the same shift of a latent space.

    Cell i of context c under perturbation a has latent state and expression::

        z_i = m_c + s_a + latent_noise * N(0, I)
        x_i = f(z_i @ W + b) + noise * N(0, I)

    with context centres ``m_c ~ context_scale * N(0, I)``, shifts ``s_a ~ effect_scale *
    N(0, I) / sqrt(latent_dim)`` (``s_control = 0``), Gaussian loadings ``W`` (``latent_dim``
    x ``n_genes``, scaled by ``1 / sqrt(latent_dim)``) and ``f = softplus`` (``nonlinear``) or
    the identity. Effects are thus exactly transferable in the latent space (the premise of
    latent arithmetic) but, with ``f`` nonlinear, differ between contexts in gene space.

    With ``context_effect > 0`` the effect also depends on the state the cell would have
    without the perturbation (a context-dependent effect that no constant latent shift
    reproduces)::

        u_i = m_c + latent_noise * N(0, I)
        z_i = u_i + s_a + context_effect * u_i @ A_a

    with ``A_a ~ N(0, I) / sqrt(latent_dim)`` for every perturbation (``A_control = 0``).

    Parameters
    ----------
    n_contexts, n_perturbations, n_genes
        Sizes (the control is not counted among the perturbations).
    n_cells
        Cells per (context, perturbation) pair.
    latent_dim
        Dimension of the latent space.
    context_scale, effect_scale
        Spread of the context centres and of the shifts.
    latent_noise, noise
        Cell-to-cell variation in the latent space and measurement noise.
    nonlinear
        Use the softplus link (else linear).
    context_effect
        Strength of the state-dependent part of every effect (0: a constant shift).
    control
        Label of the control.
    random_state
        Seed or generator.

    Returns
    -------
    AnnData with ``obs["cell_type"]`` (``"ct0"``, ...), ``obs["perturbation"]`` (``control``,
    ``"p0"``, ...), float32 ``X``, ``obsm["X_latent_true"]`` (the true ``z``),
    ``layers["mean"]`` (``f(z W + b)``, noise-free) and ``uns["simulation"]`` (``W``, ``b``,
    ``centres``, ``shifts``, ``maps`` (the ``A_a``) and the parameters).

    """
    spec = SimulateCellsParams.from_kwargs(
        SimulateCellsParams.owner,
        {
            "n_contexts": n_contexts,
            "n_perturbations": n_perturbations,
            "n_genes": n_genes,
            "n_cells": n_cells,
            "latent_dim": latent_dim,
            "context_scale": context_scale,
            "effect_scale": effect_scale,
            "latent_noise": latent_noise,
            "noise": noise,
            "nonlinear": nonlinear,
            "context_effect": context_effect,
            "control": control,
        },
    )
    check_random_state_value(SimulateCellsParams.owner, random_state)
    n_contexts, n_perturbations, n_genes = spec.n_contexts, spec.n_perturbations, spec.n_genes
    n_cells, latent_noise, noise, control = (
        spec.n_cells,
        spec.latent_noise,
        spec.noise,
        spec.control,
    )
    context_scale, effect_scale, nonlinear = spec.context_scale, spec.effect_scale, spec.nonlinear
    rng = check_random_state(random_state)
    k = spec.latent_dim
    centres = context_scale * rng.normal(size=(n_contexts, k))
    shifts = np.vstack(
        [np.zeros((1, k)), effect_scale * rng.normal(size=(n_perturbations, k)) / np.sqrt(k)]
    )
    W = rng.normal(size=(k, n_genes)) / np.sqrt(k)
    b = rng.normal(size=n_genes) * 0.5
    labels = [control] + [f"p{i}" for i in range(n_perturbations)]
    ci = np.repeat(np.arange(n_contexts), (n_perturbations + 1) * n_cells)
    ai = np.tile(np.repeat(np.arange(n_perturbations + 1), n_cells), n_contexts)
    u = centres[ci] + latent_noise * rng.normal(size=(ci.size, k))
    z = u + shifts[ai]
    maps = np.zeros((n_perturbations + 1, k, k))
    if spec.context_effect > 0:
        maps[1:] = rng.normal(size=(n_perturbations, k, k)) / np.sqrt(k)
        z = z + spec.context_effect * np.einsum("ij,ijk->ik", u, maps[ai])
    lin = z @ W + b
    mean = np.logaddexp(0.0, lin) if nonlinear else lin
    X = mean + noise * rng.normal(size=mean.shape)
    ctx_labels = [f"ct{i}" for i in range(n_contexts)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.asarray(ctx_labels)[ci], categories=ctx_labels),
            "perturbation": pd.Categorical(np.asarray(labels)[ai], categories=labels),
        },
        index=[f"cell{i}" for i in range(ci.size)],
    )
    adata = AnnData(
        X=X.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]),
    )
    adata.obsm["X_latent_true"] = z.astype(np.float32)
    adata.layers["mean"] = mean.astype(np.float32)
    adata.uns[Key.uns.simulation] = {
        "W": W,
        "b": b,
        "centres": centres,
        "shifts": shifts,
        "maps": maps,
        "params": {
            "latent_dim": k,
            "context_scale": float(context_scale),
            "effect_scale": float(effect_scale),
            "latent_noise": float(latent_noise),
            "noise": float(noise),
            "nonlinear": bool(nonlinear),
            "context_effect": float(spec.context_effect),
            "n_cells": int(n_cells),
        },
    }
    return adata

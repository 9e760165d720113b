"""Seeded simulators of perturbation grids with known ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import COMBINATION_SEP, DOSE_SEP, Key
from .._params import ParamError, Params, check_random_state_value, param
from .._utils import RandomState, check_random_state
from ..pp import perturbation_grid
from ..pp._labels import format_dose


def _non_empty(value: str | None) -> str | None:
    return "must be a non-empty label or None" if value is not None and not value.strip() else None


@dataclass(frozen=True)
class SimulateGridParams(Params):
    """Parameters of :func:`simulate_grid`, declared and checked once."""

    owner = "datasets.simulate_grid"

    n_contexts: int = param(20, ge=1, doc="number of contexts")
    n_perturbations: int = param(30, ge=1, doc="number of single perturbations")
    n_features: int = param(200, ge=1, doc="number of features")
    rank: int = param(5, ge=1, doc="rank of the latent factors")
    noise: float = param(0.1, ge=0, doc="standard deviation of the measurement noise")
    fraction_measured: float = param(0.5, gt=0, le=1, doc="fraction of pairs measured")
    context_strength: float = param(1.0, doc="scale of the per-context component")
    effect_strength: float = param(1.0, doc="scale of the effects")
    shared_effect: float = param(1.0, doc="part of the context loadings shared by all")
    control: str | None = param("control", check=_non_empty, doc="control label or None")
    n_combinations: int = param(0, ge=0, doc="random pairs 'pI+pJ' added")
    interaction: float = param(0.0, ge=0, doc="scale of a combination's non-additive part")
    doses: tuple[float, ...] | None = param(None, gt=0, doc="dose levels (positive)")
    keep_noisy: bool = param(False, doc="store the noisy profiles of every pair")

    def validate(self, owner: str) -> None:
        """Checks across parameters: dose levels given, enough distinct pairs."""
        if self.doses is not None and len(self.doses) == 0:
            raise ParamError(f"{owner}: doses must hold at least one dose level, got ().")
        n_pairs = self.n_perturbations * (self.n_perturbations - 1) // 2
        if self.n_combinations > n_pairs:
            raise ParamError(
                f"{owner}: n_combinations must be <= {n_pairs} (the distinct pairs of "
                f"{self.n_perturbations} perturbations), got {self.n_combinations}."
            )


def simulate_grid(
    n_contexts: int = 20,
    n_perturbations: int = 30,
    n_features: int = 200,
    *,
    rank: int = 5,
    noise: float = 0.1,
    fraction_measured: float = 0.5,
    context_strength: float = 1.0,
    effect_strength: float = 1.0,
    shared_effect: float = 1.0,
    control: str | None = "control",
    n_combinations: int = 0,
    interaction: float = 0.0,
    doses: Sequence[float] | None = None,
    keep_noisy: bool = False,
    random_state: RandomState = 0,
) -> AnnData:
    """Simulate a grid from a latent factor model whose full truth is known.

    The noise-free profile of context c under intervention a is::

        truth[c, a] = mu + context_strength * g_c @ H + effect_strength * ((u_c * v_a) @ W)

    with ``g_c, u_c, v_a`` in R^rank and ``H, W`` rank x features Gaussian loadings
    (scaled by ``1 / sqrt(rank)``); ``u_c = shared_effect + N(0, 1)`` so perturbations act
    alike across contexts when ``shared_effect`` is large. The control has ``v = 0``. The
    measured value is ``truth + noise * N(0, 1)``. The tensor is low rank in contexts and in
    interventions, the setting in which synthetic interventions are consistent.

    Every parameter is checked before anything is drawn: an invalid one raises a
    :class:`ValueError` that names it.

    Combinations ``"pI+pJ"`` have ``v = v_I + v_J + interaction * N(0, 1)``. With ``doses``,
    every single perturbation is expanded to ``"pI@d"`` with ``v = hill_I(d) * v_I``,
    ``hill_I(d) = d^h / (d^h + ec50_I^h)`` (``h`` in [1, 3], ``ec50`` log-uniform over the
    dose range).

    Parameters
    ----------
    n_contexts, n_perturbations, n_features
        Grid size (``n_perturbations`` single perturbations, the control not counted).
    rank
        Rank of the latent factors.
    noise
        Standard deviation of the measurement noise.
    fraction_measured
        Fraction of non-control pairs measured; the controls are always measured, and every
        context and perturbation keeps at least one measured pair.
    context_strength, effect_strength, shared_effect
        Scales of the per-context common component, of the effects, and of the part of the
        context loadings shared by all contexts.
    control
        Control label, or ``None`` for a grid without control (profiles are effects).
    n_combinations
        Number of random pairs ``"pI+pJ"`` added as interventions.
    interaction
        Scale of the non-additive part of a combination.
    doses
        Dose levels; each single perturbation is measured as ``"pI@dose"``.
    keep_noisy
        Also store the noisy profiles of every pair (hidden ones included) in
        ``layers["noisy"]``.
    random_state
        Seed (a non-negative int), generator, or ``None``.

    Returns
    -------
    A grid as made by :func:`scimpute.pp.perturbation_grid` (unmeasured rows NaN) with
    ``layers["truth"]`` (noise-free profiles of every pair), optionally ``layers["noisy"]``, and ``uns["simulation"]`` (parameters and the
    factors ``U``, ``V``, ``W``, ``G``, ``H``, ``mu``).

    """
    spec = SimulateGridParams.from_kwargs(
        SimulateGridParams.owner,
        {
            "n_contexts": n_contexts,
            "n_perturbations": n_perturbations,
            "n_features": n_features,
            "rank": rank,
            "noise": noise,
            "fraction_measured": fraction_measured,
            "context_strength": context_strength,
            "effect_strength": effect_strength,
            "shared_effect": shared_effect,
            "control": control,
            "n_combinations": n_combinations,
            "interaction": interaction,
            "doses": doses,
            "keep_noisy": keep_noisy,
        },
    )
    check_random_state_value(SimulateGridParams.owner, random_state)
    return _simulate_grid(spec, check_random_state(random_state))


def _simulate_grid(spec: SimulateGridParams, rng: np.random.Generator) -> AnnData:
    n_contexts, n_perturbations = spec.n_contexts, spec.n_perturbations
    rank, n_features, noise = spec.rank, spec.n_features, spec.noise
    fraction_measured, control, doses = spec.fraction_measured, spec.control, spec.doses
    context_strength, effect_strength = spec.context_strength, spec.effect_strength
    shared_effect, n_combinations = spec.shared_effect, spec.n_combinations
    interaction, keep_noisy = spec.interaction, spec.keep_noisy
    r, p = rank, n_features
    mu = rng.normal(size=p)
    G = rng.normal(size=(n_contexts, r))
    H = rng.normal(size=(r, p)) / np.sqrt(r)
    U = shared_effect + rng.normal(size=(n_contexts, r))
    W = rng.normal(size=(r, p)) / np.sqrt(r)
    V1 = rng.normal(size=(n_perturbations, r))
    names = [f"p{i}" for i in range(n_perturbations)]

    labels: list[str] = []
    V_rows: list[np.ndarray] = []
    if doses is None:
        labels += names
        V_rows += list(V1)
    else:
        d = np.asarray(doses, dtype=float)
        lo, hi = np.log(d.min()), np.log(d.max())
        ec50 = np.exp(rng.uniform(lo, hi, size=n_perturbations))
        hill = rng.uniform(1, 3, size=n_perturbations)
        for i, n in enumerate(names):
            for x in d:
                labels.append(f"{n}{DOSE_SEP}{format_dose(x)}")
                V_rows.append(V1[i] * x ** hill[i] / (x ** hill[i] + ec50[i] ** hill[i]))
    if n_combinations:
        all_pairs = [(i, j) for i in range(n_perturbations) for j in range(i + 1, n_perturbations)]
        pick = rng.choice(len(all_pairs), size=n_combinations, replace=False)
        for k in np.sort(pick):
            i, j = all_pairs[k]
            labels.append(f"{names[i]}{COMBINATION_SEP}{names[j]}")
            V_rows.append(V1[i] + V1[j] + interaction * rng.normal(size=r))
    V = np.vstack(V_rows)
    if control is not None:
        labels = [control, *labels]
        V = np.vstack([np.zeros((1, r)), V])
    n_a = len(labels)

    measured = rng.random((n_contexts, n_a)) < fraction_measured
    if control is not None:
        measured[:, 0] = True
    first = 1 if control is not None else 0
    for c in range(n_contexts):  # every context keeps a measured non-control pair
        if not measured[c, first:].any():
            measured[c, rng.integers(first, n_a)] = True
    for a in range(first, n_a):  # every intervention is measured somewhere
        if not measured[:, a].any():
            measured[rng.integers(n_contexts), a] = True

    common = (mu + context_strength * (G @ H)).astype(np.float32)  # (C, p)
    UV = (U[:, None, :] * V[None, :, :]).reshape(-1, r)
    truth = (effect_strength * UV @ W).astype(np.float32).reshape(n_contexts, n_a, p)
    truth += common[:, None, :]

    ctx_labels = [f"c{i}" for i in range(n_contexts)]
    ci, ai = np.nonzero(measured)
    obs = pd.DataFrame(
        {
            "context": pd.Categorical(np.asarray(ctx_labels)[ci], categories=ctx_labels),
            "perturbation": pd.Categorical(np.asarray(labels)[ai], categories=labels),
        }
    )
    obs.index = [f"{ctx_labels[c]}|{labels[a]}" for c, a in zip(ci, ai, strict=True)]
    if keep_noisy:
        noisy = truth + noise * rng.standard_normal(size=truth.shape, dtype=np.float32)
        x_measured = noisy[ci, ai]
    else:
        x_measured = truth[ci, ai] + noise * rng.standard_normal(
            size=(ci.size, p), dtype=np.float32
        )
    bulk = AnnData(
        X=x_measured,
        obs=obs,
        var=pd.DataFrame(index=[f"g{i}" for i in range(p)]),
    )
    grid = perturbation_grid(bulk, "context", "perturbation", control=control)
    grid.layers[Key.layers.truth] = truth.reshape(-1, p)
    if keep_noisy:
        grid.layers[Key.layers.noisy] = noisy.reshape(-1, p)
    grid.uns[Key.uns.simulation] = {
        "params": {
            "rank": rank,
            "noise": float(noise),
            "fraction_measured": float(fraction_measured),
            "context_strength": float(context_strength),
            "effect_strength": float(effect_strength),
            "shared_effect": float(shared_effect),
            "n_combinations": int(n_combinations),
            "interaction": float(interaction),
            "doses": np.asarray([] if doses is None else doses, dtype=float),
        },
        "U": U,
        "V": V,
        "W": W,
        "G": G,
        "H": H,
        "mu": mu,
    }
    return grid

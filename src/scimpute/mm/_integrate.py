"""``integrate``: learn a shared latent space of the modalities of a MuData.

The body is a pipeline of small steps, each with one job: read and check the modalities
(:func:`_read_inputs`), give every cell its role (:func:`_assign_roles`), standardise and
project the inputs (:func:`_training_set`), fit the candidate backbones (the linear one,
:func:`_fit_linear`; the autoencoders, :func:`_fit_autoencoder`: build the networks
(:func:`_build`), train them (:func:`scimpute.mm._train.train`, through
:func:`scimpute.nn.fit`) and embed every cell (:func:`_embed`)), keep one by validation on
the anchors (:func:`_select`, :mod:`scimpute.mm._select`) and write the results
(:func:`_write`). Nothing touches ``mdata`` before the last step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.utils.extmath import randomized_svd

from .._keys import MM_KEY, MM_PRIVATE_SUFFIX
from .._params import ParamError, check_random_state_value
from .._utils import check_random_state
from ._data import (
    ROLES,
    Cells,
    assign_roles,
    cell_table,
    check_modalities,
    feature_mask,
    modality_matrix,
    per_modality,
    resolve_pairing,
    split_column,
    warn_if_counts,
)
from ._linear import LinearFit, fit_cca, fit_readout, grid
from ._model import (
    Architecture,
    CrossModalAE,
    LossConfig,
    build,
    build_discriminator,
    encode_all,
    to_arrays,
)
from ._params import (
    BACKBONES,
    INTEGRATE,
    LINEAR_PCS,
    LINEAR_RANKS,
    LINEAR_RIDGES,
    IntegrateParams,
    document_params,
)
from ._record import FitSummary, IntegrationRecord, architecture, linear_name
from ._screen import (
    SCREEN_EPOCHS,
    SCREEN_PATIENCE,
    floor_reason,
    needs_screen,
    screen_set,
    screen_verdict,
)
from ._select import Candidate, choose, cv_linear, pair_score
from ._train import TrainingSet, train

if TYPE_CHECKING:
    from mudata import MuData

_VALIDATION = ROLES.index("validation")


@dataclass(frozen=True)
class Inputs:
    """The checked input matrices of the modalities (raw values, features as selected)."""

    modalities: list[str]
    features: dict[str, pd.Index]
    matrices: dict[str, np.ndarray]
    layers: dict[str, str | None]


@dataclass(frozen=True)
class Standardisation:
    """How a modality's values become what its encoder reads."""

    mean: np.ndarray
    scale: np.ndarray
    projection: np.ndarray | None


@dataclass(frozen=True)
class Embeddings:
    """Shared latent of every cell, and per modality its shared and private latents."""

    joint: np.ndarray
    shared: dict[str, np.ndarray]
    private: dict[str, np.ndarray]
    private_mean: dict[str, np.ndarray]


def _read_inputs(mdata, modalities, layer, use_var) -> Inputs:
    """Modalities to integrate and their dense, finite input matrices (nothing is written)."""
    mods = check_modalities(mdata, modalities)
    features, matrices, layers = {}, {}, {}
    for m in mods:
        a = mdata[m]
        lay = per_modality(layer, m)
        mask = feature_mask(a, per_modality(use_var, m), m)
        features[m] = pd.Index(a.var_names[mask])
        if not features[m].is_unique:
            raise ValueError(f"mdata[{m!r}].var_names has duplicates; make them unique first.")
        matrices[m] = modality_matrix(a, lay, features[m], m)
        layers[m] = lay
        warn_if_counts(matrices[m], m, lay)
    return Inputs(mods, features, matrices, layers)


def _assign_roles(mdata, inputs: Inputs, pairing, spec: IntegrateParams, rng) -> tuple:
    """``(cells, role)``: where every cell sits in each modality, and its role in training."""
    cells = cell_table(mdata, inputs.modalities)
    frac, mask = resolve_pairing(pairing, mdata, cells, inputs.modalities)
    return cells, assign_roles(cells, frac, mask, spec.validation_fraction, rng)


def _n_components(n_pcs: int | str | None, n_train: int) -> int:
    """Principal components the encoder reads (0: it reads the features)."""
    if n_pcs is None:
        return 0
    k = min(50, max(10, n_train // 10)) if n_pcs == "auto" else int(n_pcs)
    return min(k, n_train - 1)


def _standardise(x: np.ndarray, rows: np.ndarray, spec: IntegrateParams, rng) -> Standardisation:
    """Mean and scale over the training ``rows``, and the PCA loadings the encoder reads."""
    mu = x[rows].mean(0)
    sd = x[rows].std(0)
    if spec.standardize == "global":  # one scale per modality: total variance = n_features
        sd = np.full_like(sd, np.sqrt(np.mean(sd**2)))
    sd = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
    xs = ((x - mu) / sd).astype(np.float32)
    k = _n_components(spec.n_pcs, rows.size)
    projection = None
    if 0 < k < xs.shape[1]:
        _, _, vt = randomized_svd(xs[rows], k, random_state=int(rng.integers(0, 2**31 - 1)))
        projection = vt.T.astype(np.float32)
    return Standardisation(mu.astype(np.float32), sd, projection)


def _training_set(
    inputs: Inputs, cells: Cells, role: np.ndarray, spec: IntegrateParams, rng
) -> tuple[TrainingSet, dict[str, Standardisation]]:
    """Per modality: training and validation rows, standardised inputs of every cell."""
    train_rows, val_rows, arrays, std = {}, {}, {}, {}
    for j, m in enumerate(inputs.modalities):
        rows = cells.rows[:, j]
        tr = rows[(rows >= 0) & (role != _VALIDATION)]
        if tr.size < 2:
            raise ValueError(
                f"Modality {m!r} has {tr.size} training cell(s); at least 2 are needed "
                "(lower validation_fraction)."
            )
        train_rows[m] = np.sort(tr)
        val_rows[m] = np.sort(rows[(rows >= 0) & (role == _VALIDATION)])
        std[m] = s = _standardise(inputs.matrices[m], tr, spec, rng)
        xs = ((inputs.matrices[m] - s.mean) / s.scale).astype(np.float32)
        arrays[m] = (xs if s.projection is None else xs @ s.projection, xs)
    val_cells = np.flatnonzero(role == _VALIDATION)
    ts = TrainingSet(
        inputs=arrays,
        train_rows=train_rows,
        val_rows=val_rows,
        anchors=np.flatnonzero(role == ROLES.index("anchor")),
        cell_rows=cells.rows,
        val_pairs=val_cells[cells.paired[val_cells]],
    )
    return ts, std


def _build(arch: Architecture, spec: IntegrateParams, rng) -> tuple:
    """``(seed of the step keys, networks, discriminator or None)``, drawn from ``rng``."""
    seed = int(rng.integers(0, 2**31 - 1))
    model = build(arch, rng)
    disc = build_discriminator(arch, rng) if spec.alignment == "adversarial" else None
    return seed, model, disc


def _embed(model: CrossModalAE, ts: TrainingSet, cells: Cells, n_latent: int) -> Embeddings:
    """Latents of every cell of every modality, and their mean over the modalities."""
    shared, private, private_mean = {}, {}, {}
    for m in ts.modalities:
        z, u = encode_all(model, m, np.asarray(ts.inputs[m][0]))
        shared[m], private[m] = z, u
        tr = ts.train_rows[m]
        private_mean[m] = u[tr].mean(0) if u.shape[1] else np.zeros(0, np.float32)
    return Embeddings(_joint(shared, cells, ts.modalities), shared, private, private_mean)


@dataclass(frozen=True)
class Backbone:
    """One fitted candidate: what ``_write`` and the record need, and its validation score."""

    candidate: Candidate
    spec: IntegrateParams
    emb: Embeddings
    projection: dict[str, np.ndarray | None]
    weights: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    n_steps: int = 0
    n_epochs: int = 0
    best_epoch: int = 0  # 1-based
    #: linear only: ``refit(ts)`` -> shared latent of every row of every modality, the
    #: same capacity fitted on the complete anchors of ``ts`` (the network screen's linear)
    refit: Callable[[TrainingSet], dict[str, np.ndarray]] | None = field(default=None, repr=False)


#: relative ridge of the linear backbone's read-outs (translation).
READOUT_ALPHA = 0.1
#: fewest anchors measured in every modality for the linear backbone.
MIN_LINEAR_ANCHORS = 10


def _joint(shared: Mapping[str, np.ndarray], cells: Cells, mods: list[str]) -> np.ndarray:
    """Mean over the modalities that measured each cell of its shared latents."""
    d = next(iter(shared.values())).shape[1]
    joint = np.zeros((len(cells.names), d), dtype=np.float64)
    count = np.zeros(len(cells.names))
    for j, m in enumerate(mods):
        here = cells.rows[:, j] >= 0
        joint[here] += shared[m][cells.rows[here, j]]
        count[here] += 1
    with np.errstate(invalid="ignore"):
        return (joint / count[:, None]).astype(np.float32)


def _validation_rows(ts: TrainingSet, cells: Cells) -> dict[str, np.ndarray]:
    """Rows in every modality of the validation pairs (-1 where absent)."""
    return {m: cells.rows[ts.val_pairs, j] for j, m in enumerate(ts.modalities)}


def _score(name, backbone, settings, shared, ts, cells, t0) -> Candidate:
    score, se, per_cell = pair_score(shared, _validation_rows(ts, cells))
    return Candidate(name, backbone, settings, score, se, time.perf_counter() - t0, per_cell)


def _complete_anchors(ts: TrainingSet) -> np.ndarray:
    """``(n, n_modalities)`` rows of the anchor cells measured in every modality."""
    r = ts.cell_rows[ts.anchors]
    return r[(r >= 0).all(1)]


def _fit_linear(
    inputs: Inputs,
    ts: TrainingSet,
    cells: Cells,
    spec: IntegrateParams,
    rng,
    ranks: Sequence[int] = LINEAR_RANKS,
) -> tuple[Backbone, pd.DataFrame] | None:
    """Regularised CCA on per-modality PCA, capacity chosen by CV within the anchors.

    ``None`` when fewer than :data:`MIN_LINEAR_ANCHORS` anchors are measured in every
    modality. Also returns the cross-validation table (one row per capacity tried).
    """
    t0 = time.perf_counter()
    mods = ts.modalities
    arows = _complete_anchors(ts)
    if arows.shape[0] < MIN_LINEAR_ANCHORS:
        return None
    std, scores = {}, {}
    for m in mods:  # PCA of the standardised profiles, training cells of the modality
        k = min(max(LINEAR_PCS), arows.shape[0] - 2, ts.train_rows[m].size - 1)
        std[m] = _standardise(inputs.matrices[m], ts.train_rows[m], spec.replace(n_pcs=k), rng)
        xs = ts.inputs[m][1]
        scores[m] = xs if std[m].projection is None else xs @ std[m].projection
    p_max = max(v.shape[1] for v in scores.values())  # a modality with fewer uses all
    options = grid(LINEAR_PCS, ranks, LINEAR_RIDGES, p_max) or grid(
        LINEAR_PCS, LINEAR_RANKS, LINEAR_RIDGES, p_max
    )  # a rank the user fixed (n_latent=...) is kept where the PCA sizes allow it
    n_folds = min(spec.n_folds, arows.shape[0] // 3)
    anchor_scores = {m: scores[m][arows[:, j]] for j, m in enumerate(mods)}
    cv = cv_linear(anchor_scores, options, fit_cca, n_folds, rng)
    (p, k, r), cv_best = min(cv, key=lambda t: t[1])
    lf: LinearFit = fit_cca({m: v[:, :p] for m, v in anchor_scores.items()}, k, r)
    shared = {m: lf.embed(m, scores[m][:, :p]) for m in mods}
    weights = {}
    for m in mods:
        weights[linear_name("map", m)] = lf.maps[m].astype(np.float32)
        weights[linear_name("offset", m)] = lf.offsets[m].astype(np.float32)
    for j, s_ in enumerate(mods):  # read-outs: source latent -> target features
        for i, t_ in enumerate(mods):
            if s_ == t_:
                rows_s = rows_t = ts.train_rows[t_]
            else:
                rows_s, rows_t = arows[:, j], arows[:, i]
            coef = fit_readout(shared[s_][rows_s], ts.inputs[t_][1][rows_t], READOUT_ALPHA)
            weights[linear_name("readout", s_, t_)] = coef
    projection = {m: None if std[m].projection is None else std[m].projection[:, :p] for m in mods}
    lin_spec = spec.replace(backbone="linear", n_latent=int(lf.maps[mods[0]].shape[1]), n_pcs=p)
    lin_spec = lin_spec.replace(n_private=0)
    settings = f"n_pcs={p}, rank={lin_spec.n_latent}, ridge={r} (CV FOSCTTM {cv_best:.4f})"
    cand = _score("linear", "linear", settings, shared, ts, cells, t0)
    emb = Embeddings(
        _joint(shared, cells, mods),
        shared,
        {m: np.zeros((v.shape[0], 0), np.float32) for m, v in shared.items()},
        {m: np.zeros(0, np.float32) for m in mods},
    )

    def refit(sub: TrainingSet) -> dict[str, np.ndarray]:
        ar = _complete_anchors(sub)
        fit = fit_cca({m: scores[m][ar[:, j], :p] for j, m in enumerate(mods)}, k, r)
        return {m: fit.embed(m, scores[m][:, :p]) for m in mods}

    table = pd.DataFrame(
        {
            "name": "linear-cv",
            "backbone": "linear",
            "settings": [f"n_pcs={a}, rank={b}, ridge={c}" for (a, b, c), _ in cv],
            "score": [v for _, v in cv],
            "se": np.nan,
            "fit_seconds": np.nan,
            "chosen": [(a, b, c) == (p, k, r) for (a, b, c), _ in cv],
        }
    )
    return Backbone(cand, lin_spec, emb, projection, weights, {}, refit=refit), table


def _fit_autoencoder(
    ts: TrainingSet,
    std: dict[str, Standardisation],
    inputs: Inputs,
    cells: Cells,
    spec: IntegrateParams,
    n_anchors: int,
    rng,
    progress: bool,
    guide: Backbone | None = None,
) -> Backbone:
    """Train the cross-modal autoencoder (guided by the linear solution ``guide`` if given)."""
    t0 = time.perf_counter()
    name = "autoencoder" if guide is None else "guided"
    if guide is not None:
        spec = spec.replace(n_latent=guide.spec.n_latent)
        ts = TrainingSet(
            inputs={m: (*ts.inputs[m][:2], guide.emb.shared[m]) for m in ts.modalities},
            train_rows=ts.train_rows,
            val_rows=ts.val_rows,
            anchors=ts.anchors,
            cell_rows=ts.cell_rows,
            val_pairs=ts.val_pairs,
        )
    spec = spec.replace(backbone=name)
    projection = {m: std[m].projection for m in inputs.modalities}
    arch = architecture(spec, inputs.modalities, inputs.features, projection)
    seed, model, disc = _build(arch, spec, rng)
    cfg = LossConfig(
        alignment=spec.alignment,
        dropout=spec.dropout,
        n_modalities=len(arch.modalities),
        has_anchors=ts.anchors.size > 0,  # real or pseudo-anchors (feature links)
        temperature=spec.temperature,
        guided=guide is not None,
    )
    trained = train(model, disc, arch, ts, spec, cfg, seed=seed, rng=rng, progress=progress)
    weights = to_arrays(trained.model)
    _check_finite(weights)
    emb = _embed(trained.model, ts, cells, arch.n_latent)
    settings = f"n_latent={arch.n_latent}, n_hidden={arch.n_hidden}, n_layers={arch.n_layers}"
    cand = _score(name, name, settings, emb.shared, ts, cells, t0)
    return Backbone(
        cand,
        spec,
        emb,
        projection,
        weights,
        trained.history,
        trained.n_steps,
        trained.n_epochs,
        trained.best_epoch + 1,
    )


def _select(
    ts: TrainingSet,
    std: dict[str, Standardisation],
    inputs: Inputs,
    cells: Cells,
    spec: IntegrateParams,
    n_anchors: int,
    rng,
    progress: bool,
    ranks: Sequence[int] = LINEAR_RANKS,
) -> tuple[Backbone, pd.DataFrame, dict | None]:
    """Fit the candidate backbones that ``spec.backbone`` asks for and keep one.

    ``"auto"``: linear, guided and autoencoder (the first two need anchors), scored on the
    validation pairs; :func:`scimpute.mm._select.choose` picks. Which networks are trained
    in full is decided first (the floor and the screen, :mod:`scimpute.mm._screen`). The
    table lists every candidate (a network not trained in full with score NaN and the
    reason, the screen fits as ``*-screen`` rows, and the linear cross-validation); the
    dict is the screen's decision (``None`` unless ``"auto"`` with a linear candidate).
    """
    want = spec.backbone
    # one generator per candidate, drawn whatever is fitted: a rerun with the backbone that
    # was kept (the stored params) reproduces the kept fit exactly
    seeds = rng.integers(0, 2**31 - 1, len(BACKBONES))
    rngs = {b: np.random.default_rng(int(s)) for b, s in zip(BACKBONES, seeds, strict=True)}
    fits: list[Backbone] = []
    cv = None
    linear = None
    if want in ("auto", "linear", "guided") and n_anchors:
        out = _fit_linear(inputs, ts, cells, spec, rngs["linear"], ranks)
        if out is not None:
            linear, cv = out
    if want in ("linear", "guided") and linear is None:
        raise ValueError(
            f"{INTEGRATE}: backbone={want!r} needs at least {MIN_LINEAR_ANCHORS} anchor cells "
            "measured in every modality; use backbone='autoencoder' or more anchors."
        )
    if want in ("auto", "linear") and linear is not None:
        fits.append(linear)
    nets = [b for b in ("guided", "autoencoder") if want in ("auto", b)]
    nets = [b for b in nets if b == "autoencoder" or linear is not None]
    screen_rows: list[Candidate] = []
    skipped: dict[str, str] = {}
    decision = None
    if want == "auto" and linear is not None:
        decision, skipped, screen_rows = _screen_networks(
            nets, linear, ts, std, inputs, cells, spec, n_anchors, seeds, progress
        )
    skipped_rows = []
    for b in nets:
        if b in skipped:
            skipped_rows.append(_not_trained(b, skipped[b]))
            continue
        guide = linear if b == "guided" else None
        fits.append(
            _fit_autoencoder(ts, std, inputs, cells, spec, n_anchors, rngs[b], progress, guide)
        )
    chosen = choose([f.candidate for f in fits]) if want == "auto" else 0
    rows = pd.DataFrame(
        [f.candidate.to_uns(i == chosen) for i, f in enumerate(fits)]
        + [c.to_uns(False) for c in skipped_rows + screen_rows]
    )
    table = rows if cv is None else pd.concat([rows, cv], ignore_index=True)
    table.index = table.index.astype(str)
    return fits[chosen], table, decision


def _not_trained(backbone: str, why: str) -> Candidate:
    """The candidate row of a network that was not trained in full (score NaN)."""
    return Candidate(backbone, backbone, f"not trained: {why}", np.nan, np.nan, 0.0)


def _screen_networks(
    nets, linear, ts, std, inputs, cells, spec, n_anchors, seeds, progress
) -> tuple[dict, dict[str, str], list[Candidate]]:
    """Which networks ``backbone="auto"`` trains in full (:mod:`scimpute.mm._screen`).

    Returns the record of the decision (``uns[key]["network_screen"]``), the reason of every
    network not trained in full, and the candidate rows of the screen fits. The screen draws
    from its own generators (seeded from ``seeds``, drawing nothing from the others), so the
    full fits are the ones a call with that backbone makes.
    """
    record = {
        "network_floor": float(spec.network_floor),
        "screen_cells": int(spec.screen_cells),
        "screen_margin": float(spec.screen_margin),
    }
    if not nets:
        return {**record, "rule": "none", "reason": "no network candidate"}, {}, []
    why = floor_reason(linear.candidate, spec.network_floor)
    if why is not None:
        return {**record, "rule": "floor", "reason": why}, dict.fromkeys(nets, why), []
    if not needs_screen(ts, spec.screen_cells) or linear.refit is None:
        why = f"at most screen_cells={spec.screen_cells} training cells: networks trained in full"
        return {**record, "rule": "full", "reason": why}, {}, []
    t0 = time.perf_counter()
    srng = np.random.default_rng((int(seeds[0]), 1))
    sub = screen_set(ts, spec.screen_cells, srng)
    shared = linear.refit(sub)
    info = f"screen: {sub.anchors.size} anchors, {max(r.size for r in sub.train_rows.values())}"
    lin = _score("linear-screen", "linear", f"{linear.candidate.settings}; {info} cells",
                 shared, sub, cells, t0)  # fmt: skip
    guide = replace(linear, emb=replace(linear.emb, shared=shared))
    short = spec.replace(
        max_epochs=min(spec.max_epochs, SCREEN_EPOCHS), patience=min(spec.patience, SCREEN_PATIENCE)
    )
    rows, skipped, verdicts = [lin], {}, []
    for i, b in enumerate(nets, start=1):
        rng_b = np.random.default_rng((int(seeds[BACKBONES.index(b)]), 1 + i))
        fit = _fit_autoencoder(
            sub, std, inputs, cells, short, n_anchors, rng_b, progress,
            guide if b == "guided" else None,
        )  # fmt: skip
        c = replace(
            fit.candidate,
            name=f"{b}-screen",
            settings=f"{fit.candidate.settings}; {info} cells, {fit.n_epochs} epochs",
        )
        rows.append(c)
        full, why = screen_verdict(lin, c, spec.screen_margin)
        verdicts.append(f"{b}: {why}")
        if not full:
            skipped[b] = why
    reason = "; ".join(verdicts)
    return {**record, "rule": "screen", "reason": reason}, skipped, rows


def _check_finite(weights: Mapping[str, np.ndarray]) -> None:
    """The trainer stops on a non-finite loss; this guards the weights that are stored."""
    if not all(np.isfinite(w).all() for w in weights.values()):
        raise FloatingPointError(
            f"{INTEGRATE}: training diverged (non-finite weights); nothing was written. Lower "
            "learning_rate or the loss weights, or check the input scale."
        )


def _seed_record(random_state) -> int | str | None:
    if random_state is None or isinstance(random_state, np.random.Generator):
        return "Generator" if random_state is not None else None
    return int(random_state)


def _pairing_record(pairing) -> Any:
    if pairing is None or isinstance(pairing, bool | float | int | str):
        return pairing
    return "mask"


def _write(target, key: str, emb: Embeddings, role: np.ndarray, record: IntegrationRecord):
    """Store the embeddings, the cells' roles and the model (the only step that writes)."""
    private_key = f"{key}{MM_PRIVATE_SUFFIX}"
    target.obsm[key] = emb.joint
    for m in record.modalities:
        target[m].obsm[key] = emb.shared[m]
        if record.arch.n_private:
            target[m].obsm[private_key] = emb.private[m]
        elif private_key in target[m].obsm:
            del target[m].obsm[private_key]
    target.obs[split_column(key)] = pd.Categorical.from_codes(role, categories=list(ROLES))
    target.uns[key] = record.to_uns()


@document_params(IntegrateParams)
def integrate(
    mdata: MuData,
    *,
    modalities: Sequence[str] | None = None,
    pairing: bool | float | str | np.ndarray | pd.Series | None = True,
    layer: str | Mapping[str, str | None] | None = None,
    use_var: str | Mapping[str, str | None] | None = None,
    key_added: str = MM_KEY,
    random_state: int | np.random.Generator | None = 0,
    progress: bool = True,
    copy: bool = False,
    links: str | pd.DataFrame | Sequence[str] | None = None,
    **params: Any,
) -> MuData | None:
    """Learn a shared latent space of several modalities with a cross-modal autoencoder.

    One encoder and one decoder (MLPs, JAX/equinox, trained with optax) per modality map each
    cell to a shared latent ``z`` (``n_latent`` dims, aligned across modalities) and a private
    latent ``u`` (``n_private`` dims, not aligned) and back (Yang et al., Nat Commun 2021).
    The loss is reconstruction + alignment of the shared latents of the modalities
    (``alignment``) + for *anchor* cells (the same cell measured in two modalities, matched by
    obs name) the squared distance between their shared latents and cross-reconstruction
    (decoding one modality from the other's shared latent) + a penalty that keeps the shared
    latent from shrinking. See :mod:`scimpute.mm._model` for the exact terms. Training goes
    through scimpute's one trainer (:func:`scimpute.nn.fit`: mini-batches in one compiled
    :func:`jax.lax.scan` per epoch, early stopping), is seeded, and shows a progress bar.

    **Input.** Each modality's values are used as given (``X`` or ``layer``), restricted to
    the features ``use_var`` selects, and standardised per feature (mean 0, variance 1 over
    the training cells). They should be log-normalised: log1p of library-size-normalised
    counts for RNA or ATAC, a centred log-ratio (CLR) for antibody-derived tags.
    :func:`scimpute.mm.normalize` writes such a layer and a feature selection. A warning
    is raised when the data look like raw counts.

    Parameters
    ----------
    mdata
        :class:`~mudata.MuData`; its modalities may hold different (overlapping) cells.
    modalities
        Modalities to integrate (at least two); default all.
    pairing
        Which cells are anchors. Cells are paired when they have the same obs name in two or
        more modalities. ``True``: every paired training cell; a float ``f`` in [0, 1]: a
        random fraction ``f`` of them; a boolean mask over ``mdata.obs_names`` (array,
        :class:`pandas.Series` indexed by obs names, or the name of a boolean column of
        ``mdata.obs``): exactly these cells (they must be paired); ``False`` / ``None`` / 0:
        no anchors (unpaired integration, alignment of distributions only). Paired cells that
        are not anchors are trained on as if unpaired.
    layer
        Layer holding the data (``None``: ``X``), or a mapping modality -> layer.
    use_var
        Boolean ``.var`` column selecting the features to use (``None``: all), or a mapping
        modality -> column (modalities not in the mapping use all features).
    key_added
        Key of the results (see below).
    random_state
        Seed or :class:`numpy.random.Generator`: initialisation, validation and anchor
        choice, batches and dropout.
    progress
        Show a progress bar over epochs.
    copy
        Work on a copy of ``mdata`` and return it.
    links
        Feature links between modalities (:func:`scimpute.mm.link_features`: a key of
        ``mdata.uns``, a list of keys, or a link table). The cells that are not anchors are
        matched across modalities through them (:mod:`scimpute.mm._unpaired`, MaxFuse-style)
        and the matched pairs train as *pseudo-anchors*: this is what aligns unpaired
        modalities (``pairing=False``) and helps partially paired ones. Without links and
        without anchors a warning says that alignment relies on distribution matching alone.
    **params
        Options of :class:`scimpute.mm._params.IntegrateParams` (listed below), checked once: a
        value of the wrong type or out of range raises a :class:`ValueError`
        (``"mm.integrate: <name> must be ..., got ..."``), an unknown name a
        :class:`TypeError`.

    Other Parameters
    ----------------
    {params}

    Returns
    -------
    ``None`` (or the copy when ``copy=True``). Writes

    - ``mdata.obsm[key_added]``: ``(n_obs, n_latent)`` shared latent of every cell, the mean of
      its embeddings in the modalities that measured it (NaN only for cells in none of the
      integrated modalities);
    - ``mdata[m].obsm[key_added]``: the shared latent of modality ``m``'s cells computed from
      ``m`` alone, and ``mdata[m].obsm[key_added + "_private"]`` their private latent (when
      ``n_private > 0``);
    - ``mdata.obs[key_added + "_split"]``: each cell's role, ``"anchor"``, ``"train"``
      (trained on, pairing not used), ``"validation"`` (not trained on) or ``"unused"``;
    - ``mdata.uns[key_added]``: the :class:`~scimpute.mm._record.IntegrationRecord` as plain
      values: ``params`` (every option as run, ``n_private`` resolved, and ``modalities``,
      ``pairing``, ``random_state``), ``fit`` (counts of anchors and validation cells, steps
      per epoch, epochs run, best epoch (1-based), training time), ``history`` (per-epoch
      means of each loss term, ``val_`` terms on the validation cells), and the fitted model:
      ``weights`` (flat name -> array), ``features`` (var names used per modality), ``mean``
      and ``scale`` (standardisation), ``private_mean``, ``projection``, ``layer``. This
      survives :meth:`~mudata.MuData.write` / :func:`mudata.read_h5mu`, so
      :func:`scimpute.mm.translate` and :func:`scimpute.mm.invariant_features` work on a
      re-read file. Also ``backbone`` (the one kept), ``candidates`` (every candidate's
      validation FOSCTTM, see :class:`~scimpute.mm._record.IntegrationRecord`) and, for
      ``backbone="auto"`` with anchors, ``network_screen``: whether the networks were
      trained in full and why (``rule`` ``"floor"``, ``"screen"`` or ``"full"``, and
      ``reason``; :mod:`scimpute.mm._screen`).

    Raises
    ------
    TypeError
        An unknown option, or ``mdata`` that is not a MuData.
    ValueError
        An option of the wrong type or out of range, fewer than two modalities, a modality
        without cells or features, NaN or infinite values, ``pairing`` asking for anchors when
        no obs name is shared between modalities.
    FloatingPointError
        Training diverged. Nothing is written when an error is raised.

    """
    t0 = time.perf_counter()
    spec = IntegrateParams.from_kwargs(INTEGRATE, params)
    rng = check_random_state(check_random_state_value(INTEGRATE, random_state))
    if not isinstance(key_added, str) or not key_added:
        raise ParamError(f"{INTEGRATE}: key_added must be a non-empty string, got {key_added!r}.")

    inputs = _read_inputs(mdata, modalities, layer, use_var)
    cells, role = _assign_roles(mdata, inputs, pairing, spec, rng)
    n_anchors = int((role == ROLES.index("anchor")).sum())
    if spec.n_private is None:  # without anchors nothing tells private from shared variation
        spec = spec.replace(n_private=4 if n_anchors else 0)
    ts, std = _training_set(inputs, cells, role, spec, rng)
    # -- feature links -> pseudo-anchors (scimpute.mm._unpaired; issue 11 section 2)
    pseudo = None
    if links is not None:
        from dataclasses import replace as _replace

        from ._unpaired import UnpairedParams, pseudo_anchors

        rows, pseudo = pseudo_anchors(
            mdata, links, inputs.modalities, inputs.matrices, inputs.layers, cells.rows,
            role, ROLES, UnpairedParams(), rng,
        )  # fmt: skip
        extra = np.arange(len(cells.names), len(cells.names) + rows.shape[0])
        ts = _replace(
            ts,
            cell_rows=np.vstack([ts.cell_rows, rows]),
            anchors=np.concatenate([ts.anchors, extra]),
        )
    elif n_anchors == 0:
        import warnings

        warnings.warn(
            f"{INTEGRATE}: no anchors (pairing={_pairing_record(pairing)!r}) and no links: "
            "alignment relies on distribution matching alone, which rarely aligns real "
            "modalities (FOSCTTM near 0.5). Pass links= (scimpute.mm.link_features).",
            UserWarning,
            stacklevel=2,
        )
    # -- end of feature links
    ranks = (spec.n_latent,) if "n_latent" in params else LINEAR_RANKS  # the user's rank wins
    best, table, screen = _select(ts, std, inputs, cells, spec, n_anchors, rng, progress, ranks)

    mods = inputs.modalities
    record = IntegrationRecord(
        params=best.spec,
        modalities=tuple(mods),
        pairing=_pairing_record(pairing),
        random_state=_seed_record(random_state),
        features=inputs.features,
        layer=inputs.layers,
        mean={m: std[m].mean for m in mods},
        scale={m: std[m].scale for m in mods},
        private_mean={m: np.asarray(best.emb.private_mean[m], np.float32) for m in mods},
        projection=best.projection,
        weights=best.weights,
        history=best.history,
        fit=FitSummary(
            n_anchors=n_anchors,
            n_validation=int((role == _VALIDATION).sum()),
            n_steps_per_epoch=best.n_steps,
            n_epochs_run=best.n_epochs,
            best_epoch=best.best_epoch,
            training_time_s=time.perf_counter() - t0,
        ),
        backbone=best.spec.backbone,
        candidates=table,
        screen=screen,
    )
    emb = best.emb
    target = mdata.copy() if copy else mdata
    _write(target, key_added, emb, role, record)
    if pseudo is not None:  # the matching behind the pseudo-anchors (issue 11 section 2)
        target.uns[key_added]["pseudo_anchors"] = pseudo
    return target if copy else None

"""``integrate``: learn a shared latent space of the modalities of a MuData."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from sklearn.utils.extmath import randomized_svd
from tqdm.auto import tqdm

from .._keys import MM_KEY, MM_PRIVATE_SUFFIX
from .._utils import RandomState, check_random_state, h5ad_safe
from ._data import (
    ROLES,
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
from ._model import (
    Architecture,
    LossConfig,
    build,
    build_discriminator,
    encode_all,
    epoch_function,
    eval_function,
    to_arrays,
)

_ALIGNMENTS = ("adversarial", "mmd", "none")


def _schedule(pool: np.ndarray, n_steps: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_steps, size)`` draws from ``pool``: consecutive shuffles, so every item is used."""
    reps = -(-n_steps * size // pool.size)
    draws = np.concatenate([rng.permutation(pool) for _ in range(reps)])
    return draws[: n_steps * size].reshape(n_steps, size)


def integrate(
    mdata,
    *,
    modalities: Sequence[str] | None = None,
    pairing: bool | float | str | np.ndarray | pd.Series | None = True,
    n_latent: int = 8,
    n_private: int | None = None,
    alignment: Literal["adversarial", "mmd", "none"] = "mmd",
    layer: str | Mapping[str, str | None] | None = None,
    use_var: str | Mapping[str, str | None] | None = None,
    n_pcs: int | Literal["auto"] | None = "auto",
    n_hidden: int = 64,
    n_layers: int = 1,
    n_epochs: int = 200,
    batch_size: int = 128,
    learning_rate: float = 3e-4,
    weight_decay: float = 1e-4,
    dropout: float = 0.3,
    anchor_weight: float = 3.0,
    cross_weight: float = 1.0,
    alignment_weight: float = 1.0,
    scale_weight: float = 10.0,
    temperature: float = 2.0,
    validation_fraction: float = 0.1,
    early_stopping: bool = True,
    patience: int = 20,
    standardize: Literal["feature", "global"] = "global",
    key_added: str = MM_KEY,
    random_state: RandomState = 0,
    progress: bool = True,
    copy: bool = False,
):
    """Learn a shared latent space of several modalities with a cross-modal autoencoder.

    One encoder and one decoder (MLPs, JAX/equinox, trained with optax) per modality map each
    cell to a shared latent ``z`` (``n_latent`` dims, aligned across modalities) and a private
    latent ``u`` (``n_private`` dims, not aligned) and back (Yang et al., Nat Commun 2021).
    The loss is reconstruction + alignment of the shared latents of the modalities
    (``alignment``) + for *anchor* cells (the same cell measured in two modalities, matched by
    obs name) the squared distance between their shared latents and cross-reconstruction
    (decoding one modality from the other's shared latent) + a penalty that keeps the shared
    latent from shrinking. See :mod:`scimpute.mm._model` for the exact terms. Training is
    mini-batched (each epoch is one compiled :func:`jax.lax.scan`), seeded, and shows a tqdm
    progress bar.

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
    n_latent
        Dimension of the shared latent space.
    n_private
        Dimension of each modality's private latent, which holds variation that the other
        modalities do not share. ``None``: 4 with anchors, 0 without (without anchors nothing
        tells shared from private variation, so all of it must go through the aligned space).
    alignment
        ``"mmd"``: multi-scale Gaussian-kernel maximum mean discrepancy between the shared
        latents of each pair of modalities; ``"adversarial"``: a discriminator learns to
        tell the modality from the shared latent and the encoders are trained to confuse it;
        ``"none"``: anchors only.
    layer
        Layer holding the data (``None``: ``X``), or a mapping modality -> layer.
    use_var
        Boolean ``.var`` column selecting the features to use (``None``: all), or a mapping
        modality -> column (modalities not in the mapping use all features).
    n_pcs
        The encoder of a modality with more than ``n_pcs`` features reads the top ``n_pcs``
        principal components of its standardised features (computed on the training cells)
        instead of the features: fewer weights, less noise, far less memorisation of the
        anchors on small data sets. The decoders always output every feature. ``"auto"``:
        one component per 10 training cells, between 10 and 50; ``None``: the encoders read
        the features.
    n_hidden, n_layers
        Width and number of hidden layers of every encoder and decoder.
    n_epochs, batch_size, learning_rate, weight_decay, dropout
        Training: epochs (an epoch draws ``ceil(max_m n_m / batch_size)`` batches of every
        modality and of the anchors), cells per batch, AdamW settings (gradients clipped to
        global norm 5), and input dropout of the encoders.
    anchor_weight, cross_weight, alignment_weight, scale_weight
        Weights of the anchor loss, the cross-reconstruction, the alignment and the scale
        penalty (the reconstruction has weight 1).
    temperature
        Temperature of the contrastive part of the anchor loss (logits are
        ``-|z_a - z_b|^2 / (temperature * n_latent)``).
    validation_fraction
        Fraction of the known pairs (the cells ``pairing`` selects) held out of training
        entirely; without anchors, a fraction of all cells. Their losses give
        ``history["val_*"]`` and drive early stopping, and
        :func:`scimpute.mm.invariant_features` can score on them (``cells="validation"``).
    early_stopping, patience
        Stop when the validation loss has not improved for ``patience`` epochs and keep the
        weights of the best epoch (needs validation cells in every modality).
    standardize
        ``"feature"``: scale every feature to unit variance; ``"global"``: centre every
        feature and divide the modality by one common scale (keeps the relative variances of
        the features, so that rare, noisy features do not weigh as much as abundant ones).
    key_added
        Key of the results (see below).
    random_state
        Seed or :class:`numpy.random.Generator`: initialisation, validation and anchor
        choice, batches and dropout.
    progress
        Show a progress bar over epochs.
    copy
        Work on a copy of ``mdata`` and return it.

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
    - ``mdata.uns[key_added]``: ``params`` (every argument above, the counts of anchors and
      validation cells, training time), ``history`` (per-epoch means of each loss term,
      ``val_`` terms on the validation cells), and the fitted model as plain arrays:
      ``weights`` (flat name -> array), ``features`` (var names used per modality), ``mean`` and
      ``scale`` (standardisation), ``private_mean``, ``layer``. This survives
      :meth:`~mudata.MuData.write` / :func:`mudata.read_h5mu`, so :func:`scimpute.mm.translate`
      and :func:`scimpute.mm.invariant_features` work on a re-read file.

    Raises
    ------
    ValueError
        Fewer than two modalities, a modality without cells or features, NaN or infinite
        values, ``pairing`` asking for anchors when no obs name is shared between
        modalities, or training that diverged. Nothing is written when an error is raised.

    """
    t0 = time.perf_counter()
    mods = check_modalities(mdata, modalities)
    if alignment not in _ALIGNMENTS:
        raise ValueError(f"alignment must be one of {_ALIGNMENTS}, got {alignment!r}.")
    for name, v in (("n_latent", n_latent), ("n_hidden", n_hidden), ("n_layers", n_layers)):
        if int(v) < 1:
            raise ValueError(f"{name} must be at least 1, got {v}.")
    if int(n_epochs) < 1 or int(batch_size) < 2:
        raise ValueError("n_epochs must be >= 1 and batch_size >= 2.")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    if standardize not in ("feature", "global"):
        raise ValueError(f"standardize must be 'feature' or 'global', got {standardize!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")

    # -- inputs (checked before anything is written)
    features, raw, layers = {}, {}, {}
    for m in mods:
        a = mdata[m]
        lay = per_modality(layer, m)
        mask = feature_mask(a, per_modality(use_var, m), m)
        features[m] = pd.Index(a.var_names[mask])
        if not features[m].is_unique:
            raise ValueError(f"mdata[{m!r}].var_names has duplicates; make them unique first.")
        raw[m] = modality_matrix(a, lay, features[m], m)
        layers[m] = lay
        warn_if_counts(raw[m], m, lay)

    cells = cell_table(mdata, mods)
    frac, mask = resolve_pairing(pairing, mdata, cells, mods)
    rng = check_random_state(random_state)
    role = assign_roles(cells, frac, mask, validation_fraction, rng)
    anchors = np.flatnonzero(role == ROLES.index("anchor"))
    has_anchors = anchors.size > 0
    if n_private is None:
        n_private = 4 if has_anchors else 0
    if int(n_private) < 0:
        raise ValueError(f"n_private must be >= 0, got {n_private}.")

    train_rows, val_rows, data, projection = {}, {}, {}, {}
    mean, scale = {}, {}
    for j, m in enumerate(mods):
        rows = cells.rows[:, j]
        tr = rows[(rows >= 0) & (role != ROLES.index("validation"))]
        if tr.size < 2:
            raise ValueError(
                f"Modality {m!r} has {tr.size} training cell(s); at least 2 are needed "
                "(lower validation_fraction)."
            )
        va = rows[(rows >= 0) & (role == ROLES.index("validation"))]
        train_rows[m], val_rows[m] = np.sort(tr), np.sort(va)
        mu = raw[m][tr].mean(0)
        sd = raw[m][tr].std(0)
        if standardize == "global":  # one scale per modality: total variance = n_features
            sd = np.full_like(sd, np.sqrt(np.mean(sd**2)))
        sd = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
        mean[m], scale[m] = mu.astype(np.float32), sd
        xs = ((raw[m] - mu) / sd).astype(np.float32)
        if n_pcs is None:
            k = 0
        elif n_pcs == "auto":
            k = min(50, max(10, tr.size // 10))
        else:
            k = int(n_pcs)
        k = min(k, tr.size - 1)
        if 0 < k < xs.shape[1]:
            _, _, vt = randomized_svd(xs[tr], k, random_state=int(rng.integers(0, 2**31 - 1)))
            projection[m] = vt.T.astype(np.float32)
            xin = xs @ projection[m]
        else:
            projection[m] = None
            xin = xs
        data[m] = (jnp.asarray(xin), jnp.asarray(xs))

    arch = Architecture(
        modalities=tuple(mods),
        n_inputs=tuple(int(data[m][0].shape[1]) for m in mods),
        n_features=tuple(len(features[m]) for m in mods),
        n_latent=int(n_latent),
        n_private=int(n_private),
        n_hidden=int(n_hidden),
        n_layers=int(n_layers),
    )
    cfg = LossConfig(
        alignment=alignment,
        dropout=float(dropout),
        n_modalities=len(mods),
        has_anchors=has_anchors,
        temperature=float(temperature),
    )
    key = jax.random.PRNGKey(int(rng.integers(0, 2**31 - 1)))
    model = build(arch, rng)
    params, static = eqx.partition(model, eqx.is_array)
    if alignment == "adversarial":
        dparams, dstatic = eqx.partition(build_discriminator(arch, rng), eqx.is_array)
    else:
        dparams, dstatic = None, None
    opt, dopt, run_epoch = epoch_function(cfg, float(learning_rate), float(weight_decay))
    opt_state = opt.init(params)
    dopt_state = dopt.init(dparams) if dparams is not None else None
    weights = jnp.asarray(
        [anchor_weight, cross_weight, alignment_weight, scale_weight], dtype=jnp.float32
    )

    n_steps = max(1, -(-max(r.size for r in train_rows.values()) // int(batch_size)))
    sizes = {m: min(int(batch_size), train_rows[m].size) for m in mods}
    a_size = min(int(batch_size), anchors.size)

    # validation batch: every validation cell (anchor terms on the paired ones)
    do_val = all(val_rows[m].size >= 2 for m in mods)
    if do_val:
        val_cells = np.flatnonzero(role == ROLES.index("validation"))
        val_cells = val_cells[cells.paired[val_cells]]
        val_has_pairs = has_anchors and val_cells.size > 0
        val_idx = {m: jnp.asarray(val_rows[m]) for m in mods}
        if val_has_pairs:
            vr = cells.rows[val_cells]
            val_aidx = {m: jnp.asarray(np.maximum(vr[:, j], 0)) for j, m in enumerate(mods)}
            val_amask = {
                m: jnp.asarray((vr[:, j] >= 0).astype(np.float32)) for j, m in enumerate(mods)
            }
        else:
            val_aidx = {m: jnp.zeros(1, jnp.int32) for m in mods}
            val_amask = {m: jnp.zeros(1, jnp.float32) for m in mods}
        run_eval = eval_function(cfg)

    history: dict[str, list[float]] = {}
    best = (np.inf, -1, params, dparams)
    bar = tqdm(range(int(n_epochs)), desc="integrate", disable=not progress, leave=False)
    for epoch in bar:
        idx = {m: jnp.asarray(_schedule(train_rows[m], n_steps, sizes[m], rng)) for m in mods}
        if has_anchors:
            ar = cells.rows[_schedule(anchors, n_steps, a_size, rng)]  # (steps, size, mods)
            aidx = {m: jnp.asarray(np.maximum(ar[..., j], 0)) for j, m in enumerate(mods)}
            amask = {
                m: jnp.asarray((ar[..., j] >= 0).astype(np.float32)) for j, m in enumerate(mods)
            }
        else:
            aidx, amask = {}, {}
        carry, parts = run_epoch(
            params,
            static,
            dparams,
            dstatic,
            opt_state,
            dopt_state,
            key,
            weights,
            data,
            (idx, aidx, amask),
        )
        params, dparams, opt_state, dopt_state, key = carry
        for k, v in parts.items():
            history.setdefault(k, []).append(float(v))
        if do_val:
            vparts = run_eval(
                params, static, dparams, dstatic, weights, data, val_idx, val_aidx, val_amask
            )
            for k, v in vparts.items():
                history.setdefault(f"val_{k}", []).append(float(v))
            if history["val_loss"][-1] < best[0]:
                best = (history["val_loss"][-1], epoch, params, dparams)
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if do_val and early_stopping and epoch - best[1] >= int(patience):
            break
    bar.close()
    stopped_epoch = len(history["loss"])
    if do_val and early_stopping and best[1] >= 0:
        params, dparams = best[2], best[3]

    if not np.isfinite(history["loss"][-1]) or not all(
        bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(params)
    ):
        raise FloatingPointError(
            "Training diverged (non-finite loss or weights); nothing was written. Lower "
            "learning_rate or the loss weights, or check the input scale."
        )

    # -- embeddings of every cell of every modality
    model = eqx.combine(params, static)
    z_mod, u_mod, private_mean = {}, {}, {}
    for m in mods:
        z, u = encode_all(model, m, np.asarray(data[m][0]))
        z_mod[m], u_mod[m] = z, u
        private_mean[m] = u[train_rows[m]].mean(0) if u.shape[1] else np.zeros(0, np.float32)
    joint = np.zeros((len(cells.names), arch.n_latent), dtype=np.float64)
    count = np.zeros(len(cells.names))
    for j, m in enumerate(mods):
        here = cells.rows[:, j] >= 0
        joint[here] += z_mod[m][cells.rows[here, j]]
        count[here] += 1
    with np.errstate(invalid="ignore"):
        joint = (joint / count[:, None]).astype(np.float32)

    elapsed = time.perf_counter() - t0
    params_rec = {
        "modalities": list(mods),
        "pairing": pairing if isinstance(pairing, bool | float | int | str) else "mask",
        "n_latent": int(n_latent),
        "n_private": int(n_private),
        "alignment": alignment,
        "n_pcs": "None" if n_pcs is None else n_pcs if n_pcs == "auto" else int(n_pcs),
        "n_hidden": int(n_hidden),
        "n_layers": int(n_layers),
        "n_epochs": int(n_epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "dropout": float(dropout),
        "anchor_weight": float(anchor_weight),
        "cross_weight": float(cross_weight),
        "alignment_weight": float(alignment_weight),
        "scale_weight": float(scale_weight),
        "temperature": float(temperature),
        "validation_fraction": float(validation_fraction),
        "random_state": random_state if isinstance(random_state, int) else "Generator",
        "n_anchors": int(anchors.size),
        "n_validation": int((role == ROLES.index("validation")).sum()),
        "n_steps_per_epoch": int(n_steps),
        "n_encoder_inputs": {m: int(data[m][0].shape[1]) for m in mods},
        "early_stopping": bool(early_stopping),
        "patience": int(patience),
        "standardize": standardize,
        "n_epochs_run": int(stopped_epoch),
        "best_epoch": int(best[1]) + 1 if best[1] >= 0 else stopped_epoch,
        "training_time_s": float(elapsed),
    }
    record = {
        "params": h5ad_safe(params_rec),
        "history": {k: np.asarray(v, dtype=np.float64) for k, v in history.items()},
        "weights": to_arrays(model),
        "features": {m: np.asarray(features[m], dtype=object) for m in mods},
        "mean": mean,
        "scale": scale,
        "private_mean": {m: np.asarray(private_mean[m], dtype=np.float32) for m in mods},
        "projection": {
            m: np.zeros((0, 0), np.float32) if projection[m] is None else projection[m]
            for m in mods
        },
        "layer": {m: "None" if layers[m] is None else layers[m] for m in mods},
    }

    # -- write (nothing above touched mdata)
    target = mdata.copy() if copy else mdata
    target.obsm[key_added] = joint
    for m in mods:
        target[m].obsm[key_added] = z_mod[m]
        if arch.n_private:
            target[m].obsm[f"{key_added}{MM_PRIVATE_SUFFIX}"] = u_mod[m]
        elif f"{key_added}{MM_PRIVATE_SUFFIX}" in target[m].obsm:
            del target[m].obsm[f"{key_added}{MM_PRIVATE_SUFFIX}"]
    target.obs[split_column(key_added)] = pd.Categorical.from_codes(role, categories=list(ROLES))
    target.uns[key_added] = record
    return target if copy else None

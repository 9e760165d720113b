"""CMap L1000 (24 cell lines x 20 compounds): latent arithmetic on the grid, leave-one-out.

1. Baselines with :func:`scimpute.tl.cross_validate` (leave-one-out over the 302 measured
   pairs).
2. ``autoencoder`` / ``vae`` with :func:`scimpute.tl.cross_validate_transfer`: the same
   leave-one-out information for every pair, ``n_groups`` networks trained (vmapped) instead
   of 302; network k never sees the pairs of group k (see its docstring).
   Two shift baselines: ``control`` (z(c', a) - z(c', DMSO), the issue's definition) and
   ``context_mean`` (z(c', a) - mean code of c''s treated profiles: the two-way additive
   model in latent space). Their gene-space counterparts are ``additive`` (a baseline of
   the registry) and ``two_way_additive`` (computed here).
3. Signature alignment vs width (Belyaeva et al.): one-hidden-layer autoencoders whose
   latent space is the hidden layer, widths 64 ... 2048, trained on all log1p profiles;
   cosine of each compound's signature between pairs of cell lines, gene vs latent space.

Usage::

    PYTHONPATH=src python benchmarks/transfer_cmap.py                  # everything
    PYTHONPATH=src python benchmarks/transfer_cmap.py --parts baselines  # one part

(parts: baselines, models, width; a partial run updates the JSON and rewrites the table).

Writes ``benchmarks/results/transfer_cmap.md`` and ``.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import scimpute as si
from scimpute.metrics import METRICS, score_pairs
from scimpute.tl._data import to_grid_data

RESULTS = Path(__file__).parent / "results"
SEED = 0
N_GROUPS = 10
GRID_CONFIGS = {
    "autoencoder (control shift)": {"method": "autoencoder", "baseline": "control"},
    "autoencoder (context-mean shift)": {"method": "autoencoder", "baseline": "context_mean"},
    "vae (context-mean shift)": {"method": "vae", "baseline": "context_mean"},
}
COMMON = {"transform": "log1p", "width": 256, "max_epochs": 150, "patience": 20}
WIDTHS = (64, 256, 1024, 2048)


def two_way_additive_loo(data) -> pd.DataFrame:
    """Gene-space two-way additive model, leave-one-out (the identity-encoder ablation)."""
    cand = np.argwhere(data.treated_mask())
    Y = np.nan_to_num(data.Y.astype(np.float64))  # unmeasured entries are never used
    pred = np.empty((len(cand), data.n_features))
    for i, (c, a) in enumerate(cand):
        m = data.treated_mask()
        m[c, a] = False
        n_c = m.sum(axis=1)
        cm = (Y * m[..., None]).sum(axis=1) / np.maximum(n_c, 1)[:, None]
        others = np.flatnonzero(m[:, a] & (n_c > 0))
        pred[i] = cm[c] + (Y[others, a] - cm[others]).mean(axis=0)
    truth = Y[cand[:, 0], cand[:, 1]]
    base = Y[cand[:, 0], data.control]
    scores = score_pairs(truth, pred, baseline=base)
    return pd.DataFrame(
        {
            "method": "two_way_additive",
            "context": data.contexts[cand[:, 0]].astype(str),
            "perturbation": data.perturbations[cand[:, 1]].astype(str),
            **{k: scores[k] for k in METRICS if k != "relative_mse"},
        }
    )


def alignment_vs_width(adata) -> tuple[pd.DataFrame, dict]:
    bulk = adata.copy()
    bulk.X = np.log1p(np.asarray(bulk.X, dtype=np.float32))
    rows, tables = [], {}
    for w in WIDTHS:
        t0 = time.perf_counter()
        si.tl.fit_transfer(
            bulk,
            "cell_id",
            "pert_id",
            control="DMSO",
            model="autoencoder",
            width=w,
            depth=1,
            latent_dim=None,
            dropout=0.0,
            standardize=True,
            validation_fraction=0.0,
            max_epochs=300,
            batch_size=64,
            key_added=f"ae{w}",
            random_state=SEED,
            progress=False,
        )
        secs = time.perf_counter() - t0
        tab = si.tl.signature_alignment(
            bulk, "cell_id", "pert_id", control="DMSO", key=f"ae{w}", key_added=None
        )
        tables[w] = tab
        rec = bulk.uns[f"ae{w}"]
        rows.append(
            {
                "width": w,
                "n_pairs": len(tab),
                "median_cos_genes": tab["cosine_genes"].median(),
                "median_cos_latent": tab["cosine_latent"].median(),
                "mean_abs_cos_genes": tab["cosine_genes"].abs().mean(),
                "mean_abs_cos_latent": tab["cosine_latent"].abs().mean(),
                "frac_latent_gt_genes": float((tab["cosine_latent"] > tab["cosine_genes"]).mean()),
                "sign_agreement": float(
                    (np.sign(tab["cosine_latent"]) == np.sign(tab["cosine_genes"])).mean()
                ),
                "final_train_mse": float(rec["history"]["train_loss"][-1]),
                "train_seconds": secs,
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows), tables


def summarize(scores: pd.DataFrame) -> list[dict]:
    g = scores.groupby("method", sort=False)
    out = pd.DataFrame(
        {
            "n_pairs": g.size(),
            "median_r2": g["r2"].median(),
            "mean_r2": g["r2"].mean(),
            "median_cosine_effect": g["cosine_effect"].median(),
            "median_r2_effect": g["r2_effect"].median(),
            "frac_better_than_context_mean": g["relative_mse"].apply(
                lambda s: float((s < 1).mean()) if s.notna().any() else np.nan
            ),
        }
    )
    return out.reset_index().to_dict(orient="records")


def grid_baselines(grid, data) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    base = si.tl.cross_validate(grid, progress=False, key_added=None)
    twa = two_way_additive_loo(data)
    ref = base[base["method"] == "context_mean"].set_index(["context", "perturbation"])["mse"]
    twa["relative_mse"] = (
        twa["mse"].to_numpy()
        / ref.loc[list(zip(twa["context"], twa["perturbation"], strict=True))].to_numpy()
    )
    return summarize(pd.concat([base, twa], ignore_index=True)), {
        "baselines": time.perf_counter() - t0
    }


def grid_models(grid) -> tuple[list[dict], dict, dict]:
    tables, secs, info = [], {}, {}
    for label, cfg in GRID_CONFIGS.items():
        cfg = dict(cfg)
        method = cfg.pop("method")
        t0 = time.perf_counter()
        tab = si.tl.cross_validate_transfer(
            grid,
            method=method,
            n_groups=N_GROUPS,
            random_state=SEED,
            key_added=None,
            progress=False,
            **COMMON,
            **cfg,
        )
        secs[label] = time.perf_counter() - t0
        info[label] = {
            "n_epochs": tab.attrs["n_epochs"],
            "train_seconds": tab.attrs["train_seconds"],
        }
        tab["method"] = label
        tables.append(tab)
        print(label, f"{secs[label]:.0f}s", f"median r2 {tab['r2'].median():.3f}", flush=True)
    return summarize(pd.concat(tables, ignore_index=True)), secs, info


def write_report(res: dict) -> str:
    summary = (
        pd.DataFrame(res["summary"]).set_index("method").sort_values("median_r2", ascending=False)
    )
    width_table = pd.DataFrame(res.get("alignment_vs_width", []))
    lines = [
        "# CMap L1000 24 x 20: latent arithmetic, leave-one-out over the 302 measured pairs",
        "",
        f"Autoencoder rows: {N_GROUPS} networks trained (grouped training, leave-one-out",
        "information at prediction; each pair predicted by a network that never saw it).",
        f"Settings: {json.dumps(COMMON)}; seed {SEED}. ``two_way_additive`` is the same",
        "arithmetic as ``autoencoder (context-mean shift)`` with an identity encoder; ``additive``",
        "the gene-space version of ``autoencoder (control shift)``.",
        "",
        summary.round(3).to_markdown(),
        "",
        "Wall-clock seconds (CPU, 2 cores shared with other jobs): "
        + ", ".join(f"{k} {v:.0f}" for k, v in res.get("seconds", {}).items()),
        "",
        "## Signature alignment vs width (one hidden layer = latent space, log1p, standardised)",
        "",
        "Cosine between a compound's signatures (mean treated - DMSO) in two cell lines,",
        "over all (compound, pair of cell lines) with both measured.",
        "",
        width_table.round(3).to_markdown(index=False) if len(width_table) else "(not run)",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "transfer_cmap.md").write_text(text)
    return text


PARTS = ("baselines", "models", "width")


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parts = ap.parse_args().parts.split(",")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "transfer_cmap.json"
    res = json.loads(path.read_text()) if path.exists() else {"summary": [], "seconds": {}}
    adata = si.datasets.cmap()
    grid = si.pp.perturbation_grid(adata, "cell_id", "pert_id", control="DMSO")
    data, _ = to_grid_data(grid)

    def replace(rows):
        names = {r["method"] for r in rows}
        res["summary"] = [r for r in res["summary"] if r["method"] not in names] + rows

    if "baselines" in parts:
        rows, secs = grid_baselines(grid, data)
        replace(rows)
        res["seconds"].update(secs)
    if "models" in parts:
        rows, secs, info = grid_models(grid)
        replace(rows)
        res["seconds"].update(secs)
        res["training"] = info
    if "width" in parts:
        width_table, _ = alignment_vs_width(adata)
        res["alignment_vs_width"] = width_table.to_dict(orient="records")
    res["settings"] = {"n_groups": N_GROUPS, **COMMON, "seed": SEED, "widths": list(WIDTHS)}
    path.write_text(json.dumps(res, indent=1, default=float))
    print(write_report(res))


if __name__ == "__main__":
    main()

"""Benchmark of scimpute.mm on sci-CAR RNA+ATAC and PBMC CITE-seq (RNA+protein).

Protocol (issue 6): a random half of the cells are anchors (their pairing is given to the
model), the other half is evaluated: FOSCTTM and k-NN matching between the modalities'
embeddings, label transfer of the dexamethasone treatment time (sci-CAR: labels of one
modality's anchor cells -> the other modality's evaluation cells), and cross-modal
prediction (per-feature Pearson correlation of translated vs measured profiles, on the
evaluation cells). Baselines: CCA on per-modality PCA fitted on the same anchors, a random
embedding; fully unpaired integration (no anchors) is reported too. The literature protocol
(CCA fitted on 70% of cells, FOSCTTM on the other 30%) is reproduced for reference, and
scimpute.mm is run on it as well. On CITE-seq, the invariance ranks of the proteins whose
gene is well captured in RNA are reported.

Three random splits (seeds 0, 1, 2). The default hyper-parameters of scimpute.mm were chosen
while developing on the seed-0 split of both data sets; seeds 1 and 2 were not looked at.

Run:  SCIMPUTE_DATA_DIR=../shared/data PYTHONPATH=src python benchmarks/mm_integration.py
Writes benchmarks/results/mm_integration.{md,json}.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cross_decomposition import CCA
from sklearn.decomposition import PCA

import scimpute as si

warnings.simplefilter("ignore", FutureWarning)
OUT = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)
KEY = "X_scimpute"
#: protein -> gene of the PBMC CITE-seq panel (TotalSeq-B names)
PROTEIN_GENE = {
    "CD3": "CD3E",
    "CD4": "CD4",
    "CD8a": "CD8A",
    "CD14": "CD14",
    "CD15": "FUT4",
    "CD16": "FCGR3A",
    "CD56": "NCAM1",
    "CD19": "CD19",
    "CD25": "IL2RA",
    "CD45RA": "PTPRC",
    "CD45RO": "PTPRC",
    "PD-1": "PDCD1",
    "TIGIT": "TIGIT",
    "CD127": "IL7R",
}
#: proteins whose gene is well captured in RNA (issue 6)
WELL_CAPTURED = ("CD14", "CD3", "CD8a", "CD19", "CD16", "CD56")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(name: str):
    if name == "scicar":
        m = si.datasets.scicar()
        si.mm.normalize(m)  # log1p of library-size-normalised counts, all features
    else:
        m = si.datasets.pbmc_citeseq()
        si.mm.normalize(m, n_top_features={"rna": 2000})  # rna: log1p + 2000 HVGs, prot: CLR
    return m


def matrices(m) -> dict[str, np.ndarray]:
    return {
        k: m[k].layers["scimpute_norm"][:, m[k].var["scimpute_features"].to_numpy()] for k in m.mod
    }


def aligned(m, key: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = list(m.mod)
    ia = m[a].obs_names.get_indexer(m.obs_names)
    ib = m[b].obs_names.get_indexer(m.obs_names)
    return m[a].obsm[key][ia], m[b].obsm[key][ib]


def embedding_scores(za, zb, train, test, labels) -> dict:
    out = {
        "foscttm": si.metrics.foscttm(za[test], zb[test]),
        "match_top1": si.metrics.knn_matching_accuracy(za[test], zb[test], k=1),
        "match_top10": si.metrics.knn_matching_accuracy(za[test], zb[test], k=10),
    }
    if labels is not None:
        ab = si.metrics.label_transfer_accuracy(za[train], labels[train], zb[test], labels[test])
        ba = si.metrics.label_transfer_accuracy(zb[train], labels[train], za[test], labels[test])
        out["label_transfer"] = (ab + ba) / 2
    return out


def prediction_scores(x, pred, test) -> dict:
    """Median per-feature Pearson r of predicted vs measured, evaluation cells."""
    a, b = list(x)
    out = {}
    for src, tgt in ((a, b), (b, a)):
        r = si.metrics.cross_modal_correlation(x[tgt][test], pred[(src, tgt)][test])
        out[f"r_{src}_to_{tgt}"] = float(np.nanmedian(r))
    return out


def run_cca(x, train, test, n_pcs, n_cc, labels, seed=0) -> dict:
    a, b = list(x)
    pa = PCA(min(n_pcs, x[a].shape[1]), random_state=seed).fit(x[a][train])
    pb = PCA(min(n_pcs, x[b].shape[1]), random_state=seed).fit(x[b][train])
    A, B = pa.transform(x[a]), pb.transform(x[b])
    k = min(n_cc, A.shape[1], B.shape[1])
    cca = CCA(k, max_iter=5000).fit(A[train], B[train])
    ua, ub = cca.transform(A, B)
    res = embedding_scores(ua, ub, train, test, labels)
    # cross-modal prediction through CCA's regression, then back to feature space
    pred_b = pb.inverse_transform(cca.predict(A))
    # CCA.predict only goes from the first block to the second: fit the reverse model too
    cca_r = CCA(k, max_iter=5000).fit(B[train], A[train])
    pred_a = pa.inverse_transform(cca_r.predict(B))
    res.update(prediction_scores(x, {(a, b): pred_b, (b, a): pred_a}, test))
    return res


def run_scimpute(m, anchors: np.ndarray | None, test, labels, x, seed) -> tuple[dict, object]:
    m = m.copy()
    a, b = list(m.mod)
    pairing = False if anchors is None else anchors
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    si.mm.integrate(
        m,
        layer="scimpute_norm",
        use_var="scimpute_features",
        pairing=pairing,
        random_state=seed,
        progress=False,
    )
    fit_s = time.perf_counter() - t0
    za, zb = aligned(m, KEY)
    train = anchors if anchors is not None else ~test
    res = embedding_scores(za, zb, train, test, labels)
    pred = {}
    for src, tgt in ((a, b), (b, a)):
        tr = si.mm.translate(m, src, tgt)
        idx = tr.obs_names.get_indexer(m.obs_names)
        pred[(src, tgt)] = tr.X[idx]
    res.update(prediction_scores(x, pred, test))
    p = m.uns[KEY]["fit"]
    res.update(
        fit_seconds=fit_s,
        epochs_run=int(p["n_epochs_run"]),
        best_epoch=int(p["best_epoch"]),
        peak_rss_mb=peak_rss_mb(),
        peak_rss_increase_mb=peak_rss_mb() - rss0,
    )
    return res, m


def citeseq_invariance(m, x) -> pd.DataFrame:
    si.mm.invariant_features(m, cells="heldout")
    var = m["prot"].var
    prot = [v.split("_")[0] for v in var.index]
    score = var["invariance"].to_numpy()
    rank = pd.Series(score).rank(ascending=False, method="min").to_numpy().astype(int)
    rna = m["rna"]
    lx = rna.layers["scimpute_norm"]
    gene_r = []
    for p_, j in zip(prot, range(len(prot)), strict=True):
        g = PROTEIN_GENE.get(p_)
        if g is None or g not in rna.var_names:
            gene_r.append(np.nan)
            continue
        gx = np.asarray(lx[:, rna.var_names.get_loc(g)]).ravel()
        px = m["prot"].layers["scimpute_norm"][:, j]
        gene_r.append(float(np.corrcoef(gx, px)[0, 1]) if gx.std() > 0 else np.nan)
    return pd.DataFrame(
        {
            "protein": prot,
            "gene": [PROTEIN_GENE.get(p_, "") for p_ in prot],
            "invariance": score,
            "rank": rank,
            "r2_self": var["invariance_r2_self"].to_numpy(),
            "r2_cross": var["invariance_r2_cross"].to_numpy(),
            "gene_protein_r": gene_r,
        }
    )


def main(datasets=("scicar", "pbmc"), seeds=SEEDS, out: Path = OUT) -> None:
    results: dict = {
        "meta": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "seeds": list(seeds),
            "note": "defaults of scimpute.mm were tuned on the seed-0 split; seeds 1-2 unseen",
        }
    }
    rows = []
    inv_tables = []
    for name in datasets:
        m = load(name)
        x = matrices(m)
        n = m.n_obs
        labels = m.obs["treatment_time_h"].astype(str).to_numpy() if name == "scicar" else None
        for seed in seeds:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(n)
            anchors = np.zeros(n, dtype=bool)
            anchors[perm[: n // 2]] = True
            test = ~anchors
            print(f"[{name} seed {seed}] scimpute.mm, 50% anchors", flush=True)
            res, fitted = run_scimpute(m, anchors, test, labels, x, seed)
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "protocol": "50% anchors",
                    "method": "scimpute.mm",
                    **res,
                }
            )
            if name == "pbmc":
                t = citeseq_invariance(fitted, x)
                t.insert(0, "seed", seed)
                inv_tables.append(t)
            print(f"[{name} seed {seed}] scimpute.mm, unpaired", flush=True)
            res, _ = run_scimpute(m, None, test, labels, x, seed)
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "protocol": "50% anchors",
                    "method": "scimpute.mm unpaired (no anchors)",
                    **res,
                }
            )
            for n_pcs, n_cc in ((10, 10), (50, 2), (50, 5), (20, 5)):
                res = run_cca(x, anchors, test, n_pcs, n_cc, labels, seed)
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "protocol": "50% anchors",
                        "method": f"CCA (PCA {n_pcs}, {n_cc} comp.)",
                        **res,
                    }
                )
            rz = np.random.default_rng(100 + seed)
            za, zb = rz.normal(size=(n, 8)), rz.normal(size=(n, 8))
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "protocol": "50% anchors",
                    "method": "random embedding",
                    **embedding_scores(za, zb, anchors, test, labels),
                }
            )
            # literature protocol: fit on 70% of cells, evaluate on the other 30%
            tr70 = np.zeros(n, dtype=bool)
            tr70[perm[: int(0.7 * n)]] = True
            res = run_cca(x, tr70, ~tr70, 10, 10, labels, seed)
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "protocol": "70/30",
                    "method": "CCA (PCA 10, 10 comp.)",
                    **res,
                }
            )
            print(f"[{name} seed {seed}] scimpute.mm, 70% anchors", flush=True)
            res, _ = run_scimpute(m, tr70, ~tr70, labels, x, seed)
            rows.append(
                {"dataset": name, "seed": seed, "protocol": "70/30", "method": "scimpute.mm", **res}
            )
    df = pd.DataFrame(rows)
    inv = pd.concat(inv_tables, ignore_index=True)
    results["runs"] = df.to_dict(orient="records")
    results["citeseq_invariance"] = inv.to_dict(orient="records")
    out.mkdir(exist_ok=True)
    (out / "mm_integration.json").write_text(json.dumps(results, indent=1, default=float))
    write_markdown(df, inv, results["meta"], out)


def _fmt(mean: float, sd: float) -> str:
    return "" if np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}"


def write_markdown(df: pd.DataFrame, inv: pd.DataFrame, meta: dict, out: Path) -> None:
    cols = ["foscttm", "match_top1", "match_top10", "label_transfer"]
    pred_cols = [c for c in df.columns if c.startswith("r_")]
    lines = [
        "# scimpute.mm: multi-modal integration benchmark",
        "",
        "Generated by `benchmarks/mm_integration.py` "
        f"(Python {meta['python']}, {meta['platform']}). Mean ± sd over the random splits "
        f"(seeds {', '.join(map(str, meta['seeds']))}); {meta['note']}.",
        "",
        "FOSCTTM: fraction of cells closer than the true match (0 perfect, 0.5 random), "
        "evaluation cells only. match_top1/top10: fraction of evaluation cells whose partner "
        "is the nearest / among the 10 nearest of the other modality. label_transfer: 5-NN "
        "transfer of the treatment time from one modality's anchor cells to the other "
        "modality's evaluation cells (mean of both directions; 3 classes). r_a_to_b: median "
        "over the features of b of the Pearson r between the profiles predicted from a and "
        "the measured ones (normalised scale), evaluation cells.",
        "",
    ]
    for name, title in (
        ("scicar", "sci-CAR A549 RNA + ATAC (1,874 cells)"),
        ("pbmc", "PBMC CITE-seq RNA + 14 proteins (200 cells)"),
    ):
        d = df[df["dataset"] == name]
        for proto in ("50% anchors", "70/30"):
            t = d[d["protocol"] == proto]
            if t.empty:
                continue
            lines += [f"## {title}: {proto}", ""]
            use = [
                c
                for c in cols + pred_cols + ["fit_seconds", "peak_rss_mb"]
                if c in t.columns and t[c].notna().any()
            ]
            header = "| method | " + " | ".join(use) + " |"
            lines += [header, "|" + "---|" * (len(use) + 1)]
            for method, g in t.groupby("method", sort=False):
                cells = []
                for c in use:
                    v = g[c].astype(float)
                    cells.append(_fmt(v.mean(), v.std(ddof=0)) if v.notna().any() else "")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
            if proto == "50% anchors":
                per_seed = t.pivot_table(
                    index="method", columns="seed", values="foscttm", sort=False
                )
                lines += [
                    "FOSCTTM per split:",
                    "",
                    "| method | " + " | ".join(f"seed {s}" for s in per_seed.columns) + " |",
                    "|" + "---|" * (len(per_seed.columns) + 1),
                ]
                for method, r in per_seed.iterrows():
                    lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in r) + " |")
                lines.append("")
    lines += [
        "## CITE-seq: invariance ranks of the proteins (scimpute.mm, 50% anchors)",
        "",
        "`invariant_features(cells='heldout')`: per protein, R² of its prediction from RNA "
        "through the shared latent relative to its own reconstruction (1 = as well predicted "
        "from RNA as from the proteins). Rank among the 14 proteins (1 = most invariant), per "
        "split; gene_protein_r: Pearson r between the protein (CLR) and its gene "
        "(log-normalised) over the 200 cells, an independent measure of how well RNA "
        "captures it.",
        "",
    ]
    piv = inv.pivot_table(index="protein", columns="seed", values="rank")
    sc = inv.groupby("protein")["invariance"].mean()
    gr = inv.groupby("protein")["gene_protein_r"].first()
    order = sc.sort_values(ascending=False).index
    lines += [
        "| protein | gene | well captured | mean score | "
        + " | ".join(f"rank seed {s}" for s in piv.columns)
        + " | gene_protein_r |",
        "|" + "---|" * (5 + len(piv.columns)),
    ]
    gene = inv.groupby("protein")["gene"].first()
    for p_ in order:
        lines.append(
            f"| {p_} | {gene[p_]} | {'yes' if p_ in WELL_CAPTURED else ''} | {sc[p_]:.3f} | "
            + " | ".join(str(int(v)) for v in piv.loc[p_])
            + f" | {gr[p_]:.2f} |"
        )
    well = inv[inv["protein"].isin(WELL_CAPTURED)]
    lines += [
        "",
        f"Mean rank of the 6 well-captured proteins: {well['rank'].mean():.2f} "
        f"(best possible 3.5, random 7.5); per split: "
        + ", ".join(f"{g['rank'].mean():.2f}" for _, g in well.groupby("seed"))
        + ".",
        "",
    ]
    (out / "mm_integration.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["scicar", "pbmc"])
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--out", type=Path, default=OUT, help="directory of the results")
    args = ap.parse_args()
    main(tuple(args.datasets), tuple(args.seeds), args.out)

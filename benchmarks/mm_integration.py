"""Benchmark of scimpute.mm on sci-CAR RNA+ATAC and PBMC CITE-seq (RNA+protein).

Protocol (issue 6): a random half of the cells are anchors (their pairing is given to the
model), the other half is evaluated: FOSCTTM and k-NN matching between the modalities'
embeddings, label transfer of the dexamethasone treatment time (sci-CAR: labels of one
modality's anchor cells -> the other modality's evaluation cells), and cross-modal
prediction (per-feature Pearson correlation of translated vs measured profiles, on the
evaluation cells). CITE-seq has no labels: its "cell types" are clusters of the RNA of all
200 cells (scanpy: log-normalised HVGs, PCA, kNN graph; the graph is partitioned by spectral
clustering into 6 clusters, because leidenalg/igraph are not installed here).

Methods, all on the same anchors (the evaluation cells' pairing is never given):

- scimpute.mm, defaults: the backbone (linear / guided / autoencoder) is chosen inside the
  call by validation on the anchors (issue 11); the chosen one is reported per split.
- CCA (validated): scikit-learn CCA on per-modality PCA fitted on the anchors, the number of
  PCs (10, 20, 50) and of components (2, 5, 10) chosen by 3-fold cross-validated
  FOSCTTM within the anchors; fixed CCA settings are listed for reference.
- MOFA+ (muon 0.1.9, mofapy2 0.7.5, 10 factors): fitted on the anchor cells only; the
  evaluation cells are projected onto the factors one modality at a time (least squares on
  that view's loadings, ``Z_m = (X_m - mean) W_m (W_m'W_m)^-1``), which gives each
  evaluation cell one embedding per modality; prediction of view b from view a is
  ``Z_a W_b' + mean_b``.
- totalVI (scvi-tools 1.4.2, CITE-seq only, separate venv through ``$SCVI_PYTHON``, see
  ``benchmarks/_totalvi_peer.py``): trained on every cell's RNA counts and the anchors'
  protein counts; the evaluation cells' proteins are missing (their own batch, zero counts,
  totalVI's missing-protein mode). totalVI embeds a cell from RNA and protein jointly and has
  no protein-only encoder, so FOSCTTM does not apply; label transfer (anchors' latent ->
  evaluation cells' RNA-only latent) and RNA -> protein prediction (log1p of its denoised
  proteins) are reported. Skipped with the reason when ``$SCVI_PYTHON`` is not set.
- a random embedding.

The literature protocol (CCA fitted on 70% of cells, FOSCTTM on the other 30%) is kept for
reference. Three random splits (seeds 0, 1, 2).

Run:  SCVI_PYTHON=/work/peers/scvi/bin/python SCIMPUTE_DATA_DIR=../shared/data PYTHONPATH=src \
      python benchmarks/mm_integration.py
Writes benchmarks/results/mm_integration.{md,json}. Every (data set, split, group of methods)
is written as a part file (``--parts``, default ``benchmarks/results/mm_integration_parts``)
and the results are merged from all parts present, so pieces can run in parallel processes
(``--datasets pbmc --seeds 1 --groups scimpute``) or be rerun alone; ``--merge-only`` merges.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
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


CCA_PCS = (10, 20, 50)
CCA_COMPONENTS = (2, 5, 10)


def _cca_embed(x, fit_rows, n_pcs, n_cc, seed):
    """PCA + sklearn CCA fitted on ``fit_rows``: ``(embed_a, embed_b, models)``."""
    a, b = list(x)
    pa = PCA(min(n_pcs, x[a].shape[1], fit_rows.sum() - 1), random_state=seed).fit(x[a][fit_rows])
    pb = PCA(min(n_pcs, x[b].shape[1], fit_rows.sum() - 1), random_state=seed).fit(x[b][fit_rows])
    A, B = pa.transform(x[a]), pb.transform(x[b])
    k = min(n_cc, A.shape[1], B.shape[1])
    cca = CCA(k, max_iter=5000).fit(A[fit_rows], B[fit_rows])
    ua, ub = cca.transform(A, B)
    return ua, ub, (pa, pb, A, B, k)


def validate_cca(x, anchors, seed, n_folds=3) -> tuple[int, int, float]:
    """``(n_pcs, n_cc, cv FOSCTTM)`` chosen by k-fold FOSCTTM within the anchors."""
    idx = np.flatnonzero(anchors)
    folds = np.array_split(np.random.default_rng(seed).permutation(idx), n_folds)
    best = None
    for n_pcs in CCA_PCS:
        for n_cc in CCA_COMPONENTS:
            if n_cc > n_pcs:
                continue
            vals = []
            for hold in folds:
                fit_rows = anchors.copy()
                fit_rows[hold] = False
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ua, ub, _ = _cca_embed(x, fit_rows, n_pcs, n_cc, seed)
                vals.append(si.metrics.foscttm(ua[hold], ub[hold]) * hold.size)
            score = float(np.sum(vals) / idx.size)
            if best is None or score < best[2]:
                best = (n_pcs, n_cc, score)
    return best


def run_mofa(x, anchors, test, labels, seed, n_factors=10) -> dict:
    """MOFA+ (muon) on the anchors; evaluation cells projected per view."""
    import mudata as md
    import muon as mu
    from anndata import AnnData

    a, b = list(x)
    mods = {k: AnnData(np.asarray(v[anchors], dtype=np.float64)) for k, v in x.items()}
    for k, ad_ in mods.items():
        ad_.obs_names = [f"c{i}" for i in range(ad_.n_obs)]
        ad_.var_names = [f"{k}{j}" for j in range(ad_.n_vars)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md_ = md.MuData(mods)
        rss0 = peak_rss_mb()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            mu.tl.mofa(
                md_,
                use_var=None,
                n_factors=n_factors,
                seed=seed,
                outfile=str(Path(tmp) / "mofa.hdf5"),
                quiet=True,
                verbose=False,
            )
        fit_s = time.perf_counter() - t0
    lfs = np.asarray(md_.varm["LFs"])  # loadings of the features of every view, stacked
    w_of = {k: lfs[md_.var_names.get_indexer(md_[k].var_names)] for k in (a, b)}
    z, mean = {}, {}
    for k in (a, b):
        w = w_of[k]
        mean[k] = x[k][anchors].mean(0)
        z[k] = (x[k] - mean[k]) @ w @ np.linalg.pinv(w.T @ w)
    res = embedding_scores(z[a], z[b], anchors, test, labels)
    wa, wb = w_of[a], w_of[b]
    pred = {(a, b): z[a] @ wb.T + mean[b], (b, a): z[b] @ wa.T + mean[a]}
    res.update(prediction_scores(x, pred, test))
    res.update(
        fit_seconds=fit_s, peak_rss_mb=peak_rss_mb(), peak_rss_increase_mb=peak_rss_mb() - rss0
    )
    return res


def run_totalvi(m, anchors, test, labels, x, seed, max_epochs=200) -> dict:
    """totalVI through ``$SCVI_PYTHON`` (see ``_totalvi_peer.py``); ``{"skipped": reason}``."""
    py = os.environ.get("SCVI_PYTHON", "")
    if not py:
        return {"skipped": "SCVI_PYTHON is not set (a venv with scvi-tools 1.4.2)"}
    from anndata import AnnData

    raw = si.datasets.pbmc_citeseq()
    rna, prot = raw["rna"], raw["prot"]
    order = rna.obs_names.get_indexer(m.obs_names)
    porder = prot.obs_names.get_indexer(m.obs_names)
    ad_ = AnnData(rna.X[order])
    ad_.obs_names = list(m.obs_names)
    ad_.var_names = list(rna.var_names)
    ad_.obsm["protein"] = np.asarray(
        prot.X[porder].toarray() if hasattr(prot.X, "toarray") else prot.X[porder]
    )
    ad_.obs["anchor"] = anchors
    with tempfile.TemporaryDirectory() as tmp:
        path_in, path_out = Path(tmp) / "in.h5ad", Path(tmp) / "out.json"
        ad_.write_h5ad(path_in)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        script = Path(__file__).parent / "_totalvi_peer.py"
        try:
            subprocess.run(
                [py, str(script), str(path_in), str(path_out), str(seed), str(max_epochs)],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as e:
            tail = getattr(e, "stderr", "") or str(e)
            return {"skipped": f"totalVI failed: {tail.strip().splitlines()[-1][:200]}"}
        out = json.loads(path_out.read_text())
    z = np.asarray(out["latent"])
    res = {}
    if labels is not None:
        res["label_transfer"] = si.metrics.label_transfer_accuracy(
            z[anchors], labels[anchors], z[test], labels[test]
        )
    r = si.metrics.cross_modal_correlation(x["prot"][test], np.asarray(out["protein"])[test])
    res["r_rna_to_prot"] = float(np.nanmedian(r))
    res.update(
        fit_seconds=out["fit_seconds"],
        peak_rss_mb=out["peak_rss_mb"],
        note=f"scvi-tools {out['scvi_version']}, {out['max_epochs']} epochs; FOSCTTM n/a",
    )
    return res


def rna_clusters(m, n_clusters=6, seed=0) -> np.ndarray:
    """Cell types of the CITE-seq set: clusters of scanpy's RNA kNN graph (all cells)."""
    import scanpy as sc
    from sklearn.cluster import SpectralClustering

    a = si.datasets.pbmc_citeseq()["rna"]
    a = a[a.obs_names.get_indexer(m.obs_names)].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    sc.pp.pca(a, n_comps=20, mask_var="highly_variable", random_state=seed)
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    g = a.obsp["connectivities"]
    lab = SpectralClustering(
        n_clusters, affinity="precomputed", random_state=seed, assign_labels="discretize"
    ).fit_predict(g)
    return np.array([f"cluster{v}" for v in lab])


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
    cand = m.uns[KEY].get("candidates")
    if cand is not None:
        c = cand[cand["name"] != "linear-cv"]
        res["validation"] = "; ".join(f"{r.name} {r.score:.3f}" for r in c.itertuples())
    res.update(
        backbone=str(m.uns[KEY].get("backbone", "autoencoder")),
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


def _row(name, seed, protocol, method, res) -> dict:
    return {"dataset": name, "seed": seed, "protocol": protocol, "method": method, **res}


#: groups of methods; each (data set, split, group) is one part file, so a group can be rerun
#: alone (for example after a change of scimpute.mm) and the parts are merged into the results
GROUPS = ("scimpute", "cca", "mofa", "totalvi", "baselines")


def split_of(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(anchors, permutation)``: a random half of the cells are anchors."""
    perm = np.random.default_rng(seed).permutation(n)
    anchors = np.zeros(n, dtype=bool)
    anchors[perm[: n // 2]] = True
    return anchors, perm


def run_group(name, group, seed, m, x, labels, unpaired=False) -> tuple[list, list]:
    """Rows (and CITE-seq invariance tables) of one group of methods on one split."""
    n = m.n_obs
    anchors, perm = split_of(n, seed)
    test = ~anchors
    proto = "50% anchors"
    rows, inv = [], []
    print(f"[{name} seed {seed}] {group}", flush=True)
    if group == "scimpute":
        res, fitted = run_scimpute(m, anchors, test, labels, x, seed)
        rows.append(_row(name, seed, proto, "scimpute.mm", res))
        if name == "pbmc":
            t = citeseq_invariance(fitted, x)
            t.insert(0, "seed", seed)
            inv.append(t)
        if unpaired:
            res, _ = run_scimpute(m, None, test, labels, x, seed)
            rows.append(_row(name, seed, proto, "scimpute.mm unpaired (no anchors)", res))
    elif group == "cca":
        t0 = time.perf_counter()
        rss0 = peak_rss_mb()
        n_pcs, n_cc, cv = validate_cca(x, anchors, seed)
        why = f"PCA {n_pcs}, {n_cc} comp. (CV FOSCTTM {cv:.3f})"
        res = run_cca(x, anchors, test, n_pcs, n_cc, labels, seed)
        res.update(
            fit_seconds=time.perf_counter() - t0,
            validation=why,
            peak_rss_mb=peak_rss_mb(),
            peak_rss_increase_mb=peak_rss_mb() - rss0,
        )
        rows.append(_row(name, seed, proto, "CCA (validated)", res))
        for n_pcs, n_cc in ((10, 10), (50, 5), (20, 5)):
            res = run_cca(x, anchors, test, n_pcs, n_cc, labels, seed)
            rows.append(_row(name, seed, proto, f"CCA (PCA {n_pcs}, {n_cc} comp.)", res))
        # literature protocol: fit on 70% of cells, evaluate on the other 30%
        tr70 = np.zeros(n, dtype=bool)
        tr70[perm[: int(0.7 * n)]] = True
        res = run_cca(x, tr70, ~tr70, 10, 10, labels, seed)
        rows.append(_row(name, seed, "70/30", "CCA (PCA 10, 10 comp.)", res))
    elif group == "mofa":
        try:
            res = run_mofa(x, anchors, test, labels, seed)
        except ImportError as e:
            res = {"skipped": f"muon/mofapy2 not installed ({e})"}
        rows.append(_row(name, seed, proto, "MOFA+ (muon)", res))
    elif group == "totalvi" and name == "pbmc":
        res = run_totalvi(m, anchors, test, labels, x, seed)
        rows.append(_row(name, seed, proto, "totalVI (scvi-tools)", res))
    elif group == "baselines":
        rz = np.random.default_rng(100 + seed)
        za, zb = rz.normal(size=(n, 8)), rz.normal(size=(n, 8))
        res = embedding_scores(za, zb, anchors, test, labels)
        rows.append(_row(name, seed, proto, "random embedding", res))
    for r in rows:
        print({k: v for k, v in r.items() if k not in ("dataset", "protocol")}, flush=True)
    return rows, inv


def main(
    datasets=("scicar", "pbmc"),
    seeds=SEEDS,
    out: Path = OUT,
    unpaired=False,
    groups=GROUPS,
    parts: Path | None = None,
) -> None:
    """Run ``groups`` on ``datasets`` x ``seeds``; merge every part in ``parts`` into ``out``."""
    parts = parts or out / "mm_integration_parts"
    parts.mkdir(parents=True, exist_ok=True)
    for name in datasets:
        m = load(name)
        x = matrices(m)
        if name == "scicar":
            labels = m.obs["treatment_time_h"].astype(str).to_numpy()
        else:
            labels = rna_clusters(m)
        for seed in seeds:
            for group in groups:
                load0 = os.getloadavg()[0]
                rows, inv = run_group(name, group, seed, m, x, labels, unpaired)
                part = {
                    "rows": rows,
                    "invariance": [t.to_dict(orient="records") for t in inv],
                    "load": [load0, os.getloadavg()[0]],
                }
                path = parts / f"{name}_seed{seed}_{group}.json"
                path.write_text(json.dumps(part, indent=1, default=float))
                merge(parts, out)  # after every part: partial runs count


def merge(parts: Path, out: Path) -> None:
    """Write ``mm_integration.{md,json}`` from every part file in ``parts``."""
    rows, inv_tables, loads = [], [], []
    for path in sorted(parts.glob("*.json")):
        part = json.loads(path.read_text())
        rows += part["rows"]
        inv_tables += [pd.DataFrame(t) for t in part["invariance"]]
        loads += part["load"]
    results: dict = {
        "meta": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "seeds": sorted({int(r["seed"]) for r in rows}),
            "note": "scimpute.mm chooses its backbone by validation on the anchors in each call",
            "load": [float(min(loads)), float(max(loads))] if loads else [np.nan, np.nan],
            "missing_parts": [
                f"{d} seed {s_} {g}"
                for d in ("scicar", "pbmc")
                for s_ in SEEDS
                for g in GROUPS
                if not (g == "totalvi" and d == "scicar")
                and not (parts / f"{d}_seed{s_}_{g}.json").exists()
            ],
        }
    }
    _save(rows, inv_tables, results, out)


def _save(rows, inv_tables, results, out: Path) -> None:
    df = pd.DataFrame(rows)
    inv = pd.concat(inv_tables, ignore_index=True) if inv_tables else pd.DataFrame()
    results["runs"] = df.to_dict(orient="records")
    results["citeseq_invariance"] = inv.to_dict(orient="records")
    results["summary"] = summary(df)
    out.mkdir(exist_ok=True)
    (out / "mm_integration.json").write_text(json.dumps(results, indent=1, default=float))
    write_markdown(df, inv, results["meta"], results["summary"], out)


def summary(df: pd.DataFrame) -> dict:
    """Mean FOSCTTM over the splits per data set and method, and the issue's ratios."""
    d = df[df["protocol"] == "50% anchors"]
    out = {}
    for name, g in d.groupby("dataset"):
        # only the splits on which scimpute.mm and the validated CCA both ran, so that every
        # mean is over the same splits (a run stopped early leaves some parts missing)
        both = set(g.loc[g["method"] == "scimpute.mm", "seed"])
        both &= set(g.loc[g["method"] == "CCA (validated)", "seed"])
        g = g[g["seed"].isin(both)]
        if g.empty:
            continue
        fos = g.groupby("method")["foscttm"].mean()
        per = g.pivot_table(index="seed", columns="method", values="foscttm")
        lab = g.groupby("method")["label_transfer"].mean() if "label_transfer" in g else {}
        s = {
            "n_splits": int(per["scimpute.mm"].notna().sum()) if "scimpute.mm" in per else 0,
            "scimpute_foscttm": float(fos.get("scimpute.mm", np.nan)),
            "cca_validated_foscttm": float(fos.get("CCA (validated)", np.nan)),
            "mofa_foscttm": float(fos.get("MOFA+ (muon)", np.nan)),
            "scimpute_label_transfer": float(lab.get("scimpute.mm", np.nan)),
            "cca_validated_label_transfer": float(lab.get("CCA (validated)", np.nan)),
            "mofa_label_transfer": float(lab.get("MOFA+ (muon)", np.nan)),
            "totalvi_label_transfer": float(lab.get("totalVI (scvi-tools)", np.nan)),
        }
        s["ratio_to_cca"] = s["scimpute_foscttm"] / s["cca_validated_foscttm"]
        if {"scimpute.mm", "CCA (validated)"} <= set(per.columns):
            s["never_worse_than_cca"] = bool(
                (per["scimpute.mm"] <= per["CCA (validated)"] + 1e-12).all()
            )
        out[name] = s
    return out


def _fmt(mean: float, sd: float) -> str:
    return "" if np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}"


def write_markdown(df: pd.DataFrame, inv: pd.DataFrame, meta: dict, summ: dict, out: Path) -> None:
    cols = ["foscttm", "match_top1", "match_top10", "label_transfer"]
    pred_cols = [c for c in df.columns if c.startswith("r_")]
    lines = [
        "# scimpute.mm: multi-modal integration benchmark",
        "",
        "Generated by `benchmarks/mm_integration.py` "
        f"(Python {meta['python']}, {meta['platform']}). Mean ± sd over the random splits "
        f"(seeds {', '.join(map(str, meta['seeds']))}); {meta['note']}. Load average "
        f"{meta['load'][0]:.1f}-{meta['load'][1]:.1f} on 2 cores shared with other jobs "
        "(times are indicative).",
        "",
        "Not run (the run was stopped at the deadline; rerun a piece with `--datasets D "
        "--seeds S --groups G`): " + (", ".join(meta.get("missing_parts", [])) or "none") + ".",
        "",
        "Methods and how each handles the evaluation cells: see the docstring of "
        "`benchmarks/mm_integration.py` (MOFA+ is fitted on the anchors and the evaluation cells "
        "are projected per view; totalVI sees the evaluation cells' RNA, not their proteins).",
        "",
        "Mean over the splits on which scimpute.mm and the validated CCA both ran (FOSCTTM, "
        "lower is better; label transfer accuracy, higher is better; a peer's mean is over "
        "those of these splits on which it ran):",
        "",
        "| data set | splits | scimpute.mm FOSCTTM | CCA (validated) FOSCTTM | ratio | "
        "never worse per split | MOFA+ FOSCTTM | label transfer scimpute.mm | label transfer "
        "CCA (validated) | label transfer MOFA+ | label transfer totalVI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {k} | {v['n_splits']} | {v['scimpute_foscttm']:.4f} | "
            f"{v['cca_validated_foscttm']:.4f} | {v['ratio_to_cca']:.3f} | "
            f"{v.get('never_worse_than_cca', '')} | {v['mofa_foscttm']:.4f} | "
            f"{v['scimpute_label_transfer']:.3f} | {v['cca_validated_label_transfer']:.3f} | "
            f"{v['mofa_label_transfer']:.3f} | {v['totalvi_label_transfer']:.3f} |"
            for k, v in summ.items()
        ),
        "",
        "FOSCTTM: fraction of cells closer than the true match (0 perfect, 0.5 random), "
        "evaluation cells only. match_top1/top10: fraction of evaluation cells whose partner "
        "is the nearest / among the 10 nearest of the other modality. label_transfer: 5-NN "
        "transfer of the treatment time from one modality's anchor cells to the other "
        "modality's evaluation cells (mean of both directions; sci-CAR: treatment time, 3 "
        "classes; CITE-seq: 6 RNA clusters). r_a_to_b: median "
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
                if c in t.columns and pd.to_numeric(t[c], errors="coerce").notna().any()
            ]
            header = "| method | " + " | ".join(use) + " |"
            lines += [header, "|" + "---|" * (len(use) + 1)]
            notes = []
            for method, g in t.groupby("method", sort=False):
                cells = []
                for c in use:
                    v = pd.to_numeric(g[c], errors="coerce").astype(float)
                    cells.append(_fmt(v.mean(), v.std(ddof=0)) if v.notna().any() else "")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
                for col in ("skipped", "note"):
                    if col in g.columns and g[col].notna().any():
                        notes.append(f"- {method}: {g[col].dropna().iloc[0]}")
            lines += ["", *notes, ""] if notes else [""]
            if proto == "50% anchors" and "backbone" in t.columns:
                s_ = t[t["method"] == "scimpute.mm"]
                lines += [
                    "scimpute.mm's choice per split (validation FOSCTTM of each candidate on "
                    "the validation pairs, an inner split of the anchors); CCA (validated): "
                    "the settings its cross-validation chose:",
                    "",
                ]
                for r in s_.itertuples():
                    lines.append(f"- seed {r.seed}: kept **{r.backbone}** ({r.validation})")
                c_ = t[t["method"] == "CCA (validated)"]
                for r in c_.itertuples():
                    lines.append(f"- seed {r.seed}: CCA (validated) used {r.validation}")
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
                    lines.append(f"| {method} | " + " | ".join(f"{v:.4f}" for v in r) + " |")
                lines.append("")
    if inv.empty:
        (out / "mm_integration.md").write_text("\n".join(lines))
        print("\n".join(lines))
        return
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
    ap.add_argument("--unpaired", action="store_true", help="also run without anchors")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    ap.add_argument("--parts", type=Path, default=None, help="directory of the part files")
    ap.add_argument("--merge-only", action="store_true", help="only merge the part files")
    args = ap.parse_args()
    if args.merge_only:
        merge(args.parts or args.out / "mm_integration_parts", args.out)
    else:
        main(
            tuple(args.datasets), tuple(args.seeds), args.out, args.unpaired,
            tuple(args.groups), args.parts,
        )  # fmt: skip

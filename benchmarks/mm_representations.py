"""Per-modality representations for the linear backbone of scimpute.mm (issue 11, round 5).

Question: does a TF-IDF + LSI representation of count-like modalities (Signac/ArchR style)
beat the per-modality PCA that ``mm.integrate``'s linear backbone reads, when the choice
is made by cross-validation within the anchors, as ``integrate`` would make it?

Protocol: the splits of ``benchmarks/mm_integration.py`` (a random half of the cells are
anchors, seeds 0, 1, 2; FOSCTTM on the other half). Per modality, representations (computed
on every cell of the modality, which is what ``integrate`` trains its PCA on; no pairing is
used):

- ``pca``: the linear backbone's input: features centred, one common scale per modality
  (``standardize="global"``), top 50 principal components;
- ``lsi``: only for modalities with non-negative values (count-like or binary; decided from
  the data, never from the modality's name): term frequency ``x / rowsum(x)`` times inverse
  document frequency ``n / (1 + colsum(x))``, ``log1p(1e4 * tf * idf)``, centred, top 50
  components of a truncated SVD;
- ``lsi-drop1``: the same without the first component (LSI's first component usually follows
  sequencing depth);
- ``pca-knn15``: ``pca`` scores averaged over each cell's 15 nearest neighbours in its own
  modality (20 PCs), a denoising in the spirit of MaxFuse's fuzzy smoothing.

For every combination of the modalities' representations, the linear backbone's capacity
grid (PCA sizes 10/20/30/50, ranks 2-16, ridges 0.05-0.8) is cross-validated within the
anchors (5 folds, the same folds for every combination) with the package's own
``cv_linear`` / ``fit_cca``; the combination with the lowest CV FOSCTTM is the *validated*
choice. Reported: CV FOSCTTM and held-out FOSCTTM of every combination, and of the
validated choice next to ``pca`` for every modality (what ``integrate`` uses).

Run:  SCIMPUTE_DATA_DIR=../shared/data PYTHONPATH=src python benchmarks/mm_representations.py
Writes benchmarks/results/mm_representations.{md,json}.
"""

from __future__ import annotations

import itertools
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from mm_integration import load, matrices, split_of
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.extmath import randomized_svd

import scimpute as si
from scimpute.mm._linear import fit_cca, grid
from scimpute.mm._params import LINEAR_PCS, LINEAR_RANKS, LINEAR_RIDGES
from scimpute.mm._select import cv_linear

warnings.simplefilter("ignore", FutureWarning)
OUT = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)
K = 50


def pca_rep(v: np.ndarray, seed: int) -> np.ndarray:
    mu = v.mean(0)
    sd = np.sqrt(np.mean(v.std(0) ** 2))
    xs = (v - mu) / max(sd, 1e-6)
    _, _, vt = randomized_svd(xs, K, random_state=seed)
    return xs @ vt.T


def lsi_rep(v: np.ndarray, seed: int, drop: int) -> np.ndarray:
    v = np.asarray(v, np.float64)
    rs = v.sum(1, keepdims=True)
    tf = v / np.where(rs > 0, rs, 1.0)
    idf = v.shape[0] / (1.0 + v.sum(0))
    t = np.log1p(1e4 * tf * idf)
    t -= t.mean(0)
    _, _, vt = randomized_svd(t, K + drop, random_state=seed)
    return (t @ vt.T)[:, drop:]


def knn_smooth(s: np.ndarray, k: int = 15, n_pcs: int = 20) -> np.ndarray:
    idx = NearestNeighbors(n_neighbors=k + 1).fit(s[:, :n_pcs]).kneighbors(s[:, :n_pcs])[1]
    return s[idx].mean(1)


def representations(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    base = pca_rep(x, seed)
    out = {"pca": base, "pca-knn15": knn_smooth(base)}
    if x.min() >= 0:  # count-like or binary: decided by the data
        out["lsi"] = lsi_rep(x, seed, 0)
        out["lsi-drop1"] = lsi_rep(x, seed, 1)
    return out


def run_split(name: str, m, x: dict, seed: int) -> list[dict]:
    anchors, _ = split_of(m.n_obs, seed)
    test = ~anchors
    mods = list(x)
    reps = {k: representations(v, seed) for k, v in x.items()}
    arows = np.flatnonzero(anchors)
    options = grid(LINEAR_PCS, LINEAR_RANKS, LINEAR_RIDGES, K)
    rows = []
    for combo in itertools.product(*[list(reps[k]) for k in mods]):
        if len({c.startswith("pca-knn") for c in combo}) > 1:
            continue  # smoothing is tried on every modality at once
        t0 = time.perf_counter()
        sc = {k: reps[k][c] for k, c in zip(mods, combo, strict=True)}
        an = {k: s[arows] for k, s in sc.items()}
        cv = cv_linear(an, options, fit_cca, 5, np.random.default_rng(seed))
        (p, rank, ridge), cv_best = min(cv, key=lambda t: t[1])
        lf = fit_cca({k: s[:, :p] for k, s in an.items()}, rank, ridge)
        z = {k: lf.embed(k, s[:, :p]) for k, s in sc.items()}
        rows.append(
            {
                "dataset": name,
                "seed": seed,
                "representation": " + ".join(f"{k}:{c}" for k, c in zip(mods, combo, strict=True)),
                "capacity": f"n_pcs={p}, rank={rank}, ridge={ridge}",
                "cv_foscttm": cv_best,
                "heldout_foscttm": si.metrics.foscttm(z[mods[0]][test], z[mods[1]][test]),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    rows = []
    for name in ("scicar", "pbmc"):
        m = load(name)
        x = matrices(m)
        for seed in SEEDS:
            rows += run_split(name, m, x, seed)
    df = pd.DataFrame(rows)
    summary = []
    for (name, seed), t in df.groupby(["dataset", "seed"]):
        base = t[~t["representation"].str.contains("lsi|knn")].iloc[0]
        best = t.loc[t["cv_foscttm"].idxmin()]
        oracle = t.loc[t["heldout_foscttm"].idxmin()]
        summary.append(
            {
                "dataset": name,
                "seed": int(seed),
                "pca_heldout": float(base["heldout_foscttm"]),
                "validated": best["representation"],
                "validated_heldout": float(best["heldout_foscttm"]),
                "best_heldout_representation": oracle["representation"],
                "best_heldout": float(oracle["heldout_foscttm"]),
            }
        )
    summ = pd.DataFrame(summary)
    means = summ.groupby("dataset")[["pca_heldout", "validated_heldout", "best_heldout"]].mean()
    res = {
        "protocol": __doc__.split("Run:")[0].strip(),
        "rows": rows,
        "per_split": summary,
        "means": means.reset_index().to_dict(orient="records"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "mm_representations.json").write_text(json.dumps(res, indent=1, default=float))
    lines = ["# Per-modality representations of the linear backbone", "", res["protocol"], ""]
    lines += [
        "| data set | split | all pca (what integrate uses) | validated choice | its held-out "
        "FOSCTTM | best held-out (not selectable) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary:
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['pca_heldout']:.4f} | {r['validated']} | "
            f"{r['validated_heldout']:.4f} | {r['best_heldout']:.4f} "
            f"({r['best_heldout_representation']}) |"
        )
    lines += ["", "Mean over the splits:", "", "| data set | all pca | validated | best held-out |"]
    lines += ["| --- | --- | --- | --- |"]
    for d, r in means.iterrows():
        lines.append(
            f"| {d} | {r['pca_heldout']:.4f} | {r['validated_heldout']:.4f} | "
            f"{r['best_heldout']:.4f} |"
        )
    lines += ["", "Every combination:", "", "| data set | split | representation | capacity "
              "| CV FOSCTTM | held-out FOSCTTM |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['representation']} | {r['capacity']} | "
            f"{r['cv_foscttm']:.4f} | {r['heldout_foscttm']:.4f} |"
        )
    (OUT / "mm_representations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:40]))


if __name__ == "__main__":
    main()

"""Benchmark of unpaired (and partially paired) integration with feature links.

Protocol (issue 11, section 2). PBMC CITE-seq (200 cells, RNA 2,000 HVGs log1p + 14 CLR
proteins): ``mm.link_features(mdata, "prot", "rna")`` links every protein to its gene(s) by
name. Three seeds (0, 1, 2):

- **unpaired**: ``mm.integrate(pairing=False)`` with and without ``links=``; the model never
  sees which RNA cell is which protein cell; FOSCTTM over all 200 cells (0 perfect, 0.5
  random). Also the FOSCTTM of the matching's own canonical embedding (``mm._unpaired``) and
  the fraction of pseudo-anchor pairs that are the true pair;
- **partially paired**: 10% of the cells (20) are anchors, with and without ``links=``;
  FOSCTTM on the other 180 cells.

sci-CAR (A549 RNA + ATAC, 1,874 cells): its features are anonymous (``rna_feature_0``,
``atac_feature_0``, no coordinates), so ``link_features`` finds no link by name and none by
genomic window; the unpaired run without links is reported (seed 0).

Run:  SCIMPUTE_DATA_DIR=../shared/data PYTHONPATH=src python benchmarks/mm_unpaired.py
Writes benchmarks/results/mm_unpaired.{md,json}.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import scimpute as si
from scimpute.mm._links import read_links
from scimpute.mm._unpaired import UnpairedParams, linked_matrices, match_cells

warnings.simplefilter("ignore")
OUT = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)
KEY = "X_scimpute"
LINKS = "links_prot_rna"


def citeseq():
    m = si.datasets.pbmc_citeseq()
    si.mm.normalize(m, n_top_features={"rna": 2000})
    si.mm.link_features(m, "prot", "rna")
    return m


def fos(m, names, a="rna", b="prot") -> float:
    return float(si.metrics.foscttm(m[a][names].obsm[KEY], m[b][names].obsm[KEY]))


def fit(m, pairing, links, seed):
    t0 = time.perf_counter()
    si.mm.integrate(
        m,
        layer="scimpute_norm",
        use_var="scimpute_features",
        pairing=pairing,
        links=links,
        random_state=seed,
        progress=False,
    )
    return time.perf_counter() - t0


def matching_only(m, seed: int) -> dict:
    """The matching on its own, RNA cells shuffled so that row order tells nothing."""
    table = read_links(m, LINKS, "prot", "rna")
    xp = np.asarray(m["prot"].layers["scimpute_norm"])
    hv = m["rna"].var["scimpute_features"].to_numpy()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(m.n_obs)
    xr_all = np.asarray(m["rna"].layers["scimpute_norm"])[perm]
    la, lb, _ = linked_matrices(xp, xr_all, table, m["prot"].var_names, m["rna"].var_names)
    res = match_cells(xp, xr_all[:, hv], la, lb, UnpairedParams(), rng=rng)
    inv = np.argsort(perm)
    res0 = match_cells(xp, xr_all[:, hv], la, lb, UnpairedParams(n_iter=0), rng=rng)
    return {
        "foscttm_matching_embedding": float(
            si.metrics.foscttm(res.embedding_a, res.embedding_b[inv])
        ),
        "true_pair_fraction": float(np.mean(perm[res.rows_b] == res.rows_a)),
        "linked_only_foscttm": float(si.metrics.foscttm(res0.embedding_a, res0.embedding_b[inv])),
    }


def run_citeseq() -> tuple[list[dict], list[dict]]:
    unpaired, partial = [], []
    for seed in SEEDS:
        for links in (None, LINKS):
            m = citeseq()
            t = fit(m, False, links, seed)
            row = {"seed": seed, "links": links is not None, "foscttm": fos(m, m.obs_names)}
            row["fit_s"] = t
            if links:
                rec = m.uns[KEY]["pseudo_anchors"]["prot|rna"]
                row["n_pseudo_anchors"] = int(rec["n_pairs"])
                row.update(matching_only(m, seed))
            unpaired.append(row)
            print("unpaired", row, flush=True)
        rng = np.random.default_rng(seed)
        anchors = np.zeros(200, dtype=bool)
        anchors[rng.permutation(200)[:20]] = True
        for links in (None, LINKS):
            m = citeseq()
            t = fit(m, anchors, links, seed)
            names = m.obs_names[~anchors]
            row = {"seed": seed, "links": links is not None, "foscttm": fos(m, names), "fit_s": t}
            partial.append(row)
            print("partial", row, flush=True)
    return unpaired, partial


def run_scicar() -> dict:
    m = si.datasets.scicar()
    si.mm.normalize(m)
    out: dict = {}
    for by in ("name", "genomic"):
        try:
            si.mm.link_features(m, "atac", "rna", by=by)
            out[f"links_{by}"] = "found"
        except ValueError as e:
            out[f"links_{by}"] = str(e)
    if os.environ.get("SKIP_SCICAR_FIT"):
        return out
    t = fit(m, False, None, 0)
    out["foscttm_unpaired_no_links"] = fos(m, m.obs_names, "rna", "atac")
    out["fit_s"] = t
    return out


def main() -> None:
    t0 = time.perf_counter()
    unpaired, partial = run_citeseq()
    scicar = run_scicar()
    up, pp = pd.DataFrame(unpaired), pd.DataFrame(partial)
    summary = {
        "citeseq_unpaired_links": float(up.loc[up["links"], "foscttm"].mean()),
        "citeseq_unpaired_no_links": float(up.loc[~up["links"], "foscttm"].mean()),
        "citeseq_matching_embedding": float(up["foscttm_matching_embedding"].mean()),
        "citeseq_partial_links": float(pp.loc[pp["links"], "foscttm"].mean()),
        "citeseq_partial_no_links": float(pp.loc[~pp["links"], "foscttm"].mean()),
    }
    res = {
        "protocol": __doc__.split("Run:")[0].strip(),
        "summary": summary,
        "citeseq_unpaired": unpaired,
        "citeseq_partial": partial,
        "scicar": scicar,
        "total_s": time.perf_counter() - t0,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "load": os.getloadavg()[0],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "mm_unpaired.json").write_text(json.dumps(res, indent=1, default=float))
    lines = [
        "# Unpaired integration with feature links (`benchmarks/mm_unpaired.py`)",
        "",
        res["protocol"],
        "",
        "## PBMC CITE-seq, unpaired (FOSCTTM over all 200 cells)",
        "",
        "| seed | integrate, no links | integrate, name links | matching embedding alone "
        "| linked features only (no refinement) | pseudo-anchors that are the true pair |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for seed in SEEDS:
        a = up[(up["seed"] == seed) & ~up["links"]].iloc[0]
        b = up[(up["seed"] == seed) & up["links"]].iloc[0]
        lines.append(
            f"| {seed} | {a['foscttm']:.3f} | **{b['foscttm']:.3f}** | "
            f"{b['foscttm_matching_embedding']:.3f} | {b['linked_only_foscttm']:.3f} | "
            f"{b['true_pair_fraction']:.3f} ({int(b['n_pseudo_anchors'])} pairs) |"
        )
    lines += [
        f"| mean | {summary['citeseq_unpaired_no_links']:.3f} | "
        f"**{summary['citeseq_unpaired_links']:.3f}** | "
        f"{summary['citeseq_matching_embedding']:.3f} | | |",
        "",
        "## PBMC CITE-seq, 10% anchors (FOSCTTM on the other 180 cells)",
        "",
        "| seed | 20 anchors | 20 anchors + name links |",
        "| --- | --- | --- |",
    ]
    for seed in SEEDS:
        a = pp[(pp["seed"] == seed) & ~pp["links"]].iloc[0]
        b = pp[(pp["seed"] == seed) & pp["links"]].iloc[0]
        lines.append(f"| {seed} | {a['foscttm']:.3f} | {b['foscttm']:.3f} |")
    lines += [
        f"| mean | {summary['citeseq_partial_no_links']:.3f} | "
        f"{summary['citeseq_partial_links']:.3f} |",
        "",
        "## sci-CAR A549 RNA + ATAC",
        "",
        f"- `link_features(by='name')`: {scicar['links_name']}",
        f"- `link_features(by='genomic')`: {scicar['links_genomic']}",
    ]
    if "foscttm_unpaired_no_links" in scicar:
        lines.append(
            f"- unpaired without links (seed 0): FOSCTTM {scicar['foscttm_unpaired_no_links']:.3f}"
            " (random 0.5): with anonymous features and no coordinates there is nothing to "
            "link, and distribution matching alone does not align the modalities."
        )
    lines += [
        "",
        f"Fit time per CITE-seq run (200 cells): {up['fit_s'].mean():.0f} s; whole benchmark "
        f"{res['total_s'] / 60:.1f} min, 2 CPU cores shared with other jobs "
        f"(load {res['load']:.1f}).",
    ]
    (OUT / "mm_unpaired.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

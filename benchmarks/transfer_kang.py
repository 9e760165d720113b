"""Kang et al. 2018 IFN-beta PBMC: predict each held-out cell type's stimulated cells.

For every cell type t: train on all cells except t's stimulated cells, predict them from t's
control cells, and score every method with the same truth
(:func:`scimpute.tl._cross_validate_transfer.held_out_truth`): the top-20/100 genes
differentially expressed in t (Wilcoxon, stimulated vs control, the up-regulated top as in
scGen), a 50-PC basis fitted without t's stimulated cells for the E-distance and the MMD, and
the mean of the other types' stimulated cells for the systematic-variation check
(:func:`scimpute.metrics.transfer_scores`).

Compared: "no change" (t's control cells), "mean shift" (gene-space arithmetic, each other
type weighing the same), the split-half ceiling of the real cells, scimpute's
:func:`~scimpute.tl.fit_transfer` with its defaults (every choice by its inner
leave-one-context-out) and CellFlow (``cellflow-tools`` 0.0.9 in its own venv, run through
``CELLFLOW_PYTHON``; OT flow matching on 50 PCs fitted without t's stimulated cells, one-hot
cell type and treatment, 3,000 iterations, batch 256; the network by ``CELLFLOW_ARCH``,
:data:`ARCHS`, ``default`` its own; ``CELLFLOW_OPT=adam``: an Adam update every iteration
instead of its default 20 accumulated). ``--scgen`` runs
pertpy's scGen (the first round's protocol, r^2 only).

Usage::

    PYTHONPATH=src python benchmarks/transfer_kang.py              # scimpute + baselines
    CELLFLOW_PYTHON=/work/peers/cellflow/bin/python PYTHONPATH=src \
        python benchmarks/transfer_kang.py --cellflow-dir DIR      # + CellFlow (cached in DIR)
    PYTHONPATH=src python benchmarks/transfer_kang.py --report     # tables from the json
    PYTHONPATH=src python benchmarks/transfer_kang.py --report \
        --import-rows "OLD.json=scimpute=NAME"                     # + an earlier round's rows

Writes ``benchmarks/results/transfer_kang.json`` and ``benchmarks/results/transfer_kang.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import scipy.stats as st

RESULTS = Path(__file__).parent / "results"
#: stem of the results files (``--out``) and the fit_transfer arguments (``--fit-params``)
RUN = {"stem": "transfer_kang", "fit_params": {}}

#: models benchmarked (their parameters are fit_transfer's defaults unless set here)
CONFIGS = {
    "autoencoder": {"model": "autoencoder"},
    "vae": {"model": "vae"},
}


class PeakRSS:
    """Sample the process' resident memory every 50 ms in a thread; report the peak."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process(os.getpid())
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its threads so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _mean(x) -> np.ndarray:
    return np.asarray(x.mean(axis=0)).ravel().astype(np.float64)


def r2_fit(pred_mean: np.ndarray, true_mean: np.ndarray) -> float:
    """scGen's score: r^2 of the least-squares line of true on predicted mean expression."""
    return float(st.linregress(pred_mean, true_mean).rvalue ** 2)


def setup(adata, t: str):
    import scanpy as sc

    ct = adata.obs["cell_type"].astype(str).to_numpy()
    cond = adata.obs["condition"].astype(str).to_numpy()
    sub = adata[ct == t].copy()
    sc.tl.rank_genes_groups(sub, "condition", method="wilcoxon", n_genes=100)
    degs = list(sub.uns["rank_genes_groups"]["names"]["stimulated"][:100])
    idx = adata.var_names.get_indexer(degs)
    held = (ct == t) & (cond == "stimulated")
    return ct, cond, idx, held


def score(pred_mean, true_mean, idx) -> dict:
    return {
        "r2_all": r2_fit(pred_mean, true_mean),
        "r2_top100": r2_fit(pred_mean[idx], true_mean[idx]),
    }


def _save_partial(rows: list[dict], name: str) -> None:
    """Write the rows so far (a stopped run keeps its finished cell types)."""
    (RESULTS / f"{name}.partial.json").write_text(json.dumps(rows, indent=1))


def run_round2(
    adata, types, seeds, cellflow_dir, pred_dir=None, cached_only=False, extra_cellflow=(),
    extra_scimpute=(),
):  # fmt: skip
    """scimpute (defaults), CellFlow (cached or run) and the baselines, scored alike.

    With ``pred_dir``, scimpute's predicted cells are cached there per (type, seed): a rerun
    rescores them without refitting (``cached_only``: only the (type, seed) pairs cached for
    every method asked for, nothing fitted; the assembly of runs made in several processes).
    ``extra_cellflow``: ``(method name, directory)`` of other CellFlow runs, scored if cached;
    ``extra_scimpute``: the same for earlier scimpute runs (their ``--pred-dir``)."""
    import scimpute as si
    from scimpute.tl._cross_validate_transfer import held_out_truth, score_held_out

    ct = adata.obs["cell_type"].astype(str).to_numpy()
    cond = adata.obs["condition"].astype(str).to_numpy()
    rows = []
    for t in types:
        held = (ct == t) & (cond == "stimulated")
        truth = None
        for seed in seeds:
            cached = None if pred_dir is None else Path(pred_dir) / f"scimpute_{t}_seed{seed}.npz"
            have = cached is not None and cached.exists()
            if cached_only and not have:
                continue
            if truth is None:
                truth = held_out_truth(adata, ct, cond, "control", t, "stimulated", n_comps=50,
                                       deg_method="wilcoxon")  # fmt: skip
            if have:
                z = np.load(cached, allow_pickle=False)
                preds = {"scimpute": z["pred"]}
                cost = {"scimpute": json.loads(str(z["cost"]))}
            else:
                preds, cost = _fit_scimpute(si, adata, held, t, seed)
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(cached, pred=preds["scimpute"], cost=json.dumps(cost["scimpute"]))
            for name, d in extra_scimpute:
                f = Path(d) / f"scimpute_{t}_seed{seed}.npz"
                if f.exists():
                    z = np.load(f, allow_pickle=False)
                    preds[name] = z["pred"]
                    cost[name] = json.loads(str(z["cost"]))
            for name, d in [("CellFlow", cellflow_dir), *extra_cellflow]:
                cf = cellflow_prediction(t, seed, d, run=not cached_only and name == "CellFlow")
                if cf is None:
                    continue
                preds[name] = cf["pred"]
                cost[name] = {"train_seconds": float(cf["train_seconds"]),
                              "cpu_seconds": float(cf.get("cpu_seconds", np.nan)),
                              "arch": str(cf.get("arch", "small")),
                              "optimizer": str(cf.get("optimizer", "default")),
                              "peak_rss_gb": float(cf["peak_rss_gb"]),
                              "iterations": int(cf["iterations"])}  # fmt: skip
            new = [{"cell_type": t, "seed": seed, **r, **cost.get(r["method"], {})}
                   for r in score_held_out(truth, preds, random_state=seed)]  # fmt: skip
            rows += new
            print(json.dumps(new, default=str)[:2000], flush=True)
            _save_partial(rows, RUN["stem"])
    return rows


def _fit_scimpute(si, adata, held, t: str, seed: int):
    """fit_transfer with its defaults on every cell but ``held``; predicted cells and cost."""
    train = adata[~held].copy()
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), _cpu_seconds()
        si.tl.fit_transfer(train, "cell_type", "condition", random_state=seed, progress=False,
                           **RUN["fit_params"])  # fmt: skip
        secs, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    pred = si.tl.transfer(train, "cell_type", "condition", target_context=t,
                          target_perturbation="stimulated")  # fmt: skip
    rec = train.uns["transfer"]
    chosen = {k: str(rec["params"].get(k, "autoencoder")) for k in ("representation", "rule",
              "transport_alpha", "output", "width", "depth", "latent_dim", "n_pcs")}  # fmt: skip
    cost = {"train_seconds": secs, "cpu_seconds": cpu, "peak_rss_gb": mem.peak / 1e9,
            "epochs": int(rec["training"]["best_epoch"]) + 1,
            "load_average": os.getloadavg()[0], **chosen}  # fmt: skip
    return {"scimpute": np.asarray(pred.X)}, {"scimpute": cost}


def cellflow_prediction(t: str, seed: int, cellflow_dir: Path | None, run: bool = True):
    """CellFlow's predicted cells for held-out type ``t``: cached npz, else run if possible."""
    if cellflow_dir is None:
        return None
    f = Path(cellflow_dir) / f"cellflow_{t}_seed{seed}.npz"
    py = os.environ.get("CELLFLOW_PYTHON")
    if not f.exists() and py and run:
        import subprocess

        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        cmd = [py, __file__, "--seed", str(seed), "--cellflow-worker", t, str(cellflow_dir),
               "3000", "256"]  # fmt: skip
        subprocess.run(cmd, check=True, env=env)
    if not f.exists():
        print(f"CellFlow: no prediction for {t} (seed {seed}) in {cellflow_dir}", flush=True)
        return None
    return dict(np.load(f))


def run_scgen(adata, types, max_epochs: int, seed: int) -> list[dict]:
    import pertpy as pt
    import scvi

    scvi.settings.seed = seed
    rows = []
    for t in types:
        _ct, _cond, idx, held = setup(adata, t)
        true_mean = _mean(adata.X[held])
        train = adata[~held].copy()
        pt.tl.Scgen.setup_anndata(train, batch_key="condition", labels_key="cell_type")
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            model = pt.tl.Scgen(train)
            model.train(
                max_epochs=max_epochs,
                batch_size=32,
                early_stopping=True,
                early_stopping_patience=10,
            )
        secs = time.perf_counter() - t0
        pred, _ = model.predict(ctrl_key="control", stim_key="stimulated", celltype_to_predict=t)
        rows.append(
            {
                "cell_type": t,
                "method": "pertpy scGen",
                **score(_mean(pred.X), true_mean, idx),
                "train_seconds": secs,
                "epochs": len(model.history["elbo_train"]),
                "peak_rss_gb": mem.peak / 1e9,
                "rss_increase_gb": (mem.peak - mem.start) / 1e9,
            }
        )
        print(rows[-1], flush=True)
        _save_partial(rows, "transfer_kang_scgen")
    return rows


#: CellFlow's velocity fields: "default" is cellflow-tools 0.0.9's own ``prepare_model``
#: defaults (the issue's protocol; 2048/4096-wide MLPs), "small" the reduced field of the first
#: partial run (kept to reproduce it; a weaker peer, not the protocol)
ARCHS = {
    "default": {},
    "small": dict(
        condition_embedding_dim=64,
        time_freqs=64,
        time_encoder_dims=(256, 256),
        hidden_dims=(256, 256, 256),
        decoder_dims=(512, 512, 512),
    ),
}
#: the one used (``--cellflow-arch``; env ``CELLFLOW_ARCH`` for the worker)
ARCH = ARCHS[os.environ.get("CELLFLOW_ARCH", "default")]


def cellflow_worker(data_path, types, out_dir, iterations, batch, seed, n_pcs=50):
    """Train and predict with CellFlow, one held-out type at a time (run in its own venv)."""
    import resource

    import anndata as ad
    import cellflow
    import pandas as pd
    import scipy.sparse as sp

    adata = ad.read_h5ad(data_path)
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    X = X.astype(np.float32)
    ct = adata.obs["cell_type"].astype(str).to_numpy()
    cond = adata.obs["condition"].astype(str).to_numpy()
    types_all = sorted(set(ct))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for t in types:
        f = out_dir / f"cellflow_{t}_seed{seed}.npz"
        if f.exists():
            continue
        held = (ct == t) & (cond == "stimulated")
        Xt = X[~held]
        mu = Xt.mean(0)
        _, _, vt = np.linalg.svd(Xt - mu, full_matrices=False)
        V = vt[:n_pcs].T
        # every control cell is also a target of the identity condition (treatment "control"),
        # so that the held-out type's one-hot embedding is trained on its own controls
        is_c = cond[~held] == "control"
        names = np.asarray(adata.obs_names[~held])
        ct_tr = np.concatenate([ct[~held], ct[~held][is_c]])
        cond_tr = np.concatenate([cond[~held], cond[~held][is_c]])
        obs = pd.DataFrame(
            {
                "cell_type": pd.Categorical(ct_tr, categories=types_all),
                "condition": pd.Categorical(cond_tr, categories=["control", "stimulated"]),
                "control": np.concatenate([is_c, np.zeros(is_c.sum(), bool)]),
            },
            index=np.concatenate([names, [n + "-identity" for n in names[is_c]]]),
        )
        Zt = ((Xt - mu) @ V).astype(np.float32)
        tr = ad.AnnData(X=np.concatenate([Xt, Xt[is_c]]), obs=obs)
        tr.obsm["X_pca"] = np.concatenate([Zt, Zt[is_c]])
        tr.uns["cond_emb"] = {
            "control": np.array([1.0, 0.0], np.float32),
            "stimulated": np.array([0.0, 1.0], np.float32),
        }
        eye = np.eye(len(types_all), dtype=np.float32)
        tr.uns["ct_emb"] = {c: eye[i] for i, c in enumerate(types_all)}
        t0, c0 = time.perf_counter(), _cpu_seconds()
        cf = cellflow.model.CellFlow(tr, solver="otfm")
        cf.prepare_data(
            sample_rep="X_pca",
            control_key="control",
            perturbation_covariates={"treatment": ["condition"]},
            perturbation_covariate_reps={"treatment": "cond_emb"},
            sample_covariates=["cell_type"],
            sample_covariate_reps={"cell_type": "ct_emb"},
            split_covariates=["cell_type"],
        )
        opt = {}
        if os.environ.get("CELLFLOW_OPT") == "adam":  # every iteration an update
            import optax

            opt = {"optimizer": optax.adam(5e-5)}
        cf.prepare_model(seed=seed, **ARCH, **opt)
        cf.train(num_iterations=iterations, batch_size=batch, valid_freq=10**9)
        secs, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        src = tr[(obs["cell_type"] == t).to_numpy() & obs["control"].to_numpy()].copy()
        cov = pd.DataFrame(
            {
                "cell_type": pd.Categorical([t], categories=types_all),
                "condition": pd.Categorical(["stimulated"], categories=["control", "stimulated"]),
                "control": [False],
            }
        )
        pred = cf.predict(src, covariate_data=cov, sample_rep="X_pca")
        P = np.asarray(next(iter(pred.values())))
        genes = (P @ V.T + mu).astype(np.float32)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        np.savez(
            f,
            pred=genes,
            pred_pca=P.astype(np.float32),
            source=np.asarray(src.obs_names, dtype=str),
            train_seconds=secs,
            cpu_seconds=cpu,
            arch=os.environ.get("CELLFLOW_ARCH", "default"),
            optimizer=os.environ.get("CELLFLOW_OPT", "default"),
            peak_rss_gb=peak,
            iterations=iterations,
            batch=batch,
            seed=seed,
        )
        print(
            json.dumps(
                {
                    "cell_type": t,
                    "seed": seed,
                    "train_seconds": secs,
                    "peak_rss_gb": peak,
                    "shape": list(genes.shape),
                }
            ),
            flush=True,
        )


#: why the other peers of the issue are not in the table
SCGEN_NOTE = (
    "pertpy Scgen not run in this round: 22 min of CPU for one held-out type (B) in round 1 "
    "(transfer_kang_round1.md), no time on the shared cores for 7 types; `--scgen` runs it"
)
CPA_NOTE = "cpa-tools not run: not installed in any venv here (needs its own pinned venv)"

#: CellFlow with the issue's protocol (default network), as reported in issue 15 (r2 all,
#: r2 top-100), another run on another machine: the reference our CellFlow run falls short of
ISSUE_CELLFLOW = {
    "CD4T": (0.973, 0.977),
    "B": (0.953, 0.966),
    "CD14+Mono": (0.984, 0.982),
    "NK": (0.944, 0.963),
    "CD8T": (0.959, 0.983),
}

#: the CellFlow run with an Adam update every iteration (the stronger peer)
ADAM = "CellFlow, 3,000 Adam updates"

#: scimpute's third-round predictions (constant shift / linear transport only), rescored
ROUND3 = "scimpute, round 3 (shift or linear transport)"

#: metrics of the tables (higher is better, except the distances)
SHOWN = ("r2_all", "r2_top100", "pearson_change_top100", "pearson_change_vs_perturbed_top100",
         "wr2_change", "edistance", "mmd")  # fmt: skip
#: head-to-head: (metric, higher is better)
HEAD = (("r2_top100", True), ("pearson_change_top100", True), ("edistance", False))


def type_means(df):
    """Per (method, held-out type): the mean over the seeds run, with the number of seeds."""
    g = df.groupby(["method", "cell_type"], sort=False)
    out = g[list(SHOWN)].mean()
    out["n_seeds"] = g["seed"].nunique()
    return out.reset_index()


def head_to_head(df, a: str = "scimpute", b: str = "CellFlow") -> dict:
    """Per metric of :data:`HEAD`: on how many types ``a`` is at or above ``b`` (of how many).

    ``df`` holds one row per (method, type) (:func:`type_means`, or the rows of one seed);
    only types where both methods ran count."""
    out = {}
    for m, higher in HEAD:
        p = df[df["method"].isin([a, b])].pivot_table(index="cell_type", columns="method",
                                                      values=m)  # fmt: skip
        if a not in p or b not in p:
            continue
        p = p.dropna()
        wins = (p[a] >= p[b]) if higher else (p[a] <= p[b])
        out[m] = {"wins": int(wins.sum()), "of": len(p)}
    return out


def versus(df, tm, order: list[str], peer: str) -> dict:
    """scimpute against ``peer`` on the types where both ran: the means and the counts."""
    both = df.groupby("cell_type")["method"].apply(set)
    types = sorted(t for t, m in both.items() if {"scimpute", peer} <= m)
    if not types:
        return {}
    sub = tm[tm["cell_type"].isin(types)]
    means = sub.groupby("method", sort=False)[list(SHOWN)].mean()
    return {
        "types": types,
        "mean": means.loc[[m for m in order if m in means.index]].to_dict("index"),
        "head_to_head": head_to_head(sub, b=peer),
    }


def summarize(rows: list[dict]) -> dict:
    """The numbers the markdown (and the README) quote: means, head-to-head, per type."""
    import pandas as pd

    df = pd.DataFrame(rows)
    tm = type_means(df)
    order = list(dict.fromkeys(df["method"]))
    both = df.groupby(["cell_type", "seed"])["method"].apply(set)
    pairs = [k for k, m in both.items() if {"scimpute", "CellFlow"} <= m]
    common = df.set_index(["cell_type", "seed"]).loc[pairs].reset_index() if pairs else df[:0]
    mean = tm.groupby("method", sort=False)[list(SHOWN)].mean().loc[order]
    mean["n_types"] = tm.groupby("method", sort=False)["cell_type"].nunique().loc[order]
    out = {
        "mean": mean.to_dict("index"),
        "head_to_head": head_to_head(type_means(common)) if pairs else {},
        "head_to_head_per_seed": {int(sd): head_to_head(g) for sd, g in common.groupby("seed")},
        "common_pairs": [[t, int(sd)] for t, sd in pairs],
    }
    if pairs:
        cm = type_means(common).groupby("method", sort=False)[list(SHOWN)].mean()
        out["mean_common"] = cm.loc[[m for m in order if m in cm.index]].to_dict("index")
    out["mean_per_seed"] = {
        int(sd): {
            m: {**{c: float(v) for c, v in r.items()}, "n_types": int(g[g["method"] == m]
                                                                    ["cell_type"].nunique())}
            for m, r in g.groupby("method", sort=False)[list(SHOWN)].mean().iterrows()
        }
        for sd, g in df.groupby("seed")
    }  # fmt: skip
    ours = df[df["method"] == "scimpute"]
    if "rule" in ours:
        out["chosen_rules"] = {str(k): int(v) for k, v in ours["rule"].value_counts().items()}
    for peer, name in ((ADAM, "adam"), (ROUND3, "round3")):
        got = versus(df, tm, order, peer)
        if got:
            out[name] = got
    return out


def per_seed_table(summ: dict):
    """(seed, method) x metric: the means over the held-out types of each seed."""
    import pandas as pd

    per = summ.get("mean_per_seed", {})
    return pd.DataFrame({(int(sd), m): r for sd, ms in per.items() for m, r in ms.items()}).T


def report() -> str:
    import pandas as pd

    d = json.loads((RESULTS / f"{RUN['stem']}.json").read_text())
    df = pd.DataFrame(d["rows"])
    summ = summarize(d["rows"])
    order = list(dict.fromkeys(df["method"]))
    tm = type_means(df)
    seeds = sorted(df["seed"].unique())
    pairs = summ["common_pairs"]
    lines = [
        "# Kang IFN-beta PBMC: held-out cell type, predicted stimulated cells",
        "",
        "Each cell type's stimulated cells hidden, predicted from its control cells; every",
        "method scored with the same truth: r^2 of the mean (scGen's linear fit, all 6,998",
        "genes and the top-100 Wilcoxon DEGs of the held-out type), Pearson of the mean change",
        "vs control on the top-100 DEGs, the same vs the mean of the other types' stimulated",
        "cells (systematic-variation check), weighted R^2 of the change (weights |true change|),",
        "E-distance and RBF MMD (median heuristic) between predicted and real cells on 50 PCs",
        "fitted without the held-out cells (lower is better). scimpute: `fit_transfer` defaults,",
        "every choice by its inner leave-one-context-out (see the chosen table; rules: the",
        "constant shift, the linear transport, the kernel transport; transport_alpha: the",
        "chosen rule's strength, the ridge penalty or the kernel bandwidth). Per type: the",
        f"mean over the seeds run (seeds {', '.join(map(str, seeds))}; n_seeds column).",
        "",
        *(
            [
                f"fit_transfer arguments of this run (scimpute rows): `{d['meta']['fit_params']}`.",
                "",
            ]
            if d["meta"].get("fit_params")
            else []
        ),
        "## Mean over held-out types",
        "",
        pd.DataFrame(summ["mean"]).T.round(3).to_markdown(),
        "",
        "## Mean over held-out types, per seed",
        "",
        per_seed_table(summ).round(3).to_markdown(),
        "",
    ]
    if pairs:
        lines += [
            "## Mean over the (type, seed) pairs both scimpute and CellFlow finished",
            "",
            ", ".join(f"{t} (seed {sd})" for t, sd in pairs),
            "",
            pd.DataFrame(summ["mean_common"]).T.round(3).to_markdown(),
            "",
            "Types where scimpute is at or above CellFlow (E-distance: at or below), on the",
            "seed means of those pairs, then per seed:",
            "",
            "```",
            json.dumps({"seed means": summ["head_to_head"],
                        **{f"seed {k}": v for k, v in summ["head_to_head_per_seed"].items()}},
                       indent=1),
            "```",
            "",
        ]  # fmt: skip
    for name, peer, what in (("adam", ADAM, "the stronger CellFlow"),
                             ("round3", ROUND3, "before the kernel rule")):  # fmt: skip
        if name not in summ:
            continue
        a = summ[name]
        lines += [
            f"## Against {peer} ({what}), on the types where it ran",
            "",
            ", ".join(a["types"]),
            "",
            pd.DataFrame(a["mean"]).T.round(3).to_markdown(),
            "",
            f"Types where scimpute is at or above {peer} (E-distance: at or below):",
            "",
            "```",
            json.dumps(a["head_to_head"], indent=1),
            "```",
            "",
        ]
    for m in ("r2_all", "r2_top100", "pearson_change_top100", "edistance"):
        tab = tm.pivot_table(index="cell_type", columns="method", values=m).reindex(columns=order)
        lines += [f"## {m}, per held-out type (mean over seeds)", "", tab.round(3).to_markdown(),
                  ""]  # fmt: skip
    ours = tm[tm["method"] == "scimpute"].set_index("cell_type")
    ref = pd.DataFrame(
        [
            {"cell_type": t, "scimpute r2_all": ours.loc[t, "r2_all"],
             "issue CellFlow r2_all": a, "scimpute r2_top100": ours.loc[t, "r2_top100"],
             "issue CellFlow r2_top100": b}
            for t, (a, b) in ISSUE_CELLFLOW.items() if t in ours.index
        ]
    )  # fmt: skip
    if len(ref):
        lines += [
            "## scimpute here vs CellFlow as reported in issue 15",
            "",
            "The issue's CellFlow figures (cellflow-tools 0.0.9, the same splits, 50 PCs, one-hot",
            "embeddings, 3,000 iterations, batch 256; network not stated there, presumably its",
            "defaults; another run, ~110 s per type): not reproduced here (see the note below),",
            "quoted for comparison.",
            "",
            ref.set_index("cell_type").round(3).to_markdown(),
            "",
        ]
    nseeds = tm.pivot_table(index="cell_type", columns="method", values="n_seeds")
    lines += ["## Seeds run per type", "", nseeds.reindex(columns=order).to_markdown(), ""]
    cost_cols = [c for c in ("train_seconds", "cpu_seconds", "peak_rss_gb", "epochs",
                             "iterations", "load_average") if c in df]  # fmt: skip
    timed = df.dropna(subset=["train_seconds"])
    cost = timed.groupby(["method", "cell_type"], sort=False)[cost_cols].mean()
    chosen_cols = [c for c in ("rule", "transport_alpha", "output", "width", "depth",
                               "latent_dim", "n_pcs", "epochs") if c in df]  # fmt: skip
    chosen = df[df["method"] == "scimpute"].set_index(["cell_type", "seed"])[chosen_cols]
    lines += [
        "## Cost per held-out type (mean over seeds; CPU, 2 cores shared with other jobs)",
        "",
        cost.round(2).to_markdown(),
        "",
        "train_seconds: wall time of the training (scimpute: its whole inner validation, all",
        "candidates); cpu_seconds: user + system CPU time of the process over the same span",
        "(the cores were shared: wall time is not the cost on an idle machine; load_average:",
        "1-minute load of the 2-core machine when scimpute's fit ended). peak_rss_gb: peak",
        "resident memory of the process (scimpute: sampled during the fit, data included;",
        "CellFlow: ru_maxrss of its own process).",
        "",
        "## What scimpute's validation chose, per held-out type and seed",
        "",
        chosen.to_markdown(),
        "",
        "## Run",
        "",
        "```",
        json.dumps(d["meta"], indent=1),
        "```",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / f"{RUN['stem']}.md").write_text(text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scgen", action="store_true", help="run pertpy's scGen (round 1 protocol)")
    ap.add_argument("--report", action="store_true", help="only rebuild the markdown")
    ap.add_argument("--types", default="", help="comma-separated cell types (default: all)")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="seed (CellFlow worker; scGen)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: --seed)")
    ap.add_argument(
        "--cached-only",
        action="store_true",
        help="only rescore the cached predictions (nothing fitted)",
    )
    ap.add_argument("--note", default="", help="a note stored with the run")
    ap.add_argument("--out", default="transfer_kang", help="stem of the results files")
    ap.add_argument(
        "--fit-params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a fit_transfer argument for scimpute (repeatable; VALUE read as JSON, else str)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the stored rows of the types not run now (results json)",
    )
    ap.add_argument("--cellflow-dir", default=None, help="where CellFlow's predictions are cached")
    ap.add_argument(
        "--extra-cellflow",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another CellFlow run's cache, scored as method NAME (repeatable)",
    )
    ap.add_argument("--pred-dir", default=None, help="where scimpute's predictions are cached")
    ap.add_argument(
        "--merge-partial",
        action="store_true",
        help="with --report: the partial json's rows replace the stored rows of their types",
    )
    ap.add_argument(
        "--import-rows",
        action="append",
        default=[],
        metavar="FILE=METHOD=NAME",
        help="with --report: add METHOD's rows of another results json as method NAME",
    )
    ap.add_argument(
        "--extra-scimpute",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an earlier scimpute run's --pred-dir, scored as method NAME (repeatable)",
    )
    ap.add_argument(
        "--cellflow-worker",
        nargs=4,
        metavar=("TYPES", "OUT_DIR", "ITERATIONS", "BATCH"),
        help="internal: run CellFlow (called with CELLFLOW_PYTHON)",
    )
    args = ap.parse_args()
    RUN["stem"] = args.out
    for kv in args.fit_params:
        k, v = kv.split("=", 1)
        try:
            RUN["fit_params"][k] = json.loads(v)
        except json.JSONDecodeError:
            RUN["fit_params"][k] = v
    if args.cellflow_worker:
        types, out_dir, iterations, batch = args.cellflow_worker
        data = Path(os.environ.get("SCIMPUTE_DATA_DIR", ".")) / "kang2018_pbmc_ifnb_small.h5ad"
        cellflow_worker(
            str(data), types.split(","), out_dir, int(iterations), int(batch), args.seed
        )
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.report:
        import scimpute as si

        adata = si.datasets.kang()
        types = (
            args.types.split(",")
            if args.types
            else sorted(adata.obs["cell_type"].astype(str).unique())
        )
        t0 = time.perf_counter()
        if args.scgen:
            rows = run_scgen(adata, types, args.max_epochs or 60, args.seed)
            out = "transfer_kang_scgen.json"
        else:
            cf = Path(args.cellflow_dir) if args.cellflow_dir else None
            seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
            extra = [tuple(x.split("=", 1)) for x in args.extra_cellflow]
            extra_si = [tuple(x.split("=", 1)) for x in args.extra_scimpute]
            rows = run_round2(adata, types, seeds, cf, args.pred_dir, args.cached_only, extra,
                              extra_si)  # fmt: skip
            out = f"{RUN['stem']}.json"
            if args.merge and (RESULTS / out).exists():
                old = json.loads((RESULTS / out).read_text())
                kept = [r for r in old["rows"] if r["cell_type"] not in set(types)]
                rows = kept + rows
                types = list(dict.fromkeys([r["cell_type"] for r in rows]))
        import jax

        arches = sorted({r["arch"] for r in rows if r.get("arch")})
        meta = {
            "command": " ".join(["benchmarks/transfer_kang.py", *sys.argv[1:]]),
            "fit_params": RUN["fit_params"],
            "seeds": sorted({int(r["seed"]) for r in rows if "seed" in r}) or [args.seed],
            "types": types,
            "note": args.note,
            "scgen": SCGEN_NOTE,
            "cpa": CPA_NOTE,
            "total_seconds": time.perf_counter() - t0,
            "load_average": list(os.getloadavg()),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "cellflow_arch": {
                a: {k: str(v) for k, v in ARCHS[a].items()}
                or "cellflow-tools 0.0.9 prepare_model defaults"
                for a in arches
            },
        }
        result = {"meta": meta, "rows": rows}
        if not args.scgen:
            result["summary"] = summarize(rows)
        (RESULTS / out).write_text(json.dumps(result, indent=1, default=str))
        if args.scgen:
            return
    else:  # the stored rows, their summary recomputed (and partial or imported rows added)
        assemble(args.merge_partial, args.import_rows, args.note)
    print(report())


def assemble(merge_partial: bool, imports: list[str], note: str) -> None:
    """Rebuild ``transfer_kang.json`` from finished runs, nothing refitted or rescored.

    ``merge_partial``: the rows of ``transfer_kang.partial.json`` (a run stopped after some
    types) replace the stored rows of their types. ``imports``: ``FILE=METHOD=NAME``, the
    rows of METHOD in another results json (for example the committed one of an earlier
    round, same truth and seeds) added as method NAME.
    """
    path = RESULTS / f"{RUN['stem']}.json"
    d = json.loads(path.read_text())
    rows = d["rows"]
    if merge_partial:
        part = json.loads((RESULTS / f"{RUN['stem']}.partial.json").read_text())
        done = {r["cell_type"] for r in part}
        rows = [r for r in rows if r["cell_type"] not in done] + part
    for spec in imports:
        f, method, name = spec.split("=", 2)
        rows = [r for r in rows if r["method"] != name]
        rows += [{**r, "method": name} for r in json.loads(Path(f).read_text())["rows"]
                 if r["method"] == method]  # fmt: skip
    d["rows"] = rows
    d["meta"]["types"] = list(dict.fromkeys(r["cell_type"] for r in rows))
    if note:
        d["meta"]["note"] = note
    d["summary"] = summarize(rows)
    path.write_text(json.dumps(d, indent=1, default=str))


if __name__ == "__main__":
    main()

"""Kang et al. 2018 IFN-beta PBMC: scimpute's predicted cells scored by Arc Institute's cell-eval.

Protocol of ``benchmarks/transfer_kang.py`` (scGen's): for a held-out cell type t, train
:func:`scimpute.tl.fit_transfer` (default autoencoder, 60 epochs, seed 0) on every cell
except t's stimulated cells, predict them with :func:`scimpute.tl.transfer` (decoded output)
from t's control cells, and score

- scimpute's own figures: r^2 of the linear fit of true on predicted mean expression over all
  genes and over the top-100 DEGs (Wilcoxon, stimulated vs control within t), exactly as in
  ``transfer_kang.py``;
- cell-eval's metrics (``cell_eval.MetricsEvaluator``, profile ``full``) on the same
  prediction: a "real" AnnData (t's control cells + t's measured stimulated cells) against a
  "predicted" one (the same control cells + the predicted stimulated cells), perturbation
  column ``condition``, control ``"control"``.

Preparation for cell-eval (it requires non-negative, log1p-normalised expression): the Kang
file's ``X`` is already ``log1p`` of library-size-normalised counts (every value >= 0), and
scimpute is trained and decodes on that scale. The decoder is unconstrained, so a predicted
value can be slightly negative; such values are clipped at 0 (their count and most negative
value are recorded in the json as ``n_negative`` / ``min_before_clip``). Matrices are written
dense float32; ``var_names`` and ``obs_names`` are made unique strings. The real and the
predicted file share the control cells unchanged.

cell-eval's dependencies (polars, pdex, its own anndata/scanpy pins) are kept out of the
project environment: it lives in a separate venv and step (b) runs there through
``subprocess``::

    python3 -m venv /work/celleval-venv && /work/celleval-venv/bin/pip install cell-eval
    export CELLEVAL_PYTHON=/work/celleval-venv/bin/python
    PYTHONPATH=src python benchmarks/transfer_celleval.py --types CD4T,B,CD14+Mono

cell-eval 0.8.2 also installs into the project environment without changing any of its pins
(``pip install -e ".[bench]"``; then ``CELLEVAL_PYTHON`` may be that environment's python);
the separate venv is what the recorded run used.

Without ``CELLEVAL_PYTHON`` the script does step (a) only (fit, predict, write the h5ad
files and scimpute's own scores) and says that cell-eval was skipped. ``--evaluate DIR``
(run by the cell-eval python) is step (b) on its own.

Writes ``benchmarks/results/transfer_celleval.json`` and ``transfer_celleval.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
PERT_COL = "condition"
CONTROL = "control"
STIM = "stimulated"
#: tl.transfer outputs scored (decoded cells; control cells plus the decoded shift)
OUTPUTS = ("decoded", "residual")
#: cell-eval metrics quoted in the markdown table (all of them go to the json)
HEADLINE = [
    "pearson_delta",
    "mse",
    "mae",
    "overlap_at_N",
    "precision_at_N",
    "de_direction_match",
    "de_spearman_lfc_sig",
    "de_sig_genes_recall",
    "de_nsig_counts_real",
    "de_nsig_counts_pred",
    "pr_auc",
    "roc_auc",
    "discrimination_score_l1",
]


# ---------------------------------------------------------------- step (a): scimpute
def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def predict_type(adata, t: str, max_epochs: int, seed: int, outdir: Path) -> list[dict]:
    """Fit on all cells but t's stimulated ones; per output write outdir/t_output/{real,pred}.h5ad."""
    import anndata as ad
    import pandas as pd

    import scimpute as si

    sys.path.insert(0, str(Path(__file__).parent))
    from transfer_kang import _mean, score, setup

    ct, cond, idx, held = setup(adata, t)
    train = adata[~held].copy()
    t0 = time.perf_counter()
    si.tl.fit_transfer(
        train,
        "cell_type",
        PERT_COL,
        key_added="autoencoder",
        model="autoencoder",
        max_epochs=max_epochs,
        random_state=seed,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    true_mean = _mean(adata.X[held])
    ctrl = (ct == t) & (cond == CONTROL)
    xc = _dense(adata.X[ctrl])
    xs = _dense(adata.X[held])
    var = pd.DataFrame(index=adata.var_names.astype(str))

    def frame(labels: list[str], prefix: str) -> pd.DataFrame:
        return pd.DataFrame(
            {PERT_COL: pd.Categorical(labels, categories=[CONTROL, STIM])},
            index=[f"{prefix}{i}" for i in range(len(labels))],
        )

    real = ad.AnnData(
        np.vstack([xc, xs]), obs=frame([CONTROL] * len(xc) + [STIM] * len(xs), "real"), var=var
    )
    rows = []
    for output in OUTPUTS:
        pred = si.tl.transfer(
            train,
            "cell_type",
            PERT_COL,
            target_context=t,
            target_perturbation=STIM,
            key="autoencoder",
            output=output,
        )
        px = _dense(pred.X)
        row = {
            "cell_type": t,
            "output": output,
            **score(_mean(px), true_mean, idx),
            "train_seconds": seconds,
            # cell-eval's input: non-negative log1p expression; the decoder is unconstrained
            "n_negative": int((px < 0).sum()),
            "frac_negative": float((px < 0).mean()),
            "min_before_clip": float(px.min()),
        }
        np.maximum(px, 0, out=px)
        clipped = score(_mean(px), true_mean, idx)
        row["r2_all_clipped"], row["r2_top100_clipped"] = clipped["r2_all"], clipped["r2_top100"]
        predicted = ad.AnnData(
            np.vstack([xc, px]),
            obs=frame([CONTROL] * len(xc) + [STIM] * len(px), "pred"),
            var=var,
        )
        d = outdir / f"{t}_{output}"
        d.mkdir(parents=True, exist_ok=True)
        real.write_h5ad(d / "real.h5ad")
        predicted.write_h5ad(d / "pred.h5ad")
        row["n_control"], row["n_real"], row["n_pred"] = len(xc), len(xs), len(px)
        row["dir"] = str(d)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- step (b): cell-eval
def evaluate(d: Path) -> None:
    """Run cell-eval on d/real.h5ad vs d/pred.h5ad; write d/celleval.json (cell-eval venv)."""
    import anndata as ad
    from cell_eval import MetricsEvaluator

    evaluator = MetricsEvaluator(
        adata_pred=ad.read_h5ad(d / "pred.h5ad"),
        adata_real=ad.read_h5ad(d / "real.h5ad"),
        control_pert=CONTROL,
        pert_col=PERT_COL,
        num_threads=2,
        outdir=str(d / "celleval_out"),
    )
    results, agg = evaluator.compute(profile="full")
    rows = results.to_dicts() if hasattr(results, "to_dicts") else results.to_dict("records")
    agg_rows = agg.to_dicts() if hasattr(agg, "to_dicts") else agg.to_dict("records")
    from importlib.metadata import version

    out = {
        "cell_eval_version": version("cell-eval"),
        "per_perturbation": rows,
        "aggregate": agg_rows,
    }
    (d / "celleval.json").write_text(json.dumps(out, indent=1, default=str))


def _metrics_of(per_pert: list[dict]) -> dict:
    """cell-eval's per-perturbation row for 'stimulated' as {metric: value}."""
    (row,) = [r for r in per_pert if r.get("perturbation", STIM) == STIM]
    return {k: v for k, v in row.items() if k != "perturbation"}


# ---------------------------------------------------------------- report
def report(data: dict) -> str:
    rows = data["rows"]
    metrics = [m for m in HEADLINE if any(m in r.get("cell_eval", {}) for r in rows)]
    head = ["held-out type", "output", "r2_all", "r2_top100", "% < 0", *metrics]

    def fmt(v) -> str:
        if isinstance(v, float) and float(v).is_integer() and abs(v) >= 10:
            return f"{v:.0f}"
        if isinstance(v, float) and 0 < abs(v) < 0.01:
            return f"{v:.2e}"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        "# Kang IFN-beta PBMC: scimpute's predicted cells scored by cell-eval",
        "",
        "Held-out cell type's stimulated cells predicted by `tl.transfer` (default autoencoder;",
        "`decoded` cells and `residual` = the type's control cells plus the decoded shift) after",
        "`tl.fit_transfer` on every other cell (protocol of `transfer_kang.py`, 60 epochs, seed",
        "0). r2_all / r2_top100: scimpute's own score (r^2 of the linear fit of true on",
        "predicted mean expression, all 6,998 genes / top-100 DEGs), on the unclipped",
        "prediction. % < 0: share of predicted values below 0, clipped at 0 for cell-eval",
        "(its input must be non-negative log1p; the clipped prediction's r^2 is in the json).",
        "The other columns: Arc Institute's cell-eval (`MetricsEvaluator`, profile `full`),",
        "real = control + measured stimulated cells of the type, predicted = the same control",
        "cells + the predicted stimulated cells.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        ce = r.get("cell_eval", {})
        cells = [r["cell_type"], r["output"], f"{r['r2_all']:.3f}", f"{r['r2_top100']:.3f}"]
        cells.append(f"{100 * r['frac_negative']:.1f}")
        cells += [fmt(ce.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "cell-eval's metrics (its definitions): pearson_delta, Pearson correlation of the",
        "predicted and the real mean shift from control over all genes; mse / mae, of the",
        "predicted against the real mean profile; de_*: from cell-eval's own differential",
        "expression (pdex, Wilcoxon of each perturbation against the controls, in real and in",
        "predicted cells): overlap_at_N / precision_at_N, overlap of the predicted and the real",
        "DEGs at the real DEG count; de_direction_match, de_spearman_lfc_sig: sign agreement and",
        "Spearman of log fold changes over the significant real DEGs; de_sig_genes_recall;",
        "de_nsig_counts_real / _pred, how many genes are significant; pr_auc / roc_auc, the",
        "predicted p-values ranking the real DEGs. discrimination_score_l1 is 1 by construction",
        "with a single perturbation per evaluation; mse_delta / mae_delta equal mse / mae",
        "(real and predicted share the controls), in the json. pearson_edistance and clustering_agreement",
        "need at least two perturbations and are not computed (cell-eval logs an error).",
        "",
        "Reproduce:",
        "",
        "```",
        data["meta"]["command"],
        "```",
        "",
        "```",
        json.dumps(data["meta"], indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="CD4T", help="comma-separated held-out cell types")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="where the h5ad files go (default: a temp dir)")
    ap.add_argument("--evaluate", default="", help="step (b) only, on this directory")
    ap.add_argument("--report", action="store_true", help="only rebuild the markdown")
    args = ap.parse_args()
    if args.evaluate:
        evaluate(Path(args.evaluate))
        return
    if args.report:
        data = json.loads((RESULTS / "transfer_celleval.json").read_text())
        (RESULTS / "transfer_celleval.md").write_text(report(data))
        return

    import jax

    import scimpute as si

    adata = si.datasets.kang()
    types = args.types.split(",")
    celleval = os.environ.get("CELLEVAL_PYTHON", "")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scimpute_celleval_"))
    t0 = time.perf_counter()
    rows = []
    for t in types:
        for row in predict_type(adata, t, args.max_epochs, args.seed, workdir):
            if celleval:
                subprocess.run(
                    [celleval, __file__, "--evaluate", row["dir"]],
                    check=True,
                    env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                )
                out = json.loads((Path(row["dir"]) / "celleval.json").read_text())
                row["cell_eval"] = _metrics_of(out["per_perturbation"])
                row["cell_eval_version"] = out["cell_eval_version"]
            else:
                print("CELLEVAL_PYTHON is not set: cell-eval step skipped", flush=True)
            print(row, flush=True)
            rows.append(row)
            (workdir / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    meta = {
        "command": (
            "CELLEVAL_PYTHON=/work/celleval-venv/bin/python PYTHONPATH=src "
            f"python benchmarks/transfer_celleval.py --types {','.join(types)}"
            f" --max-epochs {args.max_epochs} --seed {args.seed}"
        ),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.system()}",
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "python": platform.python_version(),
        "total_seconds": time.perf_counter() - t0,
        "workdir": str(workdir),
    }
    data = {"meta": meta, "rows": rows}
    if celleval:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "transfer_celleval.json").write_text(json.dumps(data, indent=1, default=str))
        (RESULTS / "transfer_celleval.md").write_text(report(data))
        print(report(data))


if __name__ == "__main__":
    main()

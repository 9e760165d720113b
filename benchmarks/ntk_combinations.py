"""Held-out drug pairs on Korkut et al. 2015 (SKMEL-133, RPPA): NTK vs additive combination.

Each of the 28 measured pairs is hidden in turn; the methods train on the control, the 24
singles (12 drugs x 2 doses) and the 27 other pairs. Score: Pearson correlation of predicted
and measured effects (log2 ratio to control over the 87 readouts), median over pairs.

    SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python benchmarks/ntk_combinations.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _ntk_common import environment, single_threaded_blas, summary, to_markdown, wins, write

single_threaded_blas()

import scimpute as si  # noqa: E402

METHODS = {
    "ntk_components": {"method": "ntk", "prior": "components"},
    "ntk_components_reg_auto": {"method": "ntk", "prior": "components", "reg": "auto"},
    "ntk_components_depth3": {"method": "ntk", "prior": "components", "depth": 3},
    "ntk_components_nodose": {"method": "ntk", "prior": "components", "dose_transform": "none"},
    "ntk_onehot": {"method": "ntk", "prior": "onehot"},
    "additive_combination": "additive_combination",
    "context_mean": "context_mean",
}


def main() -> None:
    adata = si.datasets.korkut()
    adata.obs["context"] = "SKMEL-133"  # one cell line: a constant context column
    grid = si.pp.perturbation_grid(
        adata, "context", "perturbation", control="control", dose_key="dose"
    )
    methods = dict(METHODS)
    si_note = ""
    if "synthetic_interventions" in si.methods.available_methods().index:
        methods["synthetic_interventions"] = "synthetic_interventions"
    else:
        si_note = "synthetic_interventions is not registered on this branch; not run."
    t0 = time.perf_counter()
    df = si.tl.cross_validate(grid, methods=methods, holdout="leave_one_out", progress=False)
    elapsed = time.perf_counter() - t0
    pairs = df[df["perturbation"].str.contains("+", regex=False)]
    order = list(methods)
    tab = summary(pairs, order)
    w_add = wins(pairs, "ntk_components", "additive_combination")
    sources = {m: pairs[pairs.method == m]["source"].value_counts().to_dict() for m in methods}
    md = [
        "# NTK on held-out drug pairs (Korkut et al. 2015, SKMEL-133)",
        "",
        f"Grid: {grid.n_obs} conditions x {grid.n_vars} readouts (one context). Each of the "
        f"{tab['n_pairs'].iloc[0]} pairs hidden in turn (leave-one-out), training on control + "
        "singles + the other pairs. Effects = log2 ratio to control.",
        "",
        to_markdown(tab),
        "",
        f"ntk_components beats additive_combination on {w_add[0]} of {w_add[1]} pairs "
        "(Pearson of effects).",
        "",
        "SI-Action is inapplicable on a one-context grid: its training contexts are the "
        "*other* contexts where the target and its donors are measured, and there are none. "
        + si_note,
        "",
        f"Runtime of the whole cross-validation (all methods, {df.fold.nunique()} folds): "
        f"{elapsed:.1f} s.",
        "",
        "Reproduce: `SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python "
        "benchmarks/ntk_combinations.py`",
        "",
    ]
    write(
        "ntk_combinations",
        "\n".join(md),
        {
            "summary": tab,
            "wins_ntk_vs_additive": w_add,
            "sources": sources,
            "per_pair": pairs[["method", "perturbation", "pearson_effect", "r2_effect"]].to_dict(
                orient="records"
            ),
            "methods": {k: v if isinstance(v, str) else dict(v) for k, v in methods.items()},
            "elapsed_s": elapsed,
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()

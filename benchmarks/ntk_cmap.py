"""Leave-one-out on CMap (24 cell lines x 20 compounds): every NTK prior next to the baselines.

Each of the 302 measured (cell line, compound) pairs is hidden in turn. Score: R2 of the
profile (the literature's metric; SI-Action 0.876 on this file) and Pearson of effects.

The NTK defaults (``prior="data"`` with ``weights data_context=2.5, identity=0.5``) were chosen
on the folds whose index is divisible by 3 (the first, fourth, ... pair in the grid's
context-major order); the table reports all 302 pairs and, separately, the 201 pairs not used
for that choice.

    SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python benchmarks/ntk_cmap.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _ntk_common import environment, single_threaded_blas, to_markdown, wins, write

single_threaded_blas()

import pandas as pd  # noqa: E402

import scimpute as si  # noqa: E402

METHODS = {
    "ntk_data (default)": {"method": "ntk"},
    "ntk_data_reg_auto": {"method": "ntk", "prior": "data", "reg": "auto"},
    "ntk_data_paper_weights": {
        "method": "ntk", "prior": "data", "center": None,
        "weights": {"data_context": 0.75, "identity": 1.5},
    },
    "ntk_data+onehot": {"method": "ntk", "prior": ["data", "onehot"]},
    "ntk_onehot": {"method": "ntk", "prior": "onehot"},
    "ntk_components": {"method": "ntk", "prior": "components"},
    "ntk_identity": {"method": "ntk", "prior": "identity", "center": None},
    "context_mean": "context_mean",
    "perturbation_mean": "perturbation_mean",
    "two_way_mean": "two_way_mean",
    "additive": "additive",
}  # fmt: skip


def table(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    g = df.groupby("method", sort=False)
    out = pd.DataFrame(
        {
            "n_pairs": g.size(),
            "median_r2": g["r2"].median(),
            "mean_r2": g["r2"].mean(),
            "median_pearson_effect": g["pearson_effect"].median(),
            "median_cosine_effect": g["cosine_effect"].median(),
            "frac_better_than_context_mean": g["relative_mse"].apply(lambda s: (s < 1).mean()),
        }
    )
    return out.loc[[m for m in order if m in out.index]]


def main() -> None:
    grid = si.pp.perturbation_grid(si.datasets.cmap(), "cell_id", "pert_id", control="DMSO")
    methods = dict(METHODS)
    note = "synthetic_interventions is not registered on this branch; not run."
    if "synthetic_interventions" in si.methods.available_methods().index:
        methods["synthetic_interventions"] = "synthetic_interventions"
        note = ""
    t0 = time.perf_counter()
    df = si.tl.cross_validate(grid, methods=methods, holdout="leave_one_out", progress=False)
    elapsed = time.perf_counter() - t0
    order = list(methods)
    tab_all = table(df, order)
    tab_held = table(df[df.fold % 3 != 0], order)
    w = wins(df, "ntk_data (default)", "two_way_mean", "r2")
    md = [
        "# NTK on CMap, leave-one-out (24 cell lines x 20 compounds, 302 pairs)",
        "",
        "## All 302 pairs",
        "",
        to_markdown(tab_all),
        "",
        "## The 201 pairs not used to choose the defaults (fold index not divisible by 3)",
        "",
        to_markdown(tab_held),
        "",
        f"ntk_data (default) has a higher R2 than two_way_mean on {w[0]} of {w[1]} pairs. "
        "Literature on this file (leave-one-out, median R2): SI-Action 0.876. " + note,
        "",
        "Why these defaults: the data prior is the only prior that carries information about "
        "how a compound acts in other cell lines and how cell lines resemble each other, and it "
        "is the best prior here; the paper's weights (context part 0.75, pair one-hot 1.5; "
        "`ntk_data_paper_weights`, run here with this implementation's centred context means "
        "and raw profiles as in the paper) under-weight the context, which is why "
        "`data_context=2.5` and `identity=0.5` are the defaults. One-hot priors reduce NTK "
        "to a smoothed two-way model; the identity prior to a scaled global mean. "
        '`reg="auto"` selects a tiny ridge on this grid and changes little, so the default '
        "stays the small fixed ridge (1e-6).",
        "",
        f"Runtime of the whole cross-validation ({len(methods)} methods, {df.fold.nunique()} "
        f"folds, one BLAS thread on a shared 2-core machine): {elapsed:.0f} s.",
        "",
        "Reproduce: `SCIMPUTE_DATA_DIR=/work/shared/data PYTHONPATH=src python "
        "benchmarks/ntk_cmap.py`",
        "",
    ]
    write(
        "ntk_cmap",
        "\n".join(md),
        {
            "all_pairs": tab_all,
            "held_out_from_tuning": tab_held,
            "wins_ntk_vs_two_way_mean_r2": w,
            "methods": {k: v if isinstance(v, str) else dict(v) for k, v in methods.items()},
            "elapsed_s": elapsed,
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
